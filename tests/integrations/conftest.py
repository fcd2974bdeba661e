"""Fixtures of the framework adapters' tests: the client tests' real
server per backend (SQLite, PostgreSQL), shared by the package's tests, and
an AsyncClient of it. Tests share the server, so each one works in
sessions of fresh random ids (or a namespace of its own)."""

from __future__ import annotations

from tests.client.conftest import backend as backend
from tests.client.conftest import client as client
from tests.client.conftest import live_server as live_server
from tests.client.conftest import make_database_url as make_database_url
from tests.client.conftest import proxy as proxy
from tests.client.conftest import server as server
