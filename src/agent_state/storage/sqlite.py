"""The embedded backend: one SQLite file in WAL mode.

The operations are written once, in transactions.py, over the executor
this module provides (`_SqliteExecutor`); the queries are the named ones of
sql/sqlite.sql; the migration runner is in migrations/. This module holds
what is SQLite's own: connections on threads, the write lock, transactions,
how statements are run (one hop per operation, executemany, staged list
filters, a lazy page cursor) and value adaptation (ids are 16-byte blobs,
times integers, through sqlite3 adapters).

SQLite has one writer at a time, so write transactions queue on an asyncio
lock over a single writer connection (which also makes them serialized per
conversation, as the interface asks). Reads run on a few other connections
and see a consistent snapshot while a write is under way. Every connection
lives on its own thread; a call hops there once per operation.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from uuid import UUID

from ..clock import now_micros
from ..errors import StorageUnavailable, conversation_not_found
from ..model import NewMessage, Page
from . import common, migrations, sql, transactions
from .base import PoolStats, ReadTransaction, WriteTransaction
from .transactions import Executor, Filters, Params, Row, Statement

T = TypeVar("T")

_QUERIES = sql.load("sqlite")


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


def _execute(db: sqlite3.Connection, query: str, params: Params | None = None) -> sqlite3.Cursor:
    return db.execute(_QUERIES[query], {} if params is None else params)


def _key_kept(db: sqlite3.Connection, params: Params, *, message_count: int) -> bool:
    """Keep append_at_tail's idempotency key, if the call sent one; False
    when the conversation has that key already (recent or expired)."""
    if params["key"] is None:
        return True
    try:
        _execute(db, "keep_append_key", {**params, "message_count": message_count})
    except sqlite3.IntegrityError:
        return False
    return True


def _row(db: sqlite3.Connection, query: str, params: Params) -> Any:
    return _execute(db, query, params).fetchone()


def _rows(db: sqlite3.Connection, query: str, params: Params) -> list[Any]:
    return _execute(db, query, params).fetchall()


def _each(db: sqlite3.Connection, query: str, rows: Iterable[Params]) -> None:
    """Run a one-row statement once per row."""
    db.executemany(_QUERIES[query], rows)


def _send(db: sqlite3.Connection, statement: Statement) -> None:
    """Run a statement whose result nobody reads; one with columns, once per
    row (executemany), each row binding one value of every column."""
    query = _QUERIES[statement.query]
    if statement.columns is None:
        db.execute(query, statement.params)
        return
    names = tuple(statement.columns)
    db.executemany(
        query,
        (
            {**statement.params, **dict(zip(names, values, strict=True))}
            for values in zip(*statement.columns.values(), strict=True)
        ),
    )


def _begin_read(db: sqlite3.Connection) -> None:
    _end_transaction(db)
    _execute(db, "begin_read")


def _begin_write(db: sqlite3.Connection) -> None:
    _end_transaction(db)  # one a cancelled call may have left open
    _execute(db, "begin_write")


def _end_transaction(db: sqlite3.Connection) -> None:
    """Roll back the connection's transaction, if one is open."""
    if db.in_transaction:
        _execute(db, "rollback")


# --- The executor ----------------------------------------------------------------


def _uuid_blob(value: UUID) -> bytes:
    return value.bytes


def _micros_integer(value: common.Micros) -> int:
    return value.value


# Ids are 16-byte blobs and times integers: every parameter of those types
# is bound so, wherever it appears.
sqlite3.register_adapter(UUID, _uuid_blob)
sqlite3.register_adapter(common.Micros, _micros_integer)


def _page(
    db: sqlite3.Connection, query: str, params: Params, limit: int, budget: int
) -> Page[tuple[int, bytes]]:
    # A lazy cursor: no body past the one that ends the page is read.
    return common.budgeted_page(_execute(db, query, params), limit, budget)


def _stage_labels(db: sqlite3.Connection, labels: Sequence[tuple[str, bytes]]) -> None:
    _execute(db, "clear_filter_labels")
    _each(db, "stage_filter_label", [{"key": key, "value": value} for key, value in labels])


def _staged(db: sqlite3.Connection, params: Params, filters: Filters) -> Params:
    """`params` with the list filters staged in the connection's temporary
    tables: any number of values under one constant query text."""
    roles, kinds = filters
    if roles:
        _execute(db, "clear_filter_roles")
        _each(db, "stage_filter_role", [{"role": role} for role in roles])
    if kinds:
        _execute(db, "clear_filter_kinds")
        _each(db, "stage_filter_kind", [{"kind": kind} for kind in kinds])
    return {**params, "by_role": bool(roles), "by_kind": bool(kinds)}


class _SqliteExecutor(Executor):
    """Runs the named queries on one connection, each call in one hop to
    its thread."""

    __slots__ = ("_conn",)

    joined_append = False

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def rows(self, query: str, params: Params) -> list[Row]:
        return await self._conn.run(lambda db: _rows(db, query, params))

    async def row(self, query: str, params: Params) -> Row | None:
        found: Row | None = await self._conn.run(lambda db: _row(db, query, params))
        return found

    async def run(self, *statements: Statement) -> None:
        def run(db: sqlite3.Connection) -> None:
            for statement in statements:
                _send(db, statement)

        await self._conn.run(run)

    async def page(
        self, query: str, params: Params, limit: int, budget: int
    ) -> Page[tuple[int, bytes]]:
        return await self._conn.run(lambda db: _page(db, query, params, limit, budget))

    async def state_and_page(
        self, page: str, params: Params, limit: int, budget: int, filters: Filters
    ) -> tuple[Row | None, Page[tuple[int, bytes]]]:
        def read(db: sqlite3.Connection) -> tuple[Row | None, Page[tuple[int, bytes]]]:
            # Both statements in one read transaction, so that they agree,
            # and in one hop, so that the transaction ends in it.
            began = not db.in_transaction
            if began:
                _begin_read(db)
            try:
                row = _row(db, "conversation", params)
                return row, _page(db, page, _staged(db, params, filters), limit, budget)
            finally:
                if began:
                    _end_transaction(db)

        return await self._conn.run(read)

    async def labelled_rows(
        self, query: str, params: Params, labels: Sequence[tuple[str, bytes]]
    ) -> list[Row]:
        def read(db: sqlite3.Connection) -> list[Row]:
            _stage_labels(db, labels)
            return _rows(db, query, params)

        return await self._conn.run(read)

    async def freeze(self, insert: Statement) -> int:
        params = insert.params
        conversation = params["conversation"]

        def freeze(db: sqlite3.Connection) -> int:
            _send(db, insert)
            frozen = _rows(db, "freeze_messages", params)
            _each(
                db,
                "freeze_body",
                [{"conversation": conversation, "id": message_id} for (message_id,) in frozen],
            )
            existing: int = _row(db, "count_existing", params)[0]
            return existing

        return await self._conn.run(freeze)

    @staticmethod
    def to_uuid(value: Any) -> UUID:
        return UUID(bytes=value)


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
        try:
            # BEGIN IMMEDIATE takes the write lock first, so a concurrent
            # migrator sees what this one did.
            await self._writer.run(_begin_write)
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


class SqliteStore(transactions.StoreOperations):
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

    async def analyze_tables_marked_empty(self) -> tuple[list[str], bool]:
        return [], False

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

    async def _forget_calls(self, params: Params) -> int:
        async with self._write_lock:
            return await self._writer.run(
                lambda db: sum(
                    _execute(db, query, params).rowcount
                    for query in ("forget_calls", "forget_kept_calls")
                )
            )

    async def _append_at_tail(
        self, params: dict[str, Any], messages: Sequence[NewMessage]
    ) -> Row | None:
        conversation = {"conversation": params["conversation"]}

        def append(db: sqlite3.Connection) -> Row | None:
            # One trip to the writer's thread for the whole transaction.
            _begin_write(db)
            try:
                # Created when first updated, as in PostgreSQL.
                created = {"created_at": params["updated_at"]}
                _execute(db, "create_conversation", conversation | created)
                row: Row | None = _row(db, "append_at_tail", params)
                if row is not None and not _key_kept(db, params, message_count=row[0]):
                    row = None
                if row is not None:
                    state = common.conversation_state(params["conversation"], row)
                    items = common.appended_items(state.tail_position, params["gap"], messages)
                    columns = transactions.message_columns(messages) | {
                        "position": [item.position for item in items]
                    }
                    _send(db, Statement("insert_messages", conversation, columns))
                # No row: nothing is written, not even a conversation created above.
                _execute(db, "commit" if row is not None else "rollback")
                return row
            except BaseException:
                _execute(db, "rollback")
                raise

        async with self._write_lock:
            return await self._writer.run(append)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTransaction]:
        async with self._reading() as executor:
            yield transactions.Read(executor)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[Executor]:
        reader = await self._readers.get()
        try:
            # A call cancelled while BEGIN waits for the thread still has
            # it run there, so the transaction is ended in any case, after
            # it (the thread runs one operation at a time, in order).
            try:
                await reader.run(_begin_read)
                yield _SqliteExecutor(reader)
            finally:
                await asyncio.shield(reader.run(_end_transaction))
        finally:
            self._readers.put_nowait(reader)

    @asynccontextmanager
    async def read_once(self) -> AsyncIterator[ReadTransaction]:
        # Each call is one hop to the reader's thread, and a hop that runs
        # runs to its end, even for a cancelled caller: no transaction is
        # left open on the reader for the next one.
        reader = await self._readers.get()
        try:
            yield transactions.Read(_SqliteExecutor(reader))
        finally:
            self._readers.put_nowait(reader)

    @asynccontextmanager
    async def write(
        self, conversation_id: UUID, *, create: bool = False, recall: str | None = None
    ) -> AsyncIterator[WriteTransaction]:
        params = {"conversation": conversation_id}

        def begin(db: sqlite3.Connection) -> tuple[Any, bool, transactions.Recalled | None]:
            """The conversation's row, whether this created it (the write
            lock keeps other creators out in between) and what `recall`
            keeps, in one hop."""
            _begin_write(db)
            try:
                row = _row(db, "lock_conversation", params)
                created = False
                if row is None and create:
                    # A placeholder: the transaction's save sets it.
                    _execute(db, "create_conversation", params | {"created_at": 0})
                    row, created = _row(db, "lock_conversation", params), True
                recalled = None
                if row is not None and recall is not None:
                    kept = _row(db, "recall", params | {"key": recall})
                    recalled = transactions.Recalled(recall, common.remembered(kept))
                return row, created, recalled
            except BaseException:
                _execute(db, "rollback")
                raise

        async with self._writing(begin) as (row, created, recalled):
            if row is None:
                raise conversation_not_found(conversation_id)
            state = common.conversation_state(conversation_id, row)
            yield transactions.Write(_SqliteExecutor(self._writer), state, created, recalled)

    @asynccontextmanager
    async def _unlocked(self) -> AsyncIterator[Executor]:
        async with self._writing(_begin_write):
            yield _SqliteExecutor(self._writer)

    @asynccontextmanager
    async def _writing(self, begin: Callable[[sqlite3.Connection], T]) -> AsyncIterator[T]:
        """A transaction of the writer connection under the store's write
        lock: `begin` (which BEGINs) runs on its thread and what it returns
        goes to the block; COMMIT follows the block, ROLLBACK a failure."""
        async with self._write_lock:
            try:
                started = await self._writer.run(begin)
            except BaseException:
                # Cancelled while BEGIN was queued or running: it still
                # runs, so end it after it, before releasing the lock.
                await asyncio.shield(self._writer.run(_end_transaction))
                raise
            try:
                yield started
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
