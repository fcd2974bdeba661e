"""The peer: the OpenAI Agents SDK's `SQLAlchemySession` (asyncpg) on the
same PostgreSQL, doing the agent turn (add 1 item, read all items, add 2
items) in a process of its own, as an agent using that SDK would.

    python -m bench.peer URL --lengths 10,1000 --turns 30 --long-turns 10

URL is the ``postgresql://`` URL of the benchmark's database; the session
creates its own tables there (``agent_sessions``, ``agent_messages``). It
prints one JSON object: for each length, the turn's samples in seconds.
`measure` runs it from the benchmark. Only the benchmark needs the SDK,
SQLAlchemy and asyncpg (dev dependencies); the server never imports them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.harness import settle

BODY_TEXT = "x" * 200  # the same typical message as the service's turn


def asyncpg_url(url: str) -> str:
    """The SQLAlchemy URL for asyncpg; libpq query options are dropped."""
    return "postgresql+asyncpg://" + url.split("://", 1)[1].split("?", 1)[0]


async def _measure(url: str, lengths: list[int], turns: int, long_turns: int) -> dict[str, Any]:
    # Imported here: `python -m bench.run` imports this module for `measure`.
    from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(asyncpg_url(url))
    item: Any = {"role": "user", "content": BODY_TEXT}
    samples: dict[str, list[float]] = {}
    try:
        sessions = {}
        for length in lengths:
            session = SQLAlchemySession(str(uuid.uuid4()), engine=engine, create_tables=True)
            for start in range(0, length, 1000):
                await session.add_items([item] * min(1000, length - start))
            sessions[length] = session
        settle(url)
        for length, session in sessions.items():
            reps = long_turns if length >= 10_000 else turns
            got: list[float] = []
            for _ in range(reps):
                started = time.perf_counter()
                await session.add_items([item])
                history = await session.get_items()
                await session.add_items([item, item])
                got.append(time.perf_counter() - started)
                assert len(history) >= length + 1
            samples[str(length)] = got
    finally:
        await engine.dispose()
    return samples


def measure(url: str, lengths: list[int], turns: int, long_turns: int) -> dict[int, list[float]]:
    """Run the peer in its own process; its turn samples (seconds) by length."""
    command = [
        sys.executable,
        "-m",
        "bench.peer",
        url,
        "--lengths",
        ",".join(map(str, lengths)),
        "--turns",
        str(turns),
        "--long-turns",
        str(long_turns),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the peer failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, list[float]] = json.loads(done.stdout)
    return {int(length): samples for length, samples in result.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--lengths", required=True)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--long-turns", type=int, default=10)
    args = parser.parse_args()
    lengths = [int(length) for length in args.lengths.split(",")]
    samples = asyncio.run(_measure(args.url, lengths, args.turns, args.long_turns))
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
