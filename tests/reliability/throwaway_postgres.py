"""A private PostgreSQL cluster for tests that stop, kill and restart it.

The fault tests must never touch the machine's shared server (port 5432):
they crash and restart the database under the service. So each
`ThrowawayPostgres` runs `initdb` and then the `postgres` server from the
installed binaries in a temporary directory of its own, listening on a free
loopback port with its unix socket inside that directory, with fsync on
(the durability tests count on commits having reached the disk) and a small
shared_buffers.

The postmaster is a direct child of the test process (what `pg_ctl start`
runs, minus pg_ctl's detaching): here PID 1 does not reap orphans, so a
postmaster started by pg_ctl stays a zombie once stopped or killed, and
its PID in postmaster.pid then blocks every restart. As our child it is
reaped, and signals give pg_ctl's shutdown modes (SIGINT: fast, SIGQUIT:
immediate).

initdb and postgres refuse to run as root, and the tests run as root on the
CI machines: then they run as the `postgres` OS user, which owns the
directory. As a normal user they run directly.

Missing binaries raise `PostgresUnavailable` with what was searched: the
tests that use this fail on it, never skip (CI has the same machine).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psycopg

from tests.support.postgres import create_database
from tests.support.server import free_port

# The machine's shared server: never ours to use, stop or kill.
SHARED_PORT = 5432
INITDB_TIMEOUT_S = 120
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
KILL_TIMEOUT_S = 10.0
SERVER_USER = "postgres"
REQUIRED_BINARIES = ("initdb", "postgres")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the cluster cannot start."""


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: the newest version first.
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path:
    """The directory holding initdb and postgres.

    AGENT_STATE_PG_BINDIR, when set, is the only place looked at.
    Otherwise `pg_config --bindir`; then /usr/lib/postgresql/*/bin (Debian
    puts the server there, off PATH); then wherever `initdb` is on PATH.
    """
    candidates: list[Path] = []
    if override := os.environ.get("AGENT_STATE_PG_BINDIR"):
        candidates.append(Path(override))
    elif pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    if not override:
        candidates += sorted(
            Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True
        )
        if initdb := shutil.which("initdb"):
            candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if all((candidate / name).is_file() for name in REQUIRED_BINARIES):
            return candidate
    searched = ", ".join(str(c) for c in candidates) or "nothing found"
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found; searched: "
        f"{searched}. Install the server (Debian: apt-get install postgresql) or set "
        "AGENT_STATE_PG_BINDIR to the directory holding them."
    )


def _process_group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies count as gone)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            return True
    return False


class ThrowawayPostgres:
    """One private cluster: `start`, `stop` (fast), `kill` (SIGKILL), `restart`, `url`."""

    def __init__(self, *, shared_buffers: str = "16MB", max_connections: int = 60) -> None:
        self.bindir = find_bindir()
        self.shared_buffers = shared_buffers
        self.max_connections = max_connections
        self.port = 0
        self._root: Path | None = None
        self._postmaster: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._run_as: pwd.struct_passwd | None = None
        self._setpriv = ""
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, and initdb refuses root: an OS user {SERVER_USER!r} "
                    "is needed to run the private PostgreSQL cluster"
                ) from None
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise PostgresUnavailable(
                    "running as root: setpriv (util-linux) is needed to run PostgreSQL "
                    f"as {SERVER_USER!r}"
                )
            self._setpriv = setpriv
        atexit.register(self.close)

    # -- paths ------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("start() first")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{dbname}"

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except (OSError, RuntimeError):
            return ""

    # -- running the server's binaries --------------------------------------

    def _popen(self, binary: str, *args: str, **options: Any) -> subprocess.Popen[bytes]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "LC_"))}
        env["LC_ALL"] = "C"
        command = [str(self.bindir / binary), *args]
        if self._run_as is not None:
            # setpriv drops root (supplementary groups included) and execs
            # the binary in place, so the PID is the server's. Not Popen's
            # user=/group=: those make Python fork() instead of vfork(), and
            # in a process with gRPC channels gRPC's fork handler then
            # crashes the child now and then (SIGSEGV before exec).
            env["HOME"] = self._run_as.pw_dir
            command = [
                self._setpriv,
                f"--reuid={self._run_as.pw_uid}",
                f"--regid={self._run_as.pw_gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        return subprocess.Popen(
            command, cwd=self.root, env=env, stdin=subprocess.DEVNULL, **options
        )

    def _init(self) -> None:
        # Under /tmp, not pytest's tmp_path: that is private to root, and the
        # server user must reach its directory.
        self._root = Path(tempfile.mkdtemp(prefix="agent-state-pg-"))
        self.socket_dir.mkdir()
        if self._run_as is not None:
            for path in (self.root, self.socket_dir):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        # --no-sync skips only initdb's own final fsync of the new files;
        # the server runs with fsync on.
        initdb = self._popen(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = initdb.communicate(timeout=INITDB_TIMEOUT_S)
        if initdb.returncode != 0:
            raise PostgresUnavailable(
                f"initdb failed (exit {initdb.returncode}): {output.decode(errors='replace')}"
            )

    def _write_config(self) -> None:
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            # Durability is what the crash tests check: keep every guard on.
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "shared_buffers": self.shared_buffers,
            "max_connections": str(self.max_connections),
            "log_line_prefix": "'%m [%p] '",
        }
        # Appended: the last occurrence of a setting wins, so a new port on
        # a retry overrides the previous one.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# agent-state throwaway cluster\n")
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    # -- life cycle -------------------------------------------------------

    def start(self) -> ThrowawayPostgres:
        """initdb on the first call, then start the server and wait until it
        accepts connections (after crash recovery, if it was killed)."""
        if self._root is None:
            self._init()
        if self.running():
            return self
        # A new port only on the first start: on a restart, clients (the
        # server under test) still use the old one.
        attempts = 3 if not self.port else 1
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = free_port()
                assert self.port != SHARED_PORT
                self._write_config()
            if self._log is None:
                self._log = self.log_path.open("ab")
            # Its own session: the backends share the postmaster's process
            # group, so kill() can take them all down at once.
            self._postmaster = self._popen(
                "postgres",
                "-D",
                str(self.data_dir),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_accepting():
                return self
            # Another process took the port between free_port() and the bind.
            if "Address already in use" not in self.log_tail() or attempt == attempts - 1:
                break
        code = None if self._postmaster is None else self._postmaster.poll()
        raise PostgresUnavailable(
            f"the private PostgreSQL did not start (exit code {code}); server log:\n"
            f"{self.log_tail()}"
        )

    def _wait_accepting(self) -> bool:
        """True once a connection succeeds; False if the postmaster exited."""
        postmaster = self._postmaster
        assert postmaster is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while postmaster.poll() is None:
            try:
                psycopg.connect(self.url(), connect_timeout=5).close()
                return True
            except psycopg.OperationalError:
                # Starting up, or in crash recovery.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return False

    @property
    def postmaster_pid(self) -> int | None:
        return None if self._postmaster is None else self._postmaster.pid

    def running(self) -> bool:
        return self._postmaster is not None and self._postmaster.poll() is None

    def _shutdown(self, signum: signal.Signals, timeout: float) -> None:
        postmaster = self._postmaster
        if postmaster is None:
            return
        if postmaster.poll() is None:
            postmaster.send_signal(signum)
            try:
                postmaster.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._postmaster = None

    def stop(self) -> None:
        """Fast shutdown (pg_ctl stop -m fast): sessions are disconnected,
        open transactions rolled back, a checkpoint written."""
        self._shutdown(signal.SIGINT, STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once: a crash.

        Killing the whole process group (not the postmaster alone, whose
        orphaned backends would linger) is what a power cut looks like to
        the data directory; the next start runs crash recovery.
        """
        postmaster = self._postmaster
        if postmaster is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(postmaster.pid, signal.SIGKILL)
        postmaster.wait(timeout=KILL_TIMEOUT_S)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while _process_group_alive(postmaster.pid):
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"PostgreSQL's processes survived SIGKILL: {postmaster.pid}"
                )
            time.sleep(0.02)
        self._postmaster = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop at once (nothing here needs keeping) and remove the directory."""
        if self._root is None:
            return
        self._shutdown(signal.SIGQUIT, STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = None

    # -- databases ----------------------------------------------------------

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        return create_database(self.url(), name)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
