"""Dialect-free helpers of the storage operations (transactions.py), free
of I/O.

This module marks time parameters (Micros), packs and unpacks the binary
columns, turns rows into model values, builds the not-found errors,
assembles pages under their byte budget, plans the two steps of a
renumbering and checks that a snapshot belongs to the conversation of its
transaction.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from ..errors import SnapshotNotFound
from ..model import (
    ConversationDetails,
    ConversationRecord,
    ConversationState,
    Item,
    NewMessage,
    Page,
    RememberedCall,
    Renumbering,
    Retention,
    Snapshot,
)

T = TypeVar("T")

ID_SIZE = 16
"""Bytes of one id in a packed list of ids."""


# --- Parameters ----------------------------------------------------------------


class Micros:
    """A time parameter: microseconds since the Unix epoch (UTC), marked so
    that each dialect binds it as its own time type. PostgreSQL dumps it as
    timestamptz (postgres.py registers the dumper: no datetime is built);
    SQLite's adapter binds the integer. Times come back as ints in both.

    Not an int subclass: psycopg's C array dumper would take a list of those
    for bigint[]."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Micros({self.value})"


EARLIEST = -62_135_596_800 * 1_000_000
"""0001-01-01T00:00:00Z: the earliest time parameter either dialect takes
for a cutoff (PostgreSQL's timestamptz reaches further back, not far)."""


# --- Binary columns ----------------------------------------------------------


def pack_positions(positions: Sequence[int]) -> bytes:
    """Positions as big-endian int64s, the format of the renumbering columns."""
    return struct.pack(f">{len(positions)}q", *positions)


def unpack_positions(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(data) // 8}q", data)


def pack_ids(ids: Iterable[UUID]) -> bytes:
    """Ids as one string of 16-byte ids, in order: the format of a snapshot's
    message_ids, and how long id lists travel as one parameter."""
    return b"".join(message_id.bytes for message_id in ids)


def unpack_ids(data: bytes) -> list[UUID]:
    return [UUID(bytes=data[offset : offset + ID_SIZE]) for offset in range(0, len(data), ID_SIZE)]


DIGEST_SIZE = 32
"""A checkpoint blob's SHA-256; values and writes name their items as
these, packed one after another."""


def unpack_digests(data: bytes) -> tuple[bytes, ...]:
    return tuple(data[offset : offset + DIGEST_SIZE] for offset in range(0, len(data), DIGEST_SIZE))


def id_slice(after: int, count: int) -> dict[str, int]:
    """Parameters `start` and `length` (1-based, in bytes) of the slice of a
    packed id list that holds up to `count` ids after index `after`."""
    return {"start": (after + 1) * ID_SIZE + 1, "length": count * ID_SIZE}


# --- Rows to values ------------------------------------------------------------


def remembered(row: Sequence[Any] | None) -> RememberedCall | None:
    """What an idempotency key keeps, from recall's row (None: no row)."""
    if row is None:
        return None
    fingerprint, response, created_at, message_count = row
    return RememberedCall(bytes(fingerprint), bytes(response), created_at, message_count)


def conversation_state(conversation_id: UUID, row: Sequence[Any]) -> ConversationState:
    """A conversation from the columns message_count, updated_at,
    tail_position, layout_version, version (in that order)."""
    message_count, updated_at, tail_position, layout_version, version = row
    return ConversationState(
        id=conversation_id,
        message_count=message_count,
        updated_at=updated_at,
        tail_position=tail_position,
        layout_version=layout_version,
        version=version,
    )


def conversation_record(
    conversation_id: UUID, row: Sequence[Any], labels: dict[str, str] | None
) -> ConversationRecord:
    """A conversation as the companion API shows it, from the columns of
    conversation_state, then created_at, title, has_retention,
    retention_max_idle, retention_max_messages, and its labels (None: none)."""
    created_at, title, has_retention, max_idle, max_messages = row[5:]
    return ConversationRecord(
        state=conversation_state(conversation_id, row[:5]),
        created_at=created_at,
        details=ConversationDetails(
            title=bytes(title).decode(),
            labels=labels or {},
            retention=Retention(max_idle, max_messages) if has_retention else None,
        ),
    )


def renumbering(row: Sequence[Any]) -> Renumbering:
    """A renumbering from the columns layout_version, lower_bound,
    upper_bound, old_positions, new_positions."""
    layout_version, lower, upper, old, new = row
    return Renumbering(layout_version, lower, upper, unpack_positions(old), unpack_positions(new))


def snapshot_not_found(snapshot_id: UUID) -> SnapshotNotFound:
    return SnapshotNotFound("snapshot_id", f"snapshot {snapshot_id} does not exist")


# --- Pages -------------------------------------------------------------------------


def limited_page(rows: Sequence[T], limit: int) -> Page[T]:
    """The rows of a query run with LIMIT limit + 1, as a page."""
    return Page(list(rows[:limit]), more=len(rows) > limit)


def budgeted_page(
    rows: Iterable[Sequence[Any]], limit: int, budget: int
) -> Page[tuple[int, bytes]]:
    """The page of (key, encoding) rows under a byte budget, from rows
    whose first two columns are those.

    Rows are taken in order while fewer than `limit` are on the page and
    the encodings taken add up to less than `budget`; the first row is
    always taken. Any row past that means more exist: it is not read
    further, so `rows` may be a lazy cursor (SQLite), and the query should
    ask for `limit` + 1 rows. A row without an encoding (None) is one a
    query left out because the budget was spent before it (PostgreSQL does
    the same sum in SQL, so that large bodies past the budget never leave
    the server): it also means more exist.
    """
    page: list[tuple[int, bytes]] = []
    spent = 0
    for row in rows:
        key, entry = row[0], row[1]
        if entry is None or len(page) == limit or (page and spent >= budget):
            return Page(page, more=True)
        page.append((key, entry))
        spent += len(entry)
    return Page(page, more=False)


# --- Writes ------------------------------------------------------------------------


def appended_items(tail_position: int, gap: int, messages: Sequence[NewMessage]) -> list[Item]:
    """Where append_at_tail puts `messages` once it has moved the tail to
    `tail_position`: one gap apart, the last at the tail (the same as
    positions.append_positions from the old tail)."""
    count = len(messages)
    return [
        Item(tail_position - gap * (count - 1 - index), new.message.id)
        for index, new in enumerate(messages)
    ]


def parked_moves(change: Renumbering) -> list[tuple[int, int]]:
    """The first of a renumbering's two steps: (old position, parked
    position) for each moved entry.

    The primary key (conversation_id, position) is checked row by row, so
    moving a window in place could collide with itself: each row is first
    parked at its negated new position (positions are always positive, so
    parked rows collide with nothing), then every negative position is
    flipped back (settle_renumbered).
    """
    return [
        (old, -new) for old, new in zip(change.old_positions, change.new_positions, strict=True)
    ]


def renumbering_record(change: Renumbering) -> dict[str, Any]:
    """Parameters of record_renumbering, but the conversation."""
    return {
        "layout": change.layout_version,
        "lower": change.lower,
        "upper": change.upper,
        "old_positions": pack_positions(change.old_positions),
        "new_positions": pack_positions(change.new_positions),
    }


def check_snapshot_owner(snapshot: Snapshot, conversation_id: UUID) -> None:
    """A snapshot is created in a transaction of its own conversation: the
    messages it freezes are looked up there."""
    if snapshot.conversation_id != conversation_id:
        raise ValueError("a snapshot belongs to the conversation of its transaction")
