"""A PgBouncer in transaction mode in front of the test PostgreSQL, for the
tests and the benchmark: production PostgreSQL is usually reached through
one, and it hands each transaction whichever server connection is free, so
nothing may rely on a session (prepared statements, session settings,
session-level locks).

Debian's `pgbouncer` package provides the binary (CI installs it). It
refuses to run as root; started as root it switches to the `postgres`
user, so its files live in a directory that user can read.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.server import free_port

BINARY_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
READY_TIMEOUT_S = 10.0


def binary() -> str | None:
    """The pgbouncer executable, or None where it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in BINARY_CANDIDATES if os.access(path, os.X_OK)), None)


@dataclass
class PgBouncer:
    """One pgbouncer process pooling every database of the PostgreSQL at
    `upstream_url` in transaction mode; `url_for` re-targets a database URL
    at it."""

    upstream_url: str
    port: int = field(default_factory=free_port)
    pool_size: int = 20
    process: subprocess.Popen[bytes] | None = None
    _directory: Path | None = None

    def start(self) -> PgBouncer:
        executable = binary()
        if executable is None:
            raise FileNotFoundError("pgbouncer is not installed (Debian package pgbouncer)")
        upstream = urlsplit(self.upstream_url)
        self._directory = Path(tempfile.mkdtemp(prefix="agent-state-pgbouncer-"))
        config = self._directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={upstream.hostname or '127.0.0.1'} port={upstream.port or 5432}"
            f" user={upstream.username or 'postgres'}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            # Clients are the tests' own processes on loopback; the
            # upstream connection uses the user named above.
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\n"
            # Idle server connections go soon: the suite makes a database
            # per server under test, and pgbouncer's default (10 minutes)
            # kept enough of them open to reach PostgreSQL's 100 connections.
            "server_idle_timeout = 5\n"
            "server_reset_query =\n"
            "logfile =\n"
            "pidfile =\n",
            encoding="utf-8",
        )
        command = [executable, str(config)]
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self._directory, owner.pw_uid, owner.pw_gid)
            os.chown(config, owner.pw_uid, owner.pw_gid)
            command = [executable, "--user=postgres", str(config)]
        # The child keeps its own copy of the file descriptor.
        with (self._directory / "pgbouncer.log").open("wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"pgbouncer did not listen within {READY_TIMEOUT_S} s: {self.log()}")

    def url_for(self, database_url: str) -> str:
        """The same database, reached through this pgbouncer."""
        parts = urlsplit(database_url)
        user = parts.username or "postgres"
        return parts._replace(netloc=f"{user}@127.0.0.1:{self.port}").geturl()

    def log(self) -> str:
        if self._directory is None:
            return ""
        path = self._directory / "pgbouncer.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


@contextmanager
def running_pgbouncer(upstream_url: str) -> Iterator[PgBouncer]:
    """A started PgBouncer in front of `upstream_url`, stopped afterwards."""
    bouncer = PgBouncer(upstream_url).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
