"""The PostgreSQL backend: psycopg 3 (async) over a connection pool.

The operations are written once, in transactions.py, over the executor
this module provides (`_PostgresExecutor`); the queries are the named ones
of sql/postgres.sql; the migration runner is in migrations/. This module
holds what is PostgreSQL's own: the pool, transactions, cancellation, how
statements are run (the pipeline, column arrays), value adaptation (the
timestamptz dumper and loader) and the translation of driver errors.

Every transaction runs in pipeline mode on an autocommit connection with an
explicit BEGIN: statements whose results nobody waits for (BEGIN, the
writes, COMMIT) travel together with the next statement that is waited
for, so a typical write costs two round trips instead of one per statement.
Bulk operations pass columns as arrays, so each one is a single statement
however many rows it touches.

Driver errors meaning "the database is not there right now" become
StorageUnavailable at every public method; any other database error is a
bug and propagates unchanged.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, AsyncPipeline, pq
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Dumper, Loader
from psycopg.errors import PipelineAborted, UniqueViolation
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import StorageUnavailable, conversation_not_found
from ..model import ConversationState, NewMessage, Page
from . import common, migrations, sql, transactions
from .base import PoolStats, ReadTransaction, WriteTransaction
from .transactions import Executor, Filters, Params, Row, Statement

__all__ = ["PostgresStore"]

_Connection = AsyncConnection[TupleRow]

_QUERIES = sql.load("postgres")
# Sent as simple queries (prepare=False): bytes, as psycopg sends them.
_BEGIN_WRITE = _QUERIES["begin_write"].encode()
_BEGIN_READ = _QUERIES["begin_read"].encode()
_COMMIT = _QUERIES["commit"].encode()
_ROLLBACK = _QUERIES["rollback"].encode()
# The statement that analyzes each table tables_marked_empty may name.
_ANALYZE = {"messages": "analyze_messages", "conversations": "analyze_conversations"}

# The constraint that a key kept twice in one conversation breaks.
_IDEMPOTENCY_KEY = "idempotency_keys_pkey"

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


class _MicrosecondsDumper(Dumper):
    """Dumps common.Micros as binary timestamptz, the loader's inverse: a
    time parameter goes out without building a datetime."""

    format = pq.Format.BINARY
    oid = psycopg.adapters.types["timestamptz"].oid

    def dump(self, obj: Any) -> Buffer:
        micros: int = obj.value
        return _INT8.pack(micros - _POSTGRES_EPOCH_US)


# --- Column arrays ----------------------------------------------------------------
#
# psycopg adapts a list as a text array, in Python: every bytea element
# hex-encoded and quoted. The client's CPU per execute of an append's
# eight columns (python -m bench.column_arrays): one 300-byte message
# 0.14-0.15 ms, one of 100 kB 1.2-1.5 ms, 100 of 300 bytes 1.9-2.3 ms.
# Sent as binary arrays built here: 0.09, 0.09-0.13 and 0.30 ms. psycopg's
# own binary lists (%b) took 0.12-0.13, 0.15-0.16 and 0.36-0.41 ms, and
# pick an integer type by the values, a new statement type each time.

_ARRAY_HEADER = struct.Struct(">iiIii")  # ndim, has nulls, element oid, length, lower bound
_LENGTH = struct.Struct(">i")
_NULL = _LENGTH.pack(-1)


def _bytea(value: Any) -> bytes:
    # Not bytes(value): that would turn an int into zero bytes.
    if not isinstance(value, bytes):
        raise TypeError(f"a bytea column holds {type(value).__name__}")
    return value


def _uuid(value: Any) -> bytes:
    data: bytes = value.bytes
    return data


def _boolean(value: Any) -> bytes:
    return b"\x01" if value else b"\x00"


def _time(value: Any) -> bytes:
    return _INT8.pack(value.value - _POSTGRES_EPOCH_US)


@dataclass(frozen=True, slots=True)
class _Element:
    """An element type of column arrays: its PostgreSQL name, and how a
    value is encoded in the binary format."""

    name: str
    encode: Callable[[Any], bytes]


_ELEMENTS: dict[type, _Element] = {
    bytes: _Element("bytea", _bytea),
    UUID: _Element("uuid", _uuid),
    int: _Element("int8", _INT8.pack),
    bool: _Element("bool", _boolean),
    str: _Element("text", str.encode),
    common.Micros: _Element("timestamptz", _time),
}
"""By the Python type of a column's values."""


class _Column:
    """A column's values, sent as one binary array of their type; every
    query casts its arrays to the column's type (an int8[] to integer[])."""

    __slots__ = ("values",)
    element: ClassVar[_Element]

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = values


class _ColumnDumper(Dumper):
    """Dumps a _Column in PostgreSQL's binary array format (array_send)."""

    format = pq.Format.BINARY

    def __init__(self, cls: type[_Column], context: Any = None) -> None:
        super().__init__(cls, context)
        self._encode = cls.element.encode
        info = psycopg.adapters.types[cls.element.name]
        self.oid = info.array_oid
        self._element_oid = info.oid

    def dump(self, obj: Any) -> Buffer:
        values: Sequence[Any] = obj.values
        encode = self._encode
        parts = [b""]
        has_nulls = 0
        for value in values:
            if value is None:
                parts.append(_NULL)
                has_nulls = 1
            else:
                data = encode(value)
                parts.append(_LENGTH.pack(len(data)))
                parts.append(data)
        parts[0] = _ARRAY_HEADER.pack(1, has_nulls, self._element_oid, len(values), 1)
        return b"".join(parts)


# psycopg finds a dumper by the class of a value: one _Column per element type.
_COLUMNS: dict[type, type[_Column]] = {
    python_type: type(f"_{element.name}_column", (_Column,), {"__slots__": (), "element": element})
    for python_type, element in _ELEMENTS.items()
}


def _column(values: Sequence[Any]) -> Any:
    """`values` as a binary array of the type of the first that is not
    None; as psycopg adapts a list where there is none (an empty column)."""
    first = next((value for value in values if value is not None), None)
    column = _COLUMNS.get(type(first))
    return values if column is None else column(values)


def _columns(columns: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    return {name: _column(values) for name, values in columns.items()}


_ADAPTERS = AdaptersMap(psycopg.adapters)
_ADAPTERS.register_loader("timestamptz", _MicrosecondsLoader)
# Every list of times goes out as a _Column, so no text dumper is needed.
_ADAPTERS.register_dumper(common.Micros, _MicrosecondsDumper)
for _column_type in _COLUMNS.values():
    _ADAPTERS.register_dumper(_column_type, _ColumnDumper)


_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S")


def _translated(
    method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]]:
    """Turns driver errors meaning "unavailable" into StorageUnavailable
    as soon as an executor's statement fails, inside its block (the block's
    connection, `_connection`, translates whatever else escapes it)."""

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


# --- Statements --------------------------------------------------------------


async def _rows(conn: _Connection, query: str, params: Params) -> list[Row]:
    cursor = await conn.execute(_QUERIES[query], params, binary=True)
    return await cursor.fetchall()


async def _row(conn: _Connection, query: str, params: Params) -> Row | None:
    cursor = await conn.execute(_QUERIES[query], params, binary=True)
    return await cursor.fetchone()


# --- Cancellation ----------------------------------------------------------------


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


# --- The executor ----------------------------------------------------------------

_WITH_CONVERSATION = {
    "message_page": "conversation_and_message_page",
    "tail_page": "conversation_and_tail_page",
}
"""The one statement that reads each page with the conversation's row."""


class _PostgresExecutor(Executor):
    """Runs the named queries in a transaction's pipeline."""

    __slots__ = ("_conn",)

    joined_append = True

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def _send(self, statement: Statement) -> None:
        # No result to wait for: in a pipeline, the statement is sent with
        # the next one that is waited for, or with the COMMIT.
        params = statement.params
        if statement.columns is not None:
            # Each column travels as one array, which the query unnests.
            params = {**params, **_columns(statement.columns)}
        await self._conn.execute(_QUERIES[statement.query], params, binary=True)

    @_translated
    async def rows(self, query: str, params: Params) -> list[Row]:
        return await _rows(self._conn, query, params)

    @_translated
    async def row(self, query: str, params: Params) -> Row | None:
        return await _row(self._conn, query, params)

    @_translated
    async def run(self, *statements: Statement) -> None:
        for statement in statements:
            await self._send(statement)

    @_translated
    async def page(
        self, query: str, params: Params, limit: int, budget: int
    ) -> Page[tuple[int, bytes]]:
        # The query sums the budget itself.
        return common.budgeted_page(await _rows(self._conn, query, params), limit, budget)

    @_translated
    async def state_and_page(
        self, page: str, params: Params, limit: int, budget: int, filters: Filters
    ) -> tuple[Row | None, Page[tuple[int, bytes]]]:
        # An empty filter array is off.
        arrays = _columns({"roles": list(filters.roles), "kinds": list(filters.kinds)})
        rows = await _rows(self._conn, _WITH_CONVERSATION[page], {**params, **arrays})
        if not rows or rows[0][0] is not None:
            return None, Page([], more=False)
        # Each entry row is (position, entry, NULL, ...): budgeted_page reads
        # the first two columns.
        return rows[0][2:], common.budgeted_page(rows[1:], limit, budget)

    @_translated
    async def labelled_rows(
        self, query: str, params: Params, labels: Sequence[tuple[str, bytes]]
    ) -> list[Row]:
        arrays = _columns(
            {
                "label_keys": [key for key, _ in labels],
                "label_values": [value for _, value in labels],
            }
        )
        return await _rows(self._conn, query, {**params, **arrays})

    @_translated
    async def freeze(self, insert: Statement) -> int:
        await self._send(insert)
        await self._send(Statement("freeze_messages", insert.params))
        row = await _row(self._conn, "count_existing", insert.params)
        assert row is not None
        existing: int = row[0]
        return existing

    @staticmethod
    def to_uuid(value: Any) -> UUID:
        # psycopg loads uuid columns as UUIDs.
        result: UUID = value
        return result


class _PostgresMigrations(migrations.MigrationSession):
    """The migration runner's hooks over one pooled connection.

    The whole run is one transaction holding a transaction-level advisory
    lock, and each migration a savepoint in it (DDL is transactional here):
    nothing outlives the transaction, so the lock cannot be left behind on
    a pooled session, and it holds behind a pooler in transaction mode,
    which may give each transaction another server connection.
    """

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        async with self._conn.transaction():
            # Waiting for the lock or a long migration is no timeout.
            await self._conn.execute(_QUERIES["suspend_statement_timeout"])
            await self._conn.execute(_QUERIES["lock_migrations"], {"key": _MIGRATION_LOCK})
            yield

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        # Inside `locked`'s transaction: a savepoint.
        async with self._conn.transaction():
            yield

    async def prepare(self) -> None:
        await self._conn.execute(_QUERIES["create_schema_migrations"])

    async def applied(self) -> dict[int, str]:
        exists = await _row(self._conn, "schema_migrations_exists", {})
        if exists is None or not exists[0]:
            return {}
        rows = await _rows(self._conn, "applied_migrations", {})
        return {version: checksum for version, checksum in rows}

    async def apply(self, migration: migrations.Migration) -> None:
        # No parameters: sent as a simple query, so the file may hold many
        # statements.
        await self._conn.execute(migration.sql.encode(), prepare=False)
        params = {
            "version": migration.version,
            "name": migration.name,
            "checksum": migration.checksum,
        }
        await self._conn.execute(_QUERIES["record_migration"], params)


async def _set_statement_timeout(conn: _Connection, milliseconds: int) -> None:
    await conn.execute(_QUERIES["set_statement_timeout"], {"milliseconds": str(milliseconds)})


class PostgresStore(transactions.StoreOperations):
    """Conversations in a PostgreSQL database at `url`.

    `statement_timeout_ms` bounds every statement (lock waits included);
    `connect_timeout_s` bounds opening the pool and each connection attempt.
    Without `prepared_statements`, no statement is prepared on the server:
    behind a pooler in transaction mode (PgBouncer), a prepared statement
    lives on a server connection that the next transaction may not get.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout_ms: int | None = None,
        connect_timeout_s: float = 5.0,
        prepared_statements: bool = True,
    ) -> None:
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._statement_timeout_ms = statement_timeout_ms
        self._connect_timeout_s = connect_timeout_s
        # psycopg prepares a statement on its fifth run by default.
        self._prepare_threshold = 5 if prepared_statements else None
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
                "prepare_threshold": self._prepare_threshold,
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

    @property
    def statement_timeout_ms(self) -> int | None:
        """The bound set on each connection as it opens (None: none)."""
        return self._statement_timeout_ms

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
        assert self._statement_timeout_ms is not None
        await _set_statement_timeout(conn, self._statement_timeout_ms)

    def _opened(self) -> AsyncConnectionPool[_Connection]:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        """A pooled connection, closed instead of returned when its call is
        cancelled: wherever the cancellation landed (mid-statement, or while
        entering or leaving pipeline mode) the connection's state is
        unknown, and the next call on it could run without being committed.

        Every use of the pool goes through here, so this is also where
        "the database is not there" becomes StorageUnavailable, whether the
        pool raised it or a statement in the block did."""
        try:
            async with self._opened().connection() as conn:
                try:
                    yield conn
                except BaseException as exc:
                    if not isinstance(exc, Exception):
                        _drop(conn)
                    raise
        except PipelineAborted:
            # Follows an earlier error, which is the one that matters.
            raise
        except _UNAVAILABLE as exc:
            raise StorageUnavailable() from exc

    async def migrate(self) -> list[int]:
        async with self._connection() as conn:
            session = _PostgresMigrations(conn)
            return await migrations.run("postgres", session)

    async def pending_migrations(self) -> list[int]:
        async with self._connection() as conn:
            session = _PostgresMigrations(conn)
            return await migrations.pending_versions("postgres", session)

    async def analyze_tables_marked_empty(self) -> tuple[list[str], bool]:
        async with self._connection() as conn:
            marked = await _rows(conn, "tables_marked_empty", {})
            analyzed = [str(table) for table, holds_rows in marked if holds_rows]
            for table in analyzed:
                await conn.execute(_QUERIES[_ANALYZE[table]], prepare=False)
        return analyzed, len(analyzed) < len(marked)

    async def _append_at_tail(
        self, params: dict[str, Any], messages: Sequence[NewMessage]
    ) -> Row | None:
        params |= _columns(transactions.message_columns(messages))
        # An autocommit connection outside a pipeline: one round trip.
        async with self._connection() as conn:
            try:
                return await _row(conn, "append_at_tail", params)
            except UniqueViolation as exc:
                if exc.diag.constraint_name != _IDEMPOTENCY_KEY:
                    raise
                # The call's key was there already; the statement wrote nothing.
                return None

    async def _forget_calls(self, params: Params) -> int:
        forgotten = 0
        async with self._connection() as conn:
            for query in ("forget_calls", "forget_kept_calls"):
                forgotten += (await conn.execute(_QUERIES[query], params)).rowcount
        return forgotten

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTransaction]:
        async with self._reading() as executor:
            yield transactions.Read(executor)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[Executor]:
        async with self._transaction(_BEGIN_READ) as conn:
            yield _PostgresExecutor(conn)

    @asynccontextmanager
    async def read_once(self) -> AsyncIterator[ReadTransaction]:
        # An autocommit connection outside a pipeline: each call is one
        # statement and one round trip.
        async with self._connection() as conn:
            yield transactions.Read(_PostgresExecutor(conn))

    @asynccontextmanager
    async def write(
        self, conversation_id: UUID, *, create: bool = False, recall: str | None = None
    ) -> AsyncIterator[WriteTransaction]:
        async with self._transaction(_BEGIN_WRITE) as conn:
            state, created, recalled = await self._lock(conn, conversation_id, create, recall)
            yield transactions.Write(_PostgresExecutor(conn), state, created, recalled)

    @asynccontextmanager
    async def _unlocked(self) -> AsyncIterator[Executor]:
        async with self._transaction(_BEGIN_WRITE) as conn:
            yield _PostgresExecutor(conn)

    @asynccontextmanager
    async def _transaction(self, begin: bytes) -> AsyncIterator[_Connection]:
        """A pooled connection in pipeline mode inside BEGIN ... COMMIT."""
        async with self._connection() as conn, conn.pipeline() as pipeline:
            try:
                await conn.execute(begin, prepare=False)
                yield conn
            except Exception:
                await _abandon(conn, pipeline)
                raise
            except BaseException:
                # Dropped before leaving the pipeline, which would wait for
                # the queued statements.
                _drop(conn)
                raise
            # Sent together with the writes still queued in the pipeline;
            # leaving the pipeline waits for it.
            await conn.execute(_COMMIT, prepare=False)

    @staticmethod
    async def _lock(
        conn: _Connection, conversation_id: UUID, create: bool, recall: str | None
    ) -> tuple[ConversationState, bool, transactions.Recalled | None]:
        """The conversation's row, locked, whether this created it, and
        what the idempotency key `recall` keeps."""
        params = {"conversation": conversation_id}
        locking = await conn.execute(_QUERIES["lock_conversation"], params, binary=True)
        # Queued behind the lock in the pipeline: the server runs it once the
        # lock is taken, in a snapshot of its own, so it sees the key of a
        # duplicate call that held the lock before; one round trip for both.
        recalling = None
        if recall is not None:
            recall_params = params | {"key": recall}
            cursor = await conn.execute(_QUERIES["recall"], recall_params, binary=True)
            recalling = recall, cursor
        row = await locking.fetchone()
        recalled = None
        if recalling is not None:
            key, cursor = recalling
            recalled = transactions.Recalled(key, common.remembered(await cursor.fetchone()))
        created = False
        if row is None and create:
            # A concurrent creator makes the INSERT wait for its outcome
            # (then it inserts nothing, and returns no row); either way the
            # row exists for the second SELECT to lock. Its key may have
            # been kept since the read above: recall reads it again.
            created = await _row(conn, "create_conversation", params) is not None
            row = await _row(conn, "lock_conversation", params)
            recalled = None
        if row is None:
            raise conversation_not_found(conversation_id)
        return common.conversation_state(conversation_id, row), created, recalled
