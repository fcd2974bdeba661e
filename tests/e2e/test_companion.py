"""The companion API (agentstate.v1.ConversationsService) through a real
server on every backend: conversations as a whole, their versions in
trailing metadata, stable listing while others write, erasure and what
follows it, errors naming fields, and the same tokens, metrics, logs,
health and reflection as AgentStateService."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb
from tests.support import calls
from tests.support.calls import CompanionStub, Stub, text_message
from tests.support.server import ServerProcess, health_check

from .conftest import Guarded
from .helpers import (
    COMPANION_METHODS,
    COMPANION_SERVICE,
    INVALID_ARGUMENT,
    MAX_PAGE_BYTES,
    NOT_FOUND,
    RO_TOKEN,
    RW_TOKEN,
    bearer,
    expect_error,
    is_canonical_uuid,
    micros,
    new_id,
    spellings,
    status_code,
    texts,
)

SERVICE = COMPANION_SERVICE
VERSION = "x-conversation-version"
ABORTED = grpc.StatusCode.ABORTED
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
TIMEOUT = 30


@pytest.fixture
def companion(channel: grpc.Channel, live_server: ServerProcess) -> CompanionStub:
    return calls.make_companion_stub(channel)


def trailing(call: Any) -> dict[str, str]:
    return {item.key: item.value for item in call.trailing_metadata() or ()}


def create(companion: CompanionStub, **fields: Any) -> cpb.Conversation:
    reply, call = companion.CreateConversation.with_call(
        cpb.CreateConversationRequest(**fields), timeout=TIMEOUT
    )
    assert trailing(call)[VERSION] == str(reply.version) == "1"
    created: cpb.Conversation = reply
    return created


def describe(companion: CompanionStub, conversation_id: str) -> cpb.Conversation:
    reply, call = companion.DescribeConversation.with_call(
        cpb.DescribeConversationRequest(conversation_id=conversation_id), timeout=TIMEOUT
    )
    assert trailing(call)[VERSION] == str(reply.version)
    described: cpb.Conversation = reply
    return described


def update(
    companion: CompanionStub,
    conversation: cpb.Conversation,
    *paths: str,
    expected_version: int = 0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> cpb.Conversation:
    reply, call = companion.UpdateConversation.with_call(
        cpb.UpdateConversationRequest(
            conversation=conversation,
            update_mask=FieldMask(paths=list(paths)),
            expected_version=expected_version,
        ),
        timeout=TIMEOUT,
        metadata=metadata,
    )
    assert trailing(call)[VERSION] == str(reply.version)
    updated: cpb.Conversation = reply
    return updated


def delete(
    companion: CompanionStub, conversation_id: str, **fields: Any
) -> cpb.DeleteConversationResponse:
    reply, call = companion.DeleteConversation.with_call(
        cpb.DeleteConversationRequest(conversation_id=conversation_id, **fields), timeout=TIMEOUT
    )
    assert trailing(call)[VERSION] == "0"
    erased: cpb.DeleteConversationResponse = reply
    return erased


def list_all(
    companion: CompanionStub,
    between: Callable[[int], None] = lambda _: None,
    **fields: Any,
) -> list[cpb.Conversation]:
    """Every page of ListConversations; `between(n)` runs after page n."""
    listed: list[cpb.Conversation] = []
    token = ""
    for number in range(10_000):
        page: cpb.ListConversationsResponse = companion.ListConversations(
            cpb.ListConversationsRequest(page_token=token, **fields), timeout=TIMEOUT
        )
        listed += page.conversations
        token = page.next_page_token
        assert page.conversations or not token
        if not token:
            return listed
        between(number)
    raise AssertionError("paging did not end")


# --- create, describe, update ----------------------------------------------------


def test_create_describe_update(companion: CompanionStub, stub: Stub) -> None:
    conversation_id = new_id()
    created = create(
        companion,
        conversation_id=conversation_id.upper(),
        title="t\x00\U0001f600",
        labels={"user": "alice", "team/x": ""},
        retention=cpb.Retention(max_idle=Duration(seconds=86400), max_messages=100),
    )
    assert created.conversation_id == conversation_id
    assert created.message_count == 0
    assert created.created_at == created.updated_at
    assert created.retention == cpb.Retention(max_idle=Duration(seconds=86400), max_messages=100)
    assert describe(companion, conversation_id) == created
    # An empty id: the server makes a v7 UUID.
    made = create(companion)
    assert is_canonical_uuid(made.conversation_id)
    assert uuid.UUID(made.conversation_id).version == 7
    assert not made.HasField("retention")

    calls.append(stub, conversation_id, [text_message("hello")])
    appended = describe(companion, conversation_id)
    assert (appended.version, appended.message_count) == (2, 1)
    assert appended.updated_at == calls.get(stub, conversation_id).updated_at

    changed = update(
        companion,
        cpb.Conversation(conversation_id=conversation_id, labels={"user": "bob"}, title="ignored"),
        "labels",
        "retention",
        expected_version=2,
    )
    assert changed.version == 3
    assert dict(changed.labels) == {"user": "bob"}
    assert changed.title == created.title
    assert not changed.HasField("retention")
    assert changed.updated_at == appended.updated_at
    for spelling in spellings(conversation_id)[1:3]:
        assert describe(companion, spelling) == changed


def test_versions_on_errors(companion: CompanionStub) -> None:
    conversation = create(companion, conversation_id=new_id())
    cid = conversation.conversation_id
    stale = cpb.UpdateConversationRequest(
        conversation=cpb.Conversation(conversation_id=cid, title="x"),
        update_mask=FieldMask(paths=["title"]),
        expected_version=5,
    )
    error = expect_error(
        ABORTED,
        lambda: companion.UpdateConversation(stale, timeout=TIMEOUT),
        "expected_version",
        "version 1, not 5",
    )
    assert trailing(error)[VERSION] == "1"
    # The request's own mistake, on a conversation that exists.
    bad_mask = cpb.UpdateConversationRequest(
        conversation=cpb.Conversation(conversation_id=cid), update_mask=FieldMask(paths=["nope"])
    )
    error = expect_error(
        INVALID_ARGUMENT,
        lambda: companion.UpdateConversation(bad_mask, timeout=TIMEOUT),
        "update_mask.paths[0]",
    )
    assert trailing(error)[VERSION] == "1"
    error = expect_error(
        ALREADY_EXISTS,
        lambda: companion.CreateConversation(
            cpb.CreateConversationRequest(conversation_id=cid), timeout=TIMEOUT
        ),
        "conversation_id",
    )
    assert trailing(error)[VERSION] == "1"
    error = expect_error(
        ABORTED,
        lambda: companion.DeleteConversation(
            cpb.DeleteConversationRequest(conversation_id=cid, expected_version=9),
            timeout=TIMEOUT,
        ),
        "expected_version",
    )
    assert trailing(error)[VERSION] == "1"
    # Absent, or not even an id: no version, a request id as always.
    error = expect_error(
        NOT_FOUND,
        lambda: companion.DescribeConversation(
            cpb.DescribeConversationRequest(conversation_id=new_id()), timeout=TIMEOUT
        ),
        "conversation_id",
    )
    assert VERSION not in trailing(error)
    assert "x-request-id" in trailing(error)
    error = expect_error(
        INVALID_ARGUMENT,
        lambda: companion.DescribeConversation(
            cpb.DescribeConversationRequest(conversation_id="nope"), timeout=TIMEOUT
        ),
        "conversation_id",
    )
    assert VERSION not in trailing(error)
    assert describe(companion, cid).version == 1


@pytest.mark.parametrize(
    ("method", "request_message", "fields"),
    [
        ("CreateConversation", cpb.CreateConversationRequest(title="x" * 1001), ["title"]),
        (
            "CreateConversation",
            cpb.CreateConversationRequest(labels={"Upper": "v"}),
            ["labels['Upper']"],
        ),
        (
            "CreateConversation",
            cpb.CreateConversationRequest(labels={"k": "v" * 257}),
            ["labels['k']", "256"],
        ),
        (
            "CreateConversation",
            cpb.CreateConversationRequest(labels={f"k{i}": "" for i in range(65)}),
            ["labels", "64"],
        ),
        (
            "CreateConversation",
            cpb.CreateConversationRequest(retention=cpb.Retention(max_idle=Duration(seconds=-1))),
            ["retention.max_idle"],
        ),
        (
            "CreateConversation",
            cpb.CreateConversationRequest(retention=cpb.Retention(max_messages=-1)),
            ["retention.max_messages"],
        ),
        (
            "CreateConversation",
            cpb.CreateConversationRequest(retention=cpb.Retention(max_idle=Duration(nanos=1))),
            ["retention.max_idle", "microseconds"],
        ),
        (
            "CreateConversation",
            cpb.CreateConversationRequest(conversation_id="x"),
            ["conversation_id"],
        ),
        ("DescribeConversation", cpb.DescribeConversationRequest(), ["conversation_id"]),
        ("UpdateConversation", cpb.UpdateConversationRequest(), ["conversation.conversation_id"]),
        (
            "UpdateConversation",
            cpb.UpdateConversationRequest(conversation=cpb.Conversation(conversation_id=new_id())),
            ["update_mask"],
        ),
        (
            "UpdateConversation",
            cpb.UpdateConversationRequest(
                conversation=cpb.Conversation(conversation_id=new_id(), title="y" * 1001),
                update_mask=FieldMask(paths=["title"]),
            ),
            ["conversation.title"],
        ),
        (
            "UpdateConversation",
            cpb.UpdateConversationRequest(
                conversation=cpb.Conversation(conversation_id=new_id()),
                update_mask=FieldMask(paths=["title"]),
                expected_version=-1,
            ),
            ["expected_version"],
        ),
        ("ListConversations", cpb.ListConversationsRequest(order_by="created_at"), ["order_by"]),
        ("ListConversations", cpb.ListConversationsRequest(page_token="abc"), ["page_token"]),
        (
            "ListConversations",
            cpb.ListConversationsRequest(updated_after=Timestamp(seconds=-(10**12))),
            ["updated_after"],
        ),
        (
            "ListConversations",
            cpb.ListConversationsRequest(updated_before=Timestamp(nanos=-1)),
            ["updated_before"],
        ),
        ("ListConversations", cpb.ListConversationsRequest(labels={"A": "b"}), ["labels['A']"]),
        ("DeleteConversation", cpb.DeleteConversationRequest(), ["conversation_id"]),
        (
            "DeleteConversation",
            cpb.DeleteConversationRequest(conversation_id=new_id(), expected_version=-3),
            ["expected_version"],
        ),
    ],
)
def test_bad_requests_name_their_field(
    companion: CompanionStub, method: str, request_message: Any, fields: list[str]
) -> None:
    call = getattr(companion, method)
    expect_error(INVALID_ARGUMENT, lambda: call(request_message, timeout=TIMEOUT), *fields)


def test_absent_conversations_are_not_found(companion: CompanionStub) -> None:
    absent = new_id()
    requests: list[tuple[str, Any]] = [
        ("DescribeConversation", cpb.DescribeConversationRequest(conversation_id=absent)),
        (
            "UpdateConversation",
            cpb.UpdateConversationRequest(
                conversation=cpb.Conversation(conversation_id=absent),
                update_mask=FieldMask(paths=["title"]),
            ),
        ),
        ("DeleteConversation", cpb.DeleteConversationRequest(conversation_id=absent)),
    ]
    for method, request_message in requests:
        expect_error(NOT_FOUND, partial(getattr(companion, method), request_message), absent)
    assert delete(companion, absent, allow_missing=True, expected_version=4) == (
        cpb.DeleteConversationResponse()
    )


def test_update_replays_with_an_idempotency_key(companion: CompanionStub, stub: Stub) -> None:
    cid = create(companion, conversation_id=new_id()).conversation_id
    key = (("idempotency-key", new_id()),)
    change = cpb.Conversation(conversation_id=cid, title="once")
    first = update(companion, change, "title", expected_version=1, metadata=key)
    calls.append(stub, cid, [text_message("later")])
    # The first answer again, and the version as it is now.
    again, call = companion.UpdateConversation.with_call(
        cpb.UpdateConversationRequest(
            conversation=change, update_mask=FieldMask(paths=["title"]), expected_version=1
        ),
        timeout=TIMEOUT,
        metadata=key,
    )
    assert again == first
    assert trailing(call)[VERSION] == "3"


def test_a_create_without_an_id_replays_with_an_idempotency_key(
    companion: CompanionStub, stub: Stub
) -> None:
    key = (("idempotency-key", new_id()),)
    request = cpb.CreateConversationRequest(title="made once")
    first, call = companion.CreateConversation.with_call(request, timeout=TIMEOUT, metadata=key)
    assert trailing(call)[VERSION] == "1"
    calls.append(stub, first.conversation_id, [text_message("later")])
    # The first answer, the same conversation; the version as it is now.
    again, call = companion.CreateConversation.with_call(request, timeout=TIMEOUT, metadata=key)
    assert again == first
    assert trailing(call)[VERSION] == "2"


def test_a_delete_replays_with_an_idempotency_key(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    calls.seed(stub, cid, 2)
    key = (("idempotency-key", new_id()),)
    request = cpb.DeleteConversationRequest(conversation_id=cid)
    first = companion.DeleteConversation(request, timeout=TIMEOUT, metadata=key)
    assert (first.deleted_message_count, first.deleted_snapshot_count) == (2, 0)
    # A retry after the first call went through: its answer, not NOT_FOUND.
    again, call = companion.DeleteConversation.with_call(request, timeout=TIMEOUT, metadata=key)
    assert again == first
    assert trailing(call)[VERSION] == "0"
    expect_error(NOT_FOUND, lambda: companion.DeleteConversation(request, timeout=TIMEOUT))
    # Made again since: the replay leaves it, and answers with its version.
    calls.append(stub, cid, [text_message("again")])
    again, call = companion.DeleteConversation.with_call(request, timeout=TIMEOUT, metadata=key)
    assert again == first
    assert trailing(call)[VERSION] == "1"
    assert describe(companion, cid).message_count == 1
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: companion.DeleteConversation(
            cpb.DeleteConversationRequest(conversation_id=cid, allow_missing=True),
            timeout=TIMEOUT,
            metadata=key,
        ),
        "idempotency-key",
    )


# --- delete ---------------------------------------------------------------------------


def test_delete_erases_and_a_late_append_starts_at_version_1(
    companion: CompanionStub, stub: Stub
) -> None:
    cid = create(companion, conversation_id=new_id(), title="t", labels={"k": "v"}).conversation_id
    ids = calls.seed(stub, cid, 5)
    stub.ReplaceConversationMessagesRange(
        pb.ReplaceConversationMessagesRangeRequest(
            conversation_id=cid, from_message_id=ids[0], to_message_id=ids[1]
        ),
        timeout=TIMEOUT,
    )
    snapshot_id = calls.snapshot(stub, cid, ids[:3]).snapshot_id
    erased = delete(companion, cid)
    assert (erased.deleted_message_count, erased.deleted_snapshot_count) == (5, 1)
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid), "conversation_id")
    expect_error(NOT_FOUND, lambda: calls.snapshot_ids(stub, snapshot_id), "snapshot_id")
    expect_error(NOT_FOUND, lambda: describe(companion, cid), "conversation_id")
    assert delete(companion, cid, allow_missing=True) == cpb.DeleteConversationResponse()

    calls.append(stub, cid, [text_message("late")])
    again = describe(companion, cid)
    assert (again.version, again.message_count, again.title, dict(again.labels)) == (1, 1, "", {})
    assert texts(calls.list_all(stub, cid)) == ["late"]


# --- ListConversations -------------------------------------------------------------------


def test_list_pages_stay_stable_while_others_write_and_delete(
    companion: CompanionStub, stub: Stub
) -> None:
    run = uuid.uuid4().hex
    made = [create(companion, labels={"run": run}).conversation_id for _ in range(12)]
    for index, cid in enumerate(made):
        # Appends order them: the first made is the least recently updated.
        calls.append(stub, cid, [text_message(str(index))])
    moved: set[str] = set()
    gone: set[str] = set()

    def meddle(number: int) -> None:
        mover, victim = made[(number * 5) % 12], made[(number * 7 + 2) % 12]
        if mover not in gone:
            moved.add(mover)
            calls.append(stub, mover, [text_message("again")])
        if victim not in moved:
            gone.add(victim)
            delete(companion, victim, allow_missing=True)
        create(companion, labels={"run": run})

    for order_by in ("", "updated_at"):
        # Gone stays gone; what moved before this listing is where it is.
        moved.clear()
        listed = [
            c.conversation_id
            for c in list_all(
                companion, meddle, labels={"run": run}, order_by=order_by, page_size=2
            )
        ]
        assert len(listed) == len(set(listed)), f"{order_by!r}: a conversation came twice"
        unmoved = set(made) - moved - gone
        assert unmoved <= set(listed), f"{order_by!r}: one that did not move was skipped"
        assert moved


def test_list_orders_and_time_bounds(companion: CompanionStub, stub: Stub) -> None:
    run = uuid.uuid4().hex
    made = [create(companion, labels={"run": run, "n": str(i)}) for i in range(5)]
    for conversation in made[::-1]:
        calls.append(stub, conversation.conversation_id, [text_message("x")])
    newest = list_all(companion, labels={"run": run}, page_size=2)
    # Appended in reverse: the first made was updated last.
    assert [c.conversation_id for c in newest] == [c.conversation_id for c in made]
    oldest = list_all(companion, labels={"run": run}, order_by="updated_at", page_size=3)
    assert oldest == newest[::-1]
    assert list_all(companion, labels={"run": run}, order_by="updated_at desc") == newest
    times = [micros(c.updated_at) for c in newest]
    assert times == sorted(times, reverse=True)
    middle = newest[2].updated_at
    after = list_all(companion, labels={"run": run}, updated_after=middle)
    assert after == newest[:2]
    before = list_all(companion, labels={"run": run}, updated_before=middle)
    assert before == newest[3:]
    one = list_all(companion, labels={"run": run, "n": "3"})
    assert [c.conversation_id for c in one] == [made[3].conversation_id]
    assert list_all(companion, labels={"run": run, "n": "nope"}) == []
    # Tokens are bound to their filters.
    first = companion.ListConversations(
        cpb.ListConversationsRequest(labels={"run": run}, page_size=1), timeout=TIMEOUT
    )
    expect_error(
        INVALID_ARGUMENT,
        lambda: companion.ListConversations(
            cpb.ListConversationsRequest(
                labels={"run": run}, order_by="updated_at", page_token=first.next_page_token
            ),
            timeout=TIMEOUT,
        ),
        "page_token",
    )


def test_pages_of_the_largest_conversations_stay_under_3_mib(companion: CompanionStub) -> None:
    """60 conversations of the largest title and labels (about 70 KiB each
    encoded): asked for 100 a page, the pages stop early under 3 MiB."""
    run = new_id()
    labels = {"run": run} | {f"{i:02d}" + "k" * 61: "\U0001f600" * 256 for i in range(63)}
    for _ in range(60):
        create(companion, title="\U0001f600" * 1000, labels=labels)
    pages, token = [], ""
    while True:
        page = companion.ListConversations(
            cpb.ListConversationsRequest(labels={"run": run}, page_size=100, page_token=token),
            timeout=TIMEOUT,
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    assert sum(len(page.conversations) for page in pages) == 60
    assert len(pages) == 2
    assert all(page.ByteSize() < MAX_PAGE_BYTES for page in pages)


# --- one port, one set of rules ---------------------------------------------------------


def test_reflection_and_health_cover_the_companion(
    channel: grpc.Channel, live_server: ServerProcess
) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert SERVICE in list(database.get_services())
    # The whole file resolves, with the agynio contract it imports.
    served = DescriptorPool(database).FindServiceByName(SERVICE)
    described = cpb.DESCRIPTOR.services_by_name["ConversationsService"]
    assert [m.name for m in served.methods] == [m.name for m in described.methods]
    update = served.methods_by_name["UpdateConversation"].input_type
    conversation = update.fields_by_name["conversation"].message_type
    assert conversation is not None
    assert conversation.full_name == "agentstate.v1.Conversation"
    reply = health_check(channel, SERVICE, timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_exactly_the_methods_served_so_far_are_implemented(channel: grpc.Channel) -> None:
    descriptor = cpb.DESCRIPTOR.services_by_name["ConversationsService"]
    for method in descriptor.methods:
        call = channel.unary_unary(
            f"/{SERVICE}/{method.name}",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        code = status_code(partial(call, b"", timeout=TIMEOUT))
        served = method.name in COMPANION_METHODS
        assert (code is not grpc.StatusCode.UNIMPLEMENTED) == served, (method.name, code)


def test_tokens_metrics_and_logs(guarded: Guarded) -> None:
    with grpc.insecure_channel(guarded.server.address) as channel:
        companion = calls.make_companion_stub(channel)
        cid = new_id()
        creating = cpb.CreateConversationRequest(conversation_id=cid)
        describing = cpb.DescribeConversationRequest(conversation_id=cid)
        listing = cpb.ListConversationsRequest()
        # No token, or an unknown one: UNAUTHENTICATED, and no version.
        for metadata in ((), bearer("not-a-token-at-all-00000")):
            error = expect_error(
                grpc.StatusCode.UNAUTHENTICATED,
                partial(companion.DescribeConversation, describing, metadata=metadata),
            )
            assert VERSION not in trailing(error)
        # A read-only token reads, and may not write.
        expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            lambda: companion.CreateConversation(creating, metadata=bearer(RO_TOKEN)),
        )
        expect_error(
            NOT_FOUND,
            lambda: companion.DescribeConversation(describing, metadata=bearer(RO_TOKEN)),
        )
        companion.CreateConversation(creating, metadata=bearer(RW_TOKEN), timeout=TIMEOUT)
        error = expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            lambda: companion.DeleteConversation(
                cpb.DeleteConversationRequest(conversation_id=cid), metadata=bearer(RO_TOKEN)
            ),
        )
        assert VERSION not in trailing(error)
        assert companion.DescribeConversation(describing, metadata=bearer(RO_TOKEN)).version == 1
        assert (
            len(companion.ListConversations(listing, metadata=bearer(RO_TOKEN)).conversations) == 1
        )
        companion.DeleteConversation(
            cpb.DeleteConversationRequest(conversation_id=cid), metadata=bearer(RW_TOKEN)
        )

    url = f"http://127.0.0.1:{guarded.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def requests(method: str, code: str) -> float:
        return samples[("agent_state_rpc_requests_total", (("code", code), ("method", method)))]

    assert requests("CreateConversation", "OK") == 1
    assert requests("CreateConversation", "PERMISSION_DENIED") == 1
    assert requests("DescribeConversation", "UNAUTHENTICATED") == 2
    assert requests("DescribeConversation", "OK") == 1
    assert requests("ListConversations", "OK") == 1
    assert requests("DeleteConversation", "OK") == 1

    lines = [
        json.loads(line) for line in guarded.server.output().splitlines() if line.startswith("{")
    ]
    rpc = [line for line in lines if line.get("logger") == "agent_state.rpc"]
    created = [
        line for line in rpc if line["method"] == "CreateConversation" and line["code"] == "OK"
    ]
    assert len(created) == 1
    assert created[0]["conversation_id"] == cid
    assert created[0]["request_id"]
    assert RW_TOKEN not in guarded.server.output()
