"""CreateSnapshot, ListSnapshotMessages, ListSnapshotMessageIds."""

from __future__ import annotations

import threading
from functools import partial

import grpc
import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import (
    ASSISTANT,
    DEFAULT_PAGE_SIZE,
    INVALID_ARGUMENT,
    NOT_FOUND,
    TOOL,
    USER,
    expect_error,
    is_canonical_uuid,
    new_id,
    tool_image_message,
    tool_text_message,
)
from tests.support import calls
from tests.support.calls import Stub, text_message


def _varied(stub: Stub, cid: str) -> list[pb.Message]:
    batch = [
        text_message("hello\x00", USER, "question"),
        text_message("", ASSISTANT, ""),
        tool_text_message("42", metadata={"unit": "none", "": "\x00"}),
        tool_image_message(
            pb.ToolImageOutput(
                external_url="https://example.com/x.jpg",
                mime_type="image/jpeg",
                detail=pb.IMAGE_DETAIL_LOW,
                width_px=3,
                height_px=4,
                sha256="f" * 64,
            ),
            msg_role=TOOL,
        ),
        text_message("\U0001f600", ASSISTANT, "\U0001f600"),
    ]
    return list(calls.append(stub, cid, batch).appended)


def test_snapshot_response(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 2)
    snap = calls.snapshot(stub, cid.upper(), ids)
    assert is_canonical_uuid(snap.snapshot_id)
    assert snap.conversation_id == cid
    assert snap.HasField("created_at")
    assert snap.created_at.seconds > 0


def test_snapshot_messages_keep_everything_of_the_originals(stub: Stub) -> None:
    cid = new_id()
    originals = _varied(stub, cid)
    order = [originals[i].id for i in (4, 0, 2, 0, 3, 1, 4)]
    snap = calls.snapshot(stub, cid, order)
    messages = calls.snapshot_messages(stub, snap.snapshot_id)
    by_id = {m.id: m for m in originals}
    assert [m.id for m in messages] == order
    assert messages == [
        by_id[i] for i in order
    ]  # id, conversation_id, role, kind, body, created_at
    assert all(m.conversation_id == cid for m in messages)
    assert calls.snapshot_ids(stub, snap.snapshot_id) == order


def test_snapshot_reads_back_identically_after_changes(stub: Stub) -> None:
    cid = new_id()
    originals = _varied(stub, cid)
    ids = [m.id for m in originals]
    snap = calls.snapshot(stub, cid, [ids[3], ids[1], ids[1], ids[0]])
    first = calls.snapshot_messages(stub, snap.snapshot_id)
    first_ids = calls.snapshot_ids(stub, snap.snapshot_id)
    more = calls.seed(stub, cid, 3, prefix="later")
    calls.replace(stub, cid, from_id=ids[0], to_id=ids[2], new_ids=[more[0], ids[1]])
    calls.replace(stub, cid, from_id=ids[4], to_id=ids[4])
    calls.delete(stub, cid, to_id=more[2])
    assert calls.get(stub, cid).message_count == 0
    assert calls.snapshot_messages(stub, snap.snapshot_id) == first
    assert calls.snapshot_messages(stub, snap.snapshot_id, page_size=1) == first
    assert calls.snapshot_ids(stub, snap.snapshot_id) == first_ids
    # A second snapshot of another moment is independent of the first.
    calls.seed(stub, cid, 1, prefix="again")
    assert calls.snapshot_messages(stub, snap.snapshot_id) == first


def test_repeats_and_order_are_kept(stub: Stub) -> None:
    cid = new_id()
    a, b, c = calls.seed(stub, cid, 3)
    order = [c, a, c, c, b, a]
    snap = calls.snapshot(stub, cid, order)
    assert calls.snapshot_ids(stub, snap.snapshot_id) == order
    assert [m.body.text.text for m in calls.snapshot_messages(stub, snap.snapshot_id)] == [
        "m2",
        "m0",
        "m2",
        "m2",
        "m1",
        "m0",
    ]


def test_snapshot_does_not_change_the_conversation(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 3)
    before = calls.get(stub, cid)
    listed = calls.list_all(stub, cid)
    calls.snapshot(stub, cid, ids[::-1])
    assert calls.get(stub, cid) == before
    assert calls.list_all(stub, cid) == listed


def test_detached_messages_can_be_snapshotted(stub: Stub) -> None:
    cid = new_id()
    a, b, c = calls.seed(stub, cid, 3)
    calls.replace(stub, cid, from_id=a, to_id=b)
    snap = calls.snapshot(stub, cid, [b, c, a])
    assert [m.body.text.text for m in calls.snapshot_messages(stub, snap.snapshot_id)] == [
        "m1",
        "m2",
        "m0",
    ]


def test_create_snapshot_errors(stub: Stub) -> None:
    cid = new_id()
    a, b, gone = calls.seed(stub, cid, 3)
    calls.delete(stub, cid, from_id=gone)
    foreign = calls.seed(stub, new_id(), 1)[0]
    expect_error(NOT_FOUND, lambda: calls.snapshot(stub, new_id(), [a]))
    expect_error(INVALID_ARGUMENT, lambda: calls.snapshot(stub, cid, []), "message_ids")
    expect_error(NOT_FOUND, lambda: calls.snapshot(stub, cid, [a, new_id()]))
    expect_error(NOT_FOUND, lambda: calls.snapshot(stub, cid, [foreign]))
    expect_error(NOT_FOUND, lambda: calls.snapshot(stub, cid, [b, gone, a]))
    # Check order: what the request alone shows comes first.
    expect_error(INVALID_ARGUMENT, lambda: calls.snapshot(stub, new_id(), []), "message_ids")
    expect_error(
        INVALID_ARGUMENT, lambda: calls.snapshot(stub, new_id(), [a, "x"]), "message_ids[1]"
    )
    expect_error(
        INVALID_ARGUMENT, lambda: calls.snapshot(stub, cid, [new_id(), "x"]), "message_ids[1]"
    )


def test_unknown_snapshot_is_not_found(stub: Stub) -> None:
    sid = new_id()
    expect_error(NOT_FOUND, lambda: calls.snapshot_page(stub, sid))
    expect_error(NOT_FOUND, lambda: calls.snapshot_ids_page(stub, sid))
    # A conversation id is not a snapshot id.
    cid = new_id()
    calls.seed(stub, cid, 1)
    expect_error(NOT_FOUND, lambda: calls.snapshot_page(stub, cid))


# --- paging ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "size", "lengths"),
    [(10, 3, [3, 3, 3, 1]), (9, 3, [3, 3, 3]), (1, 1, [1]), (4, 100, [4])],
)
def test_snapshot_paging(stub: Stub, count: int, size: int, lengths: list[int]) -> None:
    cid = new_id()
    a, b = calls.seed(stub, cid, 2)
    order = [(a if i % 3 else b) for i in range(count)]
    snap = calls.snapshot(stub, cid, order)
    pages = calls.snapshot_pages(stub, snap.snapshot_id, page_size=size)
    assert [len(p.messages) for p in pages] == lengths
    assert [m.id for p in pages for m in p.messages] == order
    assert all(p.next_page_token for p in pages[:-1])
    assert pages[-1].next_page_token == ""
    id_pages = calls.snapshot_ids_pages(stub, snap.snapshot_id, page_size=size)
    assert [len(p.message_ids) for p in id_pages] == lengths
    assert [i for p in id_pages for i in p.message_ids] == order
    assert id_pages[-1].next_page_token == ""


def test_snapshot_page_size_default_and_cap(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 7)
    order = [ids[i % 7] for i in range(1200)]
    snap = calls.snapshot(stub, cid, order)
    sid = snap.snapshot_id
    for size in (0, -1, -(2**31)):
        page = calls.snapshot_page(stub, sid, page_size=size)
        assert [m.id for m in page.messages] == order[:DEFAULT_PAGE_SIZE]
        assert page.next_page_token
        id_page = calls.snapshot_ids_page(stub, sid, page_size=size)
        assert list(id_page.message_ids) == order[:DEFAULT_PAGE_SIZE]
    for size in (calls.MAX_PAGE_SIZE, calls.MAX_PAGE_SIZE + 1, 2**31 - 1):
        page = calls.snapshot_page(stub, sid, page_size=size)
        assert len(page.messages) == calls.MAX_PAGE_SIZE
        rest = calls.snapshot_page(stub, sid, page_size=size, page_token=page.next_page_token)
        assert [m.id for m in [*page.messages, *rest.messages]] == order
        assert rest.next_page_token == ""
        id_page = calls.snapshot_ids_page(stub, sid, page_size=size)
        assert len(id_page.message_ids) == calls.MAX_PAGE_SIZE
        id_rest = calls.snapshot_ids_page(
            stub, sid, page_size=size, page_token=id_page.next_page_token
        )
        assert [*id_page.message_ids, *id_rest.message_ids] == order
        assert id_rest.next_page_token == ""


def test_snapshot_tokens(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 5)
    one = calls.snapshot(stub, cid, ids).snapshot_id
    two = calls.snapshot(stub, cid, ids).snapshot_id
    token = calls.snapshot_page(stub, one, page_size=2).next_page_token
    id_token = calls.snapshot_ids_page(stub, one, page_size=2).next_page_token
    assert token
    assert id_token
    assert [
        m.id for m in calls.snapshot_page(stub, one.upper(), page_size=2, page_token=token).messages
    ] == ids[2:4]
    assert (
        list(calls.snapshot_ids_page(stub, one, page_size=2, page_token=id_token).message_ids)
        == ids[2:4]
    )
    # Bound to its snapshot.
    expect_error(INVALID_ARGUMENT, lambda: calls.snapshot_page(stub, two, page_token=token))
    expect_error(INVALID_ARGUMENT, lambda: calls.snapshot_ids_page(stub, two, page_token=id_token))
    for bad in ("garbage", "AAAA", "\x00", "x" * 3000):
        expect_error(
            INVALID_ARGUMENT, partial(calls.snapshot_page, stub, one, page_token=bad), "page_token"
        )
        expect_error(
            INVALID_ARGUMENT,
            partial(calls.snapshot_ids_page, stub, one, page_token=bad),
            "page_token",
        )
        # (1) before (2): a malformed token with an unknown snapshot.
        expect_error(INVALID_ARGUMENT, partial(calls.snapshot_page, stub, new_id(), page_token=bad))


def test_snapshots_racing_deletes_are_whole_or_not_found(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 60)
    done = threading.Event()
    outcomes: list[str] = []
    snapshots: list[str] = []

    def take() -> None:
        while not done.is_set():
            try:
                snapshots.append(calls.snapshot(stub, cid, ids[::-1]).snapshot_id)
            except grpc.RpcError as exc:
                outcomes.append(exc.code().name)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for message_id in ids:
            calls.delete(stub, cid, to_id=message_id)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)
    assert set(outcomes) <= {"NOT_FOUND"}, outcomes
    for sid in snapshots:
        messages = calls.snapshot_messages(stub, sid)
        assert [m.id for m in messages] == ids[::-1]
        assert [m.body.text.text for m in messages] == [f"m{i}" for i in range(59, -1, -1)]
