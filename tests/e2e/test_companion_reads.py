"""The companion API's reads and forks through a real server on every
backend: TailConversationMessages, GetMessages, ListConversationSnapshots
and ForkConversation, their answers as generated clients parse them, their
versions in trailing metadata, their limits, the errors naming fields, and
the same tokens, metrics and logs as every other call."""

from __future__ import annotations

import json
import urllib.request
import uuid
from functools import partial
from typing import Any

import grpc
import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb
from tests.support import calls
from tests.support.calls import CompanionStub, Stub, text_message

from .conftest import Guarded
from .helpers import (
    ASSISTANT,
    INVALID_ARGUMENT,
    MIB,
    NOT_FOUND,
    RO_TOKEN,
    RW_TOKEN,
    TOOL,
    USER,
    bearer,
    content,
    expect_error,
    is_canonical_uuid,
    new_id,
    role,
    texts,
)
from .test_companion import ALREADY_EXISTS, TIMEOUT, VERSION, create, trailing

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
def companion(channel: grpc.Channel, stub: Stub) -> CompanionStub:
    return calls.make_companion_stub(channel)


def tail(
    companion: CompanionStub, conversation_id: str, count: int, **fields: Any
) -> cpb.TailConversationMessagesResponse:
    reply, call = companion.TailConversationMessages.with_call(
        cpb.TailConversationMessagesRequest(conversation_id=conversation_id, count=count, **fields),
        timeout=TIMEOUT,
    )
    assert trailing(call)[VERSION] == str(describe_version(companion, conversation_id))
    result: cpb.TailConversationMessagesResponse = reply
    return result


def describe_version(companion: CompanionStub, conversation_id: str) -> int:
    described: cpb.Conversation = companion.DescribeConversation(
        cpb.DescribeConversationRequest(conversation_id=conversation_id), timeout=TIMEOUT
    )
    return described.version


def get_messages(
    companion: CompanionStub, conversation_id: str, message_ids: list[str]
) -> list[pb.Message]:
    reply, call = companion.GetMessages.with_call(
        cpb.GetMessagesRequest(conversation_id=conversation_id, message_ids=message_ids),
        timeout=TIMEOUT,
    )
    assert trailing(call)[VERSION] == str(describe_version(companion, conversation_id))
    return list(reply.messages)


def fork(
    companion: CompanionStub,
    conversation_id: str,
    metadata: tuple[tuple[str, str], ...] = (),
    **fields: Any,
) -> cpb.ForkConversationResponse:
    reply, call = companion.ForkConversation.with_call(
        cpb.ForkConversationRequest(conversation_id=conversation_id, **fields),
        timeout=TIMEOUT,
        metadata=metadata,
    )
    assert trailing(call)[VERSION] == str(reply.conversation.version)
    forked: cpb.ForkConversationResponse = reply
    return forked


def snapshots(
    companion: CompanionStub, conversation_id: str, page_size: int
) -> list[cpb.SnapshotInfo]:
    """Every page of ListConversationSnapshots."""
    listed: list[cpb.SnapshotInfo] = []
    token = ""
    for _ in range(1000):
        page, call = companion.ListConversationSnapshots.with_call(
            cpb.ListConversationSnapshotsRequest(
                conversation_id=conversation_id, page_size=page_size, page_token=token
            ),
            timeout=TIMEOUT,
        )
        assert VERSION in trailing(call)
        listed += page.snapshots
        token = page.next_page_token
        assert page.snapshots or not token
        if not token:
            return listed
    raise AssertionError("paging did not end")


# --- TailConversationMessages --------------------------------------------------------


def test_tail_of_ten_thousand_messages(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 10_000)
    reply = tail(companion, cid, 5)
    assert [m.id for m in reply.messages] == ids[-5:]
    assert texts(reply.messages) == [f"m{i}" for i in range(9995, 10_000)]
    assert all(m.conversation_id == cid for m in reply.messages)
    assert reply.metadata == calls.get(stub, cid)
    assert not reply.truncated
    # The messages the agynio list sends.
    assert list(tail(companion, cid, 1000).messages) == calls.list_all(stub, cid)[-1000:]


def test_tail_filters_and_answers_what_the_list_would(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    calls.append(
        stub,
        cid,
        [
            text_message("u1", USER, "a"),
            text_message("a1", ASSISTANT, "b"),
            text_message("t1", TOOL, "a"),
            text_message("u2", USER, ""),
            text_message("a2", ASSISTANT, "a"),
        ],
    )
    assert texts(tail(companion, cid, 2, roles=[USER]).messages) == ["u1", "u2"]
    assert texts(tail(companion, cid, 2, kinds=["a"]).messages) == ["t1", "a2"]
    assert texts(tail(companion, cid, 9, roles=[ASSISTANT, TOOL], kinds=["a"]).messages) == [
        "t1",
        "a2",
    ]
    assert texts(tail(companion, cid, 9, kinds=[""]).messages) == ["u2"]
    for roles, kinds in [([USER], []), ([], ["a"]), ([TOOL, ASSISTANT], ["b", "a"])]:
        everything = calls.list_all(stub, cid, roles=roles, kinds=kinds)
        assert list(tail(companion, cid, 1000, roles=roles, kinds=kinds).messages) == everything


def test_tail_past_the_response_limit_drops_the_oldest(
    companion: CompanionStub, stub: Stub
) -> None:
    cid = new_id()
    for i in range(4):
        calls.append(stub, cid, [text_message(f"{i}" + "x" * (MIB - 200))])
    reply = tail(companion, cid, 4)
    assert reply.truncated
    assert [m.body.text.text[0] for m in reply.messages] == ["1", "2", "3"]
    assert reply.ByteSize() <= 3 * MIB
    assert not tail(companion, cid, 3).truncated


@pytest.mark.parametrize(
    ("conversation_id", "count", "roles", "field"),
    [
        ("nope", 1, [], "conversation_id"),
        ("", 1, [], "conversation_id"),
        (None, 0, [], "count"),
        (None, 1001, [], "count"),
        (None, -4, [], "count"),
        (None, 5, [pb.ROLE_UNSPECIFIED], "roles[0]"),
        (None, 5, [USER, role(42)], "roles[1]"),
    ],
)
def test_tail_bad_requests_name_their_field(
    companion: CompanionStub,
    conversation_id: str | None,
    count: int,
    roles: list[pb.Role],
    field: str,
) -> None:
    request = cpb.TailConversationMessagesRequest(
        conversation_id=new_id() if conversation_id is None else conversation_id,
        count=count,
        roles=roles,
    )
    expect_error(
        INVALID_ARGUMENT,
        partial(companion.TailConversationMessages, request, timeout=TIMEOUT),
        field,
    )


# --- GetMessages ------------------------------------------------------------------------


def test_get_messages(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 5)
    listed = calls.list_all(stub, cid)
    got = get_messages(companion, cid, [ids[3], ids[0].upper(), ids[3]])
    assert got == [listed[3], listed[0], listed[3]]
    other = new_id()
    (elsewhere,) = calls.seed(stub, other, 1)
    calls.replace(stub, cid, from_id=ids[1], to_id=ids[1])  # detaches it
    calls.delete(stub, cid, from_id=ids[2], to_id=ids[2])
    for missing in (ids[1], ids[2], elsewhere, new_id()):
        error = expect_error(
            NOT_FOUND,
            partial(
                companion.GetMessages,
                cpb.GetMessagesRequest(conversation_id=cid, message_ids=[ids[0], missing]),
                timeout=TIMEOUT,
            ),
            "message_ids[1]",
            missing,
        )
        # The conversation exists: its version comes with the error.
        assert trailing(error)[VERSION] == "3"
    for request, field, code in [
        (cpb.GetMessagesRequest(conversation_id=cid), "message_ids", INVALID_ARGUMENT),
        (
            cpb.GetMessagesRequest(conversation_id=cid, message_ids=[new_id(), "x"]),
            "message_ids[1]",
            INVALID_ARGUMENT,
        ),
        (
            cpb.GetMessagesRequest(conversation_id=cid, message_ids=[ids[0]] * 1001),
            "message_ids",
            INVALID_ARGUMENT,
        ),
        (
            cpb.GetMessagesRequest(conversation_id=new_id(), message_ids=[ids[0]]),
            "conversation_id",
            NOT_FOUND,
        ),
    ]:
        expect_error(code, partial(companion.GetMessages, request, timeout=TIMEOUT), field)


def test_get_messages_past_the_response_limit(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    ids = [
        calls.append(stub, cid, [text_message("x" * (MIB - 200))]).appended[0].id for _ in range(3)
    ]
    assert len(get_messages(companion, cid, ids[:2] + ids[:1])) == 3
    expect_error(
        INVALID_ARGUMENT,
        partial(
            companion.GetMessages,
            cpb.GetMessagesRequest(conversation_id=cid, message_ids=ids + ids[:1]),
            timeout=TIMEOUT,
        ),
        "message_ids",
        "ask for fewer",
    )


# --- ListConversationSnapshots ----------------------------------------------------------


def test_list_conversation_snapshots(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 3)
    made = [calls.snapshot(stub, cid, ids[: i % 3 + 1] * (i + 1)) for i in range(7)]
    other = new_id()
    calls.snapshot(stub, other, calls.seed(stub, other, 1))
    listed = snapshots(companion, cid, 3)
    assert [s.snapshot_id for s in listed] == [s.snapshot_id for s in made]
    assert [s.created_at for s in listed] == [s.created_at for s in made]
    assert [s.item_count for s in listed] == [(i % 3 + 1) * (i + 1) for i in range(7)]
    assert snapshots(companion, cid, 0) == listed
    page = companion.ListConversationSnapshots(
        cpb.ListConversationSnapshotsRequest(conversation_id=cid, page_size=2), timeout=TIMEOUT
    )
    for request, field, code in [
        (
            cpb.ListConversationSnapshotsRequest(
                conversation_id=other, page_token=page.next_page_token
            ),
            "page_token",
            INVALID_ARGUMENT,
        ),
        (
            cpb.ListConversationSnapshotsRequest(conversation_id=cid, page_token="abc"),
            "page_token",
            INVALID_ARGUMENT,
        ),
        (
            cpb.ListConversationSnapshotsRequest(conversation_id="x"),
            "conversation_id",
            INVALID_ARGUMENT,
        ),
        (
            cpb.ListConversationSnapshotsRequest(conversation_id=new_id()),
            "conversation_id",
            NOT_FOUND,
        ),
    ]:
        expect_error(
            code, partial(companion.ListConversationSnapshots, request, timeout=TIMEOUT), field
        )
    assert snapshots(companion, create(companion).conversation_id, 10) == []


# --- ForkConversation -------------------------------------------------------------------


def test_fork_copies_the_ordering(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    messages = [
        text_message("a", USER, "k\x00"),
        calls.text_message("b", ASSISTANT),
        pb.AppendMessageInput(
            role=TOOL,
            kind="tool",
            body=pb.MessageBody(
                tool_output=pb.ToolOutputBody(
                    tool_name="t", text=pb.ToolTextOutput(text="out"), metadata={"z": "", "a": "1"}
                )
            ),
        ),
        text_message("d"),
    ]
    ids = [m.id for m in calls.append(stub, cid, messages).appended]
    calls.replace(stub, cid, from_id=ids[1], to_id=ids[1])  # detaches b
    calls.snapshot(stub, cid, ids[:1])
    source = calls.list_all(stub, cid)
    before = calls.get(stub, cid)

    forked = fork(companion, cid, title="fork", labels={"from": "x"})
    conversation = forked.conversation
    new = conversation.conversation_id
    assert is_canonical_uuid(new)
    assert uuid.UUID(new).version == 7
    assert (conversation.version, conversation.message_count) == (1, 3)
    assert (conversation.title, dict(conversation.labels)) == ("fork", {"from": "x"})
    assert not conversation.HasField("retention")
    assert conversation.created_at == conversation.updated_at
    copies = calls.list_all(stub, new)
    assert [m.id for m in copies] == list(forked.message_ids)
    assert not set(forked.message_ids) & set(ids)
    assert all(m.conversation_id == new for m in copies)
    assert [content(m) for m in copies] == [content(m) for m in source]
    assert [m.created_at for m in copies] == [m.created_at for m in source]
    assert calls.get(stub, new).message_count == 3
    assert (
        companion.DescribeConversation(
            cpb.DescribeConversationRequest(conversation_id=new), timeout=TIMEOUT
        )
        == conversation
    )
    # The source is as it was; its snapshots stay its own.
    assert calls.get(stub, cid) == before
    assert snapshots(companion, new, 10) == []
    # A copy is a message of the fork like any other.
    snapshot = calls.snapshot(stub, new, list(forked.message_ids[:2]))
    assert [content(m) for m in calls.snapshot_messages(stub, snapshot.snapshot_id)] == [
        content(m) for m in source[:2]
    ]
    calls.delete(stub, new, from_id=forked.message_ids[0], to_id=forked.message_ids[0])
    assert texts(tail(companion, new, 10).messages)[-1] == "d"


def test_fork_up_to_into_a_named_conversation(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 5)
    target = new_id()
    forked = fork(companion, cid, up_to_message_id=ids[2], new_conversation_id=target.upper())
    assert forked.conversation.conversation_id == target
    assert texts(calls.list_all(stub, target)) == ["m0", "m1", "m2"]
    # It exists now: the error answers with its version.
    error = expect_error(
        ALREADY_EXISTS,
        partial(
            companion.ForkConversation,
            cpb.ForkConversationRequest(conversation_id=cid, new_conversation_id=target),
            timeout=TIMEOUT,
        ),
        "new_conversation_id",
    )
    assert trailing(error)[VERSION] == "1"
    calls.replace(stub, cid, from_id=ids[3], to_id=ids[3])
    for up_to in (ids[3], new_id()):
        target = new_id()
        error = expect_error(
            NOT_FOUND,
            partial(
                companion.ForkConversation,
                cpb.ForkConversationRequest(
                    conversation_id=cid, up_to_message_id=up_to, new_conversation_id=target
                ),
                timeout=TIMEOUT,
            ),
            "up_to_message_id",
        )
        assert VERSION not in trailing(error)
        expect_error(NOT_FOUND, partial(calls.get, stub, target), "conversation_id")
    for request, field, code in [
        (cpb.ForkConversationRequest(conversation_id=new_id()), "conversation_id", NOT_FOUND),
        (cpb.ForkConversationRequest(), "conversation_id", INVALID_ARGUMENT),
        (
            cpb.ForkConversationRequest(conversation_id=cid, up_to_message_id="x"),
            "up_to_message_id",
            INVALID_ARGUMENT,
        ),
        (
            # Into itself: the new conversation exists.
            cpb.ForkConversationRequest(conversation_id=cid, new_conversation_id=cid),
            "new_conversation_id",
            ALREADY_EXISTS,
        ),
        (
            cpb.ForkConversationRequest(conversation_id=cid, title="t" * 1001),
            "title",
            INVALID_ARGUMENT,
        ),
        (
            cpb.ForkConversationRequest(conversation_id=cid, labels={"No": ""}),
            "labels['No']",
            INVALID_ARGUMENT,
        ),
    ]:
        expect_error(code, partial(companion.ForkConversation, request, timeout=TIMEOUT), field)


def test_fork_of_ten_thousand_messages(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    calls.seed(stub, cid, 10_000)
    forked = fork(companion, cid)
    new = forked.conversation.conversation_id
    assert forked.conversation.message_count == 10_000
    assert calls.all_ids(stub, new) == list(forked.message_ids)
    assert texts(tail(companion, new, 3).messages) == ["m9997", "m9998", "m9999"]
    assert texts(calls.list_all(stub, new)) == [f"m{i}" for i in range(10_000)]


def test_fork_replays_with_an_idempotency_key(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    calls.seed(stub, cid, 2)
    target = new_id()
    key = (("idempotency-key", new_id()),)
    first = fork(companion, cid, key, new_conversation_id=target)
    calls.append(stub, target, [text_message("later")])
    again, call = companion.ForkConversation.with_call(
        cpb.ForkConversationRequest(conversation_id=cid, new_conversation_id=target),
        timeout=TIMEOUT,
        metadata=key,
    )
    assert again == first
    assert trailing(call)[VERSION] == "2"
    # Without new_conversation_id the key is the source's: one fork is made.
    made = fork(companion, cid, key, title="once")
    assert made.conversation.conversation_id != target
    assert fork(companion, cid, key, title="once") == made
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        partial(
            companion.ForkConversation,
            cpb.ForkConversationRequest(conversation_id=cid, new_conversation_id=target, title="x"),
            timeout=TIMEOUT,
            metadata=key,
        ),
        "idempotency-key",
    )


# --- one set of rules -------------------------------------------------------------------------


def test_reads_need_a_token_and_forks_a_read_write_one(guarded: Guarded) -> None:
    with grpc.insecure_channel(guarded.server.address) as channel:
        companion = calls.make_companion_stub(channel)
        stub = calls.make_stub(channel)
        cid = new_id()
        (first,) = [
            m.id
            for m in stub.AppendConversationMessages(
                pb.AppendConversationMessagesRequest(
                    conversation_id=cid, messages=[text_message("hello")]
                ),
                metadata=bearer(RW_TOKEN),
                timeout=TIMEOUT,
            ).appended
        ]
        reads = [
            partial(
                companion.TailConversationMessages,
                cpb.TailConversationMessagesRequest(conversation_id=cid, count=1),
            ),
            partial(
                companion.GetMessages,
                cpb.GetMessagesRequest(conversation_id=cid, message_ids=[first]),
            ),
            partial(
                companion.ListConversationSnapshots,
                cpb.ListConversationSnapshotsRequest(conversation_id=cid),
            ),
        ]
        forking = partial(
            companion.ForkConversation, cpb.ForkConversationRequest(conversation_id=cid)
        )
        for call in [*reads, forking]:
            expect_error(grpc.StatusCode.UNAUTHENTICATED, partial(call, timeout=TIMEOUT))
        for call in reads:
            call(timeout=TIMEOUT, metadata=bearer(RO_TOKEN))
        error = expect_error(
            PERMISSION_DENIED, partial(forking, timeout=TIMEOUT, metadata=bearer(RO_TOKEN))
        )
        assert VERSION not in trailing(error)
        forked = forking(timeout=TIMEOUT, metadata=bearer(RW_TOKEN))
        assert forked.conversation.message_count == 1

    url = f"http://127.0.0.1:{guarded.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    for method in ("TailConversationMessages", "GetMessages", "ListConversationSnapshots"):
        assert f'agent_state_rpc_requests_total{{code="OK",method="{method}"}} 1.0' in text
        assert f'code="UNAUTHENTICATED",method="{method}"}} 1.0' in text
    assert 'agent_state_rpc_requests_total{code="OK",method="ForkConversation"} 1.0' in text
    assert 'code="PERMISSION_DENIED",method="ForkConversation"} 1.0' in text

    lines = [
        json.loads(line) for line in guarded.server.output().splitlines() if line.startswith("{")
    ]
    forks = [
        line
        for line in lines
        if line.get("logger") == "agent_state.rpc"
        and line.get("method") == "ForkConversation"
        and line.get("code") == "OK"
    ]
    # The log line names the conversation forked.
    assert [line["conversation_id"] for line in forks] == [cid]
