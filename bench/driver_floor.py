"""What one database round trip costs a grpc.aio server, whatever the
driver: the server CPU per call of a health check, of a handler that
answers without the database, and of handlers that read one row by key
through a psycopg pool and through an asyncpg pool, in one run.

    python -m bench.driver_floor [--calls 3000] [--rounds 3]

The server is a bare grpc.aio server on uvloop, as `agent-state serve`
runs, in a process of its own; the client calls it from this process, one
call after another. Server CPU is utime + stime from /proc, divided by the
calls. It bounds what any handler that reads the database once can cost
(issue 12's T3 asks for 1.6x a health check). Nothing is asserted.
`bench.run` measures the psycopg handler against the health check in
every run (`one_row_read`), as T3's floor.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import grpc
import psycopg

from bench.harness import ADMIN_URL, cpu_seconds, health
from tests.support.postgres import throwaway_database

_ROW_ID = uuid.UUID(int=7)
_QUERY = "SELECT count, version FROM row_by_key WHERE id = %(id)s"
_HANDLERS = ("no_database", "psycopg", "asyncpg")


async def _serve(url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]
    from grpc_health.v1 import health, health_pb2_grpc
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(url, min_size=1, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True)
    asyncpg_pool = await asyncpg.create_pool(url, min_size=1)

    async def no_database(request: bytes, context: object) -> bytes:
        return b"5"

    async def via_psycopg(request: bytes, context: object) -> bytes:
        async with pool.connection() as conn:
            cursor = await conn.execute(_QUERY, {"id": _ROW_ID})
            row = await cursor.fetchone()
        assert row is not None
        return str(row[0]).encode()

    async def via_asyncpg(request: bytes, context: object) -> bytes:
        async with asyncpg_pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count, version FROM row_by_key WHERE id = $1", _ROW_ID
            )
        return str(row[0]).encode()

    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        name: grpc.unary_unary_rpc_method_handler(handler)
        for name, handler in zip(_HANDLERS, (no_database, via_psycopg, via_asyncpg), strict=True)
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Floor", handlers),)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def _calls(port: int) -> tuple[grpc.Channel, dict[str, Callable[[], object]]]:
    """A channel to the bare server and each of its calls, the health check first."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    work: dict[str, Callable[[], object]] = {"health check": partial(health, channel)}
    for name in _HANDLERS:
        method: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/bench.Floor/{name}"
        )
        work[name] = partial(method, b"")
    return channel, work


def _round(pid: int, work: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Server CPU per call (ms) of each call, `calls` of it one after another."""
    figures: dict[str, float] = {}
    for name, call in work.items():
        for _ in range(200):
            call()
        before = cpu_seconds([pid])
        for _ in range(calls):
            call()
        figures[name] = (cpu_seconds([pid]) - before) / calls * 1000
    return figures


@contextmanager
def bare_server(url: str) -> Iterator[tuple[int, int]]:
    """The bare server on `url` (its one-row table created), for ``with``:
    its pid and port."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS row_by_key"
            " (id uuid PRIMARY KEY, count bigint, version bigint)"
        )
        conn.execute("INSERT INTO row_by_key VALUES (%s, 5, 3) ON CONFLICT DO NOTHING", (_ROW_ID,))
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.driver_floor", "--serve", url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline()
        if not port:
            raise RuntimeError(f"the server exited ({server.wait()})")
        yield server.pid, int(port)
    finally:
        server.kill()
        server.wait()


def one_row_read(url: str, calls: int) -> tuple[float, float]:
    """Server CPU per call (ms) of the bare server's health check and of its
    handler that reads one row by key through a psycopg pool (as the
    service reads), `calls` of each: issue 12's T3 floor, for bench.run."""
    with bare_server(url) as (pid, port):
        channel, work = _calls(port)
        with channel:
            figures = _round(pid, {n: work[n] for n in ("health check", "psycopg")}, calls)
    return figures["health check"], figures["psycopg"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(_serve(args.serve))
        return 0
    with throwaway_database(ADMIN_URL, "agent_state_bench") as url, bare_server(url) as (pid, port):
        channel, work = _calls(port)
        with channel:
            print("| round | " + " | ".join(work) + " |")
            print("|---:|" + "---:|" * len(work))
            for round_ in range(1, args.rounds + 1):
                cells = [f"{ms:.3f} ms" for ms in _round(pid, work, args.calls).values()]
                print(f"| {round_} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
