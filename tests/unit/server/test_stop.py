"""The graceful stop of Server, in this process on a SQLite store: a call
being handled when the stop begins is answered, and a call gRPC holds
without ever handing it to the server does not keep the stop waiting for
the whole grace period.

The second case comes from a race in grpc.aio (a call accepted in the
instant the server begins to stop is never dispatched); it cannot be
brought about on purpose, so the test stands in for gRPC's server with
one whose graceful stop holds such a call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_state.checkpoints import CheckpointService
from agent_state.companion import CompanionService
from agent_state.config import Settings
from agent_state.server.app import Server
from agent_state.server.companion_servicer import CompanionCodec
from agent_state.server.wire import WireCodec
from agent_state.service import ConversationService
from agent_state.storage.base import Store
from agent_state_client import AsyncClient, MessageInput
from tests.conftest import factory, migrated

# Far longer than any test may take: a stop that waits for it fails by timeout.
LONG_GRACE_S = 3600.0
TEST_TIMEOUT_S = 30.0


SETTINGS = Settings(grpc_address="127.0.0.1:0", shutdown_grace_seconds=LONG_GRACE_S)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with migrated(factory("sqlite", str(tmp_path / "stop.db"))()) as store:
        yield store


def server_of(store: Store, service: ConversationService) -> Server:
    companion = CompanionService(store, CompanionCodec(), SETTINGS.limits(), messages=service)
    return Server(SETTINGS, service, companion, CheckpointService(store), metrics=None)


async def test_a_call_being_handled_when_the_stop_begins_is_answered(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ConversationService(store, WireCodec(), SETTINGS.limits())
    conversation = str(uuid.uuid4())
    entered, release = asyncio.Event(), asyncio.Event()
    get_conversation = service.get_conversation

    async def held(conversation_id: str) -> Any:
        entered.set()
        await release.wait()
        return await get_conversation(conversation_id)

    server = server_of(store, service)
    await server.start()
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        await client.append(conversation, MessageInput.user("hello"))
        monkeypatch.setattr(service, "get_conversation", held)
        call = asyncio.ensure_future(client.get_conversation(conversation))
        await asyncio.wait_for(entered.wait(), TEST_TIMEOUT_S)
        stopping = asyncio.ensure_future(server.stop())
        # The drain's quiet period is 0.2 s: well past it, the stop still
        # waits for the call.
        await asyncio.sleep(1.0)
        assert not stopping.done()
        release.set()
        answer = await asyncio.wait_for(call, TEST_TIMEOUT_S)
        await asyncio.wait_for(stopping, TEST_TIMEOUT_S)
    assert answer.version == 1


class HoldingServer:
    """gRPC's server, except that its graceful stop holds one call that was
    never dispatched, as grpc.aio's race leaves it, until the stop that
    cancels every call."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._cancelled = asyncio.Event()
        self.stops: list[float | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def stop(self, grace: float | None) -> None:
        self.stops.append(grace)
        if grace is None:
            self._cancelled.set()
            await self._real.stop(None)
        else:
            await self._cancelled.wait()


async def test_a_call_never_dispatched_does_not_hold_the_stop_for_the_grace_period(
    store: Store,
) -> None:
    server = server_of(store, ConversationService(store, WireCodec(), SETTINGS.limits()))
    holding = HoldingServer(server._grpc)
    server._grpc = holding  # type: ignore[assignment]
    await server.start()
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        await client.append(str(uuid.uuid4()), MessageInput.user("hello"))
    await asyncio.wait_for(server.stop(), TEST_TIMEOUT_S)
    assert holding.stops == [LONG_GRACE_S, None]
