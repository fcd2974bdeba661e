"""`serve --workers N`: N processes on one port, started and stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from tests.e2e.helpers import new_id
from tests.support import calls
from tests.support.calls import text_message
from tests.support.server import ServerProcess


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def _start(url: str, tmp_path: Path, name: str) -> ServerProcess:
    return ServerProcess(
        database_url=url, log_path=tmp_path / name, extra_args=["--workers", "2"]
    ).start_ready()


def test_workers_serve_one_port_and_drain_together(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    server = _start(make_database_url(), tmp_path, "workers.log")
    try:
        assert server.process is not None
        workers = server.pids()[1:]
        assert len(workers) == 2, server.describe()
        conversation = new_id()
        for _ in range(8):  # fresh connections, spread over the workers by the kernel
            with grpc.insecure_channel(
                server.address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                calls.append(calls.make_stub(channel), conversation, [text_message("hello")])
        with grpc.insecure_channel(server.address) as channel:
            assert calls.get(calls.make_stub(channel), conversation).message_count == 8
        code = server.terminate(timeout=20)
    finally:
        server.terminate()
    assert code == 0, server.describe()
    assert not any(_alive(pid) for pid in workers)


def test_a_dying_worker_stops_the_service(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    server = _start(make_database_url(), tmp_path, "dying.log")
    try:
        assert server.process is not None
        first, second = server.pids()[1:]
        os.kill(first, signal.SIGKILL)
        code = server.process.wait(timeout=20)
    finally:
        server.terminate()
    assert code != 0, server.describe()
    deadline = time.monotonic() + 10
    while _alive(second) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(second)


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "agent_state", "serve", "--workers", "2",
            "--grpc-address", "127.0.0.1:0", "--sqlite-path", str(tmp_path / "x.db"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "port 0" in result.stderr


def test_a_stop_while_workers_start_is_clean(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    server = ServerProcess(
        database_url=make_database_url(),
        log_path=tmp_path / "early.log",
        extra_args=["--workers", "2"],
    ).start()
    try:
        assert server.process is not None
        deadline = time.monotonic() + 20
        while len(server.pids()[1:]) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.pids()[1:]) == 2, server.describe()
        code = server.terminate(timeout=20)  # the workers are still starting
    finally:
        server.terminate()
    assert code == 0, server.describe()
