"""ListConversationMessages / ListConversationMessageIds: order, filters, paging, tokens."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import (
    ASSISTANT,
    DEFAULT_PAGE_SIZE,
    INVALID_ARGUMENT,
    NOT_FOUND,
    ROLE_UNSPECIFIED,
    TOOL,
    USER,
    expect_error,
    new_id,
    role,
    texts,
)
from tests.support import calls
from tests.support.calls import Stub, text_message

ROLES = [USER, ASSISTANT, TOOL]
KINDS = ["", "note", "summary", "memory"]


def seed_mixed(stub: Stub, conversation_id: str, count: int = 24) -> list[pb.Message]:
    """Messages ``t0``...: roles cycle USER, ASSISTANT, TOOL; kinds '', note, summary, memory."""
    batch = [text_message(f"t{i}", ROLES[i % 3], KINDS[i % 4]) for i in range(count)]
    return list(calls.append(stub, conversation_id, batch).appended)


def expected(
    messages: Sequence[pb.Message], roles: Sequence[int] = (), kinds: Sequence[str] = ()
) -> list[str]:
    return [
        m.id for m in messages if (not roles or m.role in roles) and (not kinds or m.kind in kinds)
    ]


# --- order, NOT_FOUND, metadata ------------------------------------------------------


def test_lists_are_oldest_first_and_agree(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 5) + calls.seed(stub, cid, 3, prefix="n")
    messages = calls.list_all(stub, cid)
    assert [m.id for m in messages] == ids
    assert texts(messages) == ["m0", "m1", "m2", "m3", "m4", "n0", "n1", "n2"]
    assert calls.all_ids(stub, cid) == ids


def test_unknown_conversation_is_not_found(stub: Stub) -> None:
    cid = new_id()
    expect_error(NOT_FOUND, lambda: calls.list_page(stub, cid))
    expect_error(NOT_FOUND, lambda: calls.ids_page(stub, cid))
    expect_error(NOT_FOUND, lambda: calls.list_page(stub, cid, roles=[USER], kinds=["x"]))


def test_list_metadata_is_the_conversation_metadata(stub: Stub) -> None:
    cid = new_id()
    seed_mixed(stub, cid, 9)
    page = calls.list_page(stub, cid.upper(), page_size=2, roles=[USER])
    assert page.metadata == calls.get(stub, cid)
    assert page.metadata.conversation_id == cid
    assert page.metadata.message_count == 9  # the ordering, not the filtered count


def test_empty_conversation_lists_nothing(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 3)
    calls.delete(stub, cid, from_id=ids[0])
    page = calls.list_page(stub, cid)
    assert list(page.messages) == []
    assert page.next_page_token == ""
    assert page.metadata.message_count == 0
    id_page = calls.ids_page(stub, cid)
    assert list(id_page.message_ids) == []
    assert id_page.next_page_token == ""


def test_detached_and_deleted_messages_are_not_listed(stub: Stub) -> None:
    cid = new_id()
    a, b, c, d, e = calls.seed(stub, cid, 5)
    calls.replace(stub, cid, from_id=b, to_id=b)  # detach b
    calls.delete(stub, cid, from_id=d, to_id=d)
    assert [m.id for m in calls.list_all(stub, cid)] == [a, c, e]
    assert calls.all_ids(stub, cid) == [a, c, e]
    assert [m.id for m in calls.list_all(stub, cid, page_size=1)] == [a, c, e]


# --- page sizes ------------------------------------------------------------------------


def test_page_size_default_and_cap(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 1200)
    for size in (0, -1, -1000, -(2**31)):
        page = calls.list_page(stub, cid, page_size=size)
        assert [m.id for m in page.messages] == ids[:DEFAULT_PAGE_SIZE], size
        assert page.next_page_token
        id_page = calls.ids_page(stub, cid, page_size=size)
        assert list(id_page.message_ids) == ids[:DEFAULT_PAGE_SIZE], size
        assert id_page.next_page_token
    for size in (calls.MAX_PAGE_SIZE, calls.MAX_PAGE_SIZE + 1, 5000, 2**31 - 1):
        page = calls.list_page(stub, cid, page_size=size)
        assert [m.id for m in page.messages] == ids[: calls.MAX_PAGE_SIZE], size
        rest = calls.list_page(stub, cid, page_size=size, page_token=page.next_page_token)
        assert [m.id for m in rest.messages] == ids[calls.MAX_PAGE_SIZE :]
        assert rest.next_page_token == ""
        id_page = calls.ids_page(stub, cid, page_size=size)
        assert list(id_page.message_ids) == ids[: calls.MAX_PAGE_SIZE], size
        id_rest = calls.ids_page(stub, cid, page_size=size, page_token=id_page.next_page_token)
        assert list(id_rest.message_ids) == ids[calls.MAX_PAGE_SIZE :]
        assert id_rest.next_page_token == ""
    pages = calls.list_pages(stub, cid, page_size=0)
    assert [len(p.messages) for p in pages] == [100] * 12
    assert [len(p.message_ids) for p in calls.ids_pages(stub, cid, page_size=-5)] == [100] * 12


@pytest.mark.parametrize(
    ("count", "size", "lengths"),
    [(20, 7, [7, 7, 6]), (21, 7, [7, 7, 7]), (1, 1, [1]), (5, 1, [1] * 5), (3, 10, [3])],
)
def test_pages_are_full_and_the_token_is_empty_exactly_at_the_end(
    stub: Stub, count: int, size: int, lengths: list[int]
) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, count)
    pages = calls.list_pages(stub, cid, page_size=size)
    assert [len(p.messages) for p in pages] == lengths
    assert [m.id for p in pages for m in p.messages] == ids
    assert all(p.next_page_token for p in pages[:-1])
    assert pages[-1].next_page_token == ""
    id_pages = calls.ids_pages(stub, cid, page_size=size)
    assert [len(p.message_ids) for p in id_pages] == lengths
    assert [i for p in id_pages for i in p.message_ids] == ids
    assert id_pages[-1].next_page_token == ""


def test_filtered_paging_ends_when_no_match_remains(stub: Stub) -> None:
    cid = new_id()
    roles = [USER, ASSISTANT, USER, ASSISTANT, USER, ASSISTANT, ASSISTANT, TOOL]
    calls.append(stub, cid, [text_message(str(i), r) for i, r in enumerate(roles)])
    first = calls.list_page(stub, cid, page_size=3, roles=[USER])
    assert texts(first.messages) == ["0", "2", "4"]
    assert first.next_page_token == "", "nothing more matches, so there is no next page"
    first = calls.list_page(stub, cid, page_size=2, roles=[USER])
    assert texts(first.messages) == ["0", "2"]
    assert first.next_page_token
    second = calls.list_page(stub, cid, page_size=2, roles=[USER], page_token=first.next_page_token)
    assert texts(second.messages) == ["4"]
    assert second.next_page_token == ""
    none = calls.list_page(stub, cid, kinds=["absent"])
    assert list(none.messages) == []
    assert none.next_page_token == ""


# --- filters -----------------------------------------------------------------------------

FILTERS: list[tuple[list[pb.Role], list[str]]] = [
    ([USER], []),
    ([ASSISTANT], []),
    ([TOOL], []),
    ([USER, TOOL], []),
    ([TOOL, USER], []),
    ([USER, ASSISTANT, TOOL], []),
    ([], ["note"]),
    ([], [""]),
    ([], ["", "summary"]),
    ([], ["summary", ""]),
    ([], ["absent"]),
    ([], ["Note", "note ", "not", "notes"]),
    ([USER], ["note"]),
    ([USER, TOOL], ["", "memory"]),
    ([ASSISTANT], ["", "note", "summary", "memory"]),
    ([USER, USER], ["note", "note"]),
]


@pytest.mark.parametrize(("roles", "kinds"), FILTERS)
def test_filters(stub: Stub, roles: list[pb.Role], kinds: list[str]) -> None:
    cid = new_id()
    messages = seed_mixed(stub, cid)
    want = expected(messages, roles, kinds)
    assert [m.id for m in calls.list_all(stub, cid, roles=roles, kinds=kinds)] == want
    pages = calls.list_pages(stub, cid, roles=roles, kinds=kinds, page_size=2)
    assert [m.id for p in pages for m in p.messages] == want
    full, rest = divmod(len(want), 2)
    assert [len(p.messages) for p in pages] == [2] * full + ([rest] if rest or not full else [])


def test_empty_kind_filter_matches_only_empty_kinds(stub: Stub) -> None:
    cid = new_id()
    batch = [
        text_message("empty", USER, ""),
        text_message("space", USER, " "),
        text_message("nul", USER, "\x00"),
        text_message("word", USER, "x"),
    ]
    calls.append(stub, cid, batch)
    assert texts(calls.list_all(stub, cid, kinds=[""])) == ["empty"]
    assert texts(calls.list_all(stub, cid, kinds=["\x00"])) == ["nul"]
    assert texts(calls.list_all(stub, cid, kinds=[" "])) == ["space"]
    assert texts(calls.list_all(stub, cid, kinds=[])) == ["empty", "space", "nul", "word"]


@pytest.mark.parametrize("bad", [ROLE_UNSPECIFIED, role(4), role(99), role(-3)])
def test_invalid_role_filter(stub: Stub, bad: pb.Role) -> None:
    cid = new_id()
    calls.seed(stub, cid, 2)
    expect_error(INVALID_ARGUMENT, lambda: calls.list_page(stub, cid, roles=[bad]), "roles")
    expect_error(INVALID_ARGUMENT, lambda: calls.list_page(stub, cid, roles=[USER, bad]), "roles")
    # (1) before (2): the request alone shows the filter is bad.
    expect_error(INVALID_ARGUMENT, lambda: calls.list_page(stub, new_id(), roles=[bad]))


# --- tokens ---------------------------------------------------------------------------------


def test_token_continues_the_same_filter_in_any_order(stub: Stub) -> None:
    cid = new_id()
    messages = seed_mixed(stub, cid)
    want = expected(messages, [USER, TOOL], ["", "note", "summary"])
    first = calls.list_page(
        stub, cid, page_size=3, roles=[USER, TOOL], kinds=["", "note", "summary"]
    )
    second = calls.list_page(
        stub,
        cid,
        page_size=3,
        roles=[TOOL, USER],
        kinds=["summary", "", "note"],
        page_token=first.next_page_token,
    )
    third = calls.list_page(
        stub,
        cid,
        page_size=100,
        roles=[TOOL, USER, TOOL],
        kinds=["note", "summary", "", "note"],
        page_token=second.next_page_token,
    )
    got = [m.id for p in (first, second, third) for m in p.messages]
    assert got == want
    assert third.next_page_token == ""


@pytest.mark.parametrize(
    ("roles", "kinds"),
    [
        ([], []),
        ([USER], []),
        ([USER, ASSISTANT], ["note"]),
        ([TOOL], ["note"]),
        ([USER], [""]),
        ([USER], ["note", "summary"]),
        ([USER], ["Note"]),
    ],
)
def test_token_is_bound_to_its_filter(stub: Stub, roles: list[pb.Role], kinds: list[str]) -> None:
    cid = new_id()
    seed_mixed(stub, cid, 30)
    token = calls.list_page(stub, cid, page_size=1, roles=[USER], kinds=["note"]).next_page_token
    assert token
    expect_error(
        INVALID_ARGUMENT,
        lambda: calls.list_page(stub, cid, page_size=2, roles=roles, kinds=kinds, page_token=token),
    )


def test_token_without_filter_is_not_a_token_for_the_empty_kind(stub: Stub) -> None:
    cid = new_id()
    seed_mixed(stub, cid, 30)
    token = calls.list_page(stub, cid, page_size=2).next_page_token
    assert token
    expect_error(INVALID_ARGUMENT, lambda: calls.list_page(stub, cid, kinds=[""], page_token=token))
    expect_error(
        INVALID_ARGUMENT, lambda: calls.list_page(stub, cid, roles=[USER], page_token=token)
    )
    token = calls.list_page(stub, cid, page_size=2, kinds=[""]).next_page_token
    assert token
    expect_error(INVALID_ARGUMENT, lambda: calls.list_page(stub, cid, page_token=token))


def test_token_is_bound_to_its_conversation(stub: Stub) -> None:
    one, other = new_id(), new_id()
    calls.seed(stub, one, 10)
    calls.seed(stub, other, 10)
    token = calls.list_page(stub, one, page_size=3).next_page_token
    id_token = calls.ids_page(stub, one, page_size=3).next_page_token
    assert token
    assert id_token
    expect_error(INVALID_ARGUMENT, lambda: calls.list_page(stub, other, page_token=token))
    expect_error(INVALID_ARGUMENT, lambda: calls.ids_page(stub, other, page_token=id_token))
    # Another spelling of the same conversation is the same conversation.
    page = calls.list_page(stub, one.upper(), page_size=3, page_token=token)
    assert texts(page.messages) == ["m3", "m4", "m5"]
    id_page = calls.ids_page(stub, "{" + one + "}", page_size=3, page_token=id_token)
    assert len(id_page.message_ids) == 3


MALFORMED_TOKENS = [
    "garbage",
    "!!!!",
    "AAAA",
    "\x00",
    "x" * 5000,
    "eyJ0eXAiOiJKV1QifQ",
    "\U0001f600",
    "-1",
    "99999999999999999999999999",
]


@pytest.mark.parametrize("token", MALFORMED_TOKENS)
def test_malformed_token_is_invalid(stub: Stub, token: str) -> None:
    cid = new_id()
    calls.seed(stub, cid, 3)
    expect_error(
        INVALID_ARGUMENT, lambda: calls.list_page(stub, cid, page_token=token), "page_token"
    )
    expect_error(
        INVALID_ARGUMENT, lambda: calls.ids_page(stub, cid, page_token=token), "page_token"
    )
    # (1) before (2): the request alone shows the token is bad.
    expect_error(INVALID_ARGUMENT, lambda: calls.list_page(stub, new_id(), page_token=token))
    expect_error(INVALID_ARGUMENT, lambda: calls.ids_page(stub, new_id(), page_token=token))


def test_tampered_token_is_invalid_or_harmless(stub: Stub) -> None:
    """A token with one character changed is rejected, or at least never crashes the server."""
    cid = new_id()
    ids = calls.seed(stub, cid, 10)
    token = calls.list_page(stub, cid, page_size=3).next_page_token
    variants = [
        token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :] for i in range(len(token))
    ]
    variants += [token[:-1], token[: len(token) // 2], token + "A", token + "=="]
    failures: list[str] = []
    for variant in variants:
        try:
            page = calls.list_page(stub, cid, page_size=3, page_token=variant)
        except grpc.RpcError as exc:
            if exc.code() != INVALID_ARGUMENT:
                failures.append(f"{variant!r}: {exc.code().name} {exc.details()!r}")
        else:
            if not all(m.id in ids for m in page.messages):
                failures.append(f"{variant!r}: listed messages of another conversation")
    assert not failures, failures


# --- stability between pages --------------------------------------------------------------


def _rest(stub: Stub, cid: str, token: str, size: int = 4) -> list[str]:
    out: list[str] = []
    while token:
        page = calls.list_page(stub, cid, page_size=size, page_token=token)
        out += [m.id for m in page.messages]
        token = page.next_page_token
    return out


def _rest_ids(stub: Stub, cid: str, token: str, size: int = 4) -> list[str]:
    out: list[str] = []
    while token:
        page = calls.ids_page(stub, cid, page_size=size, page_token=token)
        out += list(page.message_ids)
        token = page.next_page_token
    return out


def _first(stub: Stub, cid: str, size: int = 4) -> tuple[list[str], str]:
    page = calls.list_page(stub, cid, page_size=size)
    return [m.id for m in page.messages], page.next_page_token


def _between_pages(stub: Stub) -> tuple[str, list[str], str]:
    """A new conversation of ten messages, their ids, and the token after
    its first page of four, which a test then changes the list under."""
    cid = new_id()
    m = calls.seed(stub, cid, 10)
    first, token = _first(stub, cid)
    assert first == m[:4]
    return cid, m, token


def test_messages_appended_between_pages_appear_later(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    more = calls.seed(stub, cid, 2, prefix="x")
    assert _rest(stub, cid, token) == m[4:] + more


def test_deleting_the_head_between_pages_skips_nothing(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    id_token = calls.ids_page(stub, cid, page_size=4).next_page_token
    calls.delete(stub, cid, to_id=m[1])
    assert _rest(stub, cid, token) == m[4:]
    assert _rest_ids(stub, cid, id_token) == m[4:]


def test_deleting_the_cursor_message_between_pages_skips_nothing(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    id_token = calls.ids_page(stub, cid, page_size=4).next_page_token
    calls.delete(stub, cid, from_id=m[3], to_id=m[3])
    assert _rest(stub, cid, token) == m[4:]
    assert _rest_ids(stub, cid, id_token) == m[4:]


def test_deleting_across_the_cursor_between_pages(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.delete(stub, cid, from_id=m[2], to_id=m[5])
    assert _rest(stub, cid, token) == m[6:]


def test_deleting_ahead_of_the_cursor_between_pages(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.delete(stub, cid, from_id=m[5], to_id=m[6])
    assert _rest(stub, cid, token) == [m[4], *m[7:]]


def test_detaching_the_cursor_message_between_pages(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.replace(stub, cid, from_id=m[3], to_id=m[3])
    assert _rest(stub, cid, token) == m[4:]


def test_reordering_before_the_cursor_repeats_nothing(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.replace(stub, cid, from_id=m[0], to_id=m[3], new_ids=[m[3], m[1], m[2], m[0]])
    assert _rest(stub, cid, token) == m[4:]


def test_inserting_before_the_cursor_repeats_nothing(stub: Stub) -> None:
    cid = new_id()
    m = calls.seed(stub, cid, 10)
    calls.replace(stub, cid, from_id=m[9], to_id=m[9])  # detach m9
    first, token = _first(stub, cid)
    assert first == m[:4]
    calls.replace(stub, cid, to_id=m[1], new_ids=[m[9]])
    rest = _rest(stub, cid, token)
    assert rest == m[4:9]


def test_moving_a_message_before_the_cursor_skips_only_that_message(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.replace(stub, cid, from_id=m[0], new_ids=[m[7]])
    rest = _rest(stub, cid, token)
    assert [i for i in rest if i != m[7]] == [m[4], m[5], m[6], m[8], m[9]]
    assert rest.count(m[7]) <= 1


def test_moving_a_message_after_the_cursor_may_repeat_only_that_message(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.replace(stub, cid, to_id=m[9], new_ids=[m[1]])
    rest = _rest(stub, cid, token)
    assert [i for i in rest if i != m[1]] == m[4:]
    assert rest.count(m[1]) <= 1
    if m[1] in rest:
        assert rest.index(m[1]) == rest.index(m[9]) - 1


def test_summarising_between_pages(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    summary = calls.seed(stub, cid, 1, prefix="summary")[0]
    calls.replace(stub, cid, from_id=m[0], to_id=m[5], new_ids=[summary])
    assert calls.all_ids(stub, cid) == [summary, *m[6:]]
    rest = _rest(stub, cid, token)
    assert [i for i in rest if i != summary] == m[6:]


def test_filtered_paging_is_stable(stub: Stub) -> None:
    cid = new_id()
    batch = [
        text_message(f"u{i}" if i % 2 == 0 else f"a{i}", USER if i % 2 == 0 else ASSISTANT)
        for i in range(20)
    ]
    m = [x.id for x in calls.append(stub, cid, batch).appended]
    first = calls.list_page(stub, cid, page_size=3, roles=[USER])
    assert texts(first.messages) == ["u0", "u2", "u4"]
    calls.delete(stub, cid, from_id=m[3], to_id=m[6])  # a3, u4 (the cursor), a5, u6
    more = calls.append(stub, cid, [text_message("u20", USER), text_message("a21", ASSISTANT)])
    token = first.next_page_token
    rest: list[str] = []
    while token:
        page = calls.list_page(stub, cid, page_size=3, roles=[USER], page_token=token)
        rest += texts(page.messages)
        token = page.next_page_token
    assert rest == ["u8", "u10", "u12", "u14", "u16", "u18", "u20"]
    assert more.metadata.message_count == 18


def test_moving_the_cursor_message_forward_skips_nothing(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.replace(stub, cid, to_id=m[8], new_ids=[m[3]])  # m0 m1 m2 m4 m5 m6 m7 m3 m8 m9
    rest = _rest(stub, cid, token)
    assert [i for i in rest if i != m[3]] == m[4:]
    assert rest.count(m[3]) <= 1


def test_moving_the_cursor_message_backward_skips_nothing(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.replace(stub, cid, to_id=m[0], new_ids=[m[3]])  # m3 m0 m1 m2 m4 ...
    assert _rest(stub, cid, token) == m[4:]


def test_moving_the_next_message_away_skips_nothing_else(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    calls.replace(stub, cid, to_id=m[0], new_ids=[m[4], m[5]])  # m4 m5 m0 m1 m2 m3 m6 ...
    rest = _rest(stub, cid, token)
    assert [i for i in rest if i not in (m[4], m[5])] == m[6:]


def test_token_after_everything_was_deleted(stub: Stub) -> None:
    cid, m, token = _between_pages(stub)
    id_token = calls.ids_page(stub, cid, page_size=4).next_page_token
    calls.delete(stub, cid, from_id=m[0])
    page = calls.list_page(stub, cid, page_size=4, page_token=token)
    assert list(page.messages) == []
    assert page.next_page_token == ""
    id_page = calls.ids_page(stub, cid, page_size=4, page_token=id_token)
    assert list(id_page.message_ids) == []
    assert id_page.next_page_token == ""
    # New messages after that are found by the same token.
    more = calls.seed(stub, cid, 2, prefix="n")
    assert _rest(stub, cid, token) == more
