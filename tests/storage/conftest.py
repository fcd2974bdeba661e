"""`new_database`: a brand-new empty database of each backend, for the
tests of migrate(); `migrated_postgres`, a store over a PostgreSQL
database of a test's own. (`store` lives in tests/conftest.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

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
