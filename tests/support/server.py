"""The server under test as a separate process (black box), for the tests
and the benchmark alike.

The server is run exactly the way an operator runs it:
``python -m agent_state serve --grpc-address HOST:PORT --database-url URL``
(or with the GRPC_ADDRESS / DATABASE_URL environment variables). Readiness is
the standard gRPC health service reporting SERVING for the empty service name.
Its output goes to a log file, read back by `ServerProcess.describe` when a
test fails.

One launcher for the end-to-end, reliability and benchmark runs, in
tests/support so that all of them import it as ``tests.support.server`` (the
benchmark runs as ``python -m bench.run`` from the repository root, where
``tests`` is a package); it needs neither pytest nor anything under bench/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sqlite_url(path: Path) -> str:
    """``sqlite:///`` followed by the absolute path of the database file."""
    return f"sqlite:///{path.resolve()}"


def run_agent_state(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m agent_state ARGS`` with output captured (so stdout is no
    TTY), in an environment holding no setting except those in `env`."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AGENT_STATE_") and name not in ("DATABASE_URL", "GRPC_ADDRESS")
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent_state", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        input=stdin,
    )


def health_check(
    channel: grpc.Channel, service: str, *, timeout: float
) -> health_pb2.HealthCheckResponse:
    """grpc.health.v1.Health/Check."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply: health_pb2.HealthCheckResponse = check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout
    )
    return reply


@dataclass
class ServerProcess:
    """One running server: its address, its process and its captured output.

    `start_ready` (or ``with ServerProcess(...) as server``) starts it and
    waits until it serves; `terminate` stops it.
    """

    database_url: str
    log_path: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # How wait_ready reaches a server that serves TLS.
    credentials: grpc.ChannelCredentials | None = None
    process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, via_environment: bool = False) -> ServerProcess:
        env = dict(os.environ)
        env.pop("GRPC_ADDRESS", None)
        env.pop("DATABASE_URL", None)
        command = [sys.executable, "-m", "agent_state", "serve"]
        if via_environment:
            env["GRPC_ADDRESS"] = self.address
            env["DATABASE_URL"] = self.database_url
        else:
            command += ["--grpc-address", self.address, "--database-url", self.database_url]
        command += self.extra_args
        env.update(self.env)
        self._log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        return self

    def start_ready(
        self, *, via_environment: bool = False, timeout: float = READY_TIMEOUT_S
    ) -> ServerProcess:
        """`start`, then `wait_ready`; a server that does not get ready is stopped."""
        self.start(via_environment=via_environment)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.terminate()
            raise
        return self

    def __enter__(self) -> ServerProcess:
        return self.start_ready()

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def output(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        code = None if self.process is None else self.process.poll()
        return f"server at {self.address} (exit code {code}); output:\n{self.output()[-8000:]}"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        last_error = "no health answer yet"
        channel = (
            grpc.insecure_channel(self.address)
            if self.credentials is None
            else grpc.secure_channel(self.address, self.credentials)
        )
        with channel:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited before it was ready: {self.describe()}")
                try:
                    reply = health_check(channel, "", timeout=1.0)
                except grpc.RpcError as exc:
                    last_error = f"{exc.code()}: {exc.details()}"
                else:
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last_error = f"health status {reply.status}"
                time.sleep(0.1)
        raise AssertionError(
            f"server not SERVING within {timeout:.0f} s ({last_error}): {self.describe()}"
        )

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then wait; returns the exit code, or None if it had to be killed."""
        if self.process is None:
            return None
        code: int | None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def pids(self) -> list[int]:
        """The server process and its worker processes."""
        assert self.process is not None, "start() first"
        found = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            found += [int(pid) for pid in children.read_text().split()]
        return found

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers together."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total
