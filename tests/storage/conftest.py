"""`new_database`: a brand-new empty database of each backend, for the
tests of migrate(); `migrated_postgres`, a store over a PostgreSQL
database of a test's own; `executed_plan` and `scans_of`, for the tests
of what PostgreSQL's plans of the named queries read. (`store` lives in
tests/conftest.py.)"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from agent_state.storage import sql
from agent_state.storage.postgres import PostgresStore
from tests.conftest import BACKENDS, StoreFactory, factory, location, migrated


@dataclass(frozen=True)
class FreshDatabase:
    """A new, empty database: `make()` returns an unopened store over it."""

    backend: str
    location: str
    make: StoreFactory

    @property
    def dialect(self) -> str:
        """The SQL dialect: "sqlite", or "postgres" (directly or through PgBouncer)."""
        return "sqlite" if self.backend == "sqlite" else "postgres"

    def execute(self, query: str) -> list[tuple[Any, ...]]:
        """Run `query` on the database directly, not through a store, and
        return its rows (none for a statement that returns none)."""
        if self.backend == "sqlite":
            with sqlite3.connect(self.location) as conn:
                return conn.execute(query).fetchall()
        with psycopg.connect(self.location, autocommit=True) as pg:
            cursor = pg.execute(query.encode())
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=BACKENDS)
def new_database(request: pytest.FixtureRequest) -> FreshDatabase:
    backend: str = request.param
    database = location(backend, request, "fresh.db", shared=False)
    return FreshDatabase(backend, database, factory(backend, database))


@asynccontextmanager
async def migrated_postgres(url: str) -> AsyncIterator[PostgresStore]:
    """An open store over the PostgreSQL database at `url`, migrated;
    closed afterwards."""
    async with migrated(PostgresStore(url)) as store:
        yield store


_POSTGRES_QUERIES = sql.load("postgres")


def executed_plan(url: str, query: str, params: dict[str, Any]) -> dict[str, Any]:
    """The executed plan of a named PostgreSQL query (EXPLAIN ANALYZE, as
    JSON), in a transaction rolled back afterwards: a write changes nothing."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction(force_rollback=True):
        explain = f"EXPLAIN (ANALYZE, FORMAT JSON) {_POSTGRES_QUERIES[query]}"
        row = conn.execute(explain, params).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    top: dict[str, Any] = plan[0]["Plan"]
    return top


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a plan, its top first."""
    found = [plan]
    for child in plan.get("Plans", []):
        found += plan_nodes(child)
    return found


def scans_of(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    """The plan's scans of a table."""
    return [node for node in plan_nodes(plan) if node.get("Relation Name") == relation]
