"""The peer: the OpenAI Agents SDK's `SQLAlchemySession` (asyncpg) on the
same PostgreSQL, doing the agent turn (add 1 item, read all items, add 2
items) in a process of its own, as an agent using that SDK would.

    python -m bench.peer URL

URL is the ``postgresql://`` URL of the benchmark's database; the session
creates its own tables there (``agent_sessions``, ``agent_messages``). The
process takes requests on stdin, one per line, and answers each with one
JSON line on stdout: ``session L`` makes a session of L items (its id),
``turns ID N`` runs N turns on it, one after another (their seconds),
``quit`` ends it. `Peer` drives it from the benchmark, which alternates
blocks of the peer's turns with blocks of the service's, so that the
machine's drift during a run falls on both alike. Only the benchmark needs
the SDK, SQLAlchemy and asyncpg (dev dependencies); the server never
imports them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import uuid
from typing import IO, Any

from bench import sdk_turn


def asyncpg_url(url: str) -> str:
    """The SQLAlchemy URL for asyncpg; libpq query options are dropped."""
    return "postgresql+asyncpg://" + url.split("://", 1)[1].split("?", 1)[0]


async def _serve(url: str) -> None:
    # Imported here: `python -m bench.run` imports this module for `Peer`.
    from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(asyncpg_url(url))
    sessions: dict[str, tuple[SQLAlchemySession, int]] = {}
    try:
        for line in sys.stdin:
            command, *arguments = line.split()
            if command == "quit":
                break
            if command == "session":
                length = int(arguments[0])
                session = SQLAlchemySession(str(uuid.uuid4()), engine=engine, create_tables=True)
                await sdk_turn.load(session, length)
                sessions[session.session_id] = (session, length)
                answer: Any = session.session_id
            elif command == "turns":
                session, length = sessions[arguments[0]]
                answer = await sdk_turn.turns(session, int(arguments[1]), length)
            else:
                raise ValueError(f"unknown request {line!r}")
            print(json.dumps(answer), flush=True)
    finally:
        await engine.dispose()


class Peer:
    """The peer's process (`python -m bench.peer URL`), for ``with``."""

    def __init__(self, url: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.peer", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, request: str) -> Any:
        stdin, stdout = self._pipes()
        stdin.write(request + "\n")
        stdin.flush()
        answer = stdout.readline()
        if not answer:
            raise RuntimeError(f"the peer exited ({self._process.wait()}) on {request!r}")
        return json.loads(answer)

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        return self._process.stdin, self._process.stdout

    def session(self, length: int) -> str:
        """A new session holding `length` items; its id."""
        session_id: str = self._ask(f"session {length}")
        return session_id

    def turns(self, session_id: str, count: int) -> list[float]:
        """`count` turns on the session, one after another; their seconds."""
        samples: list[float] = self._ask(f"turns {session_id} {count}")
        return samples

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *_: object) -> None:
        stdin, _stdout = self._pipes()
        try:
            stdin.write("quit\n")
            stdin.close()
            self._process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    asyncio.run(_serve(parser.parse_args().url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
