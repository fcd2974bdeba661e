"""`new_database`: a brand-new empty database of each backend, for the
tests of migrate(). (`store` lives in tests/conftest.py.)"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.conftest import BACKENDS, StoreFactory, factory, location


@dataclass(frozen=True)
class FreshDatabase:
    """A new, empty database: `make()` returns an unopened store over it."""

    backend: str
    location: str
    make: StoreFactory


@pytest.fixture(params=BACKENDS)
def new_database(request: pytest.FixtureRequest) -> FreshDatabase:
    backend: str = request.param
    database = location(backend, request, "fresh.db", shared=False)
    return FreshDatabase(backend, database, factory(backend, database))
