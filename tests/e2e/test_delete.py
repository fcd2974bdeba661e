"""DeleteConversationMessagesRange: modes, errors, permanence, detached messages."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from functools import partial

import grpc
import pytest

from tests.e2e.helpers import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    expect_error,
    expect_range_change,
    new_id,
    texts,
)
from tests.support import calls
from tests.support.calls import Stub


@pytest.mark.parametrize(
    ("from_index", "to_index", "deleted", "remaining"),
    [
        (1, 3, [1, 2, 3], [0, 4]),
        (2, 2, [2], [0, 1, 3, 4]),
        (0, 4, [0, 1, 2, 3, 4], []),
        (2, None, [2, 3, 4], [0, 1]),  # from through the tail
        (4, None, [4], [0, 1, 2, 3]),
        (0, None, [0, 1, 2, 3, 4], []),
        (None, 2, [0, 1, 2], [3, 4]),  # head through to
        (None, 0, [0], [1, 2, 3, 4]),
        (None, 4, [0, 1, 2, 3, 4], []),
    ],
)
def test_modes(
    stub: Stub,
    from_index: int | None,
    to_index: int | None,
    deleted: list[int],
    remaining: list[int],
) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 5)
    before = calls.get(stub, cid)
    response = calls.delete(
        stub,
        cid,
        from_id="" if from_index is None else ids[from_index],
        to_id="" if to_index is None else ids[to_index],
    )
    assert list(response.deleted_message_ids) == [ids[i] for i in deleted]
    expect_range_change(stub, cid, ids, remaining, response.metadata, before)


def test_deleted_ids_follow_the_ordering_not_the_append_order(stub: Stub) -> None:
    cid = new_id()
    a, b, c, d = calls.seed(stub, cid, 4)
    calls.replace(stub, cid, from_id=a, to_id=d, new_ids=[d, b, a, c])
    response = calls.delete(stub, cid, from_id=b, to_id=c)
    assert list(response.deleted_message_ids) == [b, a, c]
    assert calls.all_ids(stub, cid) == [d]


def test_deleting_everything_keeps_the_conversation(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 3)
    calls.delete(stub, cid, from_id=ids[0])
    metadata = calls.get(stub, cid)
    assert metadata.conversation_id == cid
    assert metadata.message_count == 0
    assert calls.all_ids(stub, cid) == []
    more = calls.seed(stub, cid, 2, prefix="n")
    assert calls.all_ids(stub, cid) == more
    assert calls.get(stub, cid).message_count == 2


def test_deleted_messages_are_gone(stub: Stub) -> None:
    cid = new_id()
    a, b, c, d = calls.seed(stub, cid, 4)
    earlier = calls.snapshot(stub, cid, [a, b, c, d, b])
    earlier_messages = calls.snapshot_messages(stub, earlier.snapshot_id)
    calls.delete(stub, cid, from_id=b, to_id=c)
    expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=a, new_ids=[b]))
    expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=a, to_id=d, new_ids=[a, c, d]))
    expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=b, to_id=d))
    expect_error(NOT_FOUND, lambda: calls.snapshot(stub, cid, [c]))
    expect_error(NOT_FOUND, lambda: calls.snapshot(stub, cid, [a, d, b]))
    expect_error(NOT_FOUND, lambda: calls.delete(stub, cid, from_id=b))
    expect_error(NOT_FOUND, lambda: calls.delete(stub, cid, to_id=c))
    # Snapshots taken earlier still read them back.
    assert calls.snapshot_messages(stub, earlier.snapshot_id) == earlier_messages
    assert [m.id for m in earlier_messages] == [a, b, c, d, b]
    assert calls.all_ids(stub, cid) == [a, d]


def test_detached_messages_cannot_be_deleted_by_range(stub: Stub) -> None:
    cid = new_id()
    a, b, c, d = calls.seed(stub, cid, 4)
    calls.replace(stub, cid, from_id=b, to_id=b)  # detach b
    expect_error(NOT_FOUND, lambda: calls.delete(stub, cid, from_id=b))
    expect_error(NOT_FOUND, lambda: calls.delete(stub, cid, to_id=b))
    expect_error(NOT_FOUND, lambda: calls.delete(stub, cid, from_id=b, to_id=d))
    response = calls.delete(stub, cid, from_id=a, to_id=c)
    assert list(response.deleted_message_ids) == [a, c]
    assert calls.all_ids(stub, cid) == [d]
    # b lives on: it can be snapshotted and put back.
    snap = calls.snapshot(stub, cid, [b])
    assert [m.id for m in calls.snapshot_messages(stub, snap.snapshot_id)] == [b]
    calls.delete(stub, cid, from_id=d)
    assert calls.get(stub, cid).message_count == 0
    (e,) = calls.seed(stub, cid, 1, prefix="e")
    calls.replace(stub, cid, to_id=e, new_ids=[b])
    assert calls.all_ids(stub, cid) == [b, e]
    assert texts(calls.list_all(stub, cid)) == ["m1", "e0"]


# --- errors ------------------------------------------------------------------------------


def _unchanged(stub: Stub, cid: str, ids: list[str], check: Callable[[], None]) -> None:
    before = calls.get(stub, cid)
    check()
    assert calls.all_ids(stub, cid) == ids
    assert calls.get(stub, cid) == before


def test_neither_from_nor_to_is_invalid(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 3)

    def check() -> None:
        expect_error(INVALID_ARGUMENT, lambda: calls.delete(stub, cid))
        expect_error(INVALID_ARGUMENT, lambda: calls.delete(stub, new_id()))

    _unchanged(stub, cid, ids, check)


def test_from_after_to_is_invalid(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 4)

    def check() -> None:
        expect_error(
            INVALID_ARGUMENT, lambda: calls.delete(stub, cid, from_id=ids[2], to_id=ids[1])
        )
        expect_error(
            INVALID_ARGUMENT, lambda: calls.delete(stub, cid, from_id=ids[3], to_id=ids[0])
        )

    _unchanged(stub, cid, ids, check)


def test_ends_not_in_the_ordering_are_not_found(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 6)
    calls.replace(stub, cid, from_id=ids[4], to_id=ids[4])
    calls.delete(stub, cid, from_id=ids[5])
    detached, deleted = ids[4], ids[5]
    ids = ids[:4]
    foreign = calls.seed(stub, new_id(), 1)[0]

    def check() -> None:
        for missing in (new_id(), detached, deleted, foreign):
            expect_error(NOT_FOUND, partial(calls.delete, stub, cid, from_id=missing))
            expect_error(NOT_FOUND, partial(calls.delete, stub, cid, to_id=missing))
            expect_error(NOT_FOUND, partial(calls.delete, stub, cid, from_id=ids[0], to_id=missing))
            expect_error(NOT_FOUND, partial(calls.delete, stub, cid, from_id=missing, to_id=ids[3]))

    _unchanged(stub, cid, ids, check)


def test_unknown_conversation_is_not_found(stub: Stub) -> None:
    expect_error(NOT_FOUND, lambda: calls.delete(stub, new_id(), from_id=new_id()))
    expect_error(NOT_FOUND, lambda: calls.delete(stub, new_id(), from_id=new_id(), to_id=new_id()))


def test_check_order(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 3)

    def check() -> None:
        expect_error(
            INVALID_ARGUMENT, lambda: calls.delete(stub, new_id(), from_id="x"), "from_message_id"
        )
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.delete(stub, new_id(), from_id=new_id(), to_id="x"),
            "to_message_id",
        )
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.delete(stub, cid, from_id=new_id(), to_id="x"),
            "to_message_id",
        )

    _unchanged(stub, cid, ids, check)


def test_replaces_racing_deletes_leave_no_dangling_ids(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 40)
    anchor = calls.seed(stub, cid, 1, prefix="anchor")[0]
    calls.replace(stub, cid, from_id=ids[20], to_id=ids[39])  # detach the second half
    done = threading.Event()
    codes: list[str] = []

    def reinsert() -> None:
        for message_id in ids[20:]:
            try:
                calls.replace(stub, cid, to_id=anchor, new_ids=[message_id])
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        done.set()

    thread = threading.Thread(target=reinsert)
    thread.start()
    try:
        while not done.is_set():
            current = calls.all_ids(stub, cid)
            if len(current) > 1:
                with contextlib.suppress(grpc.RpcError):
                    calls.delete(stub, cid, to_id=current[-2])
    finally:
        thread.join(timeout=60)
    assert set(codes) <= {"NOT_FOUND"}, codes
    listed = calls.list_all(stub, cid)
    assert [m.id for m in listed] == calls.all_ids(stub, cid)
    assert len(listed) == calls.get(stub, cid).message_count
    assert listed[-1].id == anchor
