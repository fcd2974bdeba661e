"""Fixtures running the storage contract suite against every backend.

`store` is an open, migrated store of each backend. PostgreSQL stores share
one database per session (tests use fresh conversation ids); SQLite stores
get a file of their own. `new_database` gives a brand-new empty database,
for the tests of migrate().
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from agent_state.storage.base import Store

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

StoreFactory = Callable[[], Store]


def _factory(backend: str, location: str) -> StoreFactory:
    """Unopened stores of `backend` over one database: a file path for
    SQLite, a URL for PostgreSQL."""
    if backend == "sqlite":
        # Imported here so that the PostgreSQL half runs without it.
        from agent_state.storage.sqlite import SqliteStore

        return lambda: SqliteStore(location)
    from agent_state.storage.postgres import PostgresStore

    return lambda: PostgresStore(location)


def _location(backend: str, request: pytest.FixtureRequest, name: str, shared: bool) -> str:
    if backend == "sqlite":
        tmp_path = request.getfixturevalue("tmp_path")
        return str(tmp_path / name)
    if shared:
        url: str = request.getfixturevalue("storage_postgres_url")
        return url
    make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
    return make()


@pytest.fixture(scope="session")
def storage_postgres_url(make_postgres_database: Callable[[], str]) -> str:
    """The database the `store` fixture's PostgreSQL stores share."""
    return make_postgres_database()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    backend: str = request.param
    opened = _factory(backend, _location(backend, request, "t.db", shared=True))()
    await opened.open()
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


@dataclass(frozen=True)
class FreshDatabase:
    """A new, empty database: `make()` returns an unopened store over it."""

    backend: str
    location: str
    make: StoreFactory


@pytest.fixture(params=BACKENDS)
def new_database(request: pytest.FixtureRequest) -> FreshDatabase:
    backend: str = request.param
    location = _location(backend, request, "fresh.db", shared=False)
    return FreshDatabase(backend, location, _factory(backend, location))
