"""Start and stop the server under test as a separate process (black box).

The server is run exactly the way an operator runs it:
``python -m agent_state serve --grpc-address HOST:PORT --database-url URL``
(or with the GRPC_ADDRESS / DATABASE_URL environment variables). Readiness is
the standard gRPC health service reporting SERVING for the empty service name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

import grpc
from grpc_health.v1 import health_pb2
from psycopg.conninfo import conninfo_to_dict

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


def postgres_url_from_conninfo(
    conninfo: str, *, host: str | None = None, port: int | None = None, password: str = ""
) -> str:
    """A ``postgresql://`` URL for a libpq conninfo string or URL, optionally re-targeted."""
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.get("user", "postgres")), safe="")
    auth = user + (":" + quote(password, safe="") if password else "")
    target_host = host or str(params.get("host", "127.0.0.1"))
    target_port = port or int(str(params.get("port", 5432)))
    dbname = quote(str(params.get("dbname", "postgres")), safe="")
    return f"postgresql://{auth}@{target_host}:{target_port}/{dbname}"


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
    """One running server: its address, its process and its captured output."""

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


class TcpProxy:
    """A TCP forwarder we can cut and restore, to make the database unreachable."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
