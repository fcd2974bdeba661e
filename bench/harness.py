"""What every workload needs: a real server process, a fresh database, a
floor table, timing helpers."""

from __future__ import annotations

import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg
from grpc_health.v1 import health_pb2

from agent_state._gen import agent_state_pb2 as pb
from agent_state._gen import agent_state_pb2_grpc as pb_grpc

ADMIN_URL = os.environ.get(
    "AGENT_STATE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database for one run, dropped afterwards."""
    name = f"agent_state_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Server:
    """`agent-state serve` as a child process."""

    database_url: str
    workers: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
        command = [
            sys.executable, "-m", "agent_state", "serve",
            "--grpc-address", self.address, "--database-url", self.database_url,
            "--log-level", "WARNING",
        ]  # fmt: skip
        if self.workers != 1:
            command += ["--workers", str(self.workers)]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(self.address) as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            while True:
                try:
                    status = check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start ({self.address})")
                time.sleep(0.1)

    def pids(self) -> list[int]:
        """The server process and its worker processes."""
        assert self.process is not None
        found = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            found += [int(pid) for pid in children.read_text().split()]
        return found

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def settle(url: str | None) -> None:
    """Before a timed section: statistics current and dirty pages written,
    so that autovacuum or a checkpoint set off by the loading does not land
    inside the measurement (for the service and the floor alike)."""
    if url is None or not url.startswith("postgres"):
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


def stub(address: str) -> pb_grpc.AgentStateServiceStub:
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    )
    client: pb_grpc.AgentStateServiceStub = pb_grpc.AgentStateServiceStub(channel)  # type: ignore[no-untyped-call]
    return client


def text_input(text: str, role: int = pb.ROLE_USER, kind: str = "") -> pb.AppendMessageInput:
    return pb.AppendMessageInput(
        role=role,  # type: ignore[arg-type]
        kind=kind,
        body=pb.MessageBody(text=pb.TextBody(text=text)),
    )


def timed(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


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
