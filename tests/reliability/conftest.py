"""The end-to-end fixtures, for the reliability tests: one real server
process per backend for this folder, and fresh databases. The reliability
tests run on SQLite and on PostgreSQL directly; the end-to-end tests also
cover PostgreSQL through PgBouncer."""

import pytest

from tests.e2e.conftest import (
    channel,
    live_server,
    make_database_url,
    server,
    stub,
)

__all__ = ["backend", "channel", "live_server", "make_database_url", "server", "stub"]


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
