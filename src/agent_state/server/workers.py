"""`serve --workers N`: N server processes on one port.

gRPC binds with SO_REUSEPORT on Linux, so the kernel spreads connections
over the workers and each one uses its own core. The parent migrates once,
starts the workers with the same settings (through their environment),
forwards SIGTERM and SIGINT so they drain, and exits with the first
failure's code. A worker that dies stops the others: the supervisor of the
whole service (systemd, Kubernetes) is the one to restart it, with a clean
slate.
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
    workers = [subprocess.Popen(command, env=environment) for _ in range(settings.workers)]
    log.info("started %d workers on %s", len(workers), settings.grpc_address)
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while any(worker.poll() is None for worker in workers):
        for worker in workers:
            status = worker.poll()
            if status is not None and status != 0 and code == 0:
                code = status if status > 0 else 1
                if not stopping:
                    log.error("worker %d exited with %d; stopping the others", worker.pid, status)
                    forward(signal.SIGTERM, None)
        time.sleep(0.1)
    for worker in workers:
        if worker.returncode not in (0, None) and code == 0:
            code = worker.returncode if worker.returncode > 0 else 1
    return code
