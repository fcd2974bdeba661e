"""GetConversation and ConversationMetadata: existence, message_count, updated_at."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import INVALID_ARGUMENT, NOT_FOUND, expect_error, micros, new_id
from tests.support import calls
from tests.support.calls import Stub, text_message


def test_unknown_conversation_is_not_found(stub: Stub) -> None:
    expect_error(NOT_FOUND, lambda: calls.get(stub, new_id()))


def test_metadata_counts_the_ordering(stub: Stub) -> None:
    cid = new_id()
    a, b, c, d = calls.seed(stub, cid, 4)
    assert calls.get(stub, cid).message_count == 4
    calls.replace(stub, cid, from_id=b, to_id=c)  # detach two
    assert calls.get(stub, cid).message_count == 2
    calls.replace(stub, cid, from_id=a, new_ids=[c])  # one back
    assert calls.get(stub, cid).message_count == 3
    calls.replace(stub, cid, to_id=a, new_ids=[d])  # a move changes nothing
    assert calls.get(stub, cid).message_count == 3
    calls.delete(stub, cid, to_id=a)
    assert calls.get(stub, cid).message_count == 1
    assert calls.all_ids(stub, cid) == [c]
    calls.delete(stub, cid, from_id=c)
    metadata = calls.get(stub, cid)
    assert metadata.message_count == 0
    assert metadata.conversation_id == cid


def _write_steps(stub: Stub, cid: str) -> list[tuple[str, Callable[[], pb.ConversationMetadata]]]:
    ids: list[str] = []

    def first_append() -> pb.ConversationMetadata:
        response = calls.append(stub, cid, [text_message(f"m{i}") for i in range(6)])
        ids.extend(m.id for m in response.appended)
        return response.metadata

    return [
        ("append", first_append),
        ("append again", lambda: calls.append(stub, cid, [text_message("x")]).metadata),
        (
            "replace that changes nothing",
            lambda: (
                calls.replace(stub, cid, from_id=ids[1], to_id=ids[1], new_ids=[ids[1]]).metadata
            ),
        ),
        (
            "insert that changes nothing",
            lambda: calls.replace(stub, cid, from_id=ids[0], new_ids=[ids[1]]).metadata,
        ),
        ("detach", lambda: calls.replace(stub, cid, from_id=ids[2], to_id=ids[3]).metadata),
        ("re-insert", lambda: calls.replace(stub, cid, to_id=ids[1], new_ids=[ids[3]]).metadata),
        ("delete", lambda: calls.delete(stub, cid, from_id=ids[4], to_id=ids[4]).metadata),
        ("delete head", lambda: calls.delete(stub, cid, to_id=ids[0]).metadata),
        (
            "append after delete",
            lambda: calls.append(stub, cid, [text_message("y")]).metadata,
        ),
    ]


def test_updated_at_strictly_increases_on_every_write(stub: Stub) -> None:
    cid = new_id()
    previous = -1
    for name, step in _write_steps(stub, cid):
        returned = step()
        stored = calls.get(stub, cid)
        assert returned.updated_at == stored.updated_at, f"{name}: response differs from storage"
        now = micros(stored.updated_at)
        assert now > previous, f"{name}: updated_at did not increase"
        previous = now


def test_updated_at_strictly_increases_under_rapid_writes(stub: Stub) -> None:
    cid = new_id()
    stamps = [
        micros(calls.append(stub, cid, [text_message(str(i))]).metadata.updated_at)
        for i in range(40)
    ]
    ids = calls.all_ids(stub, cid)
    for i in range(20):
        stamps.append(
            micros(
                calls.replace(
                    stub, cid, from_id=ids[i], to_id=ids[i], new_ids=[ids[i]]
                ).metadata.updated_at
            )
        )
    assert all(b > a for a, b in itertools.pairwise(stamps)), stamps


def test_updated_at_has_microsecond_precision_and_reads_back_exactly(stub: Stub) -> None:
    cid = new_id()
    for i in range(5):
        returned = calls.append(stub, cid, [text_message(str(i))]).metadata.updated_at
        assert returned.nanos % 1000 == 0, f"more than microsecond precision: {returned}"
        for _ in range(3):
            assert calls.get(stub, cid).updated_at == returned
            assert calls.list_page(stub, cid).metadata.updated_at == returned


def test_created_at_reads_back_exactly(stub: Stub) -> None:
    cid = new_id()
    appended = list(calls.append(stub, cid, [text_message(str(i)) for i in range(5)]).appended)
    listed = list(calls.list_page(stub, cid).messages)
    assert [m.created_at for m in listed] == [m.created_at for m in appended]
    assert all(m.created_at.seconds > 0 for m in listed)


def test_reads_snapshots_and_failures_do_not_touch_updated_at(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 4)
    calls.replace(stub, cid, from_id=ids[3], to_id=ids[3])  # detach the last one
    before = calls.get(stub, cid)
    snap = calls.snapshot(stub, cid, [ids[0], ids[3], ids[0]])
    calls.get(stub, cid)
    calls.list_page(stub, cid, page_size=1)
    calls.ids_page(stub, cid, page_size=1)
    calls.snapshot_page(stub, snap.snapshot_id)
    calls.snapshot_ids_page(stub, snap.snapshot_id)
    # Failed writes change nothing either.
    expect_error(
        INVALID_ARGUMENT,
        lambda: calls.append(stub, cid, [pb.AppendMessageInput(role=pb.ROLE_USER)]),
    )
    expect_error(INVALID_ARGUMENT, lambda: calls.append(stub, cid, []))
    expect_error(INVALID_ARGUMENT, lambda: calls.replace(stub, cid, from_id=ids[2], to_id=ids[0]))
    expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=ids[0], new_ids=[new_id()]))
    expect_error(NOT_FOUND, lambda: calls.delete(stub, cid, from_id=ids[3]))
    expect_error(INVALID_ARGUMENT, lambda: calls.delete(stub, cid))
    expect_error(NOT_FOUND, lambda: calls.snapshot(stub, cid, [new_id()]))
    after = calls.get(stub, cid)
    assert after == before
    assert calls.all_ids(stub, cid) == ids[:3]


def test_conversations_are_independent(stub: Stub) -> None:
    one, two = new_id(), new_id()
    calls.seed(stub, one, 3)
    calls.seed(stub, two, 5)
    before = calls.get(stub, two)
    calls.delete(stub, one, from_id=calls.all_ids(stub, one)[0])
    assert calls.get(stub, two) == before
    assert calls.get(stub, one).message_count == 0
