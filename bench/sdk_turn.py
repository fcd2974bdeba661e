"""The agent turn as an agent using the OpenAI Agents SDK runs it, on any
of the SDK's sessions: `add_items` of 1 item, `get_items()`, `add_items` of
2. The peer (`SQLAlchemySession`, bench/peer.py) and agent-state's own
session (`AgentStateSession`, bench/adapter.py) run this same code."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bench.harness import BODY_TEXT

if TYPE_CHECKING:
    from agents.memory import Session

ITEM: Any = {"role": "user", "content": BODY_TEXT}


async def load(session: Session, length: int) -> None:
    """`length` items, in adds of up to 1,000."""
    for start in range(0, length, 1000):
        await session.add_items([ITEM] * min(1000, length - start))


async def turns(session: Session, count: int, length: int) -> list[float]:
    """`count` turns, one after another, on a session of at least `length`
    items; their seconds."""
    samples: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        await session.add_items([ITEM])
        history = await session.get_items()
        await session.add_items([ITEM, ITEM])
        samples.append(time.perf_counter() - started)
        assert len(history) >= length + 1
    return samples
