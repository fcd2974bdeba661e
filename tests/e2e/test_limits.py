"""Default limits: batch size, request size, kind length, and the 3 MiB page rule."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import (
    ASSISTANT,
    INVALID_ARGUMENT,
    MAX_KIND_CODE_POINTS,
    MAX_PAGE_BYTES,
    MAX_REQUEST_BYTES,
    MIB,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    TOOL,
    USER,
    expect_error,
    new_id,
)
from tests.support import calls
from tests.support.calls import Stub, text_message

# Pages may stop a little before 3 MiB (the server must leave room for the page
# token it has not written yet), but not by more than this.
PAGE_SLACK_BYTES = 2048


def _request(conversation_id: str, text: str) -> pb.AppendConversationMessagesRequest:
    return pb.AppendConversationMessagesRequest(
        conversation_id=conversation_id, messages=[text_message(text)]
    )


def text_for_request_size(conversation_id: str, size: int, fill: str = "x") -> str:
    """A text whose one-message append request encodes to exactly ``size`` bytes."""
    length = size
    for _ in range(10):
        overhead = _request(conversation_id, fill * length).ByteSize() - length
        length = size - overhead
        if _request(conversation_id, fill * length).ByteSize() == size:
            return fill * length
    raise AssertionError(f"cannot build a request of exactly {size} bytes")


def _entry_size(message: pb.Message) -> int:
    """Bytes one more message adds to a list response (tag, length, body)."""
    n = message.ByteSize()
    return 1 + len(_varint(n)) + n


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def assert_pages_packed(
    pages: Sequence[pb.ListConversationMessagesResponse | pb.ListSnapshotMessagesResponse],
    page_size: int,
) -> None:
    """Each page stays under 3 MiB (unless it holds one message) and stops only when it must."""
    for i, page in enumerate(pages):
        size = page.ByteSize()
        assert size < MAX_PAGE_BYTES or len(page.messages) == 1, (
            f"page {i} holds {len(page.messages)} messages in {size} bytes"
        )
        if i + 1 < len(pages) and len(page.messages) < page_size:
            following = pages[i + 1].messages[0]
            assert size + _entry_size(following) + PAGE_SLACK_BYTES >= MAX_PAGE_BYTES, (
                f"page {i} stopped early at {size} bytes although the next message "
                f"({_entry_size(following)} bytes) would have fitted"
            )


# --- batch size ------------------------------------------------------------------


def test_a_batch_of_1000_messages_is_accepted(stub: Stub) -> None:
    cid = new_id()
    response = calls.append(stub, cid, [text_message(f"m{i}") for i in range(calls.MAX_BATCH)])
    assert len(response.appended) == calls.MAX_BATCH
    assert response.metadata.message_count == calls.MAX_BATCH
    assert [m.body.text.text for m in response.appended] == [
        f"m{i}" for i in range(calls.MAX_BATCH)
    ]


def test_a_batch_of_1001_messages_is_invalid_and_stores_nothing(stub: Stub) -> None:
    cid = new_id()
    batch = [text_message(f"m{i}") for i in range(calls.MAX_BATCH + 1)]
    expect_error(INVALID_ARGUMENT, lambda: calls.append(stub, cid, batch), "messages")
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid))
    existing = calls.seed(stub, cid, 2)
    expect_error(INVALID_ARGUMENT, lambda: calls.append(stub, cid, batch), "messages")
    assert calls.all_ids(stub, cid) == existing


# --- request size ------------------------------------------------------------------


def test_a_request_of_exactly_3_mib_is_accepted(stub: Stub) -> None:
    cid = new_id()
    text = text_for_request_size(cid, MAX_REQUEST_BYTES)
    response = calls.append(stub, cid, [text_message(text)])
    assert response.appended[0].body.text.text == text
    assert calls.list_all(stub, cid)[0].body.text.text == text


def test_a_request_over_3_mib_is_resource_exhausted(stub: Stub) -> None:
    cid = new_id()
    text = text_for_request_size(cid, MAX_REQUEST_BYTES + 1)
    expect_error(RESOURCE_EXHAUSTED, lambda: calls.append(stub, cid, [text_message(text)]))
    big = "y" * (MIB + MIB // 2)
    expect_error(RESOURCE_EXHAUSTED, lambda: calls.append(stub, cid, [text_message(big)] * 3))
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid))
    # The service is fine afterwards.
    calls.append(stub, cid, [text_message("small")])
    assert calls.get(stub, cid).message_count == 1


# --- kind length -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        "k" * MAX_KIND_CODE_POINTS,
        "\U0001f600" * MAX_KIND_CODE_POINTS,  # 4 UTF-8 bytes, 2 UTF-16 units each
        "\u00e9" * MAX_KIND_CODE_POINTS,  # 2 UTF-8 bytes each
        "e\u0301" * (MAX_KIND_CODE_POINTS // 2),  # 256 code points, 128 graphemes
        "\x00" * MAX_KIND_CODE_POINTS,
    ],
    ids=["ascii", "emoji", "latin1", "combining", "nul"],
)
def test_kind_of_256_code_points_is_accepted(stub: Stub, kind: str) -> None:
    cid = new_id()
    response = calls.append(stub, cid, [text_message("x", kind=kind)])
    assert response.appended[0].kind == kind
    assert calls.list_all(stub, cid)[0].kind == kind


@pytest.mark.parametrize(
    "kind",
    [
        "k" * (MAX_KIND_CODE_POINTS + 1),
        "\U0001f600" * (MAX_KIND_CODE_POINTS + 1),
        "e\u0301" * (MAX_KIND_CODE_POINTS // 2) + "e",
        "k" * 10_000,
    ],
    ids=["ascii", "emoji", "combining", "long"],
)
def test_kind_of_257_code_points_is_invalid(stub: Stub, kind: str) -> None:
    cid = new_id()
    batch = [text_message("a"), text_message("b"), text_message("c", kind=kind)]
    expect_error(INVALID_ARGUMENT, lambda: calls.append(stub, cid, batch), "messages[2].kind")
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid))


# --- 3 MiB pages -------------------------------------------------------------------


def test_conversation_pages_stop_before_3_mib(stub: Stub) -> None:
    cid = new_id()
    texts = [chr(ord("a") + i) * (MIB + MIB // 5) for i in range(5)]  # 1.2 MiB each
    for text in texts:
        calls.append(stub, cid, [text_message(text)])
    pages = calls.list_pages(stub, cid, page_size=0)
    assert [len(p.messages) for p in pages] == [2, 2, 1]
    assert [m.body.text.text for p in pages for m in p.messages] == texts
    assert_pages_packed(pages, 100)


def test_a_page_stays_under_3_mib_and_never_reaches_it(stub: Stub) -> None:
    """Pages of two messages that would encode to 3 MiB - 1, 3 MiB and
    3 MiB + 1 bytes: only the first holds both ("stays under 3 MiB").
    Snapshot pages, whose size the test can tell exactly in advance: they
    carry no metadata, and the pages of both lists are cut by one rule."""
    cid = new_id()
    first = calls.append(stub, cid, [text_message("a" * (2 * MIB))]).appended[0]
    last = calls.append(stub, cid, [text_message("c")]).appended[0]
    token = calls.snapshot_page(
        stub, calls.snapshot(stub, cid, [first.id, last.id]).snapshot_id, page_size=1
    ).next_page_token

    def page_of_both(second: pb.Message) -> int:
        both = pb.ListSnapshotMessagesResponse(messages=[first, second], next_page_token=token)
        return both.ByteSize() - MAX_PAGE_BYTES

    held = {}
    for past in (-1, 0, 1):
        length = MIB
        for _ in range(5):
            second = calls.append(stub, cid, [text_message("b" * length)]).appended[0]
            if page_of_both(second) == past:
                break
            # Its id and created_at encode to a few bytes more or less.
            length += past - page_of_both(second)
        assert page_of_both(second) == past
        snapshot = calls.snapshot(stub, cid, [first.id, second.id, last.id])
        page = calls.snapshot_page(stub, snapshot.snapshot_id, page_size=2)
        assert len(page.next_page_token) == len(token)
        held[past] = len(page.messages)
    assert held == {-1: 2, 0: 1, 1: 1}


def test_message_near_the_limit_is_returned_alone(stub: Stub) -> None:
    cid = new_id()
    big = text_for_request_size(cid, MAX_REQUEST_BYTES, "B")
    big2 = "C" * (MAX_PAGE_BYTES - 4096)
    for text in ["s0", big, "s1", big2, "s2"]:
        calls.append(stub, cid, [text_message(text)])
    pages = calls.list_pages(stub, cid, page_size=10)
    grouped = [[m.body.text.text[:2] for m in p.messages] for p in pages]
    assert grouped == [["s0"], ["BB"], ["s1", "CC", "s2"]]
    assert pages[1].ByteSize() > MAX_PAGE_BYTES  # it is bigger than a page, and still there
    assert pages[1].messages[0].body.text.text == big
    assert_pages_packed(pages, 10)


def test_snapshot_pages_follow_the_3_mib_rule(stub: Stub) -> None:
    cid = new_id()
    big = text_for_request_size(cid, MAX_REQUEST_BYTES, "B")
    mid = "M" * (MIB + MIB // 5)
    ids = [calls.append(stub, cid, [text_message(t)]).appended[0].id for t in (big, mid, "s0")]
    big_id, mid_id, small_id = ids
    snap = calls.snapshot(
        stub, cid, [mid_id, mid_id, mid_id, big_id, small_id, mid_id, mid_id, big_id]
    )
    pages = calls.snapshot_pages(stub, snap.snapshot_id, page_size=0)
    grouped = [[m.body.text.text[:1] for m in p.messages] for p in pages]
    assert grouped == [["M", "M"], ["M"], ["B"], ["s", "M", "M"], ["B"]]
    assert_pages_packed(pages, 100)


# --- large but valid requests ----------------------------------------------------------


def test_snapshot_of_70000_ids_is_accepted(stub: Stub) -> None:
    """Repeats are allowed; one request under 3 MiB may name an id tens of thousands of times."""
    cid = new_id()
    a, b = calls.seed(stub, cid, 2)
    order = [a if i % 7 else b for i in range(70_000)]
    snap = calls.snapshot(stub, cid, order)
    assert calls.snapshot_ids(stub, snap.snapshot_id) == order


def test_snapshot_request_over_3_mib_is_resource_exhausted(stub: Stub) -> None:
    cid = new_id()
    (a,) = calls.seed(stub, cid, 1)
    expect_error(RESOURCE_EXHAUSTED, lambda: calls.snapshot(stub, cid, [a] * 90_000))


def test_filters_with_many_values_are_accepted(stub: Stub) -> None:
    cid = new_id()
    calls.append(
        stub,
        cid,
        [
            text_message("u", USER, "k1"),
            text_message("a", ASSISTANT, "k69999"),
            text_message("n", TOOL),
        ],
    )
    kinds = [f"k{i}" for i in range(70_000)]
    assert [m.body.text.text for m in calls.list_all(stub, cid, kinds=kinds)] == ["u", "a"]
    roles = [USER, ASSISTANT] * 50_000
    assert [m.body.text.text for m in calls.list_all(stub, cid, roles=roles)] == ["u", "a"]
    page = calls.list_page(stub, cid, page_size=1, roles=roles, kinds=kinds)
    assert [m.body.text.text for m in page.messages] == ["u"]
    rest = calls.list_page(
        stub,
        cid,
        page_size=1,
        roles=roles[::-1],
        kinds=kinds[::-1],
        page_token=page.next_page_token,
    )
    assert [m.body.text.text for m in rest.messages] == ["a"]
    assert rest.next_page_token == ""
