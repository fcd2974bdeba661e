"""The embedded backend: one SQLite file in WAL mode.

SQLite has one writer at a time, so write transactions queue on an asyncio
lock over a single writer connection (which also makes them serialized per
conversation, as the interface asks). Reads run on a few other connections
and see a consistent snapshot while a write is under way. Every connection
lives on its own thread; a call hops there once per operation.
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from uuid import UUID

from ..clock import now_micros
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

T = TypeVar("T")

# Kinds of a list filter passed as parameters; more go through a table.
_MAX_INLINE_KINDS = 500

_CONVERSATION_COLUMNS = "id, message_count, updated_at, tail_position, layout_version, version"


class _Connection:
    """A sqlite3 connection confined to one thread."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-state-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.run(lambda _: None)

    async def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._call, operation)

    def _call(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return operation(self._conn)
        except sqlite3.OperationalError as exc:
            # Locked, busy, disk I/O or unopenable file: the caller may retry.
            raise StorageUnavailable() from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit the client saw survives power loss, not only a crash.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def close(self) -> None:
        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self.run(close)
            self._conn = None
        self._thread.shutdown(wait=True)


def _state(row: Any) -> ConversationState:
    return ConversationState(
        id=UUID(bytes=row[0]),
        message_count=row[1],
        updated_at=row[2],
        tail_position=row[3],
        layout_version=row[4],
        version=row[5],
    )


def _pack(values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}q", *values)


def _unpack(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(blob) // 8}q", blob)


def _budgeted(
    cursor: Iterable[tuple[int, bytes, bytes, bytes]], limit: int, budget: int
) -> Page[tuple[int, bytes]]:
    """Pull (key, head, body, tail) rows one by one (sqlite3 cursors are
    lazy) until `limit` rows or the budget is reached; a row past either
    means there is more."""
    rows: list[tuple[int, bytes]] = []
    spent = 0
    for key, head, body, tail in cursor:
        if len(rows) == limit or (rows and spent >= budget):
            return Page(rows, more=True)
        entry = b"".join((head, body, tail))
        spent += len(entry)
        rows.append((key, entry))
    return Page(rows, more=False)


class _SqliteRead(ReadTransaction):
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def conversation(self, conversation_id: UUID) -> ConversationState:
        def query(db: sqlite3.Connection) -> Any:
            return db.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?",
                (conversation_id.bytes,),
            ).fetchone()

        row = await self._conn.run(query)
        if row is None:
            raise ConversationNotFound(
                "conversation_id", f"conversation {conversation_id} does not exist"
            )
        return _state(row)

    async def renumberings_since(
        self, conversation_id: UUID, layout_version: int
    ) -> list[Renumbering]:
        def query(db: sqlite3.Connection) -> list[Any]:
            return db.execute(
                "SELECT layout_version, lower_bound, upper_bound, old_positions, new_positions"
                " FROM conversation_renumberings"
                " WHERE conversation_id = ? AND layout_version > ? ORDER BY layout_version",
                (conversation_id.bytes, layout_version),
            ).fetchall()

        return [
            Renumbering(version, lower, upper, _unpack(old), _unpack(new))
            for version, lower, upper, old, new in await self._conn.run(query)
        ]

    async def message_page(
        self,
        conversation_id: UUID,
        after: int,
        limit: int,
        roles: frozenset[int],
        kinds: frozenset[str],
        body_budget: int,
    ) -> Page[tuple[int, bytes]]:
        where = ""
        params: list[Any] = [conversation_id.bytes, after]
        if roles:
            where += f" AND m.role IN ({','.join('?' * len(roles))})"
            params.extend(sorted(roles))
        encoded_kinds = sorted(kind.encode("utf-8") for kind in kinds)
        # A long filter goes through a temporary table: SQLite limits the
        # number of parameters of one statement.
        staged = len(encoded_kinds) > _MAX_INLINE_KINDS
        if staged:
            where += " AND m.kind IN (SELECT kind FROM temp.filter_kinds)"
        elif kinds:
            where += f" AND m.kind IN ({','.join('?' * len(kinds))})"
            params.extend(encoded_kinds)
        params.append(limit + 1)

        def query(db: sqlite3.Connection) -> Page[tuple[int, bytes]]:
            if staged:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS filter_kinds (kind BLOB PRIMARY KEY)")
                db.execute("DELETE FROM temp.filter_kinds")
                db.executemany(
                    "INSERT INTO temp.filter_kinds (kind) VALUES (?)",
                    [(kind,) for kind in encoded_kinds],
                )
            cursor = db.execute(
                "SELECT i.position, m.wire_head, m.body, m.wire_tail"
                " FROM conversation_items i JOIN messages m"
                " ON m.conversation_id = i.conversation_id AND m.id = i.message_id"
                f" WHERE i.conversation_id = ? AND i.position > ?{where}"
                " ORDER BY i.position LIMIT ?",
                params,
            )
            return _budgeted(cursor, limit, body_budget)

        return await self._conn.run(query)

    async def id_page(self, conversation_id: UUID, after: int, limit: int) -> Page[Item]:
        def query(db: sqlite3.Connection) -> list[Any]:
            return db.execute(
                "SELECT position, message_id FROM conversation_items"
                " WHERE conversation_id = ? AND position > ? ORDER BY position LIMIT ?",
                (conversation_id.bytes, after, limit + 1),
            ).fetchall()

        rows = await self._conn.run(query)
        items = [Item(position, UUID(bytes=message_id)) for position, message_id in rows]
        return Page(items[:limit], more=len(items) > limit)

    async def snapshot(self, snapshot_id: UUID) -> Snapshot:
        def query(db: sqlite3.Connection) -> Any:
            return db.execute(
                "SELECT conversation_id, created_at, item_count FROM snapshots WHERE id = ?",
                (snapshot_id.bytes,),
            ).fetchone()

        row = await self._conn.run(query)
        if row is None:
            raise SnapshotNotFound("snapshot_id", f"snapshot {snapshot_id} does not exist")
        return Snapshot(snapshot_id, UUID(bytes=row[0]), row[1], row[2])

    async def snapshot_message_page(
        self, snapshot: Snapshot, after: int, limit: int, body_budget: int
    ) -> Page[tuple[int, bytes]]:
        def query(db: sqlite3.Connection) -> Page[tuple[int, bytes]]:
            ids = _snapshot_slice(db, snapshot, after, limit + 1)
            distinct = list(dict.fromkeys(ids))
            marks = ",".join("?" * len(distinct))
            frozen = {
                message_id: (head, body, tail)
                for message_id, head, body, tail in db.execute(
                    "SELECT f.message_id, f.wire_head, b.body, f.wire_tail"
                    " FROM snapshot_messages f JOIN snapshot_bodies b"
                    " ON b.conversation_id = f.conversation_id AND b.sha256 = f.body_sha256"
                    f" WHERE f.conversation_id = ? AND f.message_id IN ({marks})",
                    [snapshot.conversation_id.bytes, *distinct],
                )
            }
            rows = ((after + 1 + index, *frozen[key]) for index, key in enumerate(ids))
            return _budgeted(rows, limit, body_budget)

        return await self._conn.run(query)

    async def snapshot_id_page(
        self, snapshot: Snapshot, after: int, limit: int
    ) -> Page[tuple[int, UUID]]:
        def query(db: sqlite3.Connection) -> list[bytes]:
            return _snapshot_slice(db, snapshot, after, limit + 1)

        ids = await self._conn.run(query)
        return Page(
            [(after + 1 + index, UUID(bytes=key)) for index, key in enumerate(ids[:limit])],
            more=len(ids) > limit,
        )


def _snapshot_slice(
    db: sqlite3.Connection, snapshot: Snapshot, after: int, count: int
) -> list[bytes]:
    """Up to `count` packed ids of the snapshot after index `after`."""
    row = db.execute(
        "SELECT substr(message_ids, ?, ?) FROM snapshots WHERE conversation_id = ? AND id = ?",
        ((after + 1) * 16 + 1, count * 16, snapshot.conversation_id.bytes, snapshot.id.bytes),
    ).fetchone()
    data = bytes(row[0]) if row and row[0] is not None else b""
    return [data[offset : offset + 16] for offset in range(0, len(data), 16)]


def _insert_messages(db: sqlite3.Connection, key: bytes, messages: Sequence[NewMessage]) -> None:
    db.executemany(
        "INSERT INTO messages (conversation_id, id, role, kind, body, body_sha256,"
        " created_at, wire_head, wire_tail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                key,
                new.message.id.bytes,
                new.message.role,
                new.message.kind.encode("utf-8"),
                new.message.body,
                new.body_sha256,
                new.message.created_at,
                new.wire_head,
                new.wire_tail,
            )
            for new in messages
        ],
    )


def _place(db: sqlite3.Connection, key: bytes, items: Sequence[Item]) -> None:
    db.executemany(
        "INSERT INTO conversation_items (conversation_id, position, message_id) VALUES (?, ?, ?)",
        [(key, item.position, item.message_id.bytes) for item in items],
    )


class _SqliteWrite(WriteTransaction):
    def __init__(self, conn: _Connection, state: ConversationState) -> None:
        self._conn = conn
        self._state = state
        self._key = state.id.bytes

    @property
    def state(self) -> ConversationState:
        return self._state

    async def lookup(self, message_ids: Sequence[UUID]) -> dict[UUID, int | None]:
        def query(db: sqlite3.Connection) -> list[Any]:
            _stage_ids(db, message_ids)
            return db.execute(
                "SELECT m.id, i.position FROM messages m LEFT JOIN conversation_items i"
                " ON i.conversation_id = m.conversation_id AND i.message_id = m.id"
                " WHERE m.conversation_id = ? AND m.id IN (SELECT id FROM temp.staged_ids)",
                (self._key,),
            ).fetchall()

        rows = await self._conn.run(query)
        return {UUID(bytes=message_id): position for message_id, position in rows}

    async def items_between(self, lower: int, upper: int | None) -> list[Item]:
        def query(db: sqlite3.Connection) -> list[Any]:
            if upper is None:
                return db.execute(
                    "SELECT position, message_id FROM conversation_items"
                    " WHERE conversation_id = ? AND position >= ? ORDER BY position",
                    (self._key, lower),
                ).fetchall()
            return db.execute(
                "SELECT position, message_id FROM conversation_items"
                " WHERE conversation_id = ? AND position BETWEEN ? AND ? ORDER BY position",
                (self._key, lower, upper),
            ).fetchall()

        return [Item(position, UUID(bytes=mid)) for position, mid in await self._conn.run(query)]

    async def items_before(self, position: int, limit: int) -> list[Item]:
        return await self._neighbours("position < ? ORDER BY position DESC", position, limit)

    async def items_after(self, position: int, limit: int) -> list[Item]:
        return await self._neighbours("position > ? ORDER BY position", position, limit)

    async def _neighbours(self, condition: str, position: int, limit: int) -> list[Item]:
        def query(db: sqlite3.Connection) -> list[Any]:
            return db.execute(
                "SELECT position, message_id FROM conversation_items"
                f" WHERE conversation_id = ? AND {condition} LIMIT ?",
                (self._key, position, limit),
            ).fetchall()

        return [Item(p, UUID(bytes=mid)) for p, mid in await self._conn.run(query)]

    async def insert_messages(self, messages: Sequence[NewMessage]) -> None:
        await self._conn.run(lambda db: _insert_messages(db, self._key, messages))

    async def place(self, items: Sequence[Item]) -> None:
        await self._conn.run(lambda db: _place(db, self._key, items))

    async def append(
        self, messages: Sequence[NewMessage], items: Sequence[Item], state: ConversationState
    ) -> None:
        def append(db: sqlite3.Connection) -> None:
            # One trip to the connection's thread for the three writes.
            _insert_messages(db, self._key, messages)
            _place(db, self._key, items)
            self._save(db, state)

        await self._conn.run(append)

    async def unplace(self, message_ids: Sequence[UUID]) -> None:
        rows = [(self._key, message_id.bytes) for message_id in message_ids]
        await self._conn.run(
            lambda db: db.executemany(
                "DELETE FROM conversation_items WHERE conversation_id = ? AND message_id = ?",
                rows,
            )
        )

    async def delete(self, message_ids: Sequence[UUID]) -> None:
        rows = [(self._key, message_id.bytes) for message_id in message_ids]

        def delete(db: sqlite3.Connection) -> None:
            db.executemany(
                "DELETE FROM conversation_items WHERE conversation_id = ? AND message_id = ?",
                rows,
            )
            db.executemany("DELETE FROM messages WHERE conversation_id = ? AND id = ?", rows)

        await self._conn.run(delete)

    async def renumber(self, renumbering: Renumbering) -> None:
        moves = [
            (-new, self._key, old)
            for old, new in zip(renumbering.old_positions, renumbering.new_positions, strict=True)
        ]

        def renumber(db: sqlite3.Connection) -> None:
            # Via negative positions: the primary key is checked row by row.
            db.executemany(
                "UPDATE conversation_items SET position = ?"
                " WHERE conversation_id = ? AND position = ?",
                moves,
            )
            db.execute(
                "UPDATE conversation_items SET position = -position"
                " WHERE conversation_id = ? AND position < 0",
                (self._key,),
            )
            db.execute(
                "INSERT INTO conversation_renumberings (conversation_id, layout_version,"
                " lower_bound, upper_bound, old_positions, new_positions)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self._key,
                    renumbering.layout_version,
                    renumbering.lower,
                    renumbering.upper,
                    _pack(renumbering.old_positions),
                    _pack(renumbering.new_positions),
                ),
            )

        await self._conn.run(renumber)

    async def save(self, state: ConversationState) -> None:
        await self._conn.run(lambda db: self._save(db, state))

    def _save(self, db: sqlite3.Connection, state: ConversationState) -> None:
        db.execute(
            "UPDATE conversations SET message_count = ?, updated_at = ?,"
            " tail_position = ?, layout_version = ?, version = ? WHERE id = ?",
            (
                state.message_count,
                state.updated_at,
                state.tail_position,
                state.layout_version,
                state.version,
                self._key,
            ),
        )

    async def recall(self, key: str) -> RememberedCall | None:
        def query(db: sqlite3.Connection) -> Any:
            return db.execute(
                "SELECT fingerprint, response, created_at FROM idempotency_keys"
                " WHERE conversation_id = ? AND key = ?",
                (self._key, key),
            ).fetchone()

        row = await self._conn.run(query)
        return None if row is None else RememberedCall(bytes(row[0]), bytes(row[1]), row[2])

    async def remember(self, key: str, call: RememberedCall) -> None:
        await self._conn.run(
            lambda db: db.execute(
                "INSERT INTO idempotency_keys"
                " (conversation_id, key, fingerprint, response, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversation_id, key) DO UPDATE"
                " SET fingerprint = excluded.fingerprint, response = excluded.response,"
                " created_at = excluded.created_at",
                (self._key, key, call.fingerprint, call.response, call.created_at),
            )
        )

    async def create_snapshot(self, snapshot: Snapshot, message_ids: Sequence[UUID]) -> int:
        packed = b"".join(message_id.bytes for message_id in message_ids)

        def create(db: sqlite3.Connection) -> int:
            db.execute(
                "INSERT INTO snapshots (conversation_id, id, created_at, item_count, message_ids)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    self._key,
                    snapshot.id.bytes,
                    snapshot.created_at,
                    snapshot.item_count,
                    packed,
                ),
            )
            # Bodies first (only of messages not frozen yet), then the frozen rows.
            _stage_ids(db, message_ids)
            fresh = (
                " FROM messages m WHERE m.conversation_id = ?"
                " AND m.id IN (SELECT id FROM temp.staged_ids)"
                " AND NOT EXISTS (SELECT 1 FROM snapshot_messages f"
                " WHERE f.conversation_id = m.conversation_id AND f.message_id = m.id)"
            )
            db.execute(
                "INSERT OR IGNORE INTO snapshot_bodies (conversation_id, sha256, body)"
                " SELECT m.conversation_id, m.body_sha256, m.body" + fresh,
                (self._key,),
            )
            db.execute(
                "INSERT INTO snapshot_messages (conversation_id, message_id, role, kind,"
                " body_sha256, created_at, wire_head, wire_tail)"
                " SELECT m.conversation_id, m.id, m.role, m.kind, m.body_sha256, m.created_at,"
                " m.wire_head, m.wire_tail" + fresh,
                (self._key,),
            )
            existing = {
                key
                for (key,) in db.execute(
                    "SELECT id FROM messages WHERE conversation_id = ?"
                    " AND id IN (SELECT id FROM temp.staged_ids)",
                    (self._key,),
                )
            }
            return sum(1 for message_id in message_ids if message_id.bytes in existing)

        return await self._conn.run(create)


def _stage_ids(db: sqlite3.Connection, ids: Sequence[UUID]) -> None:
    """Put ids in a connection-local temporary table, for `IN (SELECT ...)`
    over any number of them (bound parameters are limited in number)."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS staged_ids (id BLOB PRIMARY KEY) WITHOUT ROWID")
    db.execute("DELETE FROM temp.staged_ids")
    db.executemany(
        "INSERT OR IGNORE INTO temp.staged_ids (id) VALUES (?)", [(i.bytes,) for i in ids]
    )


class SqliteStore(Store):
    """Conversations in one SQLite file (created if missing)."""

    def __init__(self, path: str, *, readers: int = 4, busy_timeout_ms: int = 5000) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._writer = _Connection(path, busy_timeout_ms)
        self._write_lock = asyncio.Lock()
        self._reader_count = readers
        self._readers: asyncio.Queue[_Connection] = asyncio.Queue()
        self._all_readers: list[_Connection] = []

    @property
    def path(self) -> str:
        return self._path

    async def open(self) -> None:
        await self._writer.open()
        for _ in range(self._reader_count):
            reader = _Connection(self._path, self._busy_timeout_ms)
            await reader.open()
            self._all_readers.append(reader)
            self._readers.put_nowait(reader)

    async def close(self) -> None:
        for reader in self._all_readers:
            await reader.close()
        self._all_readers.clear()
        await self._writer.close()

    async def migrate(self) -> list[int]:
        known = migrations.load("sqlite")

        def step(db: sqlite3.Connection) -> int | None:
            # One migration per transaction; BEGIN IMMEDIATE takes the write
            # lock first, so a concurrent migrator sees what this one did.
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)"
                )
                applied = dict(db.execute("SELECT version, checksum FROM schema_migrations"))
                todo = migrations.pending(known, applied)
                if not todo:
                    db.execute("COMMIT")
                    return None
                migration = todo[0]
                for statement in _statements(migration.sql):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at)"
                    " VALUES (?, ?, ?, ?)",
                    (migration.version, migration.name, migration.checksum, now_micros()),
                )
                db.execute("COMMIT")
                return migration.version
            except BaseException:
                db.execute("ROLLBACK")
                raise

        applied_now: list[int] = []
        async with self._write_lock:
            while (version := await self._writer.run(step)) is not None:
                applied_now.append(version)
        return applied_now

    async def pending_migrations(self) -> list[int]:
        def applied(db: sqlite3.Connection) -> dict[int, str]:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            if exists is None:
                return {}
            return dict(db.execute("SELECT version, checksum FROM schema_migrations"))

        recorded = await self._writer.run(applied)
        known = migrations.load("sqlite")
        return [migration.version for migration in migrations.pending(known, recorded)]

    def pool_stats(self) -> PoolStats:
        # One writer connection and the readers; a waiting writer queues
        # on the write lock.
        readers = len(self._all_readers)
        writer_idle = 0 if self._write_lock.locked() else 1
        return PoolStats(
            open=readers + 1 if readers else 0,
            idle=self._readers.qsize() + writer_idle if readers else 0,
            waiting=0,
            max=self._reader_count + 1,
        )

    async def forget_calls(self, created_before: int, limit: int) -> int:
        def forget(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "DELETE FROM idempotency_keys WHERE (conversation_id, key) IN ("
                " SELECT conversation_id, key FROM idempotency_keys"
                " WHERE created_at < ? LIMIT ?)",
                (created_before, limit),
            )
            return cursor.rowcount

        async with self._write_lock:
            return await self._writer.run(forget)

    async def append_at_tail(
        self,
        conversation_id: UUID,
        messages: Sequence[NewMessage],
        *,
        updated_at: int,
        gap: int,
        max_position: int,
    ) -> ConversationState | None:
        key = conversation_id.bytes
        count = len(messages)

        def append(db: sqlite3.Connection) -> Any:
            # One trip to the writer's thread for the whole transaction.
            _end_transaction(db)  # one a cancelled call may have left open
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR IGNORE INTO conversations (id, created_at, updated_at)"
                    " VALUES (?, ?, 0)",
                    (key, now_micros()),
                )
                row = db.execute(
                    "UPDATE conversations SET message_count = message_count + ?,"
                    " tail_position = tail_position + ?, version = version + 1, updated_at = ?"
                    " WHERE id = ? AND updated_at < ? AND tail_position <= ?"
                    f" RETURNING {_CONVERSATION_COLUMNS}",
                    (count, count * gap, updated_at, key, updated_at, max_position - count * gap),
                ).fetchone()
                if row is not None:
                    tail = row[3]
                    _insert_messages(db, key, messages)
                    _place(
                        db,
                        key,
                        [
                            Item(tail - gap * (count - 1 - index), new.message.id)
                            for index, new in enumerate(messages)
                        ],
                    )
                db.execute("COMMIT")
                return row
            except BaseException:
                db.execute("ROLLBACK")
                raise

        async with self._write_lock:
            row = await self._writer.run(append)
        return None if row is None else _state(row)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTransaction]:
        reader = await self._readers.get()
        try:
            # A call cancelled while BEGIN waits for the thread still has
            # it run there, so the transaction is ended in any case, after
            # it (the thread runs one operation at a time, in order).
            try:
                await reader.run(_begin_read)
                yield _SqliteRead(reader)
            finally:
                await asyncio.shield(reader.run(_end_transaction))
        finally:
            self._readers.put_nowait(reader)

    @asynccontextmanager
    async def write(
        self, conversation_id: UUID, *, create: bool = False
    ) -> AsyncIterator[WriteTransaction]:
        key = conversation_id.bytes

        def begin(db: sqlite3.Connection) -> Any:
            _end_transaction(db)  # one a cancelled call may have left open
            db.execute("BEGIN IMMEDIATE")
            try:
                if create:
                    db.execute(
                        "INSERT OR IGNORE INTO conversations (id, created_at, updated_at)"
                        " VALUES (?, ?, 0)",
                        (key, now_micros()),
                    )
                return db.execute(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (key,)
                ).fetchone()
            except BaseException:
                db.execute("ROLLBACK")
                raise

        async with self._write_lock:
            try:
                row = await self._writer.run(begin)
            except BaseException:
                # Cancelled while BEGIN was queued or running: it still
                # runs, so end it after it, before releasing the lock.
                await asyncio.shield(self._writer.run(_end_transaction))
                raise
            if row is None:
                await self._writer.run(lambda db: db.execute("ROLLBACK"))
                raise ConversationNotFound(
                    "conversation_id", f"conversation {conversation_id} does not exist"
                )
            try:
                yield _SqliteWrite(self._writer, _state(row))
            except BaseException:
                await asyncio.shield(self._writer.run(_end_transaction))
                raise
            try:
                await self._writer.run(lambda db: db.execute("COMMIT"))
            except BaseException:
                # Cancelled around COMMIT: whether it ran or not, leave no
                # transaction open on the one writer connection.
                await asyncio.shield(self._writer.run(_end_transaction))
                raise


def _begin_read(db: sqlite3.Connection) -> None:
    _end_transaction(db)
    db.execute("BEGIN")


def _end_transaction(db: sqlite3.Connection) -> None:
    """Roll back the connection's transaction, if one is open."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _statements(script: str) -> list[str]:
    """Split a migration file into statements (sqlite3 runs one at a time
    inside a transaction; executescript would commit first)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip().strip(";").strip() and not _only_comments(current):
        raise ValueError("migration ends with an incomplete statement")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
