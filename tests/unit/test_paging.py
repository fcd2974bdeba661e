from __future__ import annotations

import base64
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


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _respelled(token: str) -> list[str]:
    """Spellings of the token's bytes other than the service's own."""
    last = _ALPHABET.index(token[-1])
    # 50 bytes in 67 characters: the last one carries 2 bits no byte uses.
    assert len(token) * 6 - len(_token_bytes(token)) * 8 == 2
    other_bits = token[:-1] + _ALPHABET[last ^ 1]
    other_alphabet = token.replace("-", "+").replace("_", "/")
    assert other_alphabet != token
    return [token + "=", token + "==", token + "===", other_bits, other_alphabet]


def _token_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_only_the_services_spelling_of_a_token_is_taken() -> None:
    # A cursor whose token has both characters that base64's alphabets spell apart.
    token = next(
        t
        for t in (
            paging.encode(PagedList.CONVERSATION_MESSAGES, CONVERSATION, NO_FILTER, Cursor(n))
            for n in range(10_000)
        )
        if "-" in t or "_" in t
    )
    for spelling in _respelled(token):
        assert _token_bytes(spelling) == _token_bytes(token)
        with pytest.raises(InvalidArgument, match="not a page token"):
            paging.decode(spelling, PagedList.CONVERSATION_MESSAGES, CONVERSATION, NO_FILTER)
    checkpoints = paging.encode_checkpoints(b"f" * 8, ("a", "b", "c"))
    assert paging.decode_checkpoints(checkpoints, b"f" * 8) == ("a", "b", "c")
    with pytest.raises(InvalidArgument, match="not a page token"):
        paging.decode_checkpoints(checkpoints + "=", b"f" * 8)


# --- ListConversations ----------------------------------------------------------


def _fingerprint(
    labels: dict[str, str] | None = None,
    after: int | None = None,
    before: int | None = None,
    newest_first: bool = True,
) -> bytes:
    return paging.conversation_filter_fingerprint(labels or {}, after, before, newest_first)


def test_conversation_tokens_round_trip() -> None:
    cursor = paging.ConversationCursor(-5, uuid.uuid4(), 1 << 60)
    fingerprint = _fingerprint({"user": "alice"}, 3, None, False)
    token = paging.encode_conversations(fingerprint, cursor)
    assert len(token) == paging.token_length()
    assert paging.decode_conversations(token, fingerprint) == cursor
    assert paging.decode_conversations("", fingerprint) is None


@pytest.mark.parametrize(
    "other",
    [
        _fingerprint({"user": "bob"}),
        _fingerprint({"user": "alice", "app": "x"}),
        _fingerprint({"user": "alice"}, after=1),
        _fingerprint({"user": "alice"}, before=1),
        _fingerprint({"user": "alice"}, newest_first=False),
    ],
)
def test_conversation_tokens_are_bound_to_filters_and_order(other: bytes) -> None:
    token = paging.encode_conversations(
        _fingerprint({"user": "alice"}), paging.ConversationCursor(1, uuid.uuid4(), 0)
    )
    with pytest.raises(InvalidArgument, match="other labels, updated_after") as caught:
        paging.decode_conversations(token, other)
    assert caught.value.field == "page_token"


def test_conversation_fingerprints_tell_filters_apart() -> None:
    # Length-prefixed: a key and value cannot pass for others.
    assert _fingerprint({"a": "bc"}) != _fingerprint({"ab": "c"})
    assert _fingerprint(after=5) != _fingerprint(before=5)
    assert _fingerprint(after=0) != _fingerprint()
    assert _fingerprint({"b": "1", "a": "2"}) == _fingerprint({"a": "2", "b": "1"})


def test_tokens_of_other_lists_are_refused_both_ways() -> None:
    conversations = paging.encode_conversations(
        NO_FILTER, paging.ConversationCursor(1, CONVERSATION, 0)
    )
    with pytest.raises(InvalidArgument, match="another list"):
        paging.decode(conversations, PagedList.CONVERSATION_MESSAGES, CONVERSATION, NO_FILTER)
    with pytest.raises(InvalidArgument, match="another list"):
        paging.decode_conversations(_token(), NO_FILTER)


# --- ListConversationSnapshots -----------------------------------------------------


def test_snapshot_tokens_round_trip_bound_to_their_conversation() -> None:
    cursor = paging.SnapshotCursor(-7, uuid.uuid4())
    token = paging.encode_snapshots(CONVERSATION, cursor)
    assert len(token) == paging.token_length()
    assert paging.decode_snapshots(token, CONVERSATION) == cursor
    assert paging.decode_snapshots("", CONVERSATION) is None
    with pytest.raises(InvalidArgument, match="another conversation") as caught:
        paging.decode_snapshots(token, uuid.uuid4())
    assert caught.value.field == "page_token"
    # Not a token of another list, nor one of theirs.
    with pytest.raises(InvalidArgument, match="another list"):
        paging.decode(token, PagedList.CONVERSATION_MESSAGES, CONVERSATION, NO_FILTER)
    with pytest.raises(InvalidArgument, match="another list"):
        paging.decode_snapshots(_token(), CONVERSATION)
    with pytest.raises(InvalidArgument, match="not a page token"):
        paging.decode_snapshots(token[:-1], CONVERSATION)
