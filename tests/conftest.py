"""Fixtures shared by every test folder: throwaway PostgreSQL databases,
and `store`, an open and migrated store of each backend (PostgreSQL stores
share one database per session, so tests use fresh conversation ids;
SQLite stores get a file of their own).

PostgreSQL is found at AGENT_STATE_TEST_POSTGRES_URL (default: the local
server, user postgres, trust auth). Each test session creates its own
databases and drops them afterwards. Where PostgreSQL is required (in CI, or
with AGENT_STATE_REQUIRE_POSTGRES=1) an unreachable server fails the tests;
elsewhere they are skipped with the reason, never silently.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
import pytest

from agent_state.storage.base import Store
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.pgbouncer import binary as pgbouncer_binary
from tests.support.postgres import (
    DEFAULT_ADMIN_URL,
    create_database,
    drop_database,
    postgres_url_from_conninfo,
    random_database_name,
)

StoreT = TypeVar("StoreT", bound=Store)


def postgres_admin_url() -> str:
    return os.environ.get("AGENT_STATE_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def postgres_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("AGENT_STATE_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def make_postgres_database() -> Iterator[Callable[[], str]]:
    """Call it to get the URL of a new, empty database (dropped at the end)."""
    admin_url = postgres_admin_url()
    try:
        psycopg.connect(admin_url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at AGENT_STATE_TEST_POSTGRES_URL: {exc}"
        if postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    created: list[str] = []

    def make() -> str:
        name = random_database_name("agent_state_test")
        url = create_database(admin_url, name)
        created.append(name)
        return url

    yield make
    for name in created:
        drop_database(admin_url, name)


@pytest.fixture(scope="session")
def pgbouncer(make_postgres_database: Callable[[], str]) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the test PostgreSQL
    (tests/support/pgbouncer.py); fails where PostgreSQL is required and
    PgBouncer is not installed, else skips with the reason. It asks for
    make_postgres_database for that fixture's check of PostgreSQL (skip or
    fail), which must come first."""
    if pgbouncer_binary() is None:
        message = "pgbouncer is not installed (Debian package pgbouncer)"
        if postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    with running_pgbouncer(postgres_url_from_conninfo(postgres_admin_url())) as bouncer:
        yield bouncer


THROUGH_PGBOUNCER = "postgres_pgbouncer"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    # PostgreSQL reached through a PgBouncer in transaction mode, with
    # prepared statements off, as the README tells deployers.
    pytest.param(THROUGH_PGBOUNCER, id=THROUGH_PGBOUNCER, marks=pytest.mark.postgres),
]

StoreFactory = Callable[[], Store]


def factory(backend: str, location: str) -> StoreFactory:
    """Unopened stores of `backend` over one database: a file path for
    SQLite, a URL for PostgreSQL."""
    if backend == "sqlite":
        # Imported here so that the PostgreSQL half runs without it.
        from agent_state.storage.sqlite import SqliteStore

        return lambda: SqliteStore(location)
    from agent_state.storage.postgres import PostgresStore

    prepared_statements = backend != THROUGH_PGBOUNCER
    return lambda: PostgresStore(location, prepared_statements=prepared_statements)


def location(backend: str, request: pytest.FixtureRequest, name: str, shared: bool) -> str:
    if backend == "sqlite":
        tmp_path = request.getfixturevalue("tmp_path")
        return str(tmp_path / name)
    return postgres_location(backend, request, shared)


def postgres_location(backend: str, request: pytest.FixtureRequest, shared: bool) -> str:
    """The URL of a PostgreSQL database for `backend` ("postgres", or
    THROUGH_PGBOUNCER): the session's shared one, or a fresh one."""
    if shared:
        url: str = request.getfixturevalue("storage_postgres_url")
    else:
        make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        url = make()
    if backend == THROUGH_PGBOUNCER:
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        return bouncer.url_for(url)
    return url


@pytest.fixture(scope="session")
def storage_postgres_url(make_postgres_database: Callable[[], str]) -> str:
    """The database the `store` fixture's PostgreSQL stores share."""
    return make_postgres_database()


@asynccontextmanager
async def opened_store(request: pytest.FixtureRequest, *, shared: bool) -> AsyncIterator[Store]:
    """An open, migrated store of the backend `request.param` names, over
    the session's shared database or a database of its own."""
    backend: str = request.param
    async with migrated(
        factory(backend, location(backend, request, "t.db", shared=shared))()
    ) as opened:
        yield opened


@asynccontextmanager
async def migrated(store: StoreT) -> AsyncIterator[StoreT]:
    """`store` opened and migrated, closed afterwards."""
    await store.open()
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    async with opened_store(request, shared=True) as opened:
        yield opened


@pytest.fixture(params=BACKENDS)
async def fresh_store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A store over a database of its own, for tests that read the whole
    database (the retention sweeper)."""
    async with opened_store(request, shared=False) as opened:
        yield opened
