"""The embedded backend: one SQLite file in WAL mode.

The queries are the named ones of sql/sqlite.sql; what they have in common
with PostgreSQL (rows to values, pages under a byte budget, renumbering
steps, the migration runner) is in common.py and migrations/. This module
holds what is SQLite's own: connections on threads, the write lock,
transactions, parameter adaptation (ids are 16-byte blobs, times integers).

SQLite has one writer at a time, so write transactions queue on an asyncio
lock over a single writer connection (which also makes them serialized per
conversation, as the interface asks). Reads run on a few other connections
and see a consistent snapshot while a write is under way. Every connection
lives on its own thread; a call hops there once per operation.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from uuid import UUID

from ..clock import now_micros
from ..errors import StorageUnavailable
from ..model import ConversationState, Item, NewMessage, Page, RememberedCall, Renumbering, Snapshot
from . import common, migrations, sql
from .base import PoolStats, ReadTransaction, Store, WriteTransaction

T = TypeVar("T")

_QUERIES = sql.load("sqlite")

_Params = Mapping[str, Any]


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
        conn = sqlite3.connect(
            self._path,
            # sqlite3 sets SQLite's busy timeout from this, in seconds.
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.executescript(_QUERIES["configure_connection"])
        return conn

    async def close(self) -> None:
        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self.run(close)
            self._conn = None
        self._thread.shutdown(wait=True)


# --- Statements (on a connection's thread) ---------------------------------------


def _execute(db: sqlite3.Connection, query: str, params: _Params | None = None) -> sqlite3.Cursor:
    return db.execute(_QUERIES[query], {} if params is None else params)


def _row(db: sqlite3.Connection, query: str, params: _Params) -> Any:
    return _execute(db, query, params).fetchone()


def _rows(db: sqlite3.Connection, query: str, params: _Params) -> list[Any]:
    return _execute(db, query, params).fetchall()


def _each(db: sqlite3.Connection, query: str, rows: Iterable[_Params]) -> None:
    """Run a one-row statement once per row."""
    db.executemany(_QUERIES[query], rows)


def _items(rows: Iterable[tuple[int, bytes]]) -> list[Item]:
    return [Item(position, UUID(bytes=message_id)) for position, message_id in rows]


def _insert_messages(db: sqlite3.Connection, key: bytes, messages: Sequence[NewMessage]) -> None:
    rows = [
        {
            "conversation": key,
            "id": new.message.id.bytes,
            "role": new.message.role,
            "kind": new.message.kind.encode("utf-8"),
            "body": new.message.body,
            "digest": new.body_sha256,
            "created_at": new.message.created_at,
            "head": new.wire_head,
            "tail": new.wire_tail,
        }
        for new in messages
    ]
    _each(db, "insert_messages", rows)


def _place(db: sqlite3.Connection, key: bytes, items: Sequence[Item]) -> None:
    rows = [
        {"conversation": key, "position": item.position, "id": item.message_id.bytes}
        for item in items
    ]
    _each(db, "place", rows)


def _save(db: sqlite3.Connection, state: ConversationState) -> None:
    params = {
        "conversation": state.id.bytes,
        "count": state.message_count,
        "updated_at": state.updated_at,
        "tail": state.tail_position,
        "layout": state.layout_version,
        "version": state.version,
    }
    _execute(db, "save_conversation", params)


def _begin_read(db: sqlite3.Connection) -> None:
    _end_transaction(db)
    _execute(db, "begin_read")


def _end_transaction(db: sqlite3.Connection) -> None:
    """Roll back the connection's transaction, if one is open."""
    if db.in_transaction:
        _execute(db, "rollback")


# --- Transactions ------------------------------------------------------------------


class _SqliteRead(ReadTransaction):
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def conversation(self, conversation_id: UUID) -> ConversationState:
        params = {"conversation": conversation_id.bytes}
        row = await self._conn.run(lambda db: _row(db, "conversation", params))
        if row is None:
            raise common.conversation_not_found(conversation_id)
        return common.conversation_state(conversation_id, row)

    async def renumberings_since(
        self, conversation_id: UUID, layout_version: int
    ) -> list[Renumbering]:
        params = {"conversation": conversation_id.bytes, "layout": layout_version}
        rows = await self._conn.run(lambda db: _rows(db, "renumberings_since", params))
        return [common.renumbering(row) for row in rows]

    async def message_page(
        self,
        conversation_id: UUID,
        after: int,
        limit: int,
        roles: frozenset[int],
        kinds: frozenset[str],
        body_budget: int,
    ) -> Page[tuple[int, bytes]]:
        params = {
            "conversation": conversation_id.bytes,
            "after": after,
            "limit": limit + 1,
            "by_role": bool(roles),
            "by_kind": bool(kinds),
        }

        def query(db: sqlite3.Connection) -> Page[tuple[int, bytes]]:
            # The list filters go through temporary tables: any number of
            # values under one constant query text.
            if roles:
                _execute(db, "clear_filter_roles")
                _each(db, "stage_filter_role", [{"role": role} for role in roles])
            if kinds:
                _execute(db, "clear_filter_kinds")
                _each(db, "stage_filter_kind", [{"kind": kind.encode()} for kind in kinds])
            # A lazy cursor: no body past the one that ends the page is read.
            rows = _execute(db, "message_page", params)
            return common.budgeted_page(rows, limit, body_budget)

        return await self._conn.run(query)

    async def id_page(self, conversation_id: UUID, after: int, limit: int) -> Page[Item]:
        params = {"conversation": conversation_id.bytes, "position": after, "limit": limit + 1}
        rows = await self._conn.run(lambda db: _rows(db, "items_after", params))
        return common.limited_page(_items(rows), limit)

    async def snapshot(self, snapshot_id: UUID) -> Snapshot:
        params = {"snapshot": snapshot_id.bytes}
        row = await self._conn.run(lambda db: _row(db, "snapshot", params))
        if row is None:
            raise common.snapshot_not_found(snapshot_id)
        conversation_id, created_at, item_count = row
        return Snapshot(snapshot_id, UUID(bytes=conversation_id), created_at, item_count)

    async def snapshot_message_page(
        self, snapshot: Snapshot, after: int, limit: int, body_budget: int
    ) -> Page[tuple[int, bytes]]:
        params = _snapshot_params(snapshot) | common.id_slice(after, limit + 1) | {"after": after}

        def query(db: sqlite3.Connection) -> Page[tuple[int, bytes]]:
            rows = _execute(db, "snapshot_message_page", params)
            return common.budgeted_page(rows, limit, body_budget)

        return await self._conn.run(query)

    async def snapshot_id_page(
        self, snapshot: Snapshot, after: int, limit: int
    ) -> Page[tuple[int, UUID]]:
        params = _snapshot_params(snapshot) | common.id_slice(after, limit + 1)
        row = await self._conn.run(lambda db: _row(db, "snapshot_id_slice", params))
        ids = common.unpack_ids(bytes(row[0])) if row and row[0] is not None else []
        return common.limited_page(list(enumerate(ids, start=after + 1)), limit)


def _snapshot_params(snapshot: Snapshot) -> dict[str, Any]:
    return {"conversation": snapshot.conversation_id.bytes, "snapshot": snapshot.id.bytes}


class _SqliteWrite(WriteTransaction):
    def __init__(self, conn: _Connection, state: ConversationState) -> None:
        self._conn = conn
        self._state = state
        self._key = state.id.bytes

    @property
    def state(self) -> ConversationState:
        return self._state

    async def lookup(self, message_ids: Sequence[UUID]) -> dict[UUID, int | None]:
        if not message_ids:
            return {}
        params = {"conversation": self._key, "packed": common.pack_ids(message_ids)}
        rows = await self._conn.run(lambda db: _rows(db, "lookup", params))
        return {UUID(bytes=message_id): position for message_id, position in rows}

    async def items_between(self, lower: int, upper: int | None) -> list[Item]:
        params = {"conversation": self._key, "lower": lower, "upper": upper}
        query = "items_from" if upper is None else "items_between"
        return _items(await self._conn.run(lambda db: _rows(db, query, params)))

    async def items_before(self, position: int, limit: int) -> list[Item]:
        params = {"conversation": self._key, "position": position, "limit": limit}
        return _items(await self._conn.run(lambda db: _rows(db, "items_before", params)))

    async def items_after(self, position: int, limit: int) -> list[Item]:
        params = {"conversation": self._key, "position": position, "limit": limit}
        return _items(await self._conn.run(lambda db: _rows(db, "items_after", params)))

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
            _save(db, state)

        await self._conn.run(append)

    async def unplace(self, message_ids: Sequence[UUID]) -> None:
        rows = self._id_rows(message_ids)
        await self._conn.run(lambda db: _each(db, "unplace", rows))

    async def delete(self, message_ids: Sequence[UUID]) -> None:
        rows = self._id_rows(message_ids)

        def delete(db: sqlite3.Connection) -> None:
            _each(db, "unplace", rows)
            _each(db, "delete_messages", rows)

        await self._conn.run(delete)

    def _id_rows(self, message_ids: Sequence[UUID]) -> list[dict[str, bytes]]:
        return [{"conversation": self._key, "id": message_id.bytes} for message_id in message_ids]

    async def renumber(self, renumbering: Renumbering) -> None:
        moves = [
            {"conversation": self._key, "old_position": old, "parked": parked}
            for old, parked in common.parked_moves(renumbering)
        ]
        record = common.renumbering_record(renumbering) | {"conversation": self._key}

        def renumber(db: sqlite3.Connection) -> None:
            if moves:
                _each(db, "park_renumbered", moves)
                _execute(db, "settle_renumbered", {"conversation": self._key})
            _execute(db, "record_renumbering", record)

        await self._conn.run(renumber)

    async def save(self, state: ConversationState) -> None:
        await self._conn.run(lambda db: _save(db, state))

    async def recall(self, key: str) -> RememberedCall | None:
        params = {"conversation": self._key, "key": key}
        row = await self._conn.run(lambda db: _row(db, "recall", params))
        return None if row is None else RememberedCall(bytes(row[0]), bytes(row[1]), row[2])

    async def remember(self, key: str, call: RememberedCall) -> None:
        params = {
            "conversation": self._key,
            "key": key,
            "fingerprint": call.fingerprint,
            "response": call.response,
            "created_at": call.created_at,
        }
        await self._conn.run(lambda db: _execute(db, "remember", params))

    async def create_snapshot(self, snapshot: Snapshot, message_ids: Sequence[UUID]) -> int:
        common.check_snapshot_owner(snapshot, self._state.id)
        params = {
            "conversation": self._key,
            "snapshot": snapshot.id.bytes,
            "created_at": snapshot.created_at,
            "item_count": len(message_ids),
            "packed": common.pack_ids(message_ids),
        }

        def create(db: sqlite3.Connection) -> int:
            _execute(db, "insert_snapshot", params)
            if not message_ids:
                return 0
            frozen = _rows(db, "freeze_messages", params)
            _each(
                db,
                "freeze_body",
                [{"conversation": self._key, "id": message_id} for (message_id,) in frozen],
            )
            existing: int = _row(db, "count_existing", params)[0]
            return existing

        return await self._conn.run(create)


class _SqliteMigrations(migrations.MigrationSession):
    """The migration runner's hooks over the writer connection; `locked`
    holds the store's write lock, `transaction` the database's."""

    def __init__(self, writer: _Connection, write_lock: asyncio.Lock) -> None:
        self._writer = writer
        self._write_lock = write_lock

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        async with self._write_lock:
            yield

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        def begin(db: sqlite3.Connection) -> None:
            _end_transaction(db)  # one a cancelled call may have left open
            # BEGIN IMMEDIATE takes the write lock first, so a concurrent
            # migrator sees what this one did.
            _execute(db, "begin_write")

        try:
            await self._writer.run(begin)
            yield
            await self._writer.run(lambda db: _execute(db, "commit"))
        except BaseException:
            await asyncio.shield(self._writer.run(_end_transaction))
            raise

    async def prepare(self) -> None:
        await self._writer.run(lambda db: _execute(db, "create_schema_migrations"))

    async def applied(self) -> dict[int, str]:
        def applied(db: sqlite3.Connection) -> dict[int, str]:
            if not _row(db, "schema_migrations_exists", {})[0]:
                return {}
            return dict(_rows(db, "applied_migrations", {}))

        return await self._writer.run(applied)

    async def apply(self, migration: migrations.Migration) -> None:
        params = {
            "version": migration.version,
            "name": migration.name,
            "checksum": migration.checksum,
            "applied_at": now_micros(),
        }

        def apply(db: sqlite3.Connection) -> None:
            for statement in _statements(migration.sql):
                db.execute(statement)
            _execute(db, "record_migration", params)

        await self._writer.run(apply)


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
        # One migration per transaction, each under the database's write
        # lock: a migrator in another process may apply the next one.
        return await migrations.run("sqlite", self._migrations())

    async def pending_migrations(self) -> list[int]:
        return await migrations.pending_versions("sqlite", self._migrations())

    def _migrations(self) -> _SqliteMigrations:
        return _SqliteMigrations(self._writer, self._write_lock)

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
        params = {"created_before": created_before, "limit": limit}
        async with self._write_lock:
            return await self._writer.run(lambda db: _execute(db, "forget_calls", params).rowcount)

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
        params = {
            "conversation": key,
            "count": len(messages),
            "updated_at": updated_at,
            "gap": gap,
            "max_position": max_position,
        }

        def append(db: sqlite3.Connection) -> Any:
            # One trip to the writer's thread for the whole transaction.
            _end_transaction(db)  # one a cancelled call may have left open
            _execute(db, "begin_write")
            try:
                _execute(
                    db, "create_conversation", {"conversation": key, "created_at": now_micros()}
                )
                row = _row(db, "append_at_tail", params)
                if row is not None:
                    state = common.conversation_state(conversation_id, row)
                    _insert_messages(db, key, messages)
                    _place(db, key, common.appended_items(state.tail_position, gap, messages))
                _execute(db, "commit")
                return row
            except BaseException:
                _execute(db, "rollback")
                raise

        async with self._write_lock:
            row = await self._writer.run(append)
        return None if row is None else common.conversation_state(conversation_id, row)

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
        params = {"conversation": conversation_id.bytes}

        def begin(db: sqlite3.Connection) -> Any:
            _end_transaction(db)  # one a cancelled call may have left open
            _execute(db, "begin_write")
            try:
                if create:
                    _execute(db, "create_conversation", params | {"created_at": now_micros()})
                return _row(db, "lock_conversation", params)
            except BaseException:
                _execute(db, "rollback")
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
                await self._writer.run(lambda db: _execute(db, "rollback"))
                raise common.conversation_not_found(conversation_id)
            try:
                yield _SqliteWrite(self._writer, common.conversation_state(conversation_id, row))
            except BaseException:
                await asyncio.shield(self._writer.run(_end_transaction))
                raise
            try:
                await self._writer.run(lambda db: _execute(db, "commit"))
            except BaseException:
                # Cancelled around COMMIT: whether it ran or not, leave no
                # transaction open on the one writer connection.
                await asyncio.shield(self._writer.run(_end_transaction))
                raise


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
