"""Conversation versions through a real server: the `x-conversation-version`
trailing metadata of every call that names a conversation, and the
`if-version` precondition of the writes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from agent_state_client._gen import agent_state_pb2 as pb
from tests.support import calls
from tests.support.calls import RPC_TIMEOUT_S, Stub, text_message

from .helpers import INVALID_ARGUMENT, NOT_FOUND, expect_error, new_id

ABORTED = grpc.StatusCode.ABORTED
VERSION = "x-conversation-version"
IF_VERSION = "if-version"
TRIALS = 100

Metadata = Sequence[tuple[str, str]]


def _if(version: int | str | None) -> Metadata:
    return () if version is None else ((IF_VERSION, str(version)),)


def _version(trailing: Any) -> int | None:
    """The version a call's trailing metadata reports (None: none), checked
    to be reported at most once."""
    values = [item.value for item in trailing or () if item.key == VERSION]
    assert len(values) <= 1, f"{VERSION} sent {len(values)} times"
    return int(values[0]) if values else None


def _call(method: Any, request: Message, metadata: Metadata = ()) -> tuple[Any, int | None]:
    """The response of a call that succeeds, and the version it reports."""
    response, call = method.with_call(request, timeout=RPC_TIMEOUT_S, metadata=metadata)
    return response, _version(call.trailing_metadata())


def _failure(
    code: grpc.StatusCode, method: Any, request: Message, metadata: Metadata = (), *fields: str
) -> tuple[str, int | None]:
    """The details of a call that fails with `code` (naming `fields`), and
    the version it reports."""
    error = expect_error(
        code, lambda: method.with_call(request, timeout=RPC_TIMEOUT_S, metadata=metadata), *fields
    )
    assert isinstance(error, grpc.Call)
    return error.details() or "", _version(error.trailing_metadata())


def _append(cid: str, *texts: str) -> pb.AppendConversationMessagesRequest:
    return pb.AppendConversationMessagesRequest(
        conversation_id=cid, messages=[text_message(text) for text in texts]
    )


def _replace(
    cid: str, from_id: str, to_id: str, new_ids: Sequence[str] = ()
) -> pb.ReplaceConversationMessagesRangeRequest:
    return pb.ReplaceConversationMessagesRangeRequest(
        conversation_id=cid, from_message_id=from_id, to_message_id=to_id, new_message_ids=new_ids
    )


def _delete(cid: str, from_id: str, to_id: str) -> pb.DeleteConversationMessagesRangeRequest:
    return pb.DeleteConversationMessagesRangeRequest(
        conversation_id=cid, from_message_id=from_id, to_message_id=to_id
    )


def _snapshot(cid: str, ids: Sequence[str]) -> pb.CreateSnapshotRequest:
    return pb.CreateSnapshotRequest(conversation_id=cid, message_ids=ids)


def _state(stub: Stub, cid: str) -> tuple[pb.ConversationMetadata, list[str], int | None]:
    """Everything a refused write must leave as it was: the metadata, the
    ordering, the version."""
    response, version = _call(stub.GetConversation, pb.GetConversationRequest(conversation_id=cid))
    return response.metadata, calls.all_ids(stub, cid), version


def test_every_call_naming_a_conversation_reports_its_version_after_it(stub: Stub) -> None:
    cid = new_id()
    appended, version = _call(stub.AppendConversationMessages, _append(cid, "a", "b", "c"))
    assert version == 1
    a, b, c = (message.id for message in appended.appended)
    assert _call(stub.AppendConversationMessages, _append(cid, "d"))[1] == 2
    reads: list[tuple[Any, Message]] = [
        (stub.GetConversation, pb.GetConversationRequest(conversation_id=cid)),
        (stub.ListConversationMessages, pb.ListConversationMessagesRequest(conversation_id=cid)),
        (
            stub.ListConversationMessageIds,
            pb.ListConversationMessageIdsRequest(conversation_id=cid, page_size=1),
        ),
    ]
    for method, request in reads:
        assert _call(method, request)[1] == 2
    assert _call(stub.ReplaceConversationMessagesRange, _replace(cid, a, a))[1] == 3
    snapshot, version = _call(stub.CreateSnapshot, _snapshot(cid, [a, b]))
    assert version == 3, "a snapshot changes nothing"
    assert _call(stub.DeleteConversationMessagesRange, _delete(cid, c, c))[1] == 4
    for method, request in reads:
        assert _call(method, request)[1] == 4
    # The snapshot lists name a snapshot, not a conversation.
    snapshot_id = snapshot.snapshot.snapshot_id
    listed = pb.ListSnapshotMessagesRequest(snapshot_id=snapshot_id)
    assert _call(stub.ListSnapshotMessages, listed)[1] is None
    listed_ids = pb.ListSnapshotMessageIdsRequest(snapshot_id=snapshot_id)
    assert _call(stub.ListSnapshotMessageIds, listed_ids)[1] is None


def test_errors_report_the_version_while_the_conversation_exists(stub: Stub) -> None:
    cid = new_id()
    a, b = calls.seed(stub, cid, 2)
    unknown = new_id()
    list_bad_token = pb.ListConversationMessagesRequest(conversation_id=cid, page_token="zz")
    ids_bad_token = pb.ListConversationMessageIdsRequest(conversation_id=cid, page_token="zz")
    unspecified_role = pb.ListConversationMessagesRequest(
        conversation_id=cid, roles=[pb.ROLE_UNSPECIFIED]
    )
    known: list[tuple[grpc.StatusCode, Any, Message, Metadata]] = [
        (NOT_FOUND, stub.ReplaceConversationMessagesRange, _replace(cid, unknown, unknown), ()),
        (NOT_FOUND, stub.DeleteConversationMessagesRange, _delete(cid, a, unknown), ()),
        (NOT_FOUND, stub.CreateSnapshot, _snapshot(cid, [a, unknown]), ()),
        # Found after the conversation was read: the range's ends are reversed.
        (INVALID_ARGUMENT, stub.DeleteConversationMessagesRange, _delete(cid, b, a), ()),
        (ABORTED, stub.AppendConversationMessages, _append(cid, "late"), _if(7)),
        # Wrong in the request alone, on a conversation that exists.
        (INVALID_ARGUMENT, stub.AppendConversationMessages, _append(cid), ()),
        (INVALID_ARGUMENT, stub.ListConversationMessages, list_bad_token, ()),
        (INVALID_ARGUMENT, stub.ListConversationMessages, unspecified_role, ()),
        (INVALID_ARGUMENT, stub.ListConversationMessageIds, ids_bad_token, ()),
        (INVALID_ARGUMENT, stub.ReplaceConversationMessagesRange, _replace(cid, "", ""), ()),
        (INVALID_ARGUMENT, stub.DeleteConversationMessagesRange, _delete(cid, "x", a), ()),
        (INVALID_ARGUMENT, stub.CreateSnapshot, _snapshot(cid, []), ()),
        (INVALID_ARGUMENT, stub.AppendConversationMessages, _append(cid, "x"), _if("x")),
    ]
    for code, method, request, metadata in known:
        assert _failure(code, method, request, metadata)[1] == 1, (method, request)
    absent = new_id()
    unknown_ones: list[tuple[grpc.StatusCode, Any, Message]] = [
        (NOT_FOUND, stub.GetConversation, pb.GetConversationRequest(conversation_id=absent)),
        (NOT_FOUND, stub.ReplaceConversationMessagesRange, _replace(absent, a, a)),
        (INVALID_ARGUMENT, stub.GetConversation, pb.GetConversationRequest(conversation_id="x")),
        (INVALID_ARGUMENT, stub.AppendConversationMessages, _append(absent)),
        (INVALID_ARGUMENT, stub.CreateSnapshot, _snapshot(absent, [])),
    ]
    for code, method, request in unknown_ones:
        assert _failure(code, method, request)[1] is None, method
    assert _state(stub, cid)[1:] == ([a, b], 1)


def test_each_write_goes_ahead_only_at_the_version_it_names(stub: Stub) -> None:
    cid = new_id()
    a, b, c = calls.seed(stub, cid, 3)
    writes: list[tuple[Any, Message]] = [
        (stub.AppendConversationMessages, _append(cid, "more")),
        (stub.ReplaceConversationMessagesRange, _replace(cid, a, a)),
        (stub.CreateSnapshot, _snapshot(cid, [b])),
        (stub.DeleteConversationMessagesRange, _delete(cid, c, c)),
    ]
    version = 1
    for method, request in writes:
        before = _state(stub, cid)
        assert before[2] == version
        for stale in (0, version - 1, version + 1, 2**63 - 1):
            details, reported = _failure(ABORTED, method, request, _if(stale), IF_VERSION)
            assert f"at version {version}, not {stale}" in details
            assert reported == version
            assert _state(stub, cid) == before
        _, after = _call(method, request, _if(version))
        if method is not stub.CreateSnapshot:  # a snapshot changes nothing
            version += 1
        assert after == version
    remaining = calls.all_ids(stub, cid)
    assert remaining[0] == b
    assert len(remaining) == 2


def test_version_0_appends_only_to_a_conversation_that_does_not_exist(stub: Stub) -> None:
    cid = new_id()
    created, version = _call(stub.AppendConversationMessages, _append(cid, "first"), _if(0))
    assert version == 1
    assert created.metadata.message_count == 1
    before = _state(stub, cid)
    details, reported = _failure(
        ABORTED, stub.AppendConversationMessages, _append(cid, "again"), _if(0), IF_VERSION
    )
    assert "at version 1, not 0" in details
    assert reported == 1
    assert _state(stub, cid) == before


def test_a_version_above_0_of_a_missing_conversation_is_aborted(stub: Stub) -> None:
    cid = new_id()
    message = new_id()
    writes: list[tuple[Any, Message]] = [
        (stub.AppendConversationMessages, _append(cid, "hello")),
        (stub.ReplaceConversationMessagesRange, _replace(cid, message, message)),
        (stub.DeleteConversationMessagesRange, _delete(cid, message, message)),
        (stub.CreateSnapshot, _snapshot(cid, [message])),
    ]
    for method, request in writes:
        details, reported = _failure(ABORTED, method, request, _if(1), IF_VERSION)
        assert "at version 0, not 1" in details
        assert reported is None
    # Version 0 holds for a missing conversation; its absence decides then.
    for method, request in writes[1:]:
        assert _failure(NOT_FOUND, method, request, _if(0))[1] is None
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid))


@pytest.mark.parametrize(
    "metadata",
    [
        _if(""),
        _if("-1"),
        _if("+1"),
        _if("1.0"),
        _if("1e3"),
        _if("0x1"),
        _if("one"),
        _if(2**63),
        _if("9" * 30),
        _if("9" * 5000),
        (*_if(1), *_if(1)),
    ],
    ids=repr,
)
def test_a_malformed_if_version_is_invalid_and_changes_nothing(
    stub: Stub, metadata: Metadata
) -> None:
    cid = new_id()
    calls.seed(stub, cid, 1)
    before = _state(stub, cid)
    request = _append(cid, "more")
    _, reported = _failure(
        INVALID_ARGUMENT, stub.AppendConversationMessages, request, metadata, IF_VERSION
    )
    # The conversation exists, so the failure reports its version.
    assert reported == 1
    assert _state(stub, cid) == before


def test_reads_refuse_an_if_version(stub: Stub) -> None:
    cid = new_id()
    calls.seed(stub, cid, 1)
    request = pb.GetConversationRequest(conversation_id=cid)
    _failure(INVALID_ARGUMENT, stub.GetConversation, request, _if(1), IF_VERSION)


def test_a_replay_answers_as_the_first_time_whatever_the_version_is_now(stub: Stub) -> None:
    cid = new_id()
    retried = (*_if(0), ("idempotency-key", new_id()))
    first, version = _call(stub.AppendConversationMessages, _append(cid, "hello"), retried)
    assert version == 1
    calls.append(stub, cid, [text_message("meanwhile")])
    again, version = _call(stub.AppendConversationMessages, _append(cid, "hello"), retried)
    assert again.SerializeToString() == first.SerializeToString()
    assert version == 2, "the version now: the replay changed nothing"
    assert calls.get(stub, cid).message_count == 2


def _race(pair: tuple[Callable[[], object], Callable[[], object]]) -> list[grpc.StatusCode]:
    """Start two calls at the same moment; their status codes."""
    barrier = threading.Barrier(2)

    def run(call: Callable[[], object]) -> grpc.StatusCode:
        barrier.wait()
        try:
            call()
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(run, pair))


def _at_version_1(method: Any, request: Message) -> Callable[[], object]:
    return lambda: method(request, timeout=RPC_TIMEOUT_S, metadata=_if(1))


def test_of_two_writers_naming_one_version_exactly_one_goes_ahead(stub: Stub) -> None:
    """Repeated, with each kind of write racing each kind: a fast append
    against another, against a replace, a replace against a delete."""
    kinds = ["append", "append", "replace", "delete"]
    for trial in range(TRIALS):
        cid = new_id()
        a, b = calls.seed(stub, cid, 2)
        writes: dict[str, tuple[Any, Message]] = {
            "append": (stub.AppendConversationMessages, _append(cid, "x")),
            "replace": (stub.ReplaceConversationMessagesRange, _replace(cid, a, a)),
            "delete": (stub.DeleteConversationMessagesRange, _delete(cid, b, b)),
        }
        first, second = kinds[trial % 3], kinds[trial % 3 + 1]
        codes = _race((_at_version_1(*writes[first]), _at_version_1(*writes[second])))
        assert sorted(code.name for code in codes) == ["ABORTED", "OK"], (trial, first, second)
        assert _state(stub, cid)[2] == 2


def test_a_summary_replaces_only_the_history_it_read(stub: Stub) -> None:
    """A summariser reads the history, appends its summary and replaces the
    history with it, each step naming the version it saw. A message arriving
    meanwhile makes the replace fail, and survives; read again, the
    replace goes ahead."""
    cid = new_id()
    history = calls.seed(stub, cid, 5)
    _, seen = _call(
        stub.ListConversationMessages, pb.ListConversationMessagesRequest(conversation_id=cid)
    )
    assert seen == 1
    summary, seen = _call(stub.AppendConversationMessages, _append(cid, "summary"), _if(seen))
    summary_id = summary.appended[0].id
    arrived = calls.append(stub, cid, [text_message("a new question")]).appended[0].id
    summarise = _replace(cid, history[0], history[-1], [summary_id])
    details, reported = _failure(
        ABORTED, stub.ReplaceConversationMessagesRange, summarise, _if(seen), IF_VERSION
    )
    assert "at version 3, not 2" in details
    assert reported == 3
    assert calls.all_ids(stub, cid) == [*history, summary_id, arrived]
    replaced, version = _call(stub.ReplaceConversationMessagesRange, summarise, _if(reported))
    assert version == 4
    assert list(replaced.replaced_message_ids) == history
    assert calls.all_ids(stub, cid) == [summary_id, arrived]
