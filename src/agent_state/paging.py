"""Opaque page tokens, bound to one list, one conversation or snapshot, and
one filter.

A token is URL-safe base64 of a fixed-size record closed by a keyed BLAKE2b
check value, so a truncated, altered or invented token is recognised as
malformed instead of being followed somewhere arbitrary. The key is not a
secret: the check guards against mistakes, and a token gives no access
beyond the list it pages.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from uuid import UUID

from .errors import InvalidArgument

_FORMAT = struct.Struct(">BB16s8sqq")
_CHECK_SIZE = 8
_CHECK_KEY = b"agent-state page token"
_VERSION = 1
_FIELD = "page_token"


class PagedList(enum.IntEnum):
    CONVERSATION_MESSAGES = 1
    CONVERSATION_MESSAGE_IDS = 2
    SNAPSHOT_MESSAGES = 3
    SNAPSHOT_MESSAGE_IDS = 4
    CONVERSATIONS = 5
    CONVERSATION_SNAPSHOTS = 6
    CHECKPOINTS = 7


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: after `position` (conversation lists,
    valid for `layout_version`) or after snapshot index `position`."""

    position: int
    layout_version: int = 0


NO_FILTER = b"\0" * 8


def filter_fingerprint(roles: Iterable[int], kinds: Iterable[str]) -> bytes:
    """Identifies a filter as a set: order and repeats do not matter."""
    digest = hashlib.blake2b(digest_size=8)
    for role in sorted(set(roles)):
        digest.update(b"r" + struct.pack(">q", role))
    for kind in sorted(set(kinds)):
        encoded = kind.encode("utf-8")
        digest.update(b"k" + struct.pack(">I", len(encoded)) + encoded)
    return digest.digest()


def encode(listed: PagedList, target: UUID, fingerprint: bytes, cursor: Cursor) -> str:
    return _seal(listed, target, fingerprint, cursor.position, cursor.layout_version)


def decode(token: str, listed: PagedList, target: UUID, fingerprint: bytes) -> Cursor | None:
    """The cursor in `token` (None for the empty token, the first page).

    Raises InvalidArgument when the token is malformed or was issued for
    another list, conversation, snapshot or filter.
    """
    if not token:
        return None
    token_target, token_fingerprint, position, layout = _open(token, listed)
    if token_target != target.bytes:
        what = "snapshot" if listed >= PagedList.SNAPSHOT_MESSAGES else "conversation"
        raise InvalidArgument(_FIELD, f"was issued for another {what}")
    if token_fingerprint != fingerprint:
        raise InvalidArgument(_FIELD, "was issued with other roles or kinds filters")
    if position < 0 or layout < 0:
        raise InvalidArgument(_FIELD, "is not a page token issued by this service")
    return Cursor(position, layout)


# --- ListConversations ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationCursor:
    """Where the next page of ListConversations starts: after the key
    (`updated_at`, `conversation_id`) of the last conversation returned.

    `ceiling` (oldest first only) is the latest updated_at of the
    conversations the listing could show when its first page was read.
    Later pages stop there: a conversation updated since then has moved
    past it and would come again at the end; one that did not move is not
    above it.
    """

    updated_at: int
    conversation_id: UUID
    ceiling: int


def conversation_filter_fingerprint(
    labels: Mapping[str, str], after: int | None, before: int | None, newest_first: bool
) -> bytes:
    """Identifies ListConversations' filters and order."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(b"n" if newest_first else b"o")
    for name, bound in ((b"a", after), (b"b", before)):
        if bound is not None:
            digest.update(name + struct.pack(">q", bound))
    for key in sorted(labels):
        for text in (key, labels[key]):
            encoded = text.encode("utf-8")
            digest.update(b"l" + struct.pack(">I", len(encoded)) + encoded)
    return digest.digest()


def encode_conversations(fingerprint: bytes, cursor: ConversationCursor) -> str:
    return _seal(
        PagedList.CONVERSATIONS,
        cursor.conversation_id,
        fingerprint,
        cursor.updated_at,
        cursor.ceiling,
    )


def decode_conversations(token: str, fingerprint: bytes) -> ConversationCursor | None:
    """The cursor in a ListConversations token (None: the first page).

    Raises InvalidArgument when the token is malformed or was issued by
    another list, or with other filters or another order."""
    if not token:
        return None
    conversation_id, token_fingerprint, updated_at, ceiling = _open(token, PagedList.CONVERSATIONS)
    if token_fingerprint != fingerprint:
        raise InvalidArgument(
            _FIELD, "was issued with other labels, updated_after, updated_before or order_by"
        )
    return ConversationCursor(updated_at, UUID(bytes=conversation_id), ceiling)


# --- ListConversationSnapshots -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotCursor:
    """Where the next page of a conversation's snapshots starts: after the
    key (`created_at`, `snapshot_id`) of the last snapshot returned."""

    created_at: int
    snapshot_id: UUID


def _conversation_fingerprint(conversation_id: UUID) -> bytes:
    """Binds a snapshot listing's token to its conversation (the token's
    id is the cursor's snapshot)."""
    return hashlib.blake2b(b"snapshots of " + conversation_id.bytes, digest_size=8).digest()


def encode_snapshots(conversation_id: UUID, cursor: SnapshotCursor) -> str:
    fingerprint = _conversation_fingerprint(conversation_id)
    return _seal(
        PagedList.CONVERSATION_SNAPSHOTS, cursor.snapshot_id, fingerprint, cursor.created_at, 0
    )


def decode_snapshots(token: str, conversation_id: UUID) -> SnapshotCursor | None:
    """The cursor in a ListConversationSnapshots token (None: the first
    page). Raises InvalidArgument when the token is malformed or was issued
    by another list or for another conversation."""
    if not token:
        return None
    snapshot_id, fingerprint, created_at, unused = _open(token, PagedList.CONVERSATION_SNAPSHOTS)
    if fingerprint != _conversation_fingerprint(conversation_id):
        raise InvalidArgument(_FIELD, "was issued for another conversation")
    if unused:
        raise InvalidArgument(_FIELD, "is not a page token issued by this service")
    return SnapshotCursor(created_at, UUID(bytes=snapshot_id))


# --- ListCheckpoints ------------------------------------------------------------------

_TEXTS_HEADER = struct.Struct(">BB8s")
_TEXT_LENGTH = struct.Struct(">H")


def checkpoint_filter_fingerprint(
    thread_id: str | None, checkpoint_ns: str | None, before: str | None, metadata: str
) -> bytes:
    """Identifies ListCheckpoints' filters (`metadata`: the filter's
    canonical text)."""
    digest = hashlib.blake2b(digest_size=8)
    for name, text in ((b"t", thread_id), (b"n", checkpoint_ns), (b"b", before), (b"m", metadata)):
        if text is not None:
            encoded = text.encode("utf-8")
            digest.update(name + struct.pack(">I", len(encoded)) + encoded)
    return digest.digest()


def encode_checkpoints(fingerprint: bytes, key: tuple[str, str, str]) -> str:
    """A ListCheckpoints token: after the key (checkpoint id, namespace,
    thread) of the last checkpoint read. Its length follows the key's."""
    record = _TEXTS_HEADER.pack(_VERSION, PagedList.CHECKPOINTS, fingerprint)
    for text in key:
        encoded = text.encode("utf-8")
        record += _TEXT_LENGTH.pack(len(encoded)) + encoded
    return base64.urlsafe_b64encode(record + _check(record)).rstrip(b"=").decode("ascii")


def decode_checkpoints(token: str, fingerprint: bytes) -> tuple[str, str, str] | None:
    """The key in a ListCheckpoints token (None: the first page). Raises
    InvalidArgument when the token is malformed or was issued by another
    list or with other filters."""
    if not token:
        return None
    malformed = InvalidArgument(_FIELD, "is not a page token issued by this service")
    raw = _decoded(token, malformed)
    record, check = raw[:-_CHECK_SIZE], raw[-_CHECK_SIZE:]
    if len(record) < _TEXTS_HEADER.size or check != _check(record):
        raise malformed
    version, listed, token_fingerprint = _TEXTS_HEADER.unpack_from(record)
    if version != _VERSION or listed != PagedList.CHECKPOINTS:
        raise InvalidArgument(_FIELD, "was issued by another list method")
    if token_fingerprint != fingerprint:
        raise InvalidArgument(
            _FIELD, "was issued with another thread_id, checkpoint_ns, before or filter"
        )
    texts: list[str] = []
    offset = _TEXTS_HEADER.size
    try:
        for _ in range(3):
            (length,) = _TEXT_LENGTH.unpack_from(record, offset)
            offset += _TEXT_LENGTH.size
            texts.append(record[offset : offset + length].decode("utf-8"))
            offset += length
    except (struct.error, UnicodeDecodeError):
        raise malformed from None
    if offset != len(record):
        raise malformed
    return texts[0], texts[1], texts[2]


# --- The record --------------------------------------------------------------------


def _seal(listed: PagedList, target: UUID, fingerprint: bytes, first: int, second: int) -> str:
    record = _FORMAT.pack(_VERSION, listed, target.bytes, fingerprint, first, second)
    return base64.urlsafe_b64encode(record + _check(record)).rstrip(b"=").decode("ascii")


def _open(token: str, listed: PagedList) -> tuple[bytes, bytes, int, int]:
    """The target, filter fingerprint and two numbers of a token of list
    `listed`."""
    version, token_list, target, fingerprint, first, second = _unpack(token)
    if version != _VERSION or token_list != listed:
        raise InvalidArgument(_FIELD, "was issued by another list method")
    return target, fingerprint, first, second


def token_length() -> int:
    """Every token has this many characters."""
    return len(base64.urlsafe_b64encode(b"\0" * (_FORMAT.size + _CHECK_SIZE)).rstrip(b"="))


def _unpack(token: str) -> tuple[int, int, bytes, bytes, int, int]:
    malformed = InvalidArgument(_FIELD, "is not a page token issued by this service")
    raw = _decoded(token, malformed)
    record, check = raw[: _FORMAT.size], raw[_FORMAT.size :]
    if len(raw) != _FORMAT.size + _CHECK_SIZE or check != _check(record):
        raise malformed
    unpacked: tuple[int, int, bytes, bytes, int, int] = _FORMAT.unpack(record)
    return unpacked


def _decoded(token: str, malformed: InvalidArgument) -> bytes:
    """The bytes of a token, which must be spelled exactly as the service
    spells them: base64 decoders also take padding, the other alphabet and
    set unused bits, and a token is one string, not any that decodes alike."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise malformed from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii"):
        raise malformed
    return raw


def _check(record: bytes) -> bytes:
    return hashlib.blake2b(record, digest_size=_CHECK_SIZE, key=_CHECK_KEY).digest()
