"""Fixtures of the Google ADK adapter's tests: a real server per backend
(SQLite, PostgreSQL), the one the client library's tests use, and session
services talking to it.

Tests share the server, so each one works under an app name of its own:
sessions, app state and user state never meet another test's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_state_client import AsyncClient
from agent_state_client._call import Reply, ResponseT, Rpc
from agent_state_client.integrations.adk import AgentStateSessionService

# The client tests' backends and server (one per backend for this folder).
from tests.client.conftest import backend as backend
from tests.client.conftest import make_database_url as make_database_url
from tests.client.conftest import server as server
from tests.e2e.conftest import live_server as live_server
from tests.support.server import ServerProcess


class CountingClient(AsyncClient):
    """An AsyncClient that records the name of every RPC it makes (each
    call once, whatever its retries)."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.rpcs: list[str] = []

    async def _call(
        self,
        rpc: Rpc[ResponseT],
        request: Any,
        *,
        idempotency_key: str | None = None,
        if_version: int | None = None,
    ) -> Reply[ResponseT]:
        self.rpcs.append(rpc.name)
        return await super()._call(
            rpc, request, idempotency_key=idempotency_key, if_version=if_version
        )


@pytest.fixture
def app_name() -> str:
    return f"adk-tests-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def service(live_server: ServerProcess) -> AsyncIterator[AgentStateSessionService]:
    async with AgentStateSessionService(live_server.address) as opened:
        yield opened


@pytest.fixture
async def counting_client(live_server: ServerProcess) -> AsyncIterator[CountingClient]:
    client = CountingClient(live_server.address)
    try:
        yield client
    finally:
        await client.close()
