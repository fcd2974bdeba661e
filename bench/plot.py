"""The plot of the agent turn: p50 latency against conversation length,
log-log, for the service on each backend, its floors and the peer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import TurnFigures


def turn_latency(turns: dict[str, list[TurnFigures]], path: Path) -> None:
    """Write the plot to `path` (PNG); `turns` maps a backend to its figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=110)

    def line(figures: list[TurnFigures], values: Sequence[float], label: str, style: str) -> None:
        axes.plot([f.length for f in figures], values, style, label=label)

    postgres = turns.get("postgresql", [])
    sqlite = turns.get("sqlite", [])
    if postgres:
        line(postgres, [f.p50 for f in postgres], "agent-state on PostgreSQL", "o-C0")
        in_blocks = [f.block_p50 for f in postgres]
        line(postgres, in_blocks, "agent-state on PostgreSQL, in blocks beside the peer's", "o:C0")
    if sqlite:
        line(sqlite, [f.p50 for f in sqlite], "agent-state on SQLite", "s-C1")
    if bounced := turns.get("postgresql via pgbouncer", []):
        line(bounced, [f.p50 for f in bounced], "agent-state on PostgreSQL via PgBouncer", "o--C4")
    if postgres:
        adjusted = [f.adjusted_floor for f in postgres]
        line(postgres, adjusted, "SQL floor + calls x call floor", "^--C2")
        line(postgres, [f.floor_p50 for f in postgres], "SQL floor (psycopg)", "^:C2")
    if sqlite:
        adjusted = [f.adjusted_floor for f in sqlite]
        line(sqlite, adjusted, "SQLite floor + calls x call floor", "v--C1")
        line(sqlite, [f.floor_p50 for f in sqlite], "SQLite floor (sqlite3)", "v:C1")
    with_peer = [f for f in postgres if f.peer_p50 is not None]
    if with_peer:
        peer = [f.peer_p50 or 0.0 for f in with_peer]
        line(with_peer, peer, "peer: SQLAlchemySession (asyncpg), in blocks", "D-C3")
    with_adapter = [f for f in postgres if f.adapter_p50 is not None]
    if with_adapter:
        adapter = [f.adapter_p50 or 0.0 for f in with_adapter]
        line(
            with_adapter,
            adapter,
            "agent-state via AgentStateSession (SDK adapter), in blocks",
            "x-.C0",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("conversation length L (messages before the turn)")
    axes.set_ylabel("turn latency p50 (ms)")
    axes.set_title("Agent turn: append 1, read all in pages of 1000, append 2 (p50)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
