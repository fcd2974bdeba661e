"""Bounded soak: many concurrent clients on a fresh server, then a full audit.

For each backend the test starts its own server on an empty database and
runs AGENT_STATE_SOAK_CLIENTS clients (default 64) for
AGENT_STATE_SOAK_SECONDS (default 10) over many conversations, a few of
them hot (shared by every client). Each client appends batches, reads whole
conversations page by page, summarises, detaches, reinserts and reorders
ranges, trims with deletes, takes snapshots and reads them back, all with
ranges and ids taken from what it last read, so that other clients'
changes race with it.

Expected failures are only those such races cause (SEMANTICS): a range end
or named id that another client deleted or detached meanwhile (NOT_FOUND),
or `from` that a concurrent move put after `to` (INVALID_ARGUMENT). Any
other failure, a deadline of 30 s included, fails the test.

Everything acknowledged is recorded, and afterwards every conversation is
read back completely and audited:
- every acknowledged append is in the ordering with its exact content,
  unless an acknowledged delete removed it (then it is gone for good) or an
  acknowledged replace took it out (then it still exists, detached);
- message_count is the ordering's length, and no id appears twice;
- updated_at is the last acknowledged change's, and no two changes share one;
- messages no replace touched keep the order their appends gave them;
- every snapshot reads back exactly the ids (and contents) it was made with.

Throughput and p50/p99 latency per method are printed (pytest -s) and, with
AGENT_STATE_SOAK_REPORT=PATH, written there as JSON (one entry per backend).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import pytest
from google.protobuf.message import Message

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import (
    ASSISTANT,
    INVALID_ARGUMENT,
    NOT_FOUND,
    USER,
    content,
    micros,
    new_id,
    tool_text_message,
)
from tests.support.calls import text_message
from tests.support.server import ServerProcess

SOAK_SECONDS = float(os.environ.get("AGENT_STATE_SOAK_SECONDS", "10"))
SOAK_CLIENTS = int(os.environ.get("AGENT_STATE_SOAK_CLIENTS", "64"))
REPORT_PATH = os.environ.get("AGENT_STATE_SOAK_REPORT")
SEED = int(os.environ.get("AGENT_STATE_SOAK_SEED", "20261122"))

CALL_DEADLINE_S = 30.0
HOT_CONVERSATIONS = 4
COLD_CONVERSATIONS = max(16, 2 * SOAK_CLIENTS)
CHANNELS = 8
# A client trims a conversation it sees longer than this (an agent keeps
# its context bounded), so full reads stay cheap however long the soak runs.
TRIM_ABOVE = 300
AUDIT_CONCURRENCY = 16

SERVICE = pb.DESCRIPTOR.services_by_name["AgentStateService"].full_name

# Reports of the backends run so far, written together.
REPORTS: dict[str, dict[str, Any]] = {}

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class Method(Generic[Req, Resp]):
    """One typed RPC on an aio channel."""

    def __init__(
        self, channel: grpc.aio.Channel, name: str, request: type[Req], response: type[Resp]
    ) -> None:
        self.name = name
        self.call: grpc.aio.UnaryUnaryMultiCallable[Req, Resp] = channel.unary_unary(
            f"/{SERVICE}/{name}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )


class Api:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.append = Method(
            channel,
            "AppendConversationMessages",
            pb.AppendConversationMessagesRequest,
            pb.AppendConversationMessagesResponse,
        )
        self.list = Method(
            channel,
            "ListConversationMessages",
            pb.ListConversationMessagesRequest,
            pb.ListConversationMessagesResponse,
        )
        self.list_ids = Method(
            channel,
            "ListConversationMessageIds",
            pb.ListConversationMessageIdsRequest,
            pb.ListConversationMessageIdsResponse,
        )
        self.replace = Method(
            channel,
            "ReplaceConversationMessagesRange",
            pb.ReplaceConversationMessagesRangeRequest,
            pb.ReplaceConversationMessagesRangeResponse,
        )
        self.delete = Method(
            channel,
            "DeleteConversationMessagesRange",
            pb.DeleteConversationMessagesRangeRequest,
            pb.DeleteConversationMessagesRangeResponse,
        )
        self.get = Method(
            channel, "GetConversation", pb.GetConversationRequest, pb.GetConversationResponse
        )
        self.snapshot = Method(
            channel, "CreateSnapshot", pb.CreateSnapshotRequest, pb.CreateSnapshotResponse
        )
        self.snapshot_list = Method(
            channel,
            "ListSnapshotMessages",
            pb.ListSnapshotMessagesRequest,
            pb.ListSnapshotMessagesResponse,
        )
        self.snapshot_ids = Method(
            channel,
            "ListSnapshotMessageIds",
            pb.ListSnapshotMessageIdsRequest,
            pb.ListSnapshotMessageIdsResponse,
        )


class Refused(Exception):
    """A call failed with a status the races explain."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


# Decides whether a failure is one the races explain.
Expectation = Callable[[grpc.StatusCode, str], bool]


def nothing(code: grpc.StatusCode, details: str) -> bool:
    return False


def lost_range(code: grpc.StatusCode, details: str) -> bool:
    """A named message left the ordering (another client deleted, detached
    or moved it): NOT_FOUND for a message, or `from` now after `to`."""
    if code == NOT_FOUND:
        return not details.startswith("conversation_id")
    return code == INVALID_ARGUMENT and "comes after to_message_id" in details


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    expected: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    operations: Counter[str] = field(default_factory=Counter)
    calls: int = 0


@dataclass(frozen=True)
class Stored:
    """What an acknowledged append stored for one message."""

    content: tuple[int, str, bytes]
    stamp: int  # the append's updated_at: appends to one conversation are totally ordered
    index: int


@dataclass
class Conversation:
    """Everything the server acknowledged about one conversation."""

    appended: dict[str, Stored] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    # Ids an acknowledged replace took out of the range it replaced.
    replaced_out: set[str] = field(default_factory=set)
    # Ids named in new_message_ids of any replace, acknowledged or not,
    # registered before the call: only they may move.
    touched: set[str] = field(default_factory=set)
    stamps: list[int] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return bool(self.stamps)

    @property
    def latest(self) -> int:
        return max(self.stamps, default=0)


@dataclass
class Ledger:
    conversations: dict[str, Conversation] = field(
        default_factory=lambda: defaultdict(Conversation)
    )
    snapshots: dict[str, tuple[str, list[str]]] = field(default_factory=dict)


class Soak:
    def __init__(self, apis: Sequence[Api], clients: int, seconds: float) -> None:
        self.apis = apis
        self.clients = clients
        self.seconds = seconds
        self.stats = Stats()
        self.ledger = Ledger()
        self.hot = [new_id() for _ in range(HOT_CONVERSATIONS)]
        self.cold = [new_id() for _ in range(COLD_CONVERSATIONS)]
        self.deadline = 0.0
        self.measuring = True

    # -- calls ----------------------------------------------------------------

    async def call(
        self,
        method: Method[Req, Resp],
        request: Req,
        expected: Expectation = nothing,
    ) -> Resp:
        """The response, or Refused for an expected failure; an unexpected one
        is recorded (and fails the test at the end) and raised as Refused."""
        started = time.perf_counter()
        try:
            response = await method.call(request, timeout=CALL_DEADLINE_S)
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
            self._record(method.name, started)
            if expected(code, details):
                self.stats.expected[(method.name, code.name)] += 1
            else:
                self.stats.unexpected.append(f"{method.name}: {code.name}: {details}")
            raise Refused(code, details) from None
        self._record(method.name, started)
        return response

    def _record(self, method: str, started: float) -> None:
        if self.measuring:
            self.stats.latencies[method].append(time.perf_counter() - started)
            self.stats.calls += 1

    def fail(self, message: str) -> None:
        self.stats.unexpected.append(message)

    # -- the clients ------------------------------------------------------------

    async def run(self) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.deadline = started + self.seconds
        await asyncio.gather(*(Client(self, n).run() for n in range(self.clients)))
        self.measuring = False
        return loop.time() - started


@dataclass
class Client:
    soak: Soak
    number: int
    rng: random.Random = field(init=False)
    api: Api = field(init=False)
    views: dict[str, list[str]] = field(default_factory=dict)
    detached: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    sequence: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{SEED}-client-{self.number}")
        self.api = self.soak.apis[self.number % len(self.soak.apis)]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        operations: list[tuple[Callable[[str], Awaitable[None]], int]] = [
            (self.append, 30),
            (self.read_all, 14),
            (self.get, 8),
            (self.delete, 8),
            (self.summarise, 6),
            (self.detach, 3),
            (self.reinsert, 3),
            (self.reorder, 4),
            (self.snapshot, 10),
            (self.read_snapshot, 10),
        ]
        actions = [action for action, _ in operations]
        weights = [weight for _, weight in operations]
        while loop.time() < self.soak.deadline:
            conversation = self.rng.choice(
                self.soak.hot if self.rng.random() < 0.5 else self.soak.cold
            )
            action: Callable[[str], Awaitable[None]]
            if len(self.views.get(conversation, ())) > TRIM_ABOVE:
                action = self.trim
            else:
                action = self.rng.choices(actions, weights)[0]
            self.soak.stats.operations[action.__name__] += 1
            try:
                await action(conversation)
            except Refused:
                # Expected or not, recorded already; stale views go.
                self.views.pop(conversation, None)

    def ledger(self, conversation: str) -> Conversation:
        return self.soak.ledger.conversations[conversation]

    def view(self, conversation: str, at_least: int) -> list[str] | None:
        view = self.views.get(conversation)
        return view if view is not None and len(view) >= at_least else None

    # -- writes -------------------------------------------------------------------

    def _messages(self, count: int) -> list[pb.AppendMessageInput]:
        messages = []
        for i in range(count):
            self.sequence += 1
            text = f"client {self.number} message {self.sequence}.{i}"
            if self.rng.random() < 0.1:
                text += " " + "x" * self.rng.randrange(1000, 4000)
            kind = self.rng.choice(["", "user", "note"])
            if self.rng.random() < 0.25:
                messages.append(
                    tool_text_message(text, metadata={"n": str(self.sequence), "client": "soak"})
                )
            else:
                messages.append(text_message(text, self.rng.choice([USER, ASSISTANT]), kind))
        return messages

    async def append(self, conversation: str, count: int = 0) -> None:
        await self._append(conversation, self._messages(count or self.rng.randint(1, 10)))

    async def _append(self, conversation: str, messages: list[pb.AppendMessageInput]) -> list[str]:
        request = pb.AppendConversationMessagesRequest(
            conversation_id=conversation, messages=messages
        )
        response = await self.soak.call(self.api.append, request)
        ledger = self.ledger(conversation)
        stamp = micros(response.metadata.updated_at)
        ledger.stamps.append(stamp)
        ids = []
        for index, (sent, stored) in enumerate(zip(messages, response.appended, strict=False)):
            ledger.appended[stored.id] = Stored(content(stored), stamp, index)
            ids.append(stored.id)
            if content(stored) != _input_content(sent):
                self.soak.fail(f"append {conversation}: message {stored.id} came back changed")
        if len(response.appended) != len(messages):
            self.soak.fail(f"append {conversation}: {len(response.appended)} of {len(messages)}")
        return ids

    async def delete(self, conversation: str) -> None:
        view = self.view(conversation, 2)
        if view is None:
            return await self.read_all(conversation)
        mode = self.rng.random()
        start = self.rng.randrange(len(view) - 1)
        end = min(len(view) - 1, start + self.rng.randint(0, 4))
        if mode < 0.1:  # through the tail, racing the appends that land there
            from_id, to_id = view[start], ""
        elif mode < 0.3:  # from the head
            from_id, to_id = "", view[self.rng.randrange(min(len(view), 5))]
        else:
            from_id, to_id = view[start], view[end]
        await self._delete(conversation, from_id, to_id)

    async def trim(self, conversation: str) -> None:
        view = self.views[conversation]
        await self._delete(conversation, "", view[len(view) - TRIM_ABOVE // 2])

    async def _delete(self, conversation: str, from_id: str, to_id: str) -> None:
        request = pb.DeleteConversationMessagesRangeRequest(
            conversation_id=conversation, from_message_id=from_id, to_message_id=to_id
        )
        response = await self.soak.call(self.api.delete, request, lost_range)
        deleted = list(response.deleted_message_ids)
        ledger = self.ledger(conversation)
        ledger.stamps.append(micros(response.metadata.updated_at))
        ledger.deleted.update(deleted)
        if (from_id and deleted[0] != from_id) or (to_id and deleted[-1] != to_id):
            self.soak.fail(f"delete {conversation} [{from_id}..{to_id}] deleted {deleted}")
        gone = set(deleted)
        self.views[conversation] = [i for i in self.views.get(conversation, []) if i not in gone]

    async def _replace(
        self,
        conversation: str,
        from_id: str,
        to_id: str,
        new_ids: list[str],
        expected: Expectation = lost_range,
    ) -> pb.ReplaceConversationMessagesRangeResponse:
        ledger = self.ledger(conversation)
        ledger.touched.update(new_ids)  # before the call: a reader may see the move at once
        request = pb.ReplaceConversationMessagesRangeRequest(
            conversation_id=conversation,
            from_message_id=from_id,
            to_message_id=to_id,
            new_message_ids=new_ids,
        )
        response = await self.soak.call(self.api.replace, request, expected)
        ledger.stamps.append(micros(response.metadata.updated_at))
        replaced = list(response.replaced_message_ids)
        ledger.replaced_out.update(set(replaced) - set(new_ids))
        if list(response.inserted_message_ids) != new_ids:
            self.soak.fail(f"replace {conversation}: inserted {response.inserted_message_ids}")
        if from_id and to_id and (replaced[0] != from_id or replaced[-1] != to_id):
            self.soak.fail(f"replace {conversation} [{from_id}..{to_id}] replaced {replaced}")
        if not (from_id and to_id) and replaced:
            self.soak.fail(f"insert-only replace {conversation} replaced {replaced}")
        self.views.pop(conversation, None)  # the next read gets the new order
        return response

    def _span(self, view: list[str], longest: int) -> tuple[str, str]:
        start = self.rng.randrange(len(view) - 1)
        end = min(len(view) - 1, start + self.rng.randint(1, longest))
        return view[start], view[end]

    async def summarise(self, conversation: str) -> None:
        """Append a summary, then replace a range with it (one atomic move)."""
        view = self.view(conversation, 3)
        if view is None:
            return await self.read_all(conversation)
        from_id, to_id = self._span(view, 6)
        summary = self._messages(1)
        (summary_id,) = await self._append(conversation, summary)
        # Another client may delete the summary before the replace names it.
        await self._replace(conversation, from_id, to_id, [summary_id])

    async def detach(self, conversation: str) -> None:
        view = self.view(conversation, 3)
        if view is None:
            return await self.read_all(conversation)
        from_id, to_id = self._span(view, 2)
        response = await self._replace(conversation, from_id, to_id, [])
        self.detached[conversation].extend(response.replaced_message_ids)

    async def reinsert(self, conversation: str) -> None:
        view = self.view(conversation, 1)
        waiting = self.detached.get(conversation)
        if view is None or not waiting:
            return await self.detach(conversation)
        message_id = waiting.pop(self.rng.randrange(len(waiting)))
        anchor = self.rng.choice(view)
        from_id, to_id = (anchor, "") if self.rng.random() < 0.5 else ("", anchor)

        def anchor_lost(code: grpc.StatusCode, details: str) -> bool:
            # Only the anchor can be gone: a detached message lives on, and
            # only this client knows it.
            return code == NOT_FOUND and details.startswith(("from_message_id", "to_message_id"))

        try:
            await self._replace(conversation, from_id, to_id, [message_id], anchor_lost)
        except Refused:
            waiting.append(message_id)
            raise

    async def reorder(self, conversation: str) -> None:
        view = self.view(conversation, 2)
        if view is None:
            return await self.read_all(conversation)
        index = self.rng.randrange(len(view) - 1)
        first, second = view[index], view[index + 1]
        await self._replace(conversation, first, second, [second, first])

    async def snapshot(self, conversation: str) -> None:
        view = self.view(conversation, 1)
        if view is None:
            return await self.read_all(conversation)
        if self.rng.random() < 0.5:
            ids = view[-50:]  # the context of the next model call
        else:
            ids = [self.rng.choice(view) for _ in range(self.rng.randint(1, 10))]
        request = pb.CreateSnapshotRequest(conversation_id=conversation, message_ids=ids)

        def lost_message(code: grpc.StatusCode, details: str) -> bool:
            return code == NOT_FOUND and details.startswith("message_ids")

        response = await self.soak.call(self.api.snapshot, request, lost_message)
        self.soak.ledger.snapshots[response.snapshot.snapshot_id] = (conversation, ids)
        if response.snapshot.conversation_id != conversation:
            self.soak.fail(f"snapshot {response.snapshot.snapshot_id}: wrong conversation")

    # -- reads ------------------------------------------------------------------------

    def _absent(self, conversation: str, created: bool) -> Expectation:
        """NOT_FOUND is right only for a conversation no acknowledged append
        had created when the call started."""

        def check(code: grpc.StatusCode, details: str) -> bool:
            return code == NOT_FOUND and not created

        return check

    def _check_fresh(self, conversation: str, floor: int, updated_at: int, what: str) -> None:
        if updated_at < floor:
            self.soak.fail(
                f"{what} {conversation}: updated_at {updated_at} is older than an "
                f"acknowledged change ({floor})"
            )

    async def get(self, conversation: str) -> None:
        ledger = self.ledger(conversation)
        floor, created = ledger.latest, ledger.created
        request = pb.GetConversationRequest(conversation_id=conversation)
        response = await self.soak.call(self.api.get, request, self._absent(conversation, created))
        self._check_fresh(conversation, floor, micros(response.metadata.updated_at), "get")

    async def read_all(self, conversation: str) -> None:
        """The whole ordering, page by page, while others change it."""
        ledger = self.ledger(conversation)
        floor, created = ledger.latest, ledger.created
        page_size = self.rng.choice([0, 0, 10, 50, 100, 250, 1000])
        by_ids = self.rng.random() < 0.25
        ids: list[str] = []
        token = ""
        for page_number in range(10_000):
            expectation = self._absent(conversation, created) if page_number == 0 else nothing
            if by_ids:
                ids_request = pb.ListConversationMessageIdsRequest(
                    conversation_id=conversation, page_size=page_size, page_token=token
                )
                ids_page = await self.soak.call(self.api.list_ids, ids_request, expectation)
                ids.extend(ids_page.message_ids)
                token = ids_page.next_page_token
            else:
                request = pb.ListConversationMessagesRequest(
                    conversation_id=conversation, page_size=page_size, page_token=token
                )
                page = await self.soak.call(self.api.list, request, expectation)
                self._check_fresh(conversation, floor, micros(page.metadata.updated_at), "list")
                for message in page.messages:
                    stored = ledger.appended.get(message.id)
                    # Unknown yet: appended by a call still waiting for its answer.
                    if stored is not None and stored.content != content(message):
                        self.soak.fail(f"list {conversation}: message {message.id} changed")
                    ids.append(message.id)
                token = page.next_page_token
            if not token:
                break
        seen: set[str] = set()
        for message_id in ids:
            # A page never repeats what an earlier one returned, unless a
            # replace moved it from before the cursor to after it.
            if message_id in seen and message_id not in ledger.touched:
                self.soak.fail(f"list {conversation}: {message_id} listed twice in one pass")
            seen.add(message_id)
        self.views[conversation] = list(dict.fromkeys(ids))

    async def read_snapshot(self, conversation: str) -> None:
        snapshots = self.soak.ledger.snapshots
        if not snapshots:
            return await self.snapshot(conversation)
        snapshot_id = self.rng.choice(list(snapshots))
        ids = await read_snapshot(self.soak, self.api, snapshot_id, self.rng.random() < 0.5)
        if ids != snapshots[snapshot_id][1]:
            self.soak.fail(f"snapshot {snapshot_id} reads back {len(ids)} other ids")


def _input_content(message: pb.AppendMessageInput) -> tuple[int, str, bytes]:
    return (int(message.role), message.kind, message.body.SerializeToString(deterministic=True))


async def read_snapshot(
    soak: Soak, api: Api, snapshot_id: str, with_messages: bool, page_size: int = 0
) -> list[str]:
    """A snapshot's ids in order; with_messages reads ListSnapshotMessages
    and checks each body against what its append stored."""
    ids: list[str] = []
    token = ""
    conversation = soak.ledger.conversations[soak.ledger.snapshots[snapshot_id][0]]
    while True:
        if with_messages:
            request = pb.ListSnapshotMessagesRequest(
                snapshot_id=snapshot_id, page_size=page_size, page_token=token
            )
            page = await soak.call(api.snapshot_list, request)
            for message in page.messages:
                stored = conversation.appended.get(message.id)
                if stored is not None and stored.content != content(message):
                    soak.fail(f"snapshot {snapshot_id}: message {message.id} changed")
                ids.append(message.id)
            token = page.next_page_token
        else:
            ids_request = pb.ListSnapshotMessageIdsRequest(
                snapshot_id=snapshot_id, page_size=page_size, page_token=token
            )
            ids_page = await soak.call(api.snapshot_ids, ids_request)
            ids.extend(ids_page.message_ids)
            token = ids_page.next_page_token
        if not token:
            return ids


# --- the audit ----------------------------------------------------------------------


async def audit(soak: Soak, api: Api) -> list[str]:
    """Re-read everything once the clients have stopped; the problems found."""
    problems: list[str] = []
    gate = asyncio.Semaphore(AUDIT_CONCURRENCY)

    async def conversation(conversation_id: str, ledger: Conversation) -> None:
        async with gate:
            problems.extend(await audit_conversation(soak, api, conversation_id, ledger))

    async def snapshot(snapshot_id: str, expected: list[str]) -> None:
        async with gate:
            for with_messages in (False, True):
                ids = await read_snapshot(soak, api, snapshot_id, with_messages, 1000)
                if ids != expected:
                    problems.append(
                        f"snapshot {snapshot_id} reads back other ids than it was made of"
                    )

    await asyncio.gather(
        *(conversation(c, ledger) for c, ledger in soak.ledger.conversations.items()),
        *(snapshot(s, ids) for s, (_, ids) in soak.ledger.snapshots.items()),
    )
    return problems


async def audit_conversation(
    soak: Soak, api: Api, conversation_id: str, ledger: Conversation
) -> list[str]:
    name = f"conversation {conversation_id}"
    if not ledger.created:
        return []
    problems: list[str] = []
    ordering: list[str] = []
    listed: dict[str, pb.Message] = {}
    token = ""
    while True:
        page = await soak.call(
            api.list,
            pb.ListConversationMessagesRequest(
                conversation_id=conversation_id, page_size=1000, page_token=token
            ),
        )
        for message in page.messages:
            ordering.append(message.id)
            listed[message.id] = message
        token = page.next_page_token
        if not token:
            break
    ids: list[str] = []
    while True:
        ids_page = await soak.call(
            api.list_ids,
            pb.ListConversationMessageIdsRequest(
                conversation_id=conversation_id, page_size=1000, page_token=token
            ),
        )
        ids.extend(ids_page.message_ids)
        token = ids_page.next_page_token
        if not token:
            break
    metadata = (
        await soak.call(api.get, pb.GetConversationRequest(conversation_id=conversation_id))
    ).metadata
    if ids != ordering:
        problems.append(f"{name}: the two list methods disagree")
    if len(set(ordering)) != len(ordering):
        problems.append(f"{name}: an id appears twice in the ordering")
    if metadata.message_count != len(ordering):
        problems.append(f"{name}: message_count {metadata.message_count}, {len(ordering)} listed")
    if len(set(ledger.stamps)) != len(ledger.stamps):
        problems.append(f"{name}: two acknowledged changes share an updated_at")
    if micros(metadata.updated_at) != ledger.latest:
        problems.append(
            f"{name}: updated_at {micros(metadata.updated_at)} is not the last acknowledged "
            f"change's ({ledger.latest})"
        )
    in_order = set(ordering)
    for message_id in ordering:
        stored = ledger.appended.get(message_id)
        if stored is None:
            problems.append(f"{name}: {message_id} was never acknowledged as appended")
        elif stored.content != content(listed[message_id]):
            problems.append(f"{name}: {message_id} has changed")
        if message_id in ledger.deleted:
            problems.append(f"{name}: {message_id} is back after an acknowledged delete")
    unknown_deleted = ledger.deleted - set(ledger.appended)
    if unknown_deleted:
        problems.append(f"{name}: deleted {len(unknown_deleted)} ids never appended")
    # Out of the ordering without a delete: only a replace may have done that,
    # and the message must still exist (detached), so a snapshot can name it.
    missing = [i for i in ledger.appended if i not in in_order and i not in ledger.deleted]
    lost = [i for i in missing if i not in ledger.replaced_out]
    if lost:
        problems.append(f"{name}: {len(lost)} acknowledged appends lost, e.g. {lost[:3]}")
    for start in range(0, len(missing), 10_000):
        chunk = missing[start : start + 10_000]
        try:
            await soak.call(
                api.snapshot,
                pb.CreateSnapshotRequest(conversation_id=conversation_id, message_ids=chunk),
            )
        except Refused as refused:
            problems.append(f"{name}: a detached message is gone: {refused}")
    # Deleted messages are gone for good.
    for message_id in sorted(ledger.deleted)[:3]:
        try:
            await soak.call(
                api.snapshot,
                pb.CreateSnapshotRequest(conversation_id=conversation_id, message_ids=[message_id]),
                lambda code, details: code == NOT_FOUND,
            )
            problems.append(f"{name}: deleted message {message_id} can still be snapshotted")
        except Refused:
            pass
    # Messages no replace moved keep their append order: each batch landed
    # contiguously at the tail, in the order of the appends' updated_at.
    untouched = [i for i in ordering if i not in ledger.touched and i in ledger.appended]
    expected = sorted(untouched, key=lambda i: (ledger.appended[i].stamp, ledger.appended[i].index))
    if untouched != expected:
        problems.append(f"{name}: messages no replace touched are out of append order")
    return problems


# --- reporting --------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(soak: Soak, backend_name: str, elapsed: float) -> dict[str, Any]:
    stats = soak.stats
    methods = {
        method: {
            "calls": len(values),
            "p50_ms": round(percentile(values, 0.50) * 1000, 2),
            "p99_ms": round(percentile(values, 0.99) * 1000, 2),
            "mean_ms": round(statistics.fmean(values) * 1000, 2),
            "expected_errors": {
                code: n for (m, code), n in sorted(stats.expected.items()) if m == method
            },
        }
        for method, values in sorted(stats.latencies.items())
    }
    conversations = soak.ledger.conversations.values()
    return {
        "backend": backend_name,
        "clients": soak.clients,
        "seconds": round(elapsed, 2),
        "calls": stats.calls,
        "calls_per_second": round(stats.calls / elapsed, 1),
        "operations": dict(sorted(stats.operations.items())),
        "conversations": sum(1 for c in conversations if c.created),
        "appended_messages": sum(len(c.appended) for c in conversations),
        "deleted_messages": sum(len(c.deleted) for c in conversations),
        "snapshots": len(soak.ledger.snapshots),
        "unexpected_errors": len(stats.unexpected),
        "methods": methods,
    }


def print_report(result: dict[str, Any]) -> None:
    print(
        f"\nsoak ({result['backend']}): {result['clients']} clients, {result['seconds']} s, "
        f"{result['calls']} calls, {result['calls_per_second']} calls/s, "
        f"{result['appended_messages']} messages appended, {result['snapshots']} snapshots, "
        f"{result['conversations']} conversations"
    )
    print(f"{'method':<34}{'calls':>8}{'p50 ms':>9}{'p99 ms':>9}  expected errors")
    for method, row in result["methods"].items():
        errors = ", ".join(f"{code} {n}" for code, n in row["expected_errors"].items())
        print(f"{method:<34}{row['calls']:>8}{row['p50_ms']:>9}{row['p99_ms']:>9}  {errors}")


# --- the test ----------------------------------------------------------------------


async def soak_and_audit(address: str, backend_name: str) -> tuple[Soak, dict[str, Any], list[str]]:
    channels = [
        # Separate connections, as separate agent processes would have.
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    try:
        apis = [Api(channel) for channel in channels]
        soak = Soak(apis, SOAK_CLIENTS, SOAK_SECONDS)
        elapsed = await soak.run()
        result = report(soak, backend_name, elapsed)
        problems = await audit(soak, apis[0])
    finally:
        for channel in channels:
            await channel.close()
    return soak, result, problems


@pytest.mark.timeout(int(SOAK_SECONDS * 3 + 240))
def test_soak(backend: str, make_database_url: Callable[[], str], tmp_path: Path) -> None:
    with ServerProcess(
        database_url=make_database_url(), log_path=tmp_path / "server.log"
    ) as server:
        # A loop of its own: the clients and the audit run in this one call.
        soak, result, problems = asyncio.run(soak_and_audit(server.address, backend))
        assert server.process is not None
        assert server.process.poll() is None, f"the server died: {server.describe()}"
    print_report(result)
    REPORTS[backend] = result
    if REPORT_PATH:
        Path(REPORT_PATH).write_text(json.dumps(REPORTS, indent=2) + "\n")
    unexpected = soak.stats.unexpected
    assert not unexpected, f"{len(unexpected)} unexpected outcomes, e.g.:\n" + "\n".join(
        unexpected[:20]
    )
    assert not problems, f"{len(problems)} audit problems:\n" + "\n".join(problems[:30])
    assert result["appended_messages"] > 0
    assert result["snapshots"] > 0
