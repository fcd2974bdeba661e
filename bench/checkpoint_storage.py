"""What a LangGraph thread costs in PostgreSQL per step: AgentStateSaver
(agent-state's checkpoint store) beside langgraph-checkpoint-postgres's
PostgresSaver, on the same PostgreSQL server, in one run.

    python -m bench.checkpoint_storage [--steps 1000]

Each saver runs the same graph (tests/support/growing_chat.py: one
thread whose state is a message list that grows by one message of about
420 serialized bytes a step) in a throwaway database of its own, on the
server AGENT_STATE_BENCH_POSTGRES_URL names (default
postgresql://postgres@127.0.0.1:5432/postgres). agent-state runs as the
real server (`agent-state serve`, the tests' launcher), reached over
gRPC. Afterwards the script reports, per saver, the bytes its tables take
on disk (pg_total_relation_size: heap, indexes and TOAST) divided by the
steps, and the seconds the run took (wall time on this machine, for
orientation only). Nothing is asserted: the test of the same graph
(tests/client/test_langgraph.py) checks that each message is stored once.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver

from agent_state_client.integrations.langgraph import AgentStateSaver
from tests.support.growing_chat import growing_chat, run_config
from tests.support.postgres import throwaway_database
from tests.support.server import ServerProcess

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
AGENT_STATE_TABLES = (
    "checkpoint_threads",
    "checkpoints",
    "checkpoint_values",
    "checkpoint_blobs",
    "checkpoint_writes",
)
POSTGRES_SAVER_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


def table_bytes(url: str, tables: tuple[str, ...]) -> int:
    """What the tables take on disk, indexes and TOAST included."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) AS t",
            (list(tables),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def agent_state_figures(url: str, steps: int, logs: Path) -> tuple[int, float]:
    with (
        ServerProcess(url, logs / "checkpoint-storage-server.log") as server,
        AgentStateSaver.connect(server.address) as saver,
    ):
        graph = growing_chat(saver, steps)
        seconds = timed(
            lambda: graph.invoke({"messages": []}, run_config(str(uuid.uuid4()), steps))
        )
    return table_bytes(url, AGENT_STATE_TABLES), seconds


def postgres_saver_figures(url: str, steps: int) -> tuple[int, float]:
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        graph = growing_chat(saver, steps)
        seconds = timed(
            lambda: graph.invoke({"messages": []}, run_config(str(uuid.uuid4()), steps))
        )
    return table_bytes(url, POSTGRES_SAVER_TABLES), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    steps: int = parser.parse_args().steps
    admin_url = os.environ.get("AGENT_STATE_BENCH_POSTGRES_URL", DEFAULT_URL)
    logs = Path("build/bench")
    logs.mkdir(parents=True, exist_ok=True)
    with (
        throwaway_database(admin_url, "bench_agent_state") as ours,
        throwaway_database(admin_url, "bench_pg_saver") as theirs,
    ):
        our_bytes, our_seconds = agent_state_figures(ours, steps, logs)
        their_bytes, their_seconds = postgres_saver_figures(theirs, steps)
    print(f"{steps} steps of a growing message list, on the same PostgreSQL:")
    for name, stored, seconds in (
        ("AgentStateSaver (agent-state)", our_bytes, our_seconds),
        ("PostgresSaver (langgraph-checkpoint-postgres)", their_bytes, their_seconds),
    ):
        print(
            f"  {name:48s} {stored / steps:>10,.0f} bytes per step"
            f"  ({stored / 1e6:,.1f} MB in all, run {seconds:.1f} s)"
        )
    print(f"  ratio: {their_bytes / our_bytes:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
