"""Fixtures of the client library's tests: a real server per backend
(SQLite, PostgreSQL), shared by the package's tests, and clients of it.

Tests share the server, so each one works in conversations with fresh
random ids. Tests that need a server with other settings (TLS, tokens, a
unix socket, a proxy in front) start their own through `serve`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agent_state_client import AsyncClient, Client
from tests.conftest import postgres_location

# `live_server`: the package's `server`, checked to be running after each test.
from tests.e2e.conftest import live_server as live_server
from tests.support.server import ServerProcess, sqlite_url

from .lossy_proxy import AnswerLosingProxy


@pytest.fixture(
    scope="package",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="package")
def make_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], str]:
    """A fresh, empty database of the current backend, each call."""
    directory = tmp_path_factory.mktemp(f"client-{backend}")
    made: list[str] = []

    def make() -> str:
        if backend == "sqlite":
            url = sqlite_url(directory / f"db{len(made)}.sqlite")
        else:
            url = postgres_location(backend, request, shared=False)
        made.append(url)
        return url

    return make


@pytest.fixture(scope="package")
def server(
    make_database_url: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("client-server") / "server.log"
    with ServerProcess(database_url=make_database_url(), log_path=log) as process:
        yield process


@pytest.fixture
async def client(live_server: ServerProcess) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(live_server.address) as opened:
        yield opened


@pytest.fixture
def sync_client(live_server: ServerProcess) -> Iterator[Client]:
    with Client(live_server.address) as opened:
        yield opened


@pytest.fixture
def proxy(live_server: ServerProcess) -> Iterator[AnswerLosingProxy]:
    """A proxy in front of the shared server that can lose an answer
    (lossy_proxy.py)."""
    host, port = live_server.address.rsplit(":", 1)
    started = AnswerLosingProxy(host, int(port))
    started.start()
    yield started
    started.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Starts servers (SQLite unless a URL is given) with the arguments
    given, and stops them at the end of the test."""
    started: list[ServerProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        database_url: str | None = None,
        **settings: object,
    ) -> ServerProcess:
        process = ServerProcess(
            database_url or sqlite_url(tmp_path / f"db{len(started)}.sqlite"),
            tmp_path / f"server{len(started)}.log",
            extra_args=list(args),
            env=env or {},
            **settings,  # type: ignore[arg-type]
        )
        started.append(process)
        return process.start_ready()

    yield start
    for process in started:
        assert process.terminate() == 0, process.describe()
