"""Idempotent retries: the `idempotency-key` metadata of mutating calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from tests.support.calls import Stub, all_ids, get, make_stub, seed, text_message
from tests.support.server import ServerProcess

from .helpers import new_id, status_code

KEY = "idempotency-key"


def _key(value: str) -> list[tuple[str, str]]:
    return [(KEY, value)]


def _append(stub: Stub, conversation: str, text: str, key: str) -> bytes:
    """The raw response bytes, so that a replay can be compared exactly."""
    response, _call = stub.AppendConversationMessages.with_call(
        pb.AppendConversationMessagesRequest(
            conversation_id=conversation, messages=[text_message(text)]
        ),
        timeout=10,
        metadata=_key(key),
    )
    return bytes(response.SerializeToString())


def test_a_retried_append_replays_and_changes_nothing(stub: Stub) -> None:
    conversation = new_id()
    key = new_id()
    first = _append(stub, conversation, "hello", key)
    again = _append(stub, conversation, "hello", key)
    assert again == first
    assert get(stub, conversation).message_count == 1
    # A new key is a new request.
    _append(stub, conversation, "hello", new_id())
    assert get(stub, conversation).message_count == 2


def test_the_same_key_with_another_request_fails(stub: Stub) -> None:
    conversation = new_id()
    key = new_id()
    _append(stub, conversation, "hello", key)
    code = status_code(lambda: _append(stub, conversation, "something else", key))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    # Another method under the same key is another request too.
    ids = all_ids(stub, conversation)
    delete = pb.DeleteConversationMessagesRangeRequest(
        conversation_id=conversation, from_message_id=ids[0], to_message_id=ids[0]
    )
    code = status_code(lambda: stub.DeleteConversationMessagesRange(delete, metadata=_key(key)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert get(stub, conversation).message_count == 1


def test_keys_belong_to_their_conversation(stub: Stub) -> None:
    key = new_id()
    one, two = new_id(), new_id()
    _append(stub, one, "hello", key)
    _append(stub, two, "hello", key)
    assert get(stub, one).message_count == 1
    assert get(stub, two).message_count == 1


def test_replace_delete_and_snapshot_replay(stub: Stub) -> None:
    conversation = new_id()
    ids = seed(stub, conversation, 6)
    calls: list[tuple[Any, Any]] = [
        (
            stub.ReplaceConversationMessagesRange,
            pb.ReplaceConversationMessagesRangeRequest(
                conversation_id=conversation,
                from_message_id=ids[1],
                to_message_id=ids[2],
                new_message_ids=[ids[5]],
            ),
        ),
        (
            stub.DeleteConversationMessagesRange,
            pb.DeleteConversationMessagesRangeRequest(
                conversation_id=conversation, from_message_id=ids[0], to_message_id=ids[0]
            ),
        ),
        (
            stub.CreateSnapshot,
            pb.CreateSnapshotRequest(conversation_id=conversation, message_ids=ids[3:5]),
        ),
    ]
    for method, request in calls:
        key = new_id()
        first = method(request, timeout=10, metadata=_key(key))
        state = all_ids(stub, conversation)
        version = get(stub, conversation).updated_at
        # A retry, for example after a lost response: the same answer, and
        # (the range ends being gone by now) no error and no change.
        again = method(request, timeout=10, metadata=_key(key))
        assert again == first
        assert all_ids(stub, conversation) == state
        assert get(stub, conversation).updated_at == version
    assert all_ids(stub, conversation) == [ids[5], ids[3], ids[4]]


def test_failed_calls_are_not_remembered(stub: Stub) -> None:
    conversation = new_id()
    ids = seed(stub, conversation, 2)
    key = new_id()
    unknown = pb.CreateSnapshotRequest(conversation_id=conversation, message_ids=[new_id()])
    for _ in range(2):
        code = status_code(lambda: stub.CreateSnapshot(unknown, timeout=10, metadata=_key(key)))
        assert code is grpc.StatusCode.NOT_FOUND
    # The key is still free for a request that succeeds.
    valid = pb.CreateSnapshotRequest(conversation_id=conversation, message_ids=ids)
    assert stub.CreateSnapshot(valid, timeout=10, metadata=_key(key)).snapshot.snapshot_id


def test_concurrent_duplicates_apply_once(live_server: ServerProcess) -> None:
    conversation = new_id()
    key = new_id()
    with grpc.insecure_channel(live_server.address) as channel:
        stub = make_stub(channel)
        with ThreadPoolExecutor(16) as pool:
            responses = list(
                pool.map(lambda _: _append(stub, conversation, "once", key), range(16))
            )
        assert len(set(responses)) == 1
        assert get(stub, conversation).message_count == 1


# (gRPC clients refuse to send control characters in metadata themselves.)
@pytest.mark.parametrize("bad", ["", "x" * 257])
def test_malformed_keys_are_invalid(stub: Stub, bad: str) -> None:
    code = status_code(lambda: _append(stub, new_id(), "hello", bad))
    assert code is grpc.StatusCode.INVALID_ARGUMENT


def test_reads_ignore_the_key(stub: Stub) -> None:
    conversation = new_id()
    key = new_id()
    _append(stub, conversation, "hello", key)
    request = pb.GetConversationRequest(conversation_id=conversation)
    assert stub.GetConversation(request, timeout=10, metadata=_key(key)).metadata.message_count


def test_keys_expire_after_the_window(make_database_url: Callable[[], str], tmp_path: Path) -> None:
    server = ServerProcess(
        make_database_url(),
        tmp_path / "server.log",
        extra_args=["--idempotency-window-seconds", "1"],
    ).start_ready()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = make_stub(channel)
            conversation, key = new_id(), new_id()
            first = _append(stub, conversation, "hello", key)
            assert _append(stub, conversation, "hello", key) == first
            time.sleep(1.2)
            # The window has passed: the same request is applied again.
            assert _append(stub, conversation, "hello", key) != first
            assert get(stub, conversation).message_count == 2
    finally:
        assert server.terminate() == 0, server.describe()
