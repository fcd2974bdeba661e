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
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import agent_state_pb2_grpc as pb_grpc
from bench import driver_floor, floor, floor_sqlite, peer, plot
from bench.adapter import AdapterTurns
from bench.harness import (
    ADMIN_URL,
    BODY_TEXT,
    aio_client,
    channel,
    health,
    machine,
    median_ms,
    p99_ms,
    per_call,
    serve,
    settle,
    stub,
    timed,
)
from tests.support import calls
from tests.support.calls import Stub, text_message
from tests.support.pgbouncer import binary as pgbouncer_binary
from tests.support.pgbouncer import running_pgbouncer
from tests.support.postgres import postgres_url_from_conninfo, throwaway_database
from tests.support.server import ServerProcess, sqlite_url

ONE = [text_message(BODY_TEXT)]
TWO = [text_message(BODY_TEXT)] * 2
ENCODED_BODY = pb.MessageBody(text=pb.TextBody(text=BODY_TEXT)).SerializeToString()


@dataclass
class Sizes:
    turn_lengths: tuple[int, ...] = (10, 1_000, 10_000)
    turns: int = 30
    long_turns: int = 10
    concurrent_turns: int = 8
    concurrent_long_turns: int = 3
    health_calls: int = 3_000
    rpc_calls: int = 1_000
    page_calls: int = 300
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
    concurrent_turns=2,
    concurrent_long_turns=2,
    health_calls=300,
    rpc_calls=100,
    page_calls=20,
    range_lengths=(100, 1_000),
    range_reps=5,
    spot_inserts=100,
    clients=4,
    throughput_seconds=0.5,
    snapshot_turns=20,
    memory_seconds=1.0,
)

# The targets of issue 12 (bench/README.md), judged on PostgreSQL. Targets
# 1-3 are expected to be missed until the service's overhead is cut.
ISSUE_TARGETS = {
    1: "turn p50 <= 1.5 x (SQL floor + calls x call floor)",
    2: "turn p50 below the SQLAlchemySession peer's",
    3: "server CPU per call <= 1.6 x health check's (page of 1,000: <= health + 1.5 ms)",
}


PEER_BLOCK = 5
"""Turns per block when the service's turns alternate with the peer's."""


@dataclass
class TurnFigures:
    """The agent turn at one length, on one backend (milliseconds)."""

    length: int
    calls: int  # gRPC calls per turn: 2 appends and the pages of the read
    p50: float
    p99: float
    concurrent_p99: float
    floor_p50: float  # the SQL floor (PostgreSQL) or the SQLite floor
    call_floor: float  # health check p50, same client and server, between the turns
    block_p50: float  # the same turns in blocks, alternating with the peer's blocks
    peer_p50: float | None = None
    peer_p99: float | None = None
    adapter_p50: float | None = None  # AgentStateSession's turns, in the same blocks

    @property
    def adjusted_floor(self) -> float:
        return self.floor_p50 + self.calls * self.call_floor

    @property
    def overhead(self) -> float:
        return self.p50 - self.adjusted_floor


@dataclass
class Report:
    """One backend's figures. Targets are judged on PostgreSQL (directly and
    through PgBouncer); the SQLite run reports the same ratios, against its
    own floor, for information."""

    backend: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    turns: list[TurnFigures] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        return self.backend.startswith("postgresql")

    @property
    def floor_name(self) -> str:
        return "SQL floor" if self.judged else "SQLite floor"

    def add(
        self,
        name: str,
        ours: str,
        floor_or_base: str,
        ratio: float,
        target: str,
        issue: int | None = None,
    ) -> None:
        check = ""
        if target:
            operator = target.rstrip("0123456789.")
            limit = float(target[len(operator) :])
            ok = {
                "<": ratio < limit,
                "<=": ratio <= limit,
                ">": ratio > limit,
                ">=": ratio >= limit,
            }[operator]
            if not self.judged:
                check = "(reported)"
            else:
                check = "ok" if ok else "MISSED"
                if not ok:
                    label = f"[issue 12 target {issue}] " if issue else ""
                    self.failures.append(
                        f"{label}{self.backend}, {name}: ratio {ratio:.2f} (target {target})"
                    )
            if issue:
                target = f"T{issue}: {target}"
        self.rows.append((name, f"{ours} | {floor_or_base}", f"{ratio:.2f}", f"{target} {check}"))

    def note(self, name: str, value: str) -> None:
        self.rows.append((name, value, "", ""))

    def print(self) -> None:
        print(f"\n## {self.backend}\n")
        print("| measure | agent-state \\| floor or base | ratio | target |")
        print("|---|---|---|---|")
        for name, figures, ratio, target in self.rows:
            print(f"| {name} | {figures} | {ratio} | {target} |")


class Floor:
    """The floor of one backend: the same work with the database's own
    client (bench/floor.py or bench/floor_sqlite.py), whose `append` and
    `page` take the connection first."""

    def __init__(self, dialect: ModuleType, conn: Any) -> None:
        self._dialect = dialect
        self.conn = conn

    def append(self, conversation: uuid.UUID, bodies: list[bytes]) -> None:
        self._dialect.append(self.conn, conversation, bodies)

    def page(self, conversation: uuid.UUID, size: int, after: int = 0) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._dialect.page(self.conn, conversation, after, size)
        return rows

    def read_all(self, conversation: uuid.UUID, page_size: int = 1000) -> int:
        """Every message, in keyset pages of `page_size`, as the service is
        read; how many."""
        after = count = 0
        while True:
            rows = self.page(conversation, page_size, after)
            count += len(rows)
            if len(rows) < page_size:
                return count
            after = rows[-1][0]

    def close(self) -> None:
        self.conn.close()


SIDE = ("-wal", "-shm")  # the files SQLite keeps beside a WAL database


def append(client: Stub, conversation: str, count: int) -> list[str]:
    """`count` typical messages, in as few calls as the batch limit allows; their ids."""
    return calls.append_in_batches(client, conversation, [text_message(BODY_TEXT)] * count)


def read_all(client: Stub, conversation: str) -> int:
    """Read the whole conversation in pages of 1000, as an agent reads its
    context; the number of calls it took."""
    return len(calls.list_pages(client, conversation, page_size=calls.MAX_PAGE_SIZE))


def load_floor(base: Floor, conversation: uuid.UUID, length: int) -> None:
    for start in range(0, length, 1000):
        base.append(conversation, [ENCODED_BODY] * min(1000, length - start))


# -- 0. the call floor and server CPU per call ---------------------------------


def call_costs(
    report: Report, server: ServerProcess, base: Floor, url: str | None, sizes: Sizes
) -> None:
    """The call floor (a health check), then each RPC of the agent turn:
    wall p50, the floor's time for the same work, the service's overhead
    (wall - floor - one call floor), and the server's CPU per call against
    the health check's."""
    conn = channel(server.address)
    client = calls.make_stub(conn)
    conversation = str(uuid.uuid4())
    append(client, conversation, 1_000)
    floor_id = uuid.uuid4()
    load_floor(base, floor_id, 1_000)
    settle(url)
    call_floor, health_cpu = per_call(server, partial(health, conn), sizes.health_calls)
    report.note(
        "call floor: grpc.health.v1.Health/Check",
        f"{call_floor:.3f} ms wall p50; server CPU {health_cpu:.3f} ms per call"
        f" ({sizes.health_calls} calls)",
    )
    one, two = [ENCODED_BODY], [ENCODED_BODY] * 2
    operations: list[tuple[str, Callable[[], object], Callable[[], object] | None, int]] = [
        ("GetConversation", partial(calls.get, client, conversation), None, sizes.rpc_calls),
        (
            "append 1 message",
            partial(append, client, conversation, 1),
            partial(base.append, floor_id, one),
            sizes.rpc_calls,
        ),
        (
            "page of 10",
            partial(calls.list_page, client, conversation, page_size=10),
            partial(base.page, floor_id, 10),
            sizes.rpc_calls,
        ),
        (
            "page of 1,000",
            partial(calls.list_page, client, conversation, page_size=1000),
            partial(base.page, floor_id, 1000),
            sizes.page_calls,
        ),
        (
            "append 2 messages",
            partial(append, client, conversation, 2),
            partial(base.append, floor_id, two),
            sizes.rpc_calls,
        ),
    ]
    for name, operation, floor_operation, count in operations:
        wall, cpu = per_call(server, operation, count)
        figures = f"{wall:.2f} ms wall p50"
        if floor_operation is not None:
            base_wall = median_ms([timed(floor_operation) for _ in range(count)])
            overhead = wall - base_wall - call_floor
            figures += (
                f"; {report.floor_name} {base_wall:.2f} ms; overhead {overhead:.2f} ms"
                f" ({overhead / wall:.0%})"
            )
        report.note(f"{name}: wall", figures)
        if name == "page of 1,000":
            allowed = health_cpu + 1.5
            report.add(
                f"server CPU per call, {name} vs health check + 1.5 ms",
                f"{cpu:.3f} ms",
                f"{allowed:.3f} ms",
                cpu / allowed,
                "<=1",
                issue=3,
            )
        elif name != "append 2 messages":
            report.add(
                f"server CPU per call, {name} vs health check",
                f"{cpu:.3f} ms",
                f"{health_cpu:.3f} ms",
                cpu / health_cpu,
                "<=1.6",
                issue=3,
            )
        else:
            report.note(
                f"server CPU per call, {name}",
                f"{cpu:.3f} ms ({cpu / health_cpu:.2f} x health check)",
            )
    conn.close()
    if url is not None:
        # T3's floor in this run: what one database round trip costs a
        # grpc.aio server on its own, with none of the service in it.
        bare_health, bare_read = driver_floor.one_row_read(url, sizes.health_calls)
        report.add(
            "server CPU per call of a bare grpc.aio server: a handler reading one row"
            " by key (psycopg pool) vs its health check (T3's floor)",
            f"{bare_read:.3f} ms",
            f"{bare_health:.3f} ms",
            bare_read / bare_health,
            "",
        )


# -- 1. agent turn -------------------------------------------------------------


def agent_turn(
    report: Report,
    server: ServerProcess,
    base: Floor,
    url: str | None,
    sizes: Sizes,
    peer_process: peer.Peer | None,
) -> None:
    """The turn (append 1, read everything in pages of 1000, append 2) at
    each length: p50 and p99 from one client, p99 from `sizes.clients`
    concurrent clients, against the floor plus the calls' own floor (health
    checks on the same channel, between the turns); then the same turns in
    blocks of PEER_BLOCK, one after another, alternating with the peer's
    and with the same turn through the SDK adapter (AgentStateSession)."""
    conn = channel(server.address)
    client = calls.make_stub(conn)
    with contextlib.ExitStack() as resources:
        # The SDK adapter's turns run in the blocks beside the peer's.
        adapter = (
            None if peer_process is None else resources.enter_context(AdapterTurns(server.address))
        )
        for length in sizes.turn_lengths:
            conversation = str(uuid.uuid4())
            append(client, conversation, length)
            reps = sizes.long_turns if length >= 10_000 else sizes.turns
            turn_calls: list[int] = []

            def turn(conversation: str = conversation, turn_calls: list[int] = turn_calls) -> None:
                append(client, conversation, 1)
                pages = read_all(client, conversation)
                append(client, conversation, 2)
                turn_calls.append(2 + pages)

            floor_id = uuid.uuid4()
            load_floor(base, floor_id, length)
            # Each takes a block's number of turns and returns their seconds.
            peer_turns = (
                None
                if peer_process is None
                else partial(peer_process.turns, peer_process.session(length))
            )
            adapter_turns = (
                None if adapter is None else partial(adapter.turns, adapter.session(length), length)
            )
            settle(url)
            # Interleaved, so that whatever else the machine does lands on all three.
            samples: list[float] = []
            floor_samples: list[float] = []
            health_samples: list[float] = []
            for _ in range(reps):
                samples.append(timed(turn))
                floor_samples.append(timed(partial(floor_turn, base, floor_id)))
                health_samples += [timed(partial(health, conn)) for _ in range(5)]
            block_samples, peer_samples, adapter_samples = in_blocks(
                turn, reps, peer_turns, adapter_turns
            )
            concurrent = concurrent_turns(server.address, length, sizes, url)
            figures = TurnFigures(
                length=length,
                calls=round(statistics.mean(turn_calls)),
                p50=median_ms(samples),
                p99=p99_ms(samples),
                concurrent_p99=p99_ms(concurrent),
                floor_p50=median_ms(floor_samples),
                call_floor=median_ms(health_samples),
                block_p50=median_ms(block_samples),
            )
            if peer_samples:
                figures.peer_p50 = median_ms(peer_samples)
                figures.peer_p99 = p99_ms(peer_samples)
            if adapter_samples:
                figures.adapter_p50 = median_ms(adapter_samples)
            report.turns.append(figures)
            report_turn(report, figures, sizes)
    conn.close()


def in_blocks(
    turn: Callable[[], None],
    reps: int,
    peer_turns: Callable[[int], list[float]] | None,
    adapter_turns: Callable[[int], list[float]] | None,
) -> tuple[list[float], list[float], list[float]]:
    """T2's samples (seconds): `reps` of the service's turns, of the peer's
    and of the SDK adapter's, each one after another as an agent runs them,
    in alternating blocks of PEER_BLOCK, so that the machine's drift over
    the run lands on all of them alike."""
    ours: list[float] = []
    peers: list[float] = []
    adapters: list[float] = []
    for start in range(0, reps, PEER_BLOCK):
        block = min(PEER_BLOCK, reps - start)
        ours += [timed(turn) for _ in range(block)]
        if peer_turns is not None:
            peers += peer_turns(block)
        if adapter_turns is not None:
            adapters += adapter_turns(block)
    return ours, peers, adapters


def report_turn(report: Report, turn: TurnFigures, sizes: Sizes) -> None:
    name = f"agent turn, L={turn.length:,}"
    report.note(
        name,
        f"p50 {turn.p50:.2f} ms, p99 {turn.p99:.2f} ms, p99 with {sizes.clients} clients"
        f" {turn.concurrent_p99:.2f} ms; {report.floor_name} {turn.floor_p50:.2f} ms"
        f" ({turn.p50 / turn.floor_p50:.1f}x); {turn.calls} calls x {turn.call_floor:.2f} ms;"
        f" overhead {turn.overhead:.2f} ms ({turn.overhead / turn.p50:.0%});"
        f" p50 in blocks {turn.block_p50:.2f} ms",
    )
    report.add(
        f"{name}: p50 vs {report.floor_name} + {turn.calls} x call floor",
        f"{turn.p50:.2f} ms",
        f"{turn.adjusted_floor:.2f} ms",
        turn.p50 / turn.adjusted_floor,
        "<=1.5",
        issue=1,
    )
    if turn.peer_p50 is not None:
        report.add(
            f"{name}: p50 in blocks vs SQLAlchemySession peer's (its p99 {turn.peer_p99:.2f} ms)",
            f"{turn.block_p50:.2f} ms",
            f"{turn.peer_p50:.2f} ms",
            turn.block_p50 / turn.peer_p50,
            "<1",
            issue=2,
        )
        if turn.adapter_p50 is not None:
            # Reported: what an SDK user gets, appends keyed, no target.
            report.add(
                f"{name}: SDK adapter (AgentStateSession) p50 in blocks vs the peer's",
                f"{turn.adapter_p50:.2f} ms",
                f"{turn.peer_p50:.2f} ms",
                turn.adapter_p50 / turn.peer_p50,
                "",
            )


def floor_turn(base: Floor, conversation: uuid.UUID) -> None:
    base.append(conversation, [ENCODED_BODY])
    base.read_all(conversation)
    base.append(conversation, [ENCODED_BODY] * 2)


async def async_turn(client: pb_grpc.AgentStateServiceStub, conversation: str) -> None:
    """The agent turn over an asyncio stub: append one message, read the
    whole context in pages of 1000, append two messages in one call."""
    await client.AppendConversationMessages(
        pb.AppendConversationMessagesRequest(conversation_id=conversation, messages=ONE)
    )
    token = ""
    while True:
        page = await client.ListConversationMessages(
            pb.ListConversationMessagesRequest(
                conversation_id=conversation, page_size=1000, page_token=token
            )
        )
        token = page.next_page_token
        if not token:
            break
    await client.AppendConversationMessages(
        pb.AppendConversationMessagesRequest(conversation_id=conversation, messages=TWO)
    )


async def _concurrent_turns(address: str, conversations: list[str], turns: int) -> list[float]:
    samples: list[float] = []
    async with aio_client(address) as client:

        async def worker(conversation: str) -> None:
            for _ in range(turns):
                started = time.perf_counter()
                await async_turn(client, conversation)
                samples.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(conversation) for conversation in conversations))
    return samples


def concurrent_turns(address: str, length: int, sizes: Sizes, url: str | None) -> list[float]:
    """Turn latencies of `sizes.clients` clients at once, each on its own
    conversation of `length` messages."""
    client = stub(address)
    conversations = [str(uuid.uuid4()) for _ in range(sizes.clients)]
    for conversation in conversations:
        append(client, conversation, length)
    settle(url)
    turns = sizes.concurrent_long_turns if length >= 10_000 else sizes.concurrent_turns
    return asyncio.run(_concurrent_turns(address, conversations, turns))


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
    messages = [text_message(BODY_TEXT)] * batch
    stop_at = time.perf_counter() + seconds
    counts = [0] * clients
    async with aio_client(address) as client:

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
    turns = [0] * clients
    async with aio_client(address) as client:

        async def worker(index: int) -> None:
            conversation = str(uuid.uuid4())
            await client.AppendConversationMessages(
                pb.AppendConversationMessagesRequest(conversation_id=conversation, messages=TWO * 5)
            )
            stop_at = time.perf_counter() + seconds
            while time.perf_counter() < stop_at:
                await async_turn(client, conversation)
                turns[index] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
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
        calls.snapshot(client, conversation, ids)
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
    create = [timed(lambda: calls.snapshot(client, conversation, thousand)) for _ in range(10)]
    read = [timed(lambda: calls.list_page(client, conversation, page_size=1000)) for _ in range(10)]
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


THROUGH_PGBOUNCER = "postgresql via pgbouncer"


def run_backend(backend: str, sizes: Sizes, tmp: Path) -> list[Report]:
    """The backend's report; for PostgreSQL also the agent turn through a
    PgBouncer in transaction mode, as production usually reaches it."""
    report = Report(backend)
    reports = [report]
    with contextlib.ExitStack() as cleanup:
        floor_url: str | None = None
        base: Floor
        peer_process: peer.Peer | None = None
        if backend == "postgresql":
            url = floor_url = cleanup.enter_context(
                throwaway_database(ADMIN_URL, "agent_state_bench")
            )
            floor.setup(floor_url)
            base = Floor(floor, psycopg.connect(floor_url, autocommit=True))
            peer_process = cleanup.enter_context(peer.Peer(floor_url))
        else:
            url = sqlite_url(tmp / f"bench-{uuid.uuid4().hex[:6]}.db")
            floor_path = tmp / f"floor-{uuid.uuid4().hex[:6]}.db"
            for path in (floor_path, *(floor_path.with_name(floor_path.name + s) for s in SIDE)):
                cleanup.callback(path.unlink, missing_ok=True)
            base = Floor(floor_sqlite, floor_sqlite.connect(floor_path))
        cleanup.callback(base.close)
        with serve(url, tmp / f"server-{backend}.log") as server:
            steps: list[tuple[str, Callable[[], None]]] = [
                ("call costs", lambda: call_costs(report, server, base, floor_url, sizes)),
                (
                    "agent turn",
                    lambda: agent_turn(report, server, base, floor_url, sizes, peer_process),
                ),
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
        if floor_url is not None:
            started = time.perf_counter()
            reports.append(turn_through_pgbouncer(floor_url, base, sizes, tmp, peer_process))
            print(f"[{backend}] turn via pgbouncer: {time.perf_counter() - started:.1f} s")
    return reports


def turn_through_pgbouncer(
    url: str,
    base: Floor,
    sizes: Sizes,
    tmp: Path,
    peer_process: peer.Peer | None,
) -> Report:
    """The agent turn with the server reaching the same database through a
    PgBouncer in transaction mode (prepared statements off, as the README
    says); the floor and the peer still go straight to PostgreSQL."""
    report = Report(THROUGH_PGBOUNCER)
    with (
        running_pgbouncer(postgres_url_from_conninfo(ADMIN_URL)) as bouncer,
        serve(
            bouncer.url_for(url), tmp / "server-pgbouncer.log", extra=["--no-prepared-statements"]
        ) as server,
    ):
        agent_turn(report, server, base, url, sizes, peer_process)
    return report


def print_turn_summary(reports: list[Report], clients: int) -> None:
    """The agent turn on every backend in one table (ms; p50 unless named)."""
    print("\n## agent turn (ms)\n")
    print(
        f"| backend | L | p50 | p99 | p99, {clients} clients | floor | floor + calls x call floor"
        " | p50 / that (T1) | p50 in blocks | peer p50 | in blocks / peer (T2) | SDK adapter p50"
        " | overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for report in reports:
        for turn in report.turns:
            peer_p50 = "" if turn.peer_p50 is None else f"{turn.peer_p50:.1f}"
            adapter_p50 = "" if turn.adapter_p50 is None else f"{turn.adapter_p50:.1f}"
            peer_ratio = "" if turn.peer_p50 is None else f"{turn.block_p50 / turn.peer_p50:.2f}"
            print(
                f"| {report.backend} | {turn.length:,} | {turn.p50:.1f} | {turn.p99:.1f}"
                f" | {turn.concurrent_p99:.0f} | {turn.floor_p50:.1f}"
                f" | {turn.floor_p50:.1f} + {turn.calls} x {turn.call_floor:.2f}"
                f" = {turn.adjusted_floor:.1f} | {turn.p50 / turn.adjusted_floor:.2f}"
                f" | {turn.block_p50:.1f} | {peer_p50} | {peer_ratio} | {adapter_p50}"
                f" | {turn.overhead:.1f} ({turn.overhead / turn.p50:.0%}) |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes; targets not enforced")
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument(
        "--plot",
        type=Path,
        default=Path("build/bench/bench-turn.png"),
        help="where the plot of turn latency against length goes (default: %(default)s)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and pgbouncer_binary() is None:
        # Needed only after the whole PostgreSQL run: say so before it.
        print("bench: the PostgreSQL run needs pgbouncer (Debian package pgbouncer; see")
        print("scripts/ensure-pgbouncer.sh), for the turn through it", file=sys.stderr)
        return 2
    tmp = Path("build/bench")
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    started = time.perf_counter()
    reports = [
        report for backend in backends for report in run_backend(backend, sizes, tmp.resolve())
    ]
    for report in reports:
        report.print()
    print_turn_summary(reports, sizes.clients)
    plot.turn_latency({report.backend: report.turns for report in reports}, args.plot)
    print(f"\nplot: {args.plot}")
    print(f"total time: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(report) for report in reports], indent=2))
    print("\nissue 12 targets (judged on PostgreSQL, in this run):")
    judged = [report for report in reports if report.judged]
    for number, target in ISSUE_TARGETS.items():
        label = f"[issue 12 target {number}]"
        missed = [f for report in judged for f in report.failures if f.startswith(label)]
        verdict = "n/a" if not judged else "MISSED" if missed else "met"
        print(f"  {number}. {target}: {verdict}")
    failures = [failure for report in reports for failure in report.failures]
    if failures:
        enforced = "" if not args.quick else " (not enforced with --quick)"
        print(f"\ntargets missed{enforced}:\n" + "\n".join(failures))
        if not args.quick:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
