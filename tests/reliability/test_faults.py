"""Faults under load, on a PostgreSQL cluster of the tests' own.

Each test starts the real server (a separate process) on a database of a
private cluster (throwaway_postgres), puts it under a write load, and then
breaks something: PostgreSQL stopped, PostgreSQL or the server killed with
SIGKILL, SIGTERM to the server, a row lock held from outside. Afterwards it
checks what a client can rely on:

- failures are clean (UNAVAILABLE, never INTERNAL or a hang past the
  deadline);
- every acknowledged write is there; an operation whose call failed is
  applied entirely or not at all;
- each conversation is consistent, over gRPC and directly in SQL.

The load: several client threads, each on a conversation of its own,
append batches of BATCH messages, and reverse (Replace) or Delete the range
of one whole batch. Each thread keeps a model of where every batch may be
(forward, reversed, absent): an answered call makes that certain, a failed
call leaves both outcomes possible. A batch is therefore always checkable
as a unit, whatever failed.

Durations scale with AGENT_STATE_FAULT_SECONDS (default 2 s per phase).
Each test prints a one-line summary of what it tried (pytest -s).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import new_id
from tests.reliability.throwaway_postgres import PostgresUnavailable, ThrowawayPostgres
from tests.support.calls import Stub, all_ids, append, get, list_all, make_stub, text_message
from tests.support.server import ServerProcess, health_check

pytestmark = pytest.mark.postgres

OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED

# Length of each phase of a fault test (load before, outage, load after).
FAULT_SECONDS = float(os.environ.get("AGENT_STATE_FAULT_SECONDS", "2"))
LOAD_THREADS = 6
BATCH = 5
# Every load call carries this deadline.
CALL_DEADLINE_S = 10.0
# While PostgreSQL is down a call waits for a pooled connection at most the
# store's connect timeout (PostgresStore connect_timeout_s), then gets
# UNAVAILABLE. SLACK_S covers the rest of the call on a busy 2-core machine.
POOL_WAIT_S = 5.0
SLACK_S = 2.0
FAILURE_BOUND_S = POOL_WAIT_S + SLACK_S
# After PostgreSQL or the server is back, every load thread must succeed
# again within this long. The pool's background reconnection backs off
# exponentially but gives up after POOL_WAIT_S, so that calls retry at
# once: the lag is at most one backoff step within that window plus one
# pool wait, however long the outage lasted.
RECOVERY_TIMEOUT_S = 2 * POOL_WAIT_S
# Between two calls after a failure, so that fast failures do not spin.
FAILURE_PAUSE_S = 0.02
# The server's default drain time on SIGTERM (--shutdown-grace-seconds).
SHUTDOWN_GRACE_S = 10.0
# How late a client thread may see an answer the server had already sent.
ANSWER_LAG_S = 0.25
# Small id pages, so that the check pages many times.
ID_PAGE_SIZE = 7
# How long the server may take to give up a database wait after the call ended.
RELEASE_WITHIN_S = 2.0

# Clients reconnect quickly to a restarted server (gRPC's default backoff
# starts at 1 s and grows to 2 minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

FORWARD, REVERSED, ABSENT = "forward", "reversed", "absent"
TEXT = re.compile(r"b(\d+)\.(\d+)")

T = TypeVar("T")


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayPostgres]:
    """The module's private cluster; never the machine's shared server."""
    try:
        postgres = ThrowawayPostgres().start()
    except PostgresUnavailable as exc:
        # Fail, never skip: CI runs on the same kind of machine.
        pytest.fail(f"cannot run a private PostgreSQL cluster: {exc}")
    try:
        yield postgres
    finally:
        postgres.close()


@pytest.fixture
def database(cluster: ThrowawayPostgres) -> str:
    """A fresh database on the private cluster, which is running."""
    # A failed earlier test may have left the cluster stopped.
    cluster.start()
    return cluster.create_database(f"faults_{uuid.uuid4().hex[:12]}")


def start_server(
    url: str, log: Path, *, port: int | None = None, extra_args: Sequence[str] = ()
) -> ServerProcess:
    process = ServerProcess(database_url=url, log_path=log, extra_args=list(extra_args))
    if port is not None:
        process.port = port
    return process.start_ready()


# --- calls and their tally ---------------------------------------------------------


@dataclass(frozen=True)
class Call:
    op: str
    started: float  # time.monotonic()
    elapsed: float
    code: grpc.StatusCode
    details: str

    @property
    def ended(self) -> float:
        return self.started + self.elapsed


class Tally:
    """Every call the load made, from all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    def record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def failures(self) -> list[Call]:
        return [c for c in self.calls if c.code is not OK]

    def summary(self) -> str:
        calls = self.calls
        codes = collections.Counter(c.code.name for c in calls if c.code is not OK)
        ops = collections.Counter(c.op for c in calls)
        worst = max((c.elapsed for c in calls), default=0.0)
        worst_failure = max((c.elapsed for c in calls if c.code is not OK), default=0.0)
        return (
            f"calls={len(calls)} ({', '.join(f'{op}={n}' for op, n in sorted(ops.items()))}) "
            f"ok={len(calls) - sum(codes.values())} failed={dict(codes)} "
            f"max_call={worst:.2f}s max_failed_call={worst_failure:.2f}s"
        )


def timed(tally: Tally, op: str, call: Callable[[], T]) -> T | grpc.RpcError:
    """Runs one RPC, records its outcome, returns the response or the error."""
    started = time.monotonic()
    try:
        response = call()
    except grpc.RpcError as error:
        tally.record(
            Call(op, started, time.monotonic() - started, error.code(), error.details() or "")
        )
        return error
    tally.record(Call(op, started, time.monotonic() - started, OK, ""))
    return response


# --- the load and its model --------------------------------------------------------


@dataclass
class Batch:
    """One appended batch: where it may be now, as far as the client knows."""

    number: int
    states: set[str]
    ids: list[str] | None = None  # known once the append was acknowledged
    append_failed: bool = False

    @property
    def certain(self) -> str | None:
        return next(iter(self.states)) if len(self.states) == 1 else None

    def order(self) -> list[str]:
        """Its ids as they stand in the ordering (only when present for certain)."""
        assert self.ids is not None
        return list(reversed(self.ids)) if self.certain == REVERSED else list(self.ids)


class Worker:
    """One client thread on a conversation of its own."""

    def __init__(self, address: str, tally: Tally, rng: random.Random) -> None:
        self.address = address
        self.tally = tally
        self.rng = rng
        self.conversation_id = new_id()
        self.batches: list[Batch] = []
        # Answers that contradict the request (wrong ids, counts...).
        self.violations: list[str] = []
        self.last_ok_started = float("-inf")

    def run(self, stop: threading.Event) -> None:
        try:
            with grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
                stub = make_stub(channel)
                while not stop.is_set():
                    started = time.monotonic()
                    if self.step(stub):
                        self.last_ok_started = started
                    else:
                        time.sleep(FAILURE_PAUSE_S)
        except Exception as error:  # reported by verify(), not lost with the thread
            self.violations.append(f"the load thread failed: {error!r}")

    def step(self, stub: Stub) -> bool:
        present = [b for b in self.batches if b.certain in (FORWARD, REVERSED)]
        draw = self.rng.random()
        if present and draw < 0.15:
            return self.delete(stub, self.rng.choice(present))
        if present and draw < 0.4:
            return self.reverse(stub, self.rng.choice(present))
        return self.append(stub)

    def append(self, stub: Stub) -> bool:
        batch = Batch(len(self.batches), {ABSENT, FORWARD})
        self.batches.append(batch)
        request = pb.AppendConversationMessagesRequest(
            conversation_id=self.conversation_id,
            messages=[text_message(f"b{batch.number}.{k}") for k in range(BATCH)],
        )
        outcome = timed(
            self.tally,
            "append",
            lambda: stub.AppendConversationMessages(request, timeout=CALL_DEADLINE_S),
        )
        if isinstance(outcome, grpc.RpcError):
            batch.append_failed = True
            return False
        texts = [m.body.text.text for m in outcome.appended]
        if texts != [f"b{batch.number}.{k}" for k in range(BATCH)]:
            self.violations.append(f"append of batch {batch.number} answered {texts}")
        batch.ids = [m.id for m in outcome.appended]
        batch.states = {FORWARD}
        return True

    def reverse(self, stub: Stub, batch: Batch) -> bool:
        """Replace [first..last] of the batch by its ids in reverse order."""
        before = batch.certain
        assert before in (FORWARD, REVERSED)
        after = REVERSED if before == FORWARD else FORWARD
        current = batch.order()
        request = pb.ReplaceConversationMessagesRangeRequest(
            conversation_id=self.conversation_id,
            from_message_id=current[0],
            to_message_id=current[-1],
            new_message_ids=current[::-1],
        )
        outcome = timed(
            self.tally,
            "replace",
            lambda: stub.ReplaceConversationMessagesRange(request, timeout=CALL_DEADLINE_S),
        )
        if isinstance(outcome, grpc.RpcError):
            batch.states = {before, after}
            return False
        if list(outcome.replaced_message_ids) != current:
            self.violations.append(f"replace of batch {batch.number} replaced the wrong ids")
        if list(outcome.inserted_message_ids) != current[::-1]:
            self.violations.append(f"replace of batch {batch.number} inserted the wrong ids")
        batch.states = {after}
        return True

    def delete(self, stub: Stub, batch: Batch) -> bool:
        before = batch.certain
        assert before in (FORWARD, REVERSED)
        current = batch.order()
        request = pb.DeleteConversationMessagesRangeRequest(
            conversation_id=self.conversation_id,
            from_message_id=current[0],
            to_message_id=current[-1],
        )
        outcome = timed(
            self.tally,
            "delete",
            lambda: stub.DeleteConversationMessagesRange(request, timeout=CALL_DEADLINE_S),
        )
        if isinstance(outcome, grpc.RpcError):
            batch.states = {before, ABSENT}
            return False
        if list(outcome.deleted_message_ids) != current:
            self.violations.append(f"delete of batch {batch.number} deleted the wrong ids")
        batch.states = {ABSENT}
        return True


class Load:
    """LOAD_THREADS workers running until `stop` (or the end of the with block)."""

    def __init__(self, address: str, *, seed: int, threads: int = LOAD_THREADS) -> None:
        self.tally = Tally()
        self.workers = [
            Worker(address, self.tally, random.Random(seed * 1000 + i)) for i in range(threads)
        ]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=w.run, args=(self._stop,), daemon=True) for w in self.workers
        ]
        self.stuck = 0

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            # A call ends by its deadline at the latest.
            thread.join(timeout=CALL_DEADLINE_S + 5)
        self.stuck = sum(thread.is_alive() for thread in self._threads)

    def wait_recovered(self, since: float) -> float | None:
        """Seconds from `since` until every worker had a call started after
        it succeed; None if that did not happen within RECOVERY_TIMEOUT_S."""
        while time.monotonic() < since + RECOVERY_TIMEOUT_S:
            if all(w.last_ok_started >= since for w in self.workers):
                return time.monotonic() - since
            time.sleep(0.05)
        return None


# --- checking the outcome ------------------------------------------------------------


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    conversations: int = 0
    messages: int = 0
    acknowledged_appends: int = 0
    failed_appends: int = 0
    failed_appends_present: int = 0

    def summary(self) -> str:
        return (
            f"verified conversations={self.conversations} messages={self.messages} "
            f"acknowledged_appends={self.acknowledged_appends} "
            f"failed_appends={self.failed_appends} "
            f"(of which stored anyway: {self.failed_appends_present})"
        )


def ordering_of(stub: Stub, conversation_id: str) -> tuple[list[str], list[pb.Message], int]:
    """Ids (ListConversationMessageIds, paged), messages and message_count;
    empty for a conversation that was never created."""
    try:
        metadata = get(stub, conversation_id)
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.NOT_FOUND:
            return [], [], 0
        raise
    ids = all_ids(stub, conversation_id, page_size=ID_PAGE_SIZE)
    return ids, list_all(stub, conversation_id), metadata.message_count


def check_worker(stub: Stub, conn: psycopg.Connection, worker: Worker, verdict: Verdict) -> None:
    problems = verdict.problems
    cid = worker.conversation_id
    where = f"conversation {cid}"
    problems += [f"{where}: {v}" for v in worker.violations]
    ids, messages, count = ordering_of(stub, cid)
    verdict.conversations += 1
    verdict.messages += len(ids)
    if [m.id for m in messages] != ids:
        problems.append(f"{where}: ListConversationMessages and ...MessageIds disagree")
    if count != len(ids):
        problems.append(f"{where}: message_count {count} but {len(ids)} ids in the ordering")
    if len(set(ids)) != len(ids):
        problems.append(f"{where}: an id appears twice in the ordering")
    rows = conn.execute(
        "SELECT id::text FROM messages WHERE conversation_id = %s AND position IS NOT NULL "
        "ORDER BY position",
        (cid,),
    ).fetchall()
    if [r[0] for r in rows] != ids:
        problems.append(f"{where}: the ordering in SQL differs from the one served")

    # Where each batch's messages stand in the ordering.
    found: dict[int, list[tuple[int, int, str]]] = collections.defaultdict(list)
    for index, message in enumerate(messages):
        match = TEXT.fullmatch(message.body.text.text)
        if match is None or int(match[1]) >= len(worker.batches) or int(match[2]) >= BATCH:
            problems.append(f"{where}: a message nobody appended: {message.body.text.text!r}")
            continue
        found[int(match[1])].append((index, int(match[2]), message.id))
    observed: dict[int, str] = {}
    for number, entries in found.items():
        indices = [index for index, _, _ in entries]
        ks = [k for _, k, _ in entries]
        contiguous = indices == list(range(indices[0], indices[0] + len(indices)))
        if len(entries) != BATCH or not contiguous:
            problems.append(f"{where}: batch {number} partly there or split: positions {indices}")
            continue
        if ks == list(range(BATCH)):
            observed[number] = FORWARD
        elif ks == list(reversed(range(BATCH))):
            observed[number] = REVERSED
        else:
            problems.append(f"{where}: batch {number} scrambled: {ks}")
            continue
        known = worker.batches[number].ids
        if known is not None and sorted(known) != sorted(i for _, _, i in entries):
            problems.append(f"{where}: batch {number} holds other ids than acknowledged")
    for batch in worker.batches:
        state = observed.get(batch.number, ABSENT)
        verdict.acknowledged_appends += batch.ids is not None
        verdict.failed_appends += batch.append_failed
        verdict.failed_appends_present += batch.append_failed and state != ABSENT
        if batch.number in found and batch.number not in observed:
            continue  # reported above
        if state not in batch.states:
            lost = " (an acknowledged append was lost)" if batch.ids and state == ABSENT else ""
            problems.append(
                f"{where}: batch {batch.number} is {state}, "
                f"expected one of {sorted(batch.states)}{lost}"
            )
    # Batches stay in the order they were appended in.
    order = sorted(found, key=lambda number: found[number][0][0])
    if order != sorted(order):
        problems.append(f"{where}: batches out of append order: {order}")


SQL_INVARIANTS = {
    "a position twice in one ordering": """
        SELECT conversation_id, position FROM messages WHERE position IS NOT NULL
        GROUP BY conversation_id, position HAVING count(*) > 1""",
    "message_count differs from the ordering's rows": """
        SELECT c.id, c.message_count, count(m.position) FROM conversations c
        LEFT JOIN messages m ON m.conversation_id = c.id
        GROUP BY c.id, c.message_count HAVING c.message_count <> count(m.position)""",
    # These loads never detach, so a stored message outside the ordering is
    # the remains of a half-applied append or delete.
    "a message outside the ordering": """
        SELECT conversation_id, id FROM messages WHERE position IS NULL""",
    # A page skips summing its byte budget on this bound; too low a bound
    # would send more than the budget from the database.
    "an entry larger than its conversation's largest_entry": """
        SELECT m.conversation_id, m.id FROM messages m
        JOIN conversations c ON c.id = m.conversation_id
        WHERE octet_length(m.entry) > c.largest_entry""",
}


def sql_problems(conn: psycopg.Connection) -> list[str]:
    problems: list[str] = []
    for what, query in SQL_INVARIANTS.items():
        rows = conn.execute(query).fetchall()
        if rows:
            problems.append(f"SQL: {what}: {rows[:5]}")
    return problems


def verify(address: str, url: str, workers: Sequence[Worker]) -> Verdict:
    """Every conversation of the load, over gRPC and in SQL."""
    verdict = Verdict()
    with (
        grpc.insecure_channel(address) as channel,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        stub = make_stub(channel)
        for worker in workers:
            check_worker(stub, conn, worker, verdict)
        verdict.problems += sql_problems(conn)
    return verdict


def report(name: str, started: float, *parts: str) -> None:
    """The one-line summary of a test (visible with pytest -s)."""
    print(f"\n[faults] {name}: {time.monotonic() - started:.1f}s " + " ".join(parts))


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f}s"


def unexpected_errors(server: ServerProcess) -> list[str]:
    """Log lines of calls that ended INTERNAL (the servicer logs each one)."""
    return [line for line in server.output().splitlines() if "failed unexpectedly" in line]


# --- 1 and 3: PostgreSQL stopped or killed under load --------------------------------


def database_outage(
    name: str, cluster: ThrowawayPostgres, url: str, tmp_path: Path, *, crash: bool
) -> None:
    """Stop (fast) or kill (SIGKILL) PostgreSQL under load, keep it down,
    start it again; the same server process must recover.

    A stopped database stays down longer than a call's wait for a pooled
    connection (POOL_WAIT_S), so that calls meet the outage itself, not
    only the loss of their connections; a killed one comes back soon, as
    after a crash.
    """
    # Stopped: three pool waits, so that background reconnection backs off
    # and gives up at least once (an unbounded backoff would leave the
    # service down long after the database came back).
    down_for = 3 * POOL_WAIT_S + FAULT_SECONDS if not crash else FAULT_SECONDS / 2
    test_started = time.monotonic()
    server = start_server(url, tmp_path / "server.log")
    assert server.process is not None
    server_pid = server.process.pid
    try:
        with Load(server.address, seed=3 if crash else 1) as load:
            time.sleep(FAULT_SECONDS)
            ok_before = sum(c.code is OK for c in load.tally.calls)
            if crash:
                cluster.kill()
            else:
                cluster.stop()
            down_at = time.monotonic()
            time.sleep(down_for)
            restart_at = time.monotonic()
            cluster.start()
            back_at = time.monotonic()
            recovered_after = load.wait_recovered(back_at)
            time.sleep(FAULT_SECONDS)
        alive = server.process.poll() is None
        verdict = verify(server.address, url, load.workers)
        calls = load.tally.calls
        failures = [c for c in calls if c.code is not OK]
        # Answered while PostgreSQL was gone: none of these can have succeeded.
        # (Answers sent just before it went reach the client threads a few
        # milliseconds later: ANSWER_LAG_S leaves those out.)
        while_down = [c for c in calls if down_at + ANSWER_LAG_S <= c.ended <= restart_at]
        slow = [c for c in calls if c.elapsed > FAILURE_BOUND_S]
        report(
            name,
            test_started,
            load.tally.summary(),
            f"down_for={down_for:.1f}s answered_while_down={len(while_down)} "
            f"postgres_restart={back_at - restart_at:.1f}s",
            f"recovered_after={seconds(recovered_after)}",
            verdict.summary(),
        )
        assert load.stuck == 0, "a load thread hung past its call deadline"
        assert alive, f"the server did not survive the outage: {server.describe()}"
        assert server.process.pid == server_pid
        assert ok_before > 0, "the load did not get going before the fault"
        assert failures, "no call failed: the fault was not exercised"
        assert {c.code for c in failures} == {UNAVAILABLE}, (
            "while PostgreSQL is down every failure must be UNAVAILABLE: "
            f"{collections.Counter((c.code.name, c.details) for c in failures)}"
        )
        if not crash:
            assert while_down, "no call was answered while PostgreSQL was down"
        succeeded = [
            (c.op, round(c.started - down_at, 3), round(c.ended - down_at, 3))
            for c in while_down
            if c.code is not UNAVAILABLE
        ]
        assert not succeeded, f"calls succeeded with no database (op, start, end): {succeeded}"
        assert not slow, (
            f"calls took longer than {FAILURE_BOUND_S}s (pool wait {POOL_WAIT_S}s + slack): "
            f"{[(c.op, c.code.name, round(c.elapsed, 2)) for c in slow[:10]]}"
        )
        assert recovered_after is not None, (
            f"the server did not recover within {RECOVERY_TIMEOUT_S}s of PostgreSQL's return"
        )
        assert not unexpected_errors(server), unexpected_errors(server)
        assert not verdict.problems, "\n".join(verdict.problems[:40])
    finally:
        server.terminate()


def test_postgres_stopped_under_load_fails_fast_and_recovers(
    cluster: ThrowawayPostgres, database: str, tmp_path: Path
) -> None:
    """1. While PostgreSQL is down, calls fail fast with UNAVAILABLE; the same
    server recovers once it is back; nothing is half-applied."""
    database_outage("postgres stopped", cluster, database, tmp_path, crash=False)


def test_postgres_killed_under_load_keeps_acknowledged_writes(
    cluster: ThrowawayPostgres, database: str, tmp_path: Path
) -> None:
    """3. PostgreSQL crashes (SIGKILL) and recovers: every acknowledged write
    was fsynced at commit and survives; invariants hold."""
    database_outage("postgres killed", cluster, database, tmp_path, crash=True)


# --- 2: the server killed under load --------------------------------------------


def test_server_killed_under_load_on_postgres_keeps_acknowledged_writes(
    database: str, tmp_path: Path
) -> None:
    """2. SIGKILL to the server mid-load, then a new server on the same
    database and port: acknowledged writes are all there, failed calls are
    all-or-nothing, invariants hold (gRPC and SQL)."""
    test_started = time.monotonic()
    first = start_server(database, tmp_path / "first.log")
    second: ServerProcess | None = None
    assert first.process is not None
    try:
        with Load(first.address, seed=2) as load:
            time.sleep(FAULT_SECONDS)
            ok_before = sum(c.code is OK for c in load.tally.calls)
            first.process.kill()
            first.process.wait()
            time.sleep(min(0.5, FAULT_SECONDS))
            second = start_server(database, tmp_path / "second.log", port=first.port)
            back_at = time.monotonic()
            recovered_after = load.wait_recovered(back_at)
            time.sleep(FAULT_SECONDS)
        verdict = verify(second.address, database, load.workers)
        failures = load.tally.failures()
        report(
            "server killed",
            test_started,
            load.tally.summary(),
            f"recovered_after={seconds(recovered_after)}",
            verdict.summary(),
        )
        assert load.stuck == 0, "a load thread hung past its call deadline"
        assert ok_before > 0, "the load did not get going before the kill"
        assert failures, "no call failed: the kill was not exercised"
        assert {c.code for c in failures} == {UNAVAILABLE}, collections.Counter(
            (c.code.name, c.details) for c in failures
        )
        assert recovered_after is not None, "clients did not get through to the new server"
        internal = unexpected_errors(first) + unexpected_errors(second)
        assert not internal, internal
        assert not verdict.problems, "\n".join(verdict.problems[:40])
        code = second.terminate()
        assert code == 0, second.describe()
    finally:
        first.terminate()
        if second is not None:
            second.terminate()


# --- 4: SIGTERM under load ---------------------------------------------------------


def health_status(channel: grpc.Channel) -> str:
    try:
        reply = health_check(channel, "", timeout=1.0)
    except grpc.RpcError as error:
        return error.code().name
    return "SERVING" if reply.status == health_pb2.HealthCheckResponse.SERVING else "NOT_SERVING"


def test_sigterm_under_load_on_postgres_drains_cleanly(database: str, tmp_path: Path) -> None:
    """4. SIGTERM under load: calls made before the signal complete OK, later
    ones are served or refused cleanly (never INTERNAL), health says
    NOT_SERVING before the server stops listening, exit code 0, and nothing
    acknowledged is lost."""
    test_started = time.monotonic()
    server = start_server(database, tmp_path / "server.log")
    restarted: ServerProcess | None = None
    assert server.process is not None
    health_seen: list[str] = []
    try:
        with (
            Load(server.address, seed=4) as load,
            grpc.insecure_channel(server.address) as health_channel,
        ):
            time.sleep(FAULT_SECONDS)
            term_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            while server.process.poll() is None:
                status = health_status(health_channel)
                if not health_seen or health_seen[-1] != status:
                    health_seen.append(status)
                if status != "SERVING" or time.monotonic() > term_at + SHUTDOWN_GRACE_S:
                    break
                time.sleep(0.01)
            exit_code = server.process.wait(timeout=SHUTDOWN_GRACE_S + 10)
            exited_at = time.monotonic()
            # Calls against the stopped server, refused too.
            time.sleep(0.5)
        restarted = start_server(database, tmp_path / "restarted.log")
        verdict = verify(restarted.address, database, load.workers)
        calls = load.tally.calls
        before = [c for c in calls if c.started < term_at]
        draining = [c for c in calls if term_at <= c.started <= exited_at]
        after_exit = [c for c in calls if c.started > exited_at]
        report(
            "sigterm",
            test_started,
            load.tally.summary(),
            f"before_signal={len(before)} "
            f"during_drain={len(draining)} (ok {sum(c.code is OK for c in draining)}) "
            f"after_exit={len(after_exit)} exit_code={exit_code} "
            f"exit_after={exited_at - term_at:.2f}s health={health_seen}",
            verdict.summary(),
        )
        assert exit_code == 0, server.describe()
        assert exited_at - term_at < SHUTDOWN_GRACE_S + 3
        assert load.stuck == 0, "a load thread hung past its call deadline"
        assert before, "the load did not get going before SIGTERM"
        in_flight_failed = [(c.op, c.code.name, c.details) for c in before if c.code is not OK]
        assert not in_flight_failed, f"calls made before SIGTERM must complete: {in_flight_failed}"
        codes = collections.Counter(c.code.name for c in calls)
        assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, codes
        assert all(c.code is UNAVAILABLE for c in after_exit)
        # The server says it is going before it goes.
        assert "NOT_SERVING" in health_seen[:2], health_seen
        assert not unexpected_errors(server), unexpected_errors(server)
        assert not verdict.problems, "\n".join(verdict.problems[:40])
    finally:
        server.terminate()
        if restarted is not None:
            restarted.terminate()


# --- 5 and 6: a row lock held from outside --------------------------------------------

# Backends of this database blocked by the given backend (the lock holder).
BLOCKED_BY = """
SELECT pid, wait_event_type, wait_event, state, left(query, 80)
FROM pg_stat_activity
WHERE datname = current_database() AND %s = ANY(pg_blocking_pids(pid))
"""
LOCK_DEADLINE_S = 0.5
STATEMENT_TIMEOUT_MS = 300


@contextlib.contextmanager
def row_locked(url: str, conversation_id: str) -> Iterator[int]:
    """Holds the conversation's row lock in an open transaction; yields the
    holder's backend pid."""
    with psycopg.connect(url) as locker:
        # Not autocommit: the SELECT opens the transaction that keeps the lock.
        row = locker.execute(
            "SELECT id FROM conversations WHERE id = %s FOR UPDATE", (conversation_id,)
        ).fetchone()
        assert row is not None
        try:
            yield locker.info.backend_pid
        finally:
            locker.rollback()


def blocked_by(observer: psycopg.Connection, holder: int) -> list[tuple[object, ...]]:
    # Autocommit: each query reads pg_stat_activity afresh.
    return observer.execute(BLOCKED_BY, (holder,)).fetchall()


def wait_for(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `condition` held, or None if it did not within `timeout`."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.01)


def outcome(future: grpc.Future[pb.AppendConversationMessagesResponse]) -> grpc.StatusCode:
    try:
        future.result(timeout=CALL_DEADLINE_S + 5)
    except grpc.RpcError as error:
        return error.code()
    return OK


def append_request(conversation_id: str, label: str) -> pb.AppendConversationMessagesRequest:
    return pb.AppendConversationMessagesRequest(
        conversation_id=conversation_id,
        messages=[text_message(f"{label}.{k}") for k in range(BATCH)],
    )


def test_deadline_and_cancellation_stop_the_database_wait(database: str, tmp_path: Path) -> None:
    """5. A call blocked on a row lock: its deadline, or the client's cancel,
    makes the server cancel its query (no backend left waiting), and
    nothing of the append is applied."""
    test_started = time.monotonic()
    server = start_server(database, tmp_path / "server.log")
    try:
        with (
            grpc.insecure_channel(server.address) as channel,
            psycopg.connect(database, autocommit=True) as observer,
        ):
            stub = make_stub(channel)
            cid = new_id()
            append(stub, cid, [text_message("seed")])
            with row_locked(database, cid) as holder:

                def waiting() -> bool:
                    return bool(blocked_by(observer, holder))

                # The deadline.
                sent = time.monotonic()
                future = stub.AppendConversationMessages.future(
                    append_request(cid, "deadline"), timeout=LOCK_DEADLINE_S
                )
                deadline_waited = wait_for(waiting, LOCK_DEADLINE_S + 1)
                deadline_code = outcome(future)
                deadline_elapsed = time.monotonic() - sent
                deadline_released = wait_for(lambda: not waiting(), RELEASE_WITHIN_S)
                deadline_left = blocked_by(observer, holder)

                # The client's cancel.
                future = stub.AppendConversationMessages.future(
                    append_request(cid, "cancel"), timeout=CALL_DEADLINE_S
                )
                cancel_waited = wait_for(waiting, 5.0)
                cancelled = future.cancel()
                cancel_released = wait_for(lambda: not waiting(), RELEASE_WITHIN_S)
                cancel_left = blocked_by(observer, holder)

                # Other conversations are served meanwhile.
                append(stub, new_id(), [text_message("elsewhere")])
            append(stub, cid, [text_message("after")])
            ids, messages, count = ordering_of(stub, cid)
        texts = [m.body.text.text for m in messages]
        report(
            "deadline and cancel",
            test_started,
            f"deadline: code={deadline_code.name} after={deadline_elapsed:.2f}s "
            f"db_wait_seen_after={seconds(deadline_waited)} "
            f"released_after={seconds(deadline_released)}; "
            f"cancel: cancelled={cancelled} db_wait_seen_after={seconds(cancel_waited)} "
            f"released_after={seconds(cancel_released)}; final ordering={texts}",
        )
        assert deadline_waited is not None, "the call never waited on the lock"
        assert deadline_code is DEADLINE_EXCEEDED, deadline_code
        assert deadline_released is not None, (
            f"{RELEASE_WITHIN_S}s after the deadline the server still waits on the lock: "
            f"{deadline_left}"
        )
        assert cancel_waited is not None, "the second call never waited on the lock"
        assert cancelled
        assert cancel_released is not None, (
            f"{RELEASE_WITHIN_S}s after the cancel the server still waits on the lock: "
            f"{cancel_left}"
        )
        # Both queries were cancelled while the lock was held: nothing of them landed.
        assert texts == ["seed", "after"], texts
        assert count == len(ids) == 2
        assert not unexpected_errors(server), unexpected_errors(server)
    finally:
        server.terminate()


def test_statement_timeout_bounds_a_blocked_query(database: str, tmp_path: Path) -> None:
    """6. --statement-timeout-ms bounds every query: a call blocked on a row
    lock gets UNAVAILABLE long before its deadline, and the server goes on
    serving."""
    test_started = time.monotonic()
    server = start_server(
        database,
        tmp_path / "server.log",
        extra_args=["--statement-timeout-ms", str(STATEMENT_TIMEOUT_MS)],
    )
    try:
        with (
            grpc.insecure_channel(server.address) as channel,
            psycopg.connect(database, autocommit=True) as observer,
        ):
            stub = make_stub(channel)
            cid = new_id()
            append(stub, cid, [text_message("seed")])
            with row_locked(database, cid) as holder:
                sent = time.monotonic()
                future = stub.AppendConversationMessages.future(
                    append_request(cid, "blocked"), timeout=CALL_DEADLINE_S
                )
                waited = wait_for(lambda: bool(blocked_by(observer, holder)), 5.0)
                code = outcome(future)
                elapsed = time.monotonic() - sent
                released = wait_for(lambda: not blocked_by(observer, holder), RELEASE_WITHIN_S)
                # Still serving, while the lock is held.
                elsewhere = time.monotonic()
                append(stub, new_id(), [text_message("elsewhere")])
                elsewhere_elapsed = time.monotonic() - elsewhere
                during = get(stub, cid).message_count
            append(stub, cid, [text_message("after")])
            ids, messages, count = ordering_of(stub, cid)
        texts = [m.body.text.text for m in messages]
        report(
            "statement timeout",
            test_started,
            f"code={code.name} after={elapsed:.2f}s (deadline {CALL_DEADLINE_S:.0f}s, "
            f"statement timeout {STATEMENT_TIMEOUT_MS}ms) db_wait_seen_after={seconds(waited)} "
            f"released_after={seconds(released)} other_append={seconds(elsewhere_elapsed)} "
            f"final ordering={texts}",
        )
        assert waited is not None, "the call never waited on the lock"
        assert code is UNAVAILABLE, code
        assert STATEMENT_TIMEOUT_MS / 1000 <= elapsed < 5.0, elapsed
        assert released is not None
        assert during == 1
        assert texts == ["seed", "after"], texts
        assert count == len(ids) == 2
        assert not unexpected_errors(server), unexpected_errors(server)
    finally:
        server.terminate()
