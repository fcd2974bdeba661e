"""`serve --workers N`: N server processes on one port.

gRPC binds with SO_REUSEPORT on Linux, so the kernel spreads connections
over the workers and each one uses its own core. The parent migrates once,
starts the workers with the same settings (through their environment),
forwards SIGTERM and SIGINT so they drain, and exits with the first
failure's code. A worker that dies stops the others: the supervisor of the
whole service (systemd, Kubernetes) is the one to restart it, with a clean
slate. Worker i serves its metrics on the metrics port + i.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from ..config import Settings, setting_variables

log = logging.getLogger("agent_state.workers")


def run_workers(settings: Settings) -> int:
    environment = {
        name: value for name, value in os.environ.items() if name not in setting_variables()
    }
    environment.update(settings.model_copy(update={"workers": 1}).environment())
    environment["AGENT_STATE_MIGRATE_ON_START"] = "false"
    command = [sys.executable, "-m", "agent_state", "serve"]
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    # Handlers first: a stop must reach every worker that was started.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(settings.workers):
        if stopping:
            break
        if settings.metrics_address:
            # One metrics port per worker: port, port + 1, ...
            host, _, port = settings.metrics_address.rpartition(":")
            environment["AGENT_STATE_METRICS_ADDRESS"] = f"{host}:{int(port) + index}"
        worker = subprocess.Popen(command, env=environment)
        workers.append(worker)
        if stopping:
            # The stop came while this one was being started, so it may
            # have missed it (a second signal is harmless).
            worker.send_signal(signal.SIGTERM)
    log.info("started %d workers on %s", len(workers), settings.grpc_address)
    code = 0
    while True:
        running = False
        for worker in workers:
            status = worker.poll()
            if status is None:
                running = True
            elif status != 0 and code == 0 and not _stopped_while_starting(status, stopping):
                code = status if status > 0 else 1
                if not stopping:
                    log.error("worker %d exited with %d; stopping the others", worker.pid, status)
                    forward(signal.SIGTERM, None)
        if not running:
            return code
        time.sleep(0.1)


def _stopped_while_starting(status: int, stopping: bool) -> bool:
    """A worker killed by the stop signal we forwarded had not installed its
    handler yet, so it was still starting and had no calls to drain."""
    return stopping and -status in (signal.SIGTERM, signal.SIGINT)
