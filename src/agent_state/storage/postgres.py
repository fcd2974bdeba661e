"""The PostgreSQL backend: psycopg 3 (async) over a connection pool.

Every transaction runs in pipeline mode on an autocommit connection with an
explicit BEGIN: statements whose results nobody waits for (BEGIN, the
writes, COMMIT) travel together with the next statement that is waited
for, so a typical write costs two round trips instead of one per statement.
Bulk operations pass columns as arrays, so each one is a single statement
however many rows it touches.

Joins that look rows up one by one are written as LATERAL subqueries with
OFFSET 0. The planner cannot flatten those, so each lookup is a probe of
the full primary key, whatever the statistics say. Without that, a
conversation younger than its table's last ANALYZE looks like one row to
the planner, which then scans the whole conversation once per row.

Driver errors meaning "the database is not there right now" become
StorageUnavailable at every public method; any other database error is a
bug and propagates unchanged.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, AsyncPipeline, pq
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Loader
from psycopg.errors import PipelineAborted
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import ConversationNotFound, SnapshotNotFound, StorageUnavailable
from ..model import (
    ConversationState,
    Item,
    NewMessage,
    Page,
    RememberedCall,
    Renumbering,
    Snapshot,
)
from . import migrations
from .base import PoolStats, ReadTransaction, Store, WriteTransaction

__all__ = ["PostgresStore"]

_Connection = AsyncConnection[TupleRow]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Binary timestamptz is int64 microseconds since 2000-01-01 UTC.
_POSTGRES_EPOCH_US = 946_684_800_000_000
_INT8 = struct.Struct(">q")

# pg_advisory_lock key serialising migrations ("agentSta" in ASCII).
_MIGRATION_LOCK = 0x6167_656E_7453_7461

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)

_TRANSACTION_OPEN = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


class _MicrosecondsLoader(Loader):
    """Loads binary timestamptz as int microseconds since the Unix epoch:
    exact, and cheaper than building a datetime only to take it apart."""

    format = pq.Format.BINARY

    def load(self, data: Buffer) -> int:
        return int(_INT8.unpack(data)[0]) + _POSTGRES_EPOCH_US


_ADAPTERS = AdaptersMap(psycopg.adapters)
_ADAPTERS.register_loader("timestamptz", _MicrosecondsLoader)


def _timestamp(microseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=microseconds)


def _pack(positions: Sequence[int]) -> bytes:
    return struct.pack(f">{len(positions)}q", *positions)


def _unpack(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(data) // 8}q", data)


def _unpack_ids(data: bytes) -> list[UUID]:
    """Packed 16-byte ids, in order."""
    return [UUID(bytes=data[offset : offset + 16]) for offset in range(0, len(data), 16)]


_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S")


def _translated(
    method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]]:
    """Turns driver errors meaning "unavailable" into StorageUnavailable."""

    @functools.wraps(method)
    async def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(self, *args, **kwargs)
        except PipelineAborted:
            # Follows an earlier error, which is the one that matters.
            raise
        except _UNAVAILABLE as exc:
            raise StorageUnavailable() from exc

    return wrapper


# --- SQL -------------------------------------------------------------------

_BEGIN_WRITE = b"BEGIN"
_BEGIN_READ = b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
_COMMIT = b"COMMIT"
_ROLLBACK = b"ROLLBACK"

_LOCK_CONVERSATION = """
SELECT message_count, updated_at, tail_position, layout_version, version
FROM conversations WHERE id = %s FOR UPDATE
"""

_CREATE_CONVERSATION = """
INSERT INTO conversations
    (id, message_count, tail_position, layout_version, version, created_at, updated_at)
VALUES (%s, 0, 0, 0, 0, now(), to_timestamp(0))
ON CONFLICT (id) DO NOTHING
"""

_CONVERSATION = """
SELECT message_count, updated_at, tail_position, layout_version, version
FROM conversations WHERE id = %s
"""

_LOOKUP = """
SELECT m.id, i.position
FROM unnest(%(ids)s::uuid[]) AS wanted(id)
CROSS JOIN LATERAL (
    SELECT id FROM messages
    WHERE conversation_id = %(conversation)s AND id = wanted.id
    OFFSET 0
) AS m
LEFT JOIN LATERAL (
    SELECT position FROM conversation_items
    WHERE conversation_id = %(conversation)s AND message_id = m.id
    OFFSET 0
) AS i ON true
"""

_ITEMS_BETWEEN = """
SELECT position, message_id FROM conversation_items
WHERE conversation_id = %s AND position >= %s AND position <= %s
ORDER BY position
"""

_ITEMS_FROM = """
SELECT position, message_id FROM conversation_items
WHERE conversation_id = %s AND position >= %s
ORDER BY position
"""

_ITEMS_BEFORE = """
SELECT position, message_id FROM conversation_items
WHERE conversation_id = %s AND position < %s
ORDER BY position DESC LIMIT %s
"""

_ITEMS_AFTER = """
SELECT position, message_id FROM conversation_items
WHERE conversation_id = %s AND position > %s
ORDER BY position LIMIT %s
"""

_INSERT_MESSAGES = """
INSERT INTO messages
    (conversation_id, id, role, kind, body, body_sha256, created_at, wire_head, wire_tail)
SELECT %(conversation)s, * FROM unnest(
    %(ids)s::uuid[], %(roles)s::smallint[], %(kinds)s::bytea[], %(bodies)s::bytea[],
    %(digests)s::bytea[], %(times)s::timestamptz[], %(heads)s::bytea[], %(tails)s::bytea[])
"""

_PLACE = """
INSERT INTO conversation_items (conversation_id, position, message_id)
SELECT %(conversation)s, * FROM unnest(%(positions)s::bigint[], %(placed)s::uuid[])
"""

_SAVE = """
UPDATE conversations
SET message_count = %(count)s, updated_at = %(updated_at)s, tail_position = %(tail)s,
    layout_version = %(layout)s, version = %(version)s
WHERE id = %(conversation)s
"""

# An append's three writes in one statement: the rows inserted by the
# first two are checked against their foreign keys at the end of it.
_APPEND = f"WITH inserted AS ({_INSERT_MESSAGES}), placed AS ({_PLACE}) {_SAVE}"

# A whole common append in one statement, one implicit transaction: the
# upsert creates or locks the conversation row and moves its counters only
# when the condition holds; its RETURNING row gates and positions the
# inserts (no row: nothing is written).
_APPEND_AT_TAIL = f"""
WITH conversation AS (
    INSERT INTO conversations AS c
        (id, message_count, tail_position, layout_version, version, created_at, updated_at)
    VALUES (%(conversation)s, %(count)s, %(count)s * %(gap)s, 0, 1, now(), %(updated_at)s)
    ON CONFLICT (id) DO UPDATE
    SET message_count = c.message_count + %(count)s,
        tail_position = c.tail_position + %(count)s * %(gap)s,
        version = c.version + 1,
        updated_at = %(updated_at)s
    WHERE c.updated_at < %(updated_at)s
        AND c.tail_position <= %(max_position)s - %(count)s * %(gap)s
    RETURNING message_count, updated_at, tail_position, layout_version, version
), inserted AS (
    {_INSERT_MESSAGES} WHERE EXISTS (SELECT FROM conversation)
), placed AS (
    INSERT INTO conversation_items (conversation_id, position, message_id)
    SELECT %(conversation)s, c.tail_position - %(gap)s * (%(count)s - entry.n), entry.id
    FROM conversation AS c, unnest(%(ids)s::uuid[]) WITH ORDINALITY AS entry(id, n)
)
SELECT * FROM conversation
"""

_UNPLACE = """
DELETE FROM conversation_items WHERE conversation_id = %s AND message_id = ANY(%s::uuid[])
"""

# The ordering's rows go with their messages through ON DELETE CASCADE.
_DELETE = """
DELETE FROM messages WHERE conversation_id = %s AND id = ANY(%s::uuid[])
"""

# The primary key is checked row by row, so moving a window in place could
# collide with itself: park the rows at their negated new positions first
# (positions are always positive), then flip them back.
_RENUMBER_PARK = """
UPDATE conversation_items AS i SET position = -move.new_position
FROM unnest(%s::bigint[], %s::bigint[]) AS move(old_position, new_position)
WHERE i.conversation_id = %s AND i.position = move.old_position
"""

_RENUMBER_SETTLE = """
UPDATE conversation_items SET position = -position
WHERE conversation_id = %s AND position < 0
"""

_RECORD_RENUMBERING = """
INSERT INTO conversation_renumberings
    (conversation_id, layout_version, lower_bound, upper_bound, old_positions, new_positions)
VALUES (%s, %s, %s, %s, %s, %s)
"""

_RENUMBERINGS_SINCE = """
SELECT layout_version, lower_bound, upper_bound, old_positions, new_positions
FROM conversation_renumberings
WHERE conversation_id = %s AND layout_version > %s
ORDER BY layout_version
"""

_RECALL = """
SELECT fingerprint, response, created_at FROM idempotency_keys
WHERE conversation_id = %s AND key = %s
"""

_REMEMBER = """
INSERT INTO idempotency_keys (conversation_id, key, fingerprint, response, created_at)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (conversation_id, key) DO UPDATE
SET fingerprint = excluded.fingerprint, response = excluded.response,
    created_at = excluded.created_at
"""

_FORGET_CALLS = """
DELETE FROM idempotency_keys
WHERE (conversation_id, key) IN (
    SELECT conversation_id, key FROM idempotency_keys WHERE created_at < %s LIMIT %s
)
"""

_INSERT_SNAPSHOT = """
INSERT INTO snapshots (conversation_id, id, created_at, item_count, message_ids)
VALUES (%s, %s, %s, %s, %s)
"""

# Long id lists travel as one bytea of 16-byte ids and are unpacked here:
# adapting a uuid[] parameter costs psycopg more than the query itself.
_PACKED_IDS = """(
    SELECT encode(substring(%(packed)s FROM n * 16 - 15 FOR 16), 'hex')::uuid AS id
    FROM generate_series(1, length(%(packed)s) / 16) AS n
)"""

# Freezes the messages no snapshot has frozen yet, and keeps each of their
# bodies once per conversation.
_FREEZE_MESSAGES = f"""
WITH frozen AS (
    INSERT INTO snapshot_messages (conversation_id, message_id, role, kind, body_sha256,
        created_at, wire_head, wire_tail)
    SELECT %(conversation)s, m.id, m.role, m.kind, m.body_sha256, m.created_at,
        m.wire_head, m.wire_tail
    FROM {_PACKED_IDS} AS wanted
    CROSS JOIN LATERAL (
        SELECT id, role, kind, body_sha256, created_at, wire_head, wire_tail FROM messages
        WHERE conversation_id = %(conversation)s AND id = wanted.id
        OFFSET 0
    ) AS m
    -- Most messages were frozen by an earlier snapshot (of the same
    -- context, one turn shorter): skip them. OFFSET 0 keeps this a probe
    -- of the key per id, whatever the statistics say.
    WHERE NOT EXISTS (
        SELECT 1 FROM snapshot_messages
        WHERE conversation_id = %(conversation)s AND message_id = wanted.id
        OFFSET 0
    )
    ON CONFLICT DO NOTHING
    RETURNING message_id
)
INSERT INTO snapshot_bodies (conversation_id, sha256, body)
SELECT %(conversation)s, m.body_sha256, m.body
FROM frozen
CROSS JOIN LATERAL (
    SELECT body_sha256, body FROM messages
    WHERE conversation_id = %(conversation)s AND id = frozen.message_id
    OFFSET 0
) AS m
ON CONFLICT DO NOTHING
"""

# How many of the named ids (repeats counted) are messages of the conversation.
_COUNT_EXISTING = f"""
SELECT count(*) FROM {_PACKED_IDS} AS wanted
CROSS JOIN LATERAL (
    SELECT 1 FROM messages WHERE conversation_id = %(conversation)s AND id = wanted.id
    OFFSET 0
) AS found
"""

_SNAPSHOT = """
SELECT conversation_id, created_at, item_count FROM snapshots WHERE id = %s LIMIT 1
"""

_ID_PAGE = """
SELECT position, message_id FROM conversation_items
WHERE conversation_id = %s AND position > %s
ORDER BY position LIMIT %s
"""

# A slice of a snapshot's packed ids: 16 bytes per item, 1-based offsets.
_SNAPSHOT_ID_SLICE = """
SELECT substring(message_ids FROM %s FOR %s) FROM snapshots
WHERE conversation_id = %s AND id = %s
"""


def _budgeted_page(source: str, key: str) -> str:
    """A page query that sends encodings only within the budget.

    `source` yields `key`, wire_head, body and wire_tail, ordered by `key`
    and ending with the LIMIT. `before` is the size of the encodings
    preceding a row on the page. A row carries its encoding when it is the
    first or `before` is under the budget; of the rows past that, only the
    first comes back (without encoding) to tell the caller to stop.
    """
    return f"""
SELECT {key}, CASE WHEN n = 1 OR before < %(budget)s THEN wire_head || body || wire_tail END
FROM (
    SELECT {key}, wire_head, body, wire_tail,
           row_number() OVER w AS n,
           sum(size) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before,
           sum(size) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 2 PRECEDING)
               AS before_previous
    FROM (
        SELECT *, octet_length(wire_head) + octet_length(body) + octet_length(wire_tail) AS size
        FROM ({source}) AS listed
    ) AS candidates
    WINDOW w AS (ORDER BY {key})
) AS page
WHERE n <= 2 OR before_previous < %(budget)s
ORDER BY {key}
"""


def _message_page_query(by_role: bool, by_kind: bool) -> str:
    filters = ""
    if by_role:
        filters += " AND role = ANY(%(roles)s::smallint[])"
    if by_kind:
        filters += " AND kind = ANY(%(kinds)s::bytea[])"
    source = f"""
        SELECT i.position, m.wire_head, m.body, m.wire_tail
        FROM conversation_items i
        CROSS JOIN LATERAL (
            SELECT wire_head, body, wire_tail FROM messages
            WHERE conversation_id = i.conversation_id AND id = i.message_id{filters}
            OFFSET 0
        ) AS m
        WHERE i.conversation_id = %(conversation)s AND i.position > %(after)s
        ORDER BY i.position LIMIT %(limit)s"""
    return _budgeted_page(source, "position")


# Indexed by (filter by role, filter by kind): constant texts, so that
# psycopg's automatic prepared statements are reused.
_MESSAGE_PAGES = {
    (by_role, by_kind): _message_page_query(by_role, by_kind)
    for by_role in (False, True)
    for by_kind in (False, True)
}

_SNAPSHOT_MESSAGE_PAGE = _budgeted_page(
    """
        SELECT %(after)s + n AS idx, sm.wire_head, sb.body, sm.wire_tail
        FROM (
            SELECT substring(message_ids FROM %(start)s FOR %(length)s) AS ids
            FROM snapshots WHERE conversation_id = %(conversation)s AND id = %(snapshot)s
        ) AS slice
        CROSS JOIN generate_series(1, length(slice.ids) / 16) AS n
        CROSS JOIN LATERAL (
            SELECT wire_head, wire_tail, body_sha256 FROM snapshot_messages
            WHERE conversation_id = %(conversation)s
                AND message_id = encode(substring(slice.ids FROM n * 16 - 15 FOR 16), 'hex')::uuid
            OFFSET 0
        ) AS sm
        CROSS JOIN LATERAL (
            SELECT body FROM snapshot_bodies
            WHERE conversation_id = %(conversation)s AND sha256 = sm.body_sha256
            OFFSET 0
        ) AS sb
        ORDER BY n LIMIT %(limit)s""",
    "idx",
)

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def _budgeted_rows(rows: list[tuple[Any, ...]], limit: int) -> Page[tuple[int, bytes]]:
    """Rows of a _budgeted_page query as a page: it ends at the row past
    `limit` or the first row without an encoding, either meaning more exist."""
    page: list[tuple[int, bytes]] = []
    for key, entry in rows:
        if entry is None or len(page) == limit:
            return Page(page, more=True)
        page.append((key, bytes(entry)))
    return Page(page, more=False)


def _message_params(conversation_id: UUID, messages: Sequence[NewMessage]) -> dict[str, Any]:
    return {
        "conversation": conversation_id,
        "ids": [new.message.id for new in messages],
        "roles": [new.message.role for new in messages],
        "kinds": [new.message.kind.encode() for new in messages],
        "bodies": [new.message.body for new in messages],
        "digests": [new.body_sha256 for new in messages],
        "times": [_timestamp(new.message.created_at) for new in messages],
        "heads": [new.wire_head for new in messages],
        "tails": [new.wire_tail for new in messages],
    }


def _limited(rows: list[tuple[Any, ...]], limit: int) -> tuple[list[tuple[Any, ...]], bool]:
    """Rows of a query run with LIMIT limit + 1, and whether more exist."""
    return rows[:limit], len(rows) > limit


def _state(conversation_id: UUID, row: tuple[Any, ...]) -> ConversationState:
    message_count, updated_at, tail_position, layout_version, version = row
    return ConversationState(
        id=conversation_id,
        message_count=message_count,
        updated_at=updated_at,
        tail_position=tail_position,
        layout_version=layout_version,
        version=version,
    )


async def _rows(
    conn: _Connection, query: str, params: Sequence[Any] | dict[str, Any]
) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(query, params, binary=True)
    return await cursor.fetchall()


def _drop(conn: _Connection) -> None:
    """Close a connection whose call was cancelled (its client gave up).

    The cancellation may have cut the conversation with the server short:
    a transaction could stay open, holding the conversation's lock, with
    the server waiting for the rest of it. Closing ends that session at
    once (its transaction rolls back) and the pool replaces the connection.
    psycopg has already asked the server to cancel a running statement.
    """
    conn.pgconn.finish()


async def _refuse_pipeline_mode(conn: _Connection) -> None:
    """Run by the pool on every returned connection; raising makes the pool
    close it. A connection still in pipeline mode would run the next call's
    plain statements without their Sync: answered, never committed, and
    holding their locks."""
    if conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        raise psycopg.ProgrammingError("connection returned in pipeline mode")


async def _abandon(conn: _Connection, pipeline: AsyncPipeline) -> None:
    """Roll back after a failure, as far as the connection still allows.

    Errors here are swallowed: the one that got us here is already on its
    way up, and the pool discards connections left in a bad state.
    """
    with suppress(psycopg.Error):
        # Collects pending results, ending any "pipeline aborted" state.
        await pipeline.sync()
    if conn.info.transaction_status in _TRANSACTION_OPEN:
        with suppress(psycopg.Error):
            # Sent when the pipeline is left.
            await conn.execute(_ROLLBACK, prepare=False)


class _PostgresRead(ReadTransaction):
    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    @_translated
    async def conversation(self, conversation_id: UUID) -> ConversationState:
        cursor = await self._conn.execute(_CONVERSATION, (conversation_id,), binary=True)
        row = await cursor.fetchone()
        if row is None:
            raise ConversationNotFound(
                "conversation_id", f"conversation {conversation_id} does not exist"
            )
        return _state(conversation_id, row)

    @_translated
    async def renumberings_since(
        self, conversation_id: UUID, layout_version: int
    ) -> list[Renumbering]:
        rows = await _rows(self._conn, _RENUMBERINGS_SINCE, (conversation_id, layout_version))
        return [
            Renumbering(version, lower, upper, _unpack(old), _unpack(new))
            for version, lower, upper, old, new in rows
        ]

    @_translated
    async def message_page(
        self,
        conversation_id: UUID,
        after: int,
        limit: int,
        roles: frozenset[int],
        kinds: frozenset[str],
        body_budget: int,
    ) -> Page[tuple[int, bytes]]:
        params: dict[str, Any] = {
            "conversation": conversation_id,
            "after": after,
            "limit": limit + 1,
            "budget": body_budget,
        }
        if roles:
            params["roles"] = list(roles)
        if kinds:
            params["kinds"] = [kind.encode() for kind in kinds]
        query = _MESSAGE_PAGES[bool(roles), bool(kinds)]
        return _budgeted_rows(await _rows(self._conn, query, params), limit)

    @_translated
    async def id_page(self, conversation_id: UUID, after: int, limit: int) -> Page[Item]:
        rows, more = _limited(
            await _rows(self._conn, _ID_PAGE, (conversation_id, after, limit + 1)), limit
        )
        return Page([Item(position, message_id) for position, message_id in rows], more)

    @_translated
    async def snapshot(self, snapshot_id: UUID) -> Snapshot:
        cursor = await self._conn.execute(_SNAPSHOT, (snapshot_id,), binary=True)
        row = await cursor.fetchone()
        if row is None:
            raise SnapshotNotFound("snapshot_id", f"snapshot {snapshot_id} does not exist")
        conversation_id, created_at, item_count = row
        return Snapshot(snapshot_id, conversation_id, created_at, item_count)

    @_translated
    async def snapshot_message_page(
        self, snapshot: Snapshot, after: int, limit: int, body_budget: int
    ) -> Page[tuple[int, bytes]]:
        params = {
            "conversation": snapshot.conversation_id,
            "snapshot": snapshot.id,
            "after": after,
            "start": (after + 1) * 16 + 1,
            "length": (limit + 1) * 16,
            "limit": limit + 1,
            "budget": body_budget,
        }
        return _budgeted_rows(await _rows(self._conn, _SNAPSHOT_MESSAGE_PAGE, params), limit)

    @_translated
    async def snapshot_id_page(
        self, snapshot: Snapshot, after: int, limit: int
    ) -> Page[tuple[int, UUID]]:
        params = ((after + 1) * 16 + 1, (limit + 1) * 16, snapshot.conversation_id, snapshot.id)
        rows = await _rows(self._conn, _SNAPSHOT_ID_SLICE, params)
        ids = _unpack_ids(bytes(rows[0][0])) if rows else []
        return Page(
            [(after + 1 + index, message_id) for index, message_id in enumerate(ids[:limit])],
            more=len(ids) > limit,
        )


class _PostgresWrite(WriteTransaction):
    __slots__ = ("_conn", "_id", "_state")

    def __init__(self, conn: _Connection, state: ConversationState) -> None:
        self._conn = conn
        self._id = state.id
        self._state = state

    @property
    def state(self) -> ConversationState:
        return self._state

    async def _run(self, query: str, params: Sequence[Any] | dict[str, Any]) -> None:
        # No result to wait for: the statement is sent with the next one
        # that is waited for, or with the COMMIT.
        await self._conn.execute(query, params, binary=True)

    async def _items(self, query: str, params: Sequence[Any]) -> list[Item]:
        return [
            Item(position, message_id)
            for position, message_id in await _rows(self._conn, query, params)
        ]

    @_translated
    async def lookup(self, message_ids: Sequence[UUID]) -> dict[UUID, int | None]:
        if not message_ids:
            return {}
        params = {"conversation": self._id, "ids": list(message_ids)}
        rows = await _rows(self._conn, _LOOKUP, params)
        return {message_id: position for message_id, position in rows}

    @_translated
    async def items_between(self, lower: int, upper: int | None) -> list[Item]:
        if upper is None:
            return await self._items(_ITEMS_FROM, (self._id, lower))
        return await self._items(_ITEMS_BETWEEN, (self._id, lower, upper))

    @_translated
    async def items_before(self, position: int, limit: int) -> list[Item]:
        return await self._items(_ITEMS_BEFORE, (self._id, position, limit))

    @_translated
    async def items_after(self, position: int, limit: int) -> list[Item]:
        return await self._items(_ITEMS_AFTER, (self._id, position, limit))

    @_translated
    async def insert_messages(self, messages: Sequence[NewMessage]) -> None:
        if messages:
            await self._run(_INSERT_MESSAGES, self._message_params(messages))

    @_translated
    async def append(
        self, messages: Sequence[NewMessage], items: Sequence[Item], state: ConversationState
    ) -> None:
        params = self._message_params(messages) | self._place_params(items)
        await self._run(_APPEND, params | self._save_params(state))

    @_translated
    async def place(self, items: Sequence[Item]) -> None:
        if items:
            await self._run(_PLACE, self._place_params(items))

    def _message_params(self, messages: Sequence[NewMessage]) -> dict[str, Any]:
        return _message_params(self._id, messages)

    def _place_params(self, items: Sequence[Item]) -> dict[str, Any]:
        return {
            "conversation": self._id,
            "positions": [item.position for item in items],
            "placed": [item.message_id for item in items],
        }

    def _save_params(self, state: ConversationState) -> dict[str, Any]:
        return {
            "conversation": self._id,
            "count": state.message_count,
            "updated_at": _timestamp(state.updated_at),
            "tail": state.tail_position,
            "layout": state.layout_version,
            "version": state.version,
        }

    @_translated
    async def unplace(self, message_ids: Sequence[UUID]) -> None:
        if message_ids:
            await self._run(_UNPLACE, (self._id, list(message_ids)))

    @_translated
    async def delete(self, message_ids: Sequence[UUID]) -> None:
        if message_ids:
            await self._run(_DELETE, (self._id, list(message_ids)))

    @_translated
    async def renumber(self, renumbering: Renumbering) -> None:
        if renumbering.old_positions:
            await self._run(
                _RENUMBER_PARK,
                (list(renumbering.old_positions), list(renumbering.new_positions), self._id),
            )
            await self._run(_RENUMBER_SETTLE, (self._id,))
        await self._run(
            _RECORD_RENUMBERING,
            (
                self._id,
                renumbering.layout_version,
                renumbering.lower,
                renumbering.upper,
                _pack(renumbering.old_positions),
                _pack(renumbering.new_positions),
            ),
        )

    @_translated
    async def save(self, state: ConversationState) -> None:
        await self._run(_SAVE, self._save_params(state))

    @_translated
    async def recall(self, key: str) -> RememberedCall | None:
        rows = await _rows(self._conn, _RECALL, (self._id, key))
        return RememberedCall(*rows[0]) if rows else None

    @_translated
    async def remember(self, key: str, call: RememberedCall) -> None:
        await self._run(
            _REMEMBER,
            (self._id, key, call.fingerprint, call.response, _timestamp(call.created_at)),
        )

    @_translated
    async def create_snapshot(self, snapshot: Snapshot, message_ids: Sequence[UUID]) -> int:
        if snapshot.conversation_id != self._id:
            raise ValueError("a snapshot belongs to the conversation of its transaction")
        ids = list(message_ids)
        packed = b"".join(message_id.bytes for message_id in ids)
        await self._run(
            _INSERT_SNAPSHOT,
            (
                self._id,
                snapshot.id,
                _timestamp(snapshot.created_at),
                len(ids),
                packed,
            ),
        )
        if not ids:
            return 0
        await self._run(_FREEZE_MESSAGES, {"conversation": self._id, "packed": packed})
        rows = await _rows(
            self._conn, _COUNT_EXISTING, {"conversation": self._id, "packed": packed}
        )
        existing: int = rows[0][0]
        return existing


class PostgresStore(Store):
    """Conversations in a PostgreSQL database at `url`.

    `statement_timeout_ms` bounds every statement (lock waits included);
    `connect_timeout_s` bounds opening the pool and each connection attempt.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout_ms: int | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._statement_timeout_ms = statement_timeout_ms
        self._connect_timeout_s = connect_timeout_s
        self._pool: AsyncConnectionPool[_Connection] | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = AsyncConnectionPool(
            self._url,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            kwargs={
                "autocommit": True,
                "context": _ADAPTERS,
                # libpq counts whole seconds.
                "connect_timeout": max(1, math.ceil(self._connect_timeout_s)),
            },
            configure=self._configure if self._statement_timeout_ms is not None else None,
            reset=_refuse_pipeline_mode,
            name="agent-state",
            # Waiting for a connection while the database is down ends as
            # UNAVAILABLE after this long, not the pool's default 30 s.
            timeout=self._connect_timeout_s,
            # Background reconnection backs off exponentially; giving it up
            # this soon lets the next call try at once, so the service is
            # back seconds after the database, however long the outage.
            reconnect_timeout=self._connect_timeout_s,
        )
        try:
            await pool.open(wait=True, timeout=self._connect_timeout_s)
        except _UNAVAILABLE as exc:
            await pool.close()
            raise StorageUnavailable() from exc
        self._pool = pool

    def pool_stats(self) -> PoolStats:
        if self._pool is None:
            return PoolStats(0, 0, 0, self._max_size)
        stats = self._pool.get_stats()
        return PoolStats(
            open=stats.get("pool_size", 0),
            idle=stats.get("pool_available", 0),
            waiting=stats.get("requests_waiting", 0),
            max=self._max_size,
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _configure(self, conn: _Connection) -> None:
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            (str(self._statement_timeout_ms),),
        )

    def _opened(self) -> AsyncConnectionPool[_Connection]:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        """A pooled connection, closed instead of returned when its call is
        cancelled: wherever the cancellation landed (mid-statement, or while
        entering or leaving pipeline mode) the connection's state is
        unknown, and the next call on it could run without being committed."""
        async with self._opened().connection() as conn:
            try:
                yield conn
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    _drop(conn)
                raise

    @_translated
    async def migrate(self) -> list[int]:
        async with self._opened().connection() as conn:
            # Session-level lock: servers starting together apply each
            # migration once, one after the other.
            if self._statement_timeout_ms is not None:
                # Waiting for the lock or a long migration is no timeout.
                await conn.execute("SET statement_timeout = 0")
            await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                await conn.execute(_CREATE_MIGRATIONS_TABLE)
                cursor = await conn.execute("SELECT version, checksum FROM schema_migrations")
                applied = {version: checksum for version, checksum in await cursor.fetchall()}
                done: list[int] = []
                for migration in migrations.pending(migrations.load("postgres"), applied):
                    async with conn.transaction():
                        # No parameters: sent as a simple query, so the file
                        # may hold many statements.
                        await conn.execute(migration.sql.encode(), prepare=False)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                    done.append(migration.version)
                return done
            finally:
                try:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
                    if self._statement_timeout_ms is not None:
                        await self._configure(conn)
                except psycopg.Error:
                    # A pooled session must not keep the lock: drop it.
                    await conn.close()

    @_translated
    async def pending_migrations(self) -> list[int]:
        async with self._opened().connection() as conn:
            cursor = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            row = await cursor.fetchone()
            applied: dict[int, str] = {}
            if row is not None and row[0]:
                cursor = await conn.execute("SELECT version, checksum FROM schema_migrations")
                applied = {version: checksum for version, checksum in await cursor.fetchall()}
        known = migrations.load("postgres")
        return [migration.version for migration in migrations.pending(known, applied)]

    async def append_at_tail(
        self,
        conversation_id: UUID,
        messages: Sequence[NewMessage],
        *,
        updated_at: int,
        gap: int,
        max_position: int,
    ) -> ConversationState | None:
        params = _message_params(conversation_id, messages) | {
            "count": len(messages),
            "updated_at": _timestamp(updated_at),
            "gap": gap,
            "max_position": max_position,
        }
        try:
            # An autocommit connection outside a pipeline: one round trip.
            async with self._connection() as conn:
                cursor = await conn.execute(_APPEND_AT_TAIL, params, binary=True)
                row = await cursor.fetchone()
        except _UNAVAILABLE as exc:
            raise StorageUnavailable() from exc
        return None if row is None else _state(conversation_id, row)

    async def forget_calls(self, created_before: int, limit: int) -> int:
        try:
            async with self._connection() as conn:
                cursor = await conn.execute(_FORGET_CALLS, (_timestamp(created_before), limit))
                return cursor.rowcount
        except _UNAVAILABLE as exc:
            raise StorageUnavailable() from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTransaction]:
        async with self._transaction(_BEGIN_READ) as conn:
            yield _PostgresRead(conn)

    @asynccontextmanager
    async def write(
        self, conversation_id: UUID, *, create: bool = False
    ) -> AsyncIterator[WriteTransaction]:
        async with self._transaction(_BEGIN_WRITE) as conn:
            state = await self._lock(conn, conversation_id, create)
            yield _PostgresWrite(conn, state)

    @asynccontextmanager
    async def _transaction(self, begin: bytes) -> AsyncIterator[_Connection]:
        """A pooled connection in pipeline mode inside BEGIN ... COMMIT."""
        try:
            async with self._connection() as conn, conn.pipeline() as pipeline:
                try:
                    await conn.execute(begin, prepare=False)
                    yield conn
                except Exception:
                    await _abandon(conn, pipeline)
                    raise
                except BaseException:
                    # Dropped before leaving the pipeline, which would wait
                    # for the queued statements.
                    _drop(conn)
                    raise
                # Sent together with the writes still queued in the pipeline;
                # leaving the pipeline waits for it.
                await conn.execute(_COMMIT, prepare=False)
        except PipelineAborted:
            raise
        except _UNAVAILABLE as exc:
            raise StorageUnavailable() from exc

    @staticmethod
    async def _lock(conn: _Connection, conversation_id: UUID, create: bool) -> ConversationState:
        cursor = await conn.execute(_LOCK_CONVERSATION, (conversation_id,), binary=True)
        row = await cursor.fetchone()
        if row is None and create:
            # A concurrent creator makes the INSERT wait for its outcome;
            # either way the row exists for the second SELECT to lock.
            await conn.execute(_CREATE_CONVERSATION, (conversation_id,), binary=True)
            cursor = await conn.execute(_LOCK_CONVERSATION, (conversation_id,), binary=True)
            row = await cursor.fetchone()
        if row is None:
            raise ConversationNotFound(
                "conversation_id", f"conversation {conversation_id} does not exist"
            )
        return _state(conversation_id, row)
