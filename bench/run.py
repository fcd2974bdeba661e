"""agent-state benchmark: the service over gRPC against the floor.

    make bench          # .venv/bin/python -m bench.run: full run, PostgreSQL then SQLite
    make bench-smoke    # .venv/bin/python -m bench.run --quick: small sizes, no targets

Every figure is a median over repetitions measured in this run; targets are
ratios between figures of the same run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import grpc
import psycopg

from agent_state._gen import agent_state_pb2 as pb
from agent_state._gen import agent_state_pb2_grpc as pb_grpc
from bench import floor
from bench.harness import ADMIN_URL, machine, median_ms, serve, settle, stub, timed
from tests.support import calls
from tests.support.calls import Stub, text_message
from tests.support.postgres import throwaway_database
from tests.support.server import ServerProcess, sqlite_url

BODY_TEXT = "x" * 200  # a typical short chat message
ENCODED_BODY = pb.MessageBody(text=pb.TextBody(text=BODY_TEXT)).SerializeToString()


@dataclass
class Sizes:
    turn_lengths: tuple[int, ...] = (10, 1_000, 10_000)
    turns: int = 30
    long_turns: int = 10
    range_lengths: tuple[int, int] = (100, 100_000)
    range_reps: int = 30
    spot_inserts: int = 2_000
    clients: int = 16
    throughput_seconds: float = 5.0
    snapshot_turns: int = 1_000
    memory_seconds: float = 10.0


QUICK = Sizes(
    turn_lengths=(10, 200),
    turns=5,
    long_turns=3,
    range_lengths=(100, 1_000),
    range_reps=5,
    spot_inserts=100,
    clients=4,
    throughput_seconds=0.5,
    snapshot_turns=20,
    memory_seconds=1.0,
)


@dataclass
class Report:
    """One backend's figures. Targets are judged on PostgreSQL only; the
    SQLite run reports the same ratios for information."""

    backend: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, name: str, ours: str, floor_or_base: str, ratio: float, target: str) -> None:
        check = ""
        if target:
            limit = float(target.lstrip("<>="))
            ok = ratio <= limit if target.startswith("<") else ratio >= limit
            if self.backend != "postgresql":
                check = "(reported)"
            else:
                check = "ok" if ok else "MISSED"
                if not ok:
                    self.failures.append(f"{name}: ratio {ratio:.2f} (target {target})")
        self.rows.append((name, f"{ours} | {floor_or_base}", f"{ratio:.2f}", f"{target} {check}"))

    def note(self, name: str, value: str) -> None:
        self.rows.append((name, value, "", ""))

    def print(self) -> None:
        print(f"\n## {self.backend}\n")
        print("| measure | agent-state \\| floor or base | ratio | target |")
        print("|---|---|---|---|")
        for name, figures, ratio, target in self.rows:
            print(f"| {name} | {figures} | {ratio} | {target} |")


def append(client: Stub, conversation: str, count: int) -> list[str]:
    """`count` typical messages, in as few calls as the batch limit allows; their ids."""
    return calls.append_in_batches(client, conversation, [text_message(BODY_TEXT)] * count)


def read_all(client: Stub, conversation: str) -> int:
    """Read the whole conversation in pages of 1000, as an agent reads its context."""
    pages = calls.list_pages(client, conversation, page_size=calls.MAX_PAGE_SIZE)
    return sum(len(page.messages) for page in pages)


# -- 1. agent turn -------------------------------------------------------------


def agent_turn(report: Report, address: str, url: str | None, sizes: Sizes) -> None:
    client = stub(address)
    floor_conn = psycopg.connect(url, autocommit=True) if url else None
    for length in sizes.turn_lengths:
        conversation = str(uuid.uuid4())
        append(client, conversation, length)
        reps = sizes.long_turns if length >= 10_000 else sizes.turns
        settle(url)

        def turn(conversation: str = conversation) -> None:
            append(client, conversation, 1)
            read_all(client, conversation)
            append(client, conversation, 2)

        ours = median_ms([timed(turn) for _ in range(reps)])
        if floor_conn is None:
            report.note(f"agent turn, L={length}", f"{ours:.2f} ms")
            continue
        floor_id = uuid.uuid4()
        for start in range(0, length, 1000):
            floor.append(floor_conn, floor_id, [ENCODED_BODY] * min(1000, length - start))
        settle(url)
        turn_of_floor = partial(floor_turn, floor_conn, floor_id)
        base = median_ms([timed(turn_of_floor) for _ in range(reps)])
        report.add(
            f"agent turn, L={length}", f"{ours:.2f} ms", f"{base:.2f} ms", ours / base, "<=2"
        )
    if floor_conn is not None:
        floor_conn.close()


def floor_turn(conn: psycopg.Connection, conversation: uuid.UUID) -> None:
    floor.append(conn, conversation, [ENCODED_BODY])
    floor.read_all(conn, conversation)
    floor.append(conn, conversation, [ENCODED_BODY] * 2)


# -- 2. range operations -------------------------------------------------------


def range_operations(report: Report, address: str, url: str | None, sizes: Sizes) -> None:
    client = stub(address)
    results: dict[str, list[float]] = {}
    for length in sizes.range_lengths:
        conversation = str(uuid.uuid4())
        ids = append(client, conversation, length)
        settle(url)
        replace_s, delete_s, summary_s = [], [], []
        for rep in range(sizes.range_reps):
            # Work in the middle; keep the length steady by appending back.
            m = len(ids) // 2 - 30 + (rep % 5)
            spare = append(client, conversation, 1)[0]
            replace_s.append(
                timed(
                    partial(
                        calls.replace,
                        client,
                        conversation,
                        from_id=ids[m],
                        to_id=ids[m + 9],
                        new_ids=[spare],
                    )
                )
            )
            ids[m : m + 10] = [spare]
            delete_s.append(
                timed(
                    partial(
                        calls.delete, client, conversation, from_id=ids[m + 1], to_id=ids[m + 10]
                    )
                )
            )
            del ids[m + 1 : m + 11]
            summary = append(client, conversation, 1)[0]
            summary_s.append(
                timed(
                    partial(
                        calls.replace,
                        client,
                        conversation,
                        from_id=ids[m + 1],
                        to_id=ids[m + 50],
                        new_ids=[summary],
                    )
                )
            )
            ids[m + 1 : m + 51] = [summary]
            ids += append(client, conversation, 68)  # back to the same length
        results[f"replace 10, L={length}"] = replace_s
        results[f"delete 10, L={length}"] = delete_s
        results[f"summarise 50, L={length}"] = summary_s
    short, long = sizes.range_lengths
    for operation in ("replace 10", "delete 10", "summarise 50"):
        base = median_ms(results[f"{operation}, L={short}"])
        ours = median_ms(results[f"{operation}, L={long}"])
        report.add(
            f"{operation}: L={long} vs L={short}",
            f"{ours:.2f} ms",
            f"{base:.2f} ms",
            ours / base,
            "<=1.3",
        )


# -- 3. inserting at one spot --------------------------------------------------


def one_spot(report: Report, address: str, sizes: Sizes) -> None:
    client = stub(address)
    conversation = str(uuid.uuid4())
    left, right = append(client, conversation, 2)
    inserted: list[str] = []
    samples: list[float] = []
    for _ in range(sizes.spot_inserts):
        new = append(client, conversation, 1)[0]
        samples.append(
            timed(partial(calls.replace, client, conversation, from_id=left, new_ids=[new]))
        )
        inserted.append(new)
    window = max(1, sizes.spot_inserts // 10)
    first = sum(samples[:window]) * 1000
    last = sum(samples[-window:]) * 1000
    exact = calls.all_ids(client, conversation) == [left, *reversed(inserted), right]
    if not exact:
        report.failures.append(f"{report.backend}: ordering wrong after inserts at one spot")
    report.add(
        f"{sizes.spot_inserts} inserts at one spot: last {window} vs first {window}"
        f" (ordering {'exact' if exact else 'WRONG'})",
        f"{last:.1f} ms",
        f"{first:.1f} ms",
        last / first,
        "<=2",
    )


# -- 4. throughput -------------------------------------------------------------


async def _ours_throughput(address: str, clients: int, batch: int, seconds: float) -> float:
    channel = grpc.aio.insecure_channel(address)
    client: pb_grpc.AgentStateServiceStub = pb_grpc.AgentStateServiceStub(channel)  # type: ignore[no-untyped-call]
    messages = [text_message(BODY_TEXT)] * batch
    stop_at = time.perf_counter() + seconds
    counts = [0] * clients

    async def worker(index: int) -> None:
        conversation = str(uuid.uuid4())
        while time.perf_counter() < stop_at:
            await client.AppendConversationMessages(
                pb.AppendConversationMessagesRequest(
                    conversation_id=conversation, messages=messages
                )
            )
            counts[index] += batch

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    await channel.close()
    return sum(counts) / elapsed


async def _floor_throughput(url: str, clients: int, batch: int, seconds: float) -> float:
    connections = [
        await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(clients)
    ]
    bodies = [ENCODED_BODY] * batch
    stop_at = time.perf_counter() + seconds
    counts = [0] * clients

    async def worker(index: int) -> None:
        conversation = uuid.uuid4()
        while time.perf_counter() < stop_at:
            await floor.append_async(connections[index], conversation, bodies)
            counts[index] += batch

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    for conn in connections:
        await conn.close()
    return sum(counts) / elapsed


def throughput(report: Report, address: str, url: str | None, sizes: Sizes) -> None:
    for batch in (1, 50):
        ours = asyncio.run(
            _ours_throughput(address, sizes.clients, batch, sizes.throughput_seconds)
        )
        if url is None:
            report.note(f"throughput, {sizes.clients} clients, batch {batch}", f"{ours:,.0f} msg/s")
            continue
        base = asyncio.run(_floor_throughput(url, sizes.clients, batch, sizes.throughput_seconds))
        report.add(
            f"throughput, {sizes.clients} clients, batch {batch}",
            f"{ours:,.0f} msg/s",
            f"{base:,.0f} msg/s",
            ours / base,
            ">=0.5",
        )


# -- 6. both cores -------------------------------------------------------------


async def _turns_per_second(address: str, clients: int, seconds: float) -> float:
    channel = grpc.aio.insecure_channel(address)
    client: pb_grpc.AgentStateServiceStub = pb_grpc.AgentStateServiceStub(channel)  # type: ignore[no-untyped-call]
    one, two = [text_message(BODY_TEXT)], [text_message(BODY_TEXT)] * 2
    turns = [0] * clients

    async def worker(index: int) -> None:
        conversation = str(uuid.uuid4())
        await client.AppendConversationMessages(
            pb.AppendConversationMessagesRequest(conversation_id=conversation, messages=two * 5)
        )
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            await client.AppendConversationMessages(
                pb.AppendConversationMessagesRequest(conversation_id=conversation, messages=one)
            )
            await client.ListConversationMessages(
                pb.ListConversationMessagesRequest(conversation_id=conversation, page_size=1000)
            )
            await client.AppendConversationMessages(
                pb.AppendConversationMessagesRequest(conversation_id=conversation, messages=two)
            )
            turns[index] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    await channel.close()
    return sum(turns) / elapsed


def both_cores(report: Report, url: str, sizes: Sizes, log_dir: Path) -> None:
    rates = {}
    for workers in (1, 2):
        log_path = log_dir / f"server-{report.backend}-{workers}-workers.log"
        with serve(url, log_path, workers=workers) as server:
            rates[workers] = asyncio.run(
                _turns_per_second(server.address, sizes.clients, sizes.throughput_seconds)
            )
    report.add(
        f"turns per second, {sizes.clients} clients: 2 workers vs 1",
        f"{rates[2]:,.0f}/s",
        f"{rates[1]:,.0f}/s",
        rates[2] / rates[1],
        ">=1.6",
    )


# -- 5. snapshots --------------------------------------------------------------


def snapshots(report: Report, address: str, url: str | None, sizes: Sizes) -> None:
    client = stub(address)
    conversation = str(uuid.uuid4())
    ids: list[str] = []
    items = 0
    for _ in range(sizes.snapshot_turns):
        ids += append(client, conversation, 2)
        client.CreateSnapshot(
            pb.CreateSnapshotRequest(conversation_id=conversation, message_ids=ids)
        )
        items += len(ids)
    if url is not None:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT pg_total_relation_size('snapshots'),"
                " pg_total_relation_size('snapshot_messages'),"
                " pg_total_relation_size('snapshot_bodies'),"
                " (SELECT count(*) FROM snapshot_bodies),"
                " (SELECT count(DISTINCT body_sha256) FROM messages)"
            ).fetchone()
        assert row is not None
        item_bytes, frozen_bytes, body_bytes, bodies, distinct = row
        report.note(
            f"snapshot storage, {sizes.snapshot_turns} turns ({items:,} items)",
            f"{(item_bytes + frozen_bytes + body_bytes) / items:.1f} bytes per item "
            f"(snapshots {item_bytes / items:.1f}, frozen messages {frozen_bytes:,} B, "
            f"bodies {body_bytes:,} B); {bodies} bodies stored for {distinct} distinct",
        )
    thousand = ids[:1000]
    settle(url)
    create = [
        timed(
            lambda: client.CreateSnapshot(
                pb.CreateSnapshotRequest(conversation_id=conversation, message_ids=thousand)
            )
        )
        for _ in range(10)
    ]
    read = [
        timed(
            lambda: client.ListConversationMessages(
                pb.ListConversationMessagesRequest(conversation_id=conversation, page_size=1000)
            )
        )
        for _ in range(10)
    ]
    report.add(
        f"CreateSnapshot of {len(thousand)} ids vs reading them",
        f"{median_ms(create):.2f} ms",
        f"{median_ms(read):.2f} ms",
        median_ms(create) / median_ms(read),
        "<=3",
    )


# -- 7. memory -----------------------------------------------------------------


def memory(report: Report, server: ServerProcess, sizes: Sizes) -> None:
    client = stub(server.address)
    conversations = [str(uuid.uuid4()) for _ in range(3)]
    for conversation in conversations:
        append(client, conversation, 10_000 if sizes is not QUICK else 1_000)
    peak = server.rss_bytes()
    stop_at = time.perf_counter() + sizes.memory_seconds
    while time.perf_counter() < stop_at:
        for conversation in conversations:
            read_all(client, conversation)
            peak = max(peak, server.rss_bytes())
    report.add(
        "server RSS while reading 10,000-message conversations",
        f"{peak / 2**20:.0f} MB",
        "300 MB",
        peak / (300 * 2**20),
        "<=1",
    )


def run_backend(backend: str, sizes: Sizes, tmp: Path) -> Report:
    report = Report(backend)
    with contextlib.ExitStack() as cleanup:
        floor_url: str | None = None
        if backend == "postgresql":
            url = floor_url = cleanup.enter_context(
                throwaway_database(ADMIN_URL, "agent_state_bench")
            )
            floor.setup(floor_url)
        else:
            url = sqlite_url(tmp / f"bench-{uuid.uuid4().hex[:6]}.db")
        with serve(url, tmp / f"server-{backend}.log") as server:
            steps: list[tuple[str, Callable[[], None]]] = [
                ("agent turn", lambda: agent_turn(report, server.address, floor_url, sizes)),
                (
                    "range operations",
                    lambda: range_operations(report, server.address, floor_url, sizes),
                ),
                ("inserts at one spot", lambda: one_spot(report, server.address, sizes)),
                ("throughput", lambda: throughput(report, server.address, floor_url, sizes)),
                ("snapshots", lambda: snapshots(report, server.address, floor_url, sizes)),
                ("memory", lambda: memory(report, server, sizes)),
            ]
            for name, step in steps:
                started = time.perf_counter()
                step()
                print(f"[{backend}] {name}: {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        both_cores(report, url, sizes, tmp)
        print(f"[{backend}] both cores: {time.perf_counter() - started:.1f} s", flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes; targets not enforced")
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    tmp = Path("build/bench")
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    started = time.perf_counter()
    reports = [run_backend(backend, sizes, tmp.resolve()) for backend in backends]
    for report in reports:
        report.print()
    print(f"\ntotal time: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([report.__dict__ for report in reports], indent=2))
    failures = [failure for report in reports for failure in report.failures]
    if failures and not args.quick:
        print("\ntargets missed:\n" + "\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
