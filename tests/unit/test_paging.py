from __future__ import annotations

import uuid

import pytest

from agent_state import paging
from agent_state.errors import InvalidArgument
from agent_state.paging import Cursor, PagedList

CONVERSATION = uuid.uuid4()
NO_FILTER = paging.NO_FILTER


def test_round_trip_and_fixed_length() -> None:
    cursor = Cursor(position=123 << 32, layout_version=7)
    token = paging.encode(PagedList.CONVERSATION_MESSAGES, CONVERSATION, NO_FILTER, cursor)
    assert len(token) == paging.token_length()
    assert token.isascii()
    assert "=" not in token
    decoded = paging.decode(token, PagedList.CONVERSATION_MESSAGES, CONVERSATION, NO_FILTER)
    assert decoded == cursor


def test_empty_token_is_the_first_page() -> None:
    assert paging.decode("", PagedList.SNAPSHOT_MESSAGES, CONVERSATION, NO_FILTER) is None


def test_filters_are_sets() -> None:
    assert paging.filter_fingerprint([1, 3], ["b", "a"]) == paging.filter_fingerprint(
        [3, 1, 1], ["a", "b", "a"]
    )
    assert paging.filter_fingerprint([1], []) != paging.filter_fingerprint([], [])
    assert paging.filter_fingerprint([], [""]) != paging.filter_fingerprint([], [])
    # Kinds are length-prefixed: ["ab"] and ["a", "b"] differ.
    assert paging.filter_fingerprint([], ["ab"]) != paging.filter_fingerprint([], ["a", "b"])


def _token(fingerprint: bytes = NO_FILTER) -> str:
    return paging.encode(PagedList.CONVERSATION_MESSAGES, CONVERSATION, fingerprint, Cursor(5))


@pytest.mark.parametrize(
    ("listed", "target", "fingerprint", "reason"),
    [
        (PagedList.CONVERSATION_MESSAGE_IDS, CONVERSATION, NO_FILTER, "another list"),
        (PagedList.CONVERSATION_MESSAGES, uuid.uuid4(), NO_FILTER, "another conversation"),
        (
            PagedList.CONVERSATION_MESSAGES,
            CONVERSATION,
            paging.filter_fingerprint([1], []),
            "other roles or kinds",
        ),
    ],
)
def test_token_is_bound_to_list_target_and_filter(
    listed: PagedList, target: uuid.UUID, fingerprint: bytes, reason: str
) -> None:
    with pytest.raises(InvalidArgument, match=reason) as caught:
        paging.decode(_token(), listed, target, fingerprint)
    assert caught.value.field == "page_token"


def _flipped(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "!!!!",
        "é" * 10,
        _token()[:-1],
        _token() + "A",
        _flipped(_token(), 10),
        _flipped(_token(), 0),
    ],
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument, match="not a page token"):
        paging.decode(token, PagedList.CONVERSATION_MESSAGES, CONVERSATION, NO_FILTER)
