"""The agent turn through the client library's OpenAI Agents SDK session,
`AgentStateSession` over `AsyncClient`: what an agent using the SDK with
agent-state runs, beside the same turn on the SDK's `SQLAlchemySession`
(bench/peer.py). Its appends carry the client's idempotency keys, so they
take the server's locked path; its read is the client's consistent
`context`, one call per 1,000 messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from agent_state_client import AsyncClient
from agent_state_client.integrations.openai_agents import AgentStateSession

BODY_TEXT = "x" * 200  # the same typical message as the other turns


class AdapterTurns:
    """AgentStateSession turns on an event loop of this object's own (the
    benchmark itself is synchronous), for ``with``."""

    def __init__(self, address: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(self._connect(address))

    @staticmethod
    async def _connect(address: str) -> AsyncClient:
        # The client's channel belongs to the loop it is made in.
        return AsyncClient(address)

    def session(self, length: int) -> AgentStateSession:
        """A new session holding `length` items."""
        session = AgentStateSession(str(uuid.uuid4()), self._client)
        item: Any = {"role": "user", "content": BODY_TEXT}

        async def load() -> None:
            for start in range(0, length, 1000):
                await session.add_items([item] * min(1000, length - start))

        self._loop.run_until_complete(load())
        return session

    def turns(self, session: AgentStateSession, count: int) -> list[float]:
        """`count` turns, one after another: add 1 item, read them all, add 2;
        their seconds."""
        item: Any = {"role": "user", "content": BODY_TEXT}

        async def run() -> list[float]:
            samples: list[float] = []
            for _ in range(count):
                started = time.perf_counter()
                await session.add_items([item])
                history = await session.get_items()
                await session.add_items([item, item])
                samples.append(time.perf_counter() - started)
                assert history
            return samples

        return self._loop.run_until_complete(run())

    def __enter__(self) -> AdapterTurns:
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()
