"""End-to-end fixtures: one server process per storage backend for the e2e tests.

Every test that takes ``stub`` (or ``backend``) runs against SQLite, against
PostgreSQL, and against PostgreSQL through a PgBouncer in transaction mode
(``postgres_pgbouncer``), as production usually reaches it. Tests share the
server, so each one works in conversations with fresh random ids.

Behind PgBouncer every server the tests start runs with prepared statements
off (AGENT_STATE_PREPARED_STATEMENTS=false, set in this process's
environment while that backend is active), as the README tells deployers
to. The backend fixtures are package-scoped so that the variable is gone
before any other folder's tests run.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from agent_state_client import Client
from tests.conftest import THROUGH_PGBOUNCER, postgres_location
from tests.support import calls
from tests.support.calls import Stub
from tests.support.server import ServerProcess, free_port, sqlite_url

from .cli_helpers import Run, invoke
from .helpers import RO_TOKEN, RW_TOKEN

BACKENDS = ["sqlite", "postgres", THROUGH_PGBOUNCER]


def database_url_for(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    """A fresh, empty database for ``backend`` (PostgreSQL may skip or fail, see tests/conftest)."""
    if backend == "sqlite":
        return sqlite_url(directory / f"agent-state-{uuid.uuid4().hex[:8]}.db")
    return postgres_location(backend, request, shared=False)


@pytest.fixture(scope="package", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    if name != THROUGH_PGBOUNCER:
        yield name
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENT_STATE_PREPARED_STATEMENTS", "false")
        yield name


@pytest.fixture(scope="package")
def server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp(f"e2e-{backend}")
    url = database_url_for(backend, request, directory)
    with ServerProcess(database_url=url, log_path=directory / "server.log") as process:
        yield process


@pytest.fixture(scope="package")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as chan:
        yield chan


@pytest.fixture
def live_server(server: ServerProcess) -> Iterator[ServerProcess]:
    """The shared server, checked to be still running after the test."""
    assert server.process is not None
    assert server.process.poll() is None, f"the server is gone: {server.describe()}"
    yield server
    assert server.process.poll() is None, f"the server died: {server.describe()}"


@pytest.fixture
def stub(channel: grpc.Channel, live_server: ServerProcess) -> Stub:
    return calls.make_stub(channel)


@pytest.fixture
def run(live_server: ServerProcess) -> Run:
    """The `agent-state` command against the shared server (in this process)."""

    def run_command(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return invoke(*args, address=live_server.address, stdin=stdin, env=env)

    return run_command


@pytest.fixture
def api(live_server: ServerProcess) -> Iterator[Client]:
    """The client library, to check what the CLI did."""
    with Client(live_server.address) as client:
        yield client


@pytest.fixture
def make_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], str]:
    """For tests that start their own server: a fresh database of the current backend."""

    def make() -> str:
        return database_url_for(backend, request, tmp_path)

    return make


@dataclass
class Guarded:
    """A server with tokens, metrics and JSON logs, and its metrics port."""

    server: ServerProcess
    metrics_port: int


@pytest.fixture
def guarded(make_database_url: Callable[[], str], tmp_path: Path) -> Iterator[Guarded]:
    """A server of the current backend with tokens (helpers.RW_TOKEN,
    helpers.RO_TOKEN), metrics and JSON logs."""
    metrics_port = free_port()
    server = ServerProcess(
        make_database_url(),
        tmp_path / "server.log",
        extra_args=["--metrics-address", f"127.0.0.1:{metrics_port}", "--log-format", "json"],
        env={"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN},ro:{RO_TOKEN}"},
    )
    with server:
        yield Guarded(server, metrics_port)
