"""The agent turn through the client library's OpenAI Agents SDK session,
`AgentStateSession` over `AsyncClient`: what an agent using the SDK with
agent-state runs, beside the same turn on the SDK's `SQLAlchemySession`
(bench/peer.py; both run bench/sdk_turn.py). Its appends carry the
client's idempotency keys (kept in the append's one statement); its read
is the client's consistent `context`, one call per 1,000 messages."""

from __future__ import annotations

import asyncio
import uuid

from agent_state_client import AsyncClient
from agent_state_client.integrations.openai_agents import AgentStateSession
from bench import sdk_turn


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
        self._loop.run_until_complete(sdk_turn.load(session, length))
        return session

    def turns(self, session: AgentStateSession, length: int, count: int) -> list[float]:
        """`count` turns, one after another, on a session made with
        `length` items; their seconds."""
        return self._loop.run_until_complete(sdk_turn.turns(session, count, length))

    def __enter__(self) -> AdapterTurns:
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()
