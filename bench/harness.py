"""What every workload needs: a real server process, a fresh database, a
floor table, timing helpers. The server launcher, the throwaway database and
the calls are the tests' own (tests.support), so the benchmark measures the
server the tests check, started the same way."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import psycopg

from agent_state_client._gen import agent_state_pb2_grpc as pb_grpc
from tests.support import calls
from tests.support.calls import Stub
from tests.support.postgres import DEFAULT_ADMIN_URL
from tests.support.server import ServerProcess, health_check

ADMIN_URL = os.environ.get("AGENT_STATE_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)
BODY_TEXT = "x" * 200  # the typical short chat message of every turn


def serve(
    database_url: str, log_path: Path, *, workers: int = 1, extra: Sequence[str] = ()
) -> ServerProcess:
    """`agent-state serve` on `database_url`, for ``with``: started and
    ready inside the block, stopped at its end; its log in `log_path`;
    `extra` arguments go last."""
    arguments = ["--log-level", "WARNING", *extra]
    if workers != 1:
        arguments += ["--workers", str(workers)]
    return ServerProcess(database_url=database_url, log_path=log_path, extra_args=arguments)


def settle(url: str | None) -> None:
    """Before a timed section: statistics current and dirty pages written,
    so that autovacuum or a checkpoint set off by the loading does not land
    inside the measurement (for the service and the floor alike)."""
    if url is None or not url.startswith("postgres"):
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


# A page of 1,000 messages can pass gRPC's default 4 MiB on a long context.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


@asynccontextmanager
async def aio_client(address: str) -> AsyncIterator[pb_grpc.AgentStateServiceStub]:
    """An asyncio stub on a channel of its own, closed afterwards."""
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as aio_channel:
        yield pb_grpc.AgentStateServiceStub(aio_channel)  # type: ignore[no-untyped-call]


def stub(address: str) -> Stub:
    return calls.make_stub(channel(address))


def health(grpc_channel: grpc.Channel) -> None:
    """One grpc.health.v1.Health/Check: the least a call can cost."""
    health_check(grpc_channel, "", timeout=calls.RPC_TIMEOUT_S)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU these processes used so far, from
    /proc/<pid>/stat (utime and stime, in clock ticks)."""
    ticks = 0
    for pid in pids:
        # The command name, field 2, may hold spaces: count fields after its ')'.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    return ticks / CLOCK_TICKS


def server_cpu_seconds(server: ServerProcess) -> float:
    """CPU the server (and its workers) used so far (`cpu_seconds`)."""
    return cpu_seconds(server.pids())


def timed(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def per_call(
    server: ServerProcess, operation: Callable[[], object], count: int
) -> tuple[float, float]:
    """`count` calls of `operation` one after another (after a few to warm
    up): their wall p50 and the server's CPU per call, in milliseconds."""
    for _ in range(min(20, count)):
        operation()
    cpu_before = server_cpu_seconds(server)
    samples = [timed(operation) for _ in range(count)]
    cpu = server_cpu_seconds(server) - cpu_before
    return median_ms(samples), cpu / count * 1000


def p99_ms(samples: list[float]) -> float:
    """The 99th percentile, interpolated between samples (with fewer than
    100 samples it lies between the two largest)."""
    if len(samples) < 2:
        return samples[0] * 1000
    return statistics.quantiles(samples, n=100, method="inclusive")[98] * 1000


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    with psycopg.connect(ADMIN_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    version = row[0] if row else "?"
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"PostgreSQL {version}, {platform.platform()}"
    )
