"""Every storage operation, written once, over a small per-dialect executor.

`Read` and `Write` implement base.py's transactions. An operation names its
queries (the same names in sql/postgres.sql and sql/sqlite.sql), builds
their parameters and turns rows into values (common.py); how a statement is
run is the `Executor`'s, which each backend provides:

- `rows` / `row`: a query waited for.
- `run`: a group of statements whose results nobody waits for (PostgreSQL:
  queued in its pipeline, sent with the next waited-for statement or the
  COMMIT; SQLite: all in one hop to the connection's thread). An operation
  never costs more than one hop.
- A `Statement` with `columns` runs over many rows: PostgreSQL passes each
  column as an array (the query unnests it), SQLite runs it once per row
  (executemany). The parameter names are the same.
- `page` / `state_and_page`: a page under a byte budget (the latter with
  the conversation's row and the list filters). PostgreSQL sums the budget
  in SQL where it can matter (common.budgeted_page then cuts); SQLite reads
  a lazy cursor in its thread, so no body past the page is read. The list filters travel as
  arrays (PostgreSQL) or staged temporary tables (SQLite), in the same
  round trip or hop.

Values are adapted by the dialect, not here: ids are passed as UUIDs
(SQLite's adapter turns them into 16-byte blobs) and times as common.Micros
(PostgreSQL's dumper binds timestamptz); id columns come back through the
executor's `to_uuid`, the one place that knows SQLite's blobs.

The Store-level operations, append_at_tail and forget_calls, take their
parameters and result from `StoreOperations`, but each backend runs them
itself: PostgreSQL as one statement on an autocommit connection; SQLite as
a transaction in one hop whose inserts are positioned, in Python, from the
row of the statement before them, under the store's write lock.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

from ..errors import conversation_not_found
from ..model import (
    EMPTY_STATE,
    AppendKey,
    Blob,
    CheckpointKey,
    CheckpointRange,
    CheckpointRow,
    ConversationRange,
    ConversationRecord,
    ConversationState,
    Erased,
    Item,
    MessageCopy,
    MessageHeader,
    NewMessage,
    NewValue,
    NewWrite,
    Original,
    Overlong,
    Page,
    RememberedCall,
    Renumbering,
    Scope,
    Snapshot,
    StoredState,
    StoredValue,
    StoredWrite,
    ThreadValue,
    Trim,
    ValueHead,
    ValueKey,
)
from . import common
from .base import (
    CheckpointReader,
    CheckpointWriter,
    ReadTransaction,
    StateWriter,
    Store,
    SweepTransaction,
    WriteTransaction,
)

Params = Mapping[str, Any]
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Statement:
    """A named query with its parameters; with `columns` (one list per
    column, of equal length, under the columns' parameter names) it runs
    once per row, the other parameters the same for every row."""

    query: str
    params: Params
    columns: Mapping[str, Sequence[Any]] | None = None


class Filters(NamedTuple):
    """message_page's list filters; an empty one is off."""

    roles: Collection[int] = ()
    kinds: Collection[bytes] = ()


class Executor(ABC):
    """How one dialect runs the named queries in one transaction."""

    joined_append: ClassVar[bool]
    """Whether the dialect writes an append's messages and conversation row
    in one statement (the query "append"; PostgreSQL, through data-modifying
    WITH). Otherwise insert_messages and save_conversation run as one group."""

    @abstractmethod
    async def rows(self, query: str, params: Params) -> list[Row]:
        """The rows of `query`."""

    @abstractmethod
    async def row(self, query: str, params: Params) -> Row | None:
        """The first row of `query` (None: no row)."""

    @abstractmethod
    async def run(self, *statements: Statement) -> None:
        """Run statements whose results nobody waits for, in order."""

    @abstractmethod
    async def page(
        self, query: str, params: Params, limit: int, budget: int
    ) -> Page[tuple[int, bytes]]:
        """The page of a query of (key, encoding) rows asked for `limit` + 1
        rows, under `budget` (common.budgeted_page)."""

    @abstractmethod
    async def state_and_page(
        self, page: str, params: Params, limit: int, budget: int, filters: Filters
    ) -> tuple[Row | None, Page[tuple[int, bytes]]]:
        """The conversation's row (None: absent) and its page of messages
        under `budget`, filtered, read together so that they agree even
        outside a transaction, in one round trip or hop. `page` names the
        page: "message_page" (forward from a position) or "tail_page" (the
        last entries, newest first)."""

    @abstractmethod
    async def labelled_rows(
        self, query: str, params: Params, labels: Sequence[tuple[str, bytes]]
    ) -> list[Row]:
        """The rows of `query` under a label filter of (key, value) pairs,
        which travel as the arrays label_keys and label_values (PostgreSQL)
        or staged in temp.filter_labels (SQLite), in the same round trip or
        hop."""

    @abstractmethod
    async def freeze(self, insert: Statement) -> int:
        """Run `insert` (insert_snapshot), freeze the messages it names that
        no snapshot has frozen yet, keep their bodies, and return
        count_existing's count, in one round trip or hop.

        The one step whose shape differs: PostgreSQL's freeze_messages feeds
        its RETURNING rows to the bodies' INSERT in one statement; SQLite
        has no INSERT in a WITH, so its freeze_messages returns the ids and
        freeze_body runs once per id, in the same hop. (A second pass over
        the named ids instead would cost as much as the freezing itself.)"""

    @staticmethod
    @abstractmethod
    def to_uuid(value: Any) -> UUID:
        """An id column's value as a UUID."""


# --- Parameters ------------------------------------------------------------------


def _page_params(conversation_id: UUID, after: int, limit: int, budget: int) -> dict[str, Any]:
    """message_page's parameters but the filters; one row more than the
    page, to tell whether more exist."""
    return {"conversation": conversation_id, "after": after, "limit": limit + 1, "budget": budget}


def _filters(roles: frozenset[int], kinds: frozenset[str]) -> Filters:
    return Filters(roles, [kind.encode() for kind in kinds])


def message_columns(messages: Sequence[NewMessage]) -> dict[str, list[Any]]:
    """The messages' columns in insert_messages, append and append_at_tail
    (all but `position`)."""
    return {
        "id": [new.message.id for new in messages],
        "role": [new.message.role for new in messages],
        "kind": [new.message.kind.encode() for new in messages],
        "entry": [new.entry for new in messages],
        "body_offset": [len(new.wire_head) for new in messages],
        "body_length": [len(new.message.body) for new in messages],
        "digest": [new.body_sha256 for new in messages],
        "created_at": [common.Micros(new.message.created_at) for new in messages],
    }


def largest_entry(messages: Sequence[NewMessage]) -> dict[str, int]:
    """The parameter that keeps conversations.largest_entry (PostgreSQL's
    page uses it; SQLite ignores it)."""
    return {"largest": max((len(new.entry) for new in messages), default=0)}


def place_columns(items: Sequence[Item]) -> dict[str, list[Any]]:
    return {
        "position": [item.position for item in items],
        "placed": [item.message_id for item in items],
    }


def save_params(state: ConversationState) -> dict[str, Any]:
    return {
        "conversation": state.id,
        "count": state.message_count,
        "updated_at": common.Micros(state.updated_at),
        "tail": state.tail_position,
        "layout": state.layout_version,
        "version": state.version,
    }


def record_params(record: ConversationRecord) -> dict[str, Any]:
    """save_record's parameters: the row of save_conversation, when the
    conversation was created, and its details but the labels."""
    details = record.details
    retention = details.retention
    return save_params(record.state) | {
        "created_at": common.Micros(record.created_at),
        "title": details.title.encode(),
        "has_retention": retention is not None,
        "max_idle": retention.max_idle if retention else 0,
        "max_messages": retention.max_messages if retention else 0,
    }


def range_params(selection: ConversationRange) -> dict[str, Any]:
    """A ListConversations page's parameters but the labels; one row more
    than the page, to tell whether more exist."""
    return {
        "after_at": common.Micros(selection.after.updated_at),
        "after_id": selection.after.conversation_id,
        "before_at": common.Micros(selection.before.updated_at),
        "before_id": selection.before.conversation_id,
        "limit": selection.limit + 1,
    }


DRIVING_LABEL_CAP = 5000
"""A ListConversations page with a label filter reads the conversations
carrying the label fewest carry, when fewer than this many do; when every
label is that common, it walks the order instead (each step likely
matches)."""


# --- Transactions ------------------------------------------------------------------


class Read(ReadTransaction):
    __slots__ = ("_x",)

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def conversation(self, conversation_id: UUID) -> ConversationState:
        return await _conversation(self._x, "conversation", conversation_id)

    async def renumberings_since(
        self, conversation_id: UUID, layout_version: int
    ) -> list[Renumbering]:
        params = {"conversation": conversation_id, "layout": layout_version}
        return [common.renumbering(row) for row in await self._x.rows("renumberings_since", params)]

    async def message_page(
        self,
        conversation_id: UUID,
        after: int,
        limit: int,
        roles: frozenset[int],
        kinds: frozenset[str],
        body_budget: int,
    ) -> tuple[ConversationState, Page[tuple[int, bytes]]]:
        params = _page_params(conversation_id, after, limit, body_budget)
        filters = _filters(roles, kinds)
        return await self._state_and_page("message_page", params, limit, body_budget, filters)

    async def tail_page(
        self,
        conversation_id: UUID,
        count: int,
        roles: frozenset[int],
        kinds: frozenset[str],
        body_budget: int,
    ) -> tuple[ConversationState, Page[tuple[int, bytes]]]:
        # Exactly `count` rows: a row past them is not "more" for a tail.
        params = {"conversation": conversation_id, "limit": count, "budget": body_budget}
        filters = _filters(roles, kinds)
        return await self._state_and_page("tail_page", params, count, body_budget, filters)

    async def _state_and_page(
        self, page: str, params: dict[str, Any], limit: int, budget: int, filters: Filters
    ) -> tuple[ConversationState, Page[tuple[int, bytes]]]:
        conversation_id: UUID = params["conversation"]
        row, found = await self._x.state_and_page(page, params, limit, budget, filters)
        if row is None:
            raise conversation_not_found(conversation_id)
        return common.conversation_state(conversation_id, row), found

    async def id_page(self, conversation_id: UUID, after: int, limit: int) -> Page[Item]:
        params = {"conversation": conversation_id, "position": after, "limit": limit + 1}
        return common.limited_page(
            _items(self._x, await self._x.rows("items_after", params)), limit
        )

    async def entry_sizes(
        self, conversation_id: UUID, message_ids: Sequence[UUID]
    ) -> dict[UUID, int]:
        rows = await _by_ids(self._x, "entry_sizes", conversation_id, message_ids)
        return {self._x.to_uuid(message_id): size for message_id, size in rows}

    async def entries(
        self, conversation_id: UUID, message_ids: Sequence[UUID]
    ) -> dict[UUID, bytes]:
        rows = await _by_ids(self._x, "entries_of", conversation_id, message_ids)
        return {self._x.to_uuid(message_id): bytes(entry) for message_id, entry in rows}

    async def describe(self, conversation_id: UUID) -> ConversationRecord:
        return await _record(self._x, conversation_id)

    async def conversation_page(self, selection: ConversationRange) -> Page[ConversationRecord]:
        labels = [(key, value.encode()) for key, value in sorted(selection.labels.items())]
        params = range_params(selection)
        newest = selection.newest_first
        query = "conversations_newest_first" if newest else "conversations_oldest_first"
        if labels:
            cap = {"cap": DRIVING_LABEL_CAP}
            matches = await self._x.labelled_rows("label_matches", cap, labels)
            driver, carrying = min(matches, key=lambda match: (match[1], match[0]))
            if not carrying:
                return Page([], more=False)
            if carrying < DRIVING_LABEL_CAP:
                query = "conversations_by_label"
                params |= {
                    "driver_key": driver,
                    "driver_value": selection.labels[driver].encode(),
                    "newest_first": newest,
                }
        rows = await self._x.labelled_rows(query, params, labels)
        page = common.limited_page(rows, selection.limit)
        ids = [self._x.to_uuid(row[0]) for row in page.rows]
        labels_by_id = await _labels(self._x, ids)
        records = [
            common.conversation_record(conversation_id, row[1:], labels_by_id.get(conversation_id))
            for conversation_id, row in zip(ids, page.rows, strict=True)
        ]
        return Page(records, page.more)

    async def snapshot_list(
        self, conversation_id: UUID, after: tuple[int, UUID], limit: int
    ) -> Page[Snapshot]:
        params = {
            "conversation": conversation_id,
            "after_at": common.Micros(after[0]),
            "after_id": after[1],
            "limit": limit + 1,
        }
        page = common.limited_page(await self._x.rows("snapshots_after", params), limit)
        snapshots = [
            Snapshot(self._x.to_uuid(snapshot_id), conversation_id, created_at, item_count)
            for snapshot_id, created_at, item_count in page.rows
        ]
        return Page(snapshots, page.more)

    async def snapshot(self, snapshot_id: UUID) -> Snapshot:
        row = await self._x.row("snapshot", {"snapshot": snapshot_id})
        if row is None:
            raise common.snapshot_not_found(snapshot_id)
        conversation_id, created_at, item_count = row
        return Snapshot(snapshot_id, self._x.to_uuid(conversation_id), created_at, item_count)

    async def snapshot_message_page(
        self, snapshot: Snapshot, after: int, limit: int, body_budget: int
    ) -> Page[tuple[int, bytes]]:
        params = {
            "conversation": snapshot.conversation_id,
            "snapshot": snapshot.id,
            "after": after,
            "limit": limit + 1,
            "budget": body_budget,
        } | common.id_slice(after, limit + 1)
        return await self._x.page("snapshot_message_page", params, limit, body_budget)

    async def snapshot_id_page(
        self, snapshot: Snapshot, after: int, limit: int
    ) -> Page[tuple[int, UUID]]:
        params = {
            "conversation": snapshot.conversation_id,
            "snapshot": snapshot.id,
        } | common.id_slice(after, limit + 1)
        row = await self._x.row("snapshot_id_slice", params)
        ids = common.unpack_ids(bytes(row[0])) if row and row[0] is not None else []
        return common.limited_page(list(enumerate(ids, start=after + 1)), limit)

    # -- the companion API: scoped state

    async def scoped_state(self, scope: Scope) -> StoredState | None:
        row = await self._x.row("scoped_state", {"scope": scope.key})
        return None if row is None else StoredState(bytes(row[0]), row[1])


class StateWrite(StateWriter):
    """Changes to state scopes: UpdateState's whole transaction, and part
    of every conversation's write transaction (AppendMessagesWithState)."""

    __slots__ = ("_x",)

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def hold_conversations(self, conversation_ids: Sequence[UUID]) -> set[UUID]:
        if not conversation_ids:
            return set()
        params = {"packed": common.pack_ids(conversation_ids)}
        rows = await self._x.rows("hold_conversations", params)
        return {self._x.to_uuid(found) for (found,) in rows}

    async def lock_states(self, scopes: Sequence[Scope]) -> dict[str, StoredState]:
        if not scopes:
            return {}
        # The absent rows are made first (a concurrent maker of the same one
        # makes this wait for its outcome), so that every row exists to be
        # locked: two updates of a new scope then apply one after the other.
        columns: dict[str, list[Any]] = {
            "scope": [scope.key for scope in scopes],
            "owner": [scope.conversation_id for scope in scopes],
        }
        await self._x.run(Statement("create_scopes", {}, columns))
        keys = {"scopes": json.dumps([scope.key for scope in scopes])}
        found = {
            key: StoredState(bytes(values_json), version)
            for key, values_json, version in await self._x.rows("lock_scopes", keys)
        }
        return {scope.key: found.get(scope.key, EMPTY_STATE) for scope in scopes}

    async def save_states(self, states: Sequence[tuple[Scope, StoredState]]) -> None:
        if states:
            columns: dict[str, list[Any]] = {
                "scope": [scope.key for scope, _ in states],
                "values_json": [state.values_json for _, state in states],
                "version": [state.version for _, state in states],
            }
            await self._x.run(Statement("save_states", {}, columns))

    async def recall_call(self, subject: str, key: str) -> RememberedCall | None:
        row = await self._x.row("recall_call", {"subject": subject, "key": key})
        if row is None:
            return None
        fingerprint, response, created_at, owner = row
        found = None if owner is None else self._x.to_uuid(owner)
        return RememberedCall(bytes(fingerprint), bytes(response), created_at, owner=found)

    async def keep_call(
        self, subject: str, key: str, call: RememberedCall, expired_at: int
    ) -> bool:
        params = {
            "subject": subject,
            "key": key,
            "owner": call.owner,
            "fingerprint": call.fingerprint,
            "response": call.response,
            "created_at": common.Micros(call.created_at),
            "expired_at": common.Micros(expired_at),
        }
        return bool(await self._x.rows("keep_call", params))


@dataclass(frozen=True, slots=True)
class Recalled:
    """What an idempotency key kept, read once the conversation was locked."""

    key: str
    call: RememberedCall | None


class Write(StateWrite, WriteTransaction):
    __slots__ = ("_created", "_id", "_recalled", "_state")

    def __init__(
        self,
        executor: Executor,
        state: ConversationState,
        created: bool,
        recalled: Recalled | None = None,
    ) -> None:
        super().__init__(executor)
        self._id = state.id
        self._state = state
        self._created = created
        self._recalled = recalled

    @property
    def state(self) -> ConversationState:
        return self._state

    @property
    def created(self) -> bool:
        return self._created

    async def record(self) -> ConversationRecord:
        return await _record(self._x, self._id)

    async def save_record(self, record: ConversationRecord) -> None:
        conversation = {"conversation": self._id}
        statements = [
            Statement("save_record", record_params(record)),
            Statement("clear_labels", conversation),
        ]
        if labels := record.details.labels:
            columns: dict[str, list[Any]] = {
                "key": list(labels),
                "value": [value.encode() for value in labels.values()],
            }
            statements.append(Statement("insert_labels", conversation, columns))
        await self._x.run(*statements)

    async def erase(self) -> Erased:
        conversation = {"conversation": self._id}
        row = await self._x.row("conversation_contents", conversation)
        assert row is not None
        await self._x.run(*_erasure([self._id]))
        return Erased(messages=row[0], snapshots=row[1])

    async def lookup(
        self, message_ids: Sequence[UUID], conversation_id: UUID | None = None
    ) -> dict[UUID, int | None]:
        owner = self._id if conversation_id is None else conversation_id
        rows = await _by_ids(self._x, "lookup", owner, message_ids)
        return {self._x.to_uuid(message_id): position for message_id, position in rows}

    async def hold(self, conversation_id: UUID) -> ConversationState:
        return await _conversation(self._x, "hold_conversation", conversation_id)

    async def originals(
        self, conversation_id: UUID, after: int, last: int, limit: int
    ) -> list[Original]:
        params = {"conversation": conversation_id, "after": after, "last": last, "limit": limit}
        to_uuid = self._x.to_uuid
        return [
            Original(
                position,
                MessageHeader(
                    to_uuid(message_id), role, bytes(kind).decode(), body_length, created_at
                ),
            )
            for position, message_id, role, kind, body_length, created_at in await self._x.rows(
                "originals", params
            )
        ]

    async def copy_messages(self, source: UUID, copies: Sequence[MessageCopy]) -> None:
        if not copies:
            return
        columns: dict[str, list[Any]] = {
            "original": [copy.original for copy in copies],
            "id": [copy.item.message_id for copy in copies],
            "position": [copy.item.position for copy in copies],
            "head": [copy.wire_head for copy in copies],
            "tail": [copy.wire_tail for copy in copies],
        }
        params = {"conversation": self._id, "source": source}
        await self._x.run(Statement("copy_messages", params, columns))

    async def items_between(self, lower: int, upper: int | None) -> list[Item]:
        params = {"conversation": self._id, "lower": lower, "upper": upper}
        query = "items_from" if upper is None else "items_between"
        return _items(self._x, await self._x.rows(query, params))

    async def items_before(self, position: int, limit: int) -> list[Item]:
        params = {"conversation": self._id, "position": position, "limit": limit}
        return _items(self._x, await self._x.rows("items_before", params))

    async def items_after(self, position: int, limit: int) -> list[Item]:
        params = {"conversation": self._id, "position": position, "limit": limit}
        return _items(self._x, await self._x.rows("items_after", params))

    async def insert_messages(self, messages: Sequence[NewMessage]) -> None:
        if messages:
            await self._x.run(self._insert(messages, [None] * len(messages)))

    async def append(
        self, messages: Sequence[NewMessage], items: Sequence[Item], state: ConversationState
    ) -> None:
        positions = [item.position for item in items]
        if self._x.joined_append:
            params = save_params(state) | largest_entry(messages)
            columns = message_columns(messages) | {"position": positions}
            await self._x.run(Statement("append", params, columns))
        else:
            await self._x.run(self._insert(messages, positions), _save(state))

    async def place(self, items: Sequence[Item]) -> None:
        if items:
            await self._x.run(self._place(items))

    async def unplace(self, message_ids: Sequence[UUID]) -> None:
        if message_ids:
            await self._x.run(self._by_id("unplace", message_ids))

    async def delete(self, message_ids: Sequence[UUID]) -> None:
        if message_ids:
            await self._x.run(self._by_id("delete_messages", message_ids))

    async def renumber(self, renumbering: Renumbering) -> None:
        conversation = {"conversation": self._id}
        statements: list[Statement] = []
        if moves := common.parked_moves(renumbering):
            columns = {
                "old_position": [old for old, _ in moves],
                "parked": [parked for _, parked in moves],
            }
            statements.append(Statement("park_renumbered", conversation, columns))
            statements.append(Statement("settle_renumbered", conversation))
        record = common.renumbering_record(renumbering) | conversation
        statements.append(Statement("record_renumbering", record))
        await self._x.run(*statements)

    async def save(self, state: ConversationState) -> None:
        await self._x.run(_save(state))

    async def recall(self, key: str) -> RememberedCall | None:
        if self._recalled is not None and self._recalled.key == key:
            return self._recalled.call
        return common.remembered(
            await self._x.row("recall", {"conversation": self._id, "key": key})
        )

    async def remember(self, key: str, call: RememberedCall) -> None:
        params = {
            "conversation": self._id,
            "key": key,
            "fingerprint": call.fingerprint,
            "response": call.response,
            "created_at": common.Micros(call.created_at),
        }
        await self._x.run(Statement("remember", params))
        if self._recalled is not None and self._recalled.key == key:
            # What the lock's read found is replaced: a later recall sees this.
            self._recalled = Recalled(key, call)

    async def create_snapshot(self, snapshot: Snapshot, message_ids: Sequence[UUID]) -> int:
        common.check_snapshot_owner(snapshot, self._id)
        params = {
            "conversation": self._id,
            "snapshot": snapshot.id,
            "created_at": common.Micros(snapshot.created_at),
            "item_count": len(message_ids),
            "packed": common.pack_ids(message_ids),
        }
        insert = Statement("insert_snapshot", params)
        if not message_ids:
            await self._x.run(insert)
            return 0
        return await self._x.freeze(insert)

    def _insert(self, messages: Sequence[NewMessage], positions: Sequence[int | None]) -> Statement:
        params = {"conversation": self._id} | largest_entry(messages)
        columns = message_columns(messages) | {"position": list(positions)}
        return Statement("insert_messages", params, columns)

    def _place(self, items: Sequence[Item]) -> Statement:
        return Statement("place", {"conversation": self._id}, place_columns(items))

    def _by_id(self, query: str, message_ids: Sequence[UUID]) -> Statement:
        return Statement(query, {"conversation": self._id}, {"id": list(message_ids)})


def _save(state: ConversationState) -> Statement:
    return Statement("save_conversation", save_params(state))


async def _conversation(executor: Executor, query: str, conversation_id: UUID) -> ConversationState:
    """The conversation's row by `query`; raises ConversationNotFound."""
    row = await executor.row(query, {"conversation": conversation_id})
    if row is None:
        raise conversation_not_found(conversation_id)
    return common.conversation_state(conversation_id, row)


async def _by_ids(
    executor: Executor, query: str, conversation_id: UUID, message_ids: Sequence[UUID]
) -> list[Row]:
    """The rows of a query over the named messages of a conversation
    (none named: none)."""
    if not message_ids:
        return []
    params = {"conversation": conversation_id, "packed": common.pack_ids(message_ids)}
    return await executor.rows(query, params)


def _erasure(conversation_ids: Sequence[UUID]) -> list[Statement]:
    """Erasing locked conversations: the frozen copies and bodies of their
    snapshots (which refer to no conversation row), then their rows, which
    every other table's rows follow (ON DELETE CASCADE). DeleteConversation
    and the retention sweeper both erase so."""
    erased = {"erased": list(conversation_ids)}
    return [
        Statement("erase_frozen_messages", {}, erased),
        Statement("erase_frozen_bodies", {}, erased),
        Statement("erase_conversations", {}, erased),
    ]


async def _record(executor: Executor, conversation_id: UUID) -> ConversationRecord:
    """The conversation's row and labels; raises ConversationNotFound."""
    row = await executor.row("conversation_record", {"conversation": conversation_id})
    if row is None:
        raise conversation_not_found(conversation_id)
    labels = await _labels(executor, [conversation_id])
    return common.conversation_record(conversation_id, row, labels.get(conversation_id))


async def _labels(
    executor: Executor, conversation_ids: Sequence[UUID]
) -> dict[UUID, dict[str, str]]:
    """The labels of each of the conversations that has any."""
    labels: dict[UUID, dict[str, str]] = {}
    if not conversation_ids:
        return labels
    params = {"packed": common.pack_ids(conversation_ids)}
    for conversation_id, key, value in await executor.rows("labels_of", params):
        labels.setdefault(executor.to_uuid(conversation_id), {})[key] = bytes(value).decode()
    return labels


def _items(executor: Executor, rows: Sequence[Row]) -> list[Item]:
    to_uuid = executor.to_uuid
    return [Item(position, to_uuid(message_id)) for position, message_id in rows]


class StoreOperations(Store):
    """The Store-level operations' shared half: their parameters and result.
    Each backend runs them itself (see the module docstring)."""

    async def append_at_tail(
        self,
        conversation_id: UUID,
        messages: Sequence[NewMessage],
        *,
        updated_at: int,
        gap: int,
        max_position: int,
        if_version: int | None = None,
        key: AppendKey | None = None,
    ) -> ConversationState | None:
        params = {
            "conversation": conversation_id,
            "count": len(messages),
            "updated_at": common.Micros(updated_at),
            "gap": gap,
            "max_position": max_position,
            "if_version": if_version,
            "key": None if key is None else key.key,
            "fingerprint": None if key is None else key.fingerprint,
            "response": None if key is None else key.appended,
        } | largest_entry(messages)
        row = await self._append_at_tail(params, messages)
        return None if row is None else common.conversation_state(conversation_id, row)

    async def forget_calls(self, created_before: int, limit: int) -> int:
        return await self._forget_calls(
            {"created_before": common.Micros(created_before), "limit": limit}
        )

    @abstractmethod
    async def _append_at_tail(
        self, params: dict[str, Any], messages: Sequence[NewMessage]
    ) -> Row | None:
        """Run append_at_tail (`params`: its parameters but the messages'
        columns, message_columns), keeping the key when `params` has one;
        its row, or None when nothing was written (also when the key was
        already there)."""

    @abstractmethod
    async def _forget_calls(self, params: Params) -> int:
        """Run forget_calls; how many keys went."""

    # -- the companion API: scoped state and retention

    @asynccontextmanager
    async def write_state(self) -> AsyncIterator[StateWriter]:
        async with self._unlocked() as executor:
            yield StateWrite(executor)

    @asynccontextmanager
    async def sweep(self) -> AsyncIterator[SweepTransaction]:
        async with self._unlocked() as executor:
            yield Sweep(executor)

    @abstractmethod
    def _unlocked(self) -> AbstractAsyncContextManager[Executor]:
        """A write transaction that locks no conversation by itself, over
        the dialect's executor; commits when the block ends normally."""

    @abstractmethod
    def _reading(self) -> AbstractAsyncContextManager[Executor]:
        """A read-only transaction over one consistent state, over the
        dialect's executor."""

    # -- the checkpoint store

    @asynccontextmanager
    async def read_checkpoints(self) -> AsyncIterator[CheckpointReader]:
        async with self._reading() as executor:
            yield CheckpointRead(executor)

    @asynccontextmanager
    async def write_checkpoints(self) -> AsyncIterator[CheckpointWriter]:
        async with self._unlocked() as executor:
            yield CheckpointWrite(executor)


# --- Retention ------------------------------------------------------------------------


class Sweep(SweepTransaction):
    """One batch of the retention sweeper. PostgreSQL locks with FOR UPDATE
    SKIP LOCKED, so servers sweeping at once share the work and never take
    the same conversation; SQLite's one writer needs no more."""

    __slots__ = ("_x",)

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def lock_idle(self, now: int, default_max_idle: int, limit: int) -> list[UUID]:
        rows = await self._x.rows(
            "idle_by_own_retention", {"now": common.Micros(now), "limit": limit}
        )
        if default_max_idle and len(rows) < limit:
            # Clamped: a cutoff before year 1 holds nothing older anyway.
            cutoff = max(now - default_max_idle, common.EARLIEST)
            params = {"cutoff": common.Micros(cutoff), "limit": limit - len(rows)}
            rows += await self._x.rows("idle_by_default", params)
        return [self._x.to_uuid(found) for (found,) in rows]

    async def erase(self, conversation_ids: Sequence[UUID]) -> None:
        if conversation_ids:
            await self._x.run(*_erasure(conversation_ids))

    async def lock_overlong(self, default_max_messages: int, limit: int) -> list[Overlong]:
        to_uuid = self._x.to_uuid
        found = [
            Overlong(to_uuid(conversation_id), count, kept)
            for conversation_id, count, kept in await self._x.rows(
                "overlong_by_own_retention", {"limit": limit}
            )
        ]
        if default_max_messages and len(found) < limit:
            params = {"max_messages": default_max_messages, "limit": limit - len(found)}
            found += [
                Overlong(to_uuid(conversation_id), count, default_max_messages)
                for conversation_id, count in await self._x.rows("overlong_by_default", params)
            ]
        return found

    async def trim(self, trims: Sequence[Trim]) -> None:
        if trims:
            columns: dict[str, list[Any]] = {
                "trimmed": [trim.conversation_id for trim in trims],
                "count": [trim.count for trim in trims],
            }
            await self._x.run(
                Statement("trim_messages", {}, columns),
                Statement("shorten_conversations", {}, columns),
            )


# --- Checkpoints (agentstate.v1.CheckpointsService) ----------------------------------
#
# Every text key (thread, namespace, checkpoint id, channel, version, task)
# is stored as its UTF-8 bytes: both dialects then compare and order them
# byte for byte, whatever the database's collation. Lists of keys a query
# reads travel as one JSON array (keys of several parts as arrays of
# them), digests packed 32 bytes each.


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def _text(value: Any) -> str:
    return bytes(value).decode("utf-8")


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _json_keys(keys: Sequence[Sequence[str]] | Sequence[str]) -> str:
    return json.dumps(list(keys), ensure_ascii=False)


def _checkpoint_row(thread_id: str, checkpoint_ns: str, row: Row) -> CheckpointRow:
    """A row of checkpoint_columns (after thread and namespace)."""
    checkpoint_id, parent, kind, data, metadata, versions = row
    return CheckpointRow(
        CheckpointKey(thread_id, checkpoint_ns, _text(checkpoint_id)),
        _optional_text(parent),
        (_text(kind), bytes(data)),
        _text(metadata),
        json.loads(bytes(versions)),
    )


def _digests(packed: Any) -> tuple[bytes, ...]:
    return common.unpack_digests(bytes(packed))


class CheckpointRead(CheckpointReader):
    __slots__ = ("_x",)

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def checkpoint(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        params: dict[str, Any] = {"thread": _utf8(thread_id), "ns": _utf8(checkpoint_ns)}
        if checkpoint_id is None:
            row = await self._x.row("latest_checkpoint", params)
        else:
            params["checkpoint"] = _utf8(checkpoint_id)
            row = await self._x.row("checkpoint", params)
        return None if row is None else _checkpoint_row(thread_id, checkpoint_ns, row)

    async def checkpoint_page(self, selection: CheckpointRange) -> list[CheckpointRow]:
        below_id, below_ns, below_thread = selection.below
        params: dict[str, Any] = {"below_id": _utf8(below_id), "limit": selection.limit}
        if selection.thread_id is not None and selection.checkpoint_ns is not None:
            params |= {
                "thread": _utf8(selection.thread_id),
                "ns": _utf8(selection.checkpoint_ns),
            }
            rows = await self._x.rows("namespace_checkpoints", params)
            return [
                _checkpoint_row(selection.thread_id, selection.checkpoint_ns, row) for row in rows
            ]
        params["below_ns"] = _utf8(below_ns)
        if selection.thread_id is not None:
            params["thread"] = _utf8(selection.thread_id)
            rows = await self._x.rows("thread_checkpoints_page", params)
            return [_checkpoint_row(selection.thread_id, _text(row[0]), row[1:]) for row in rows]
        any_ns = selection.checkpoint_ns is None
        params |= {
            "below_thread": _utf8(below_thread),
            "any_ns": any_ns,
            "ns": _utf8("" if any_ns else selection.checkpoint_ns or ""),
        }
        rows = await self._x.rows("every_checkpoint_page", params)
        return [_checkpoint_row(_text(row[0]), _text(row[1]), row[2:]) for row in rows]

    async def values(self, keys: Sequence[ValueKey]) -> dict[ValueKey, StoredValue]:
        if not keys:
            return {}
        wanted = _json_keys(
            [[key.thread_id, key.checkpoint_ns, key.channel, key.version] for key in keys]
        )
        links: dict[ValueKey, list[tuple[int, bool, bytes]]] = {}
        for thread, ns, channel, version, depth, is_list, packed in await self._x.rows(
            "value_chains", {"wanted": wanted}
        ):
            key = ValueKey(_text(thread), _text(ns), _text(channel), _text(version))
            links.setdefault(key, []).append((depth, bool(is_list), bytes(packed)))
        found: dict[ValueKey, StoredValue] = {}
        for key, chain in links.items():
            # The deepest base holds the first items; the head says what the value is.
            chain.sort(reverse=True)
            digests = tuple(d for _, _, packed in chain for d in common.unpack_digests(packed))
            found[key] = StoredValue(chain[-1][1], digests)
        return found

    async def value_heads(
        self, thread_id: str, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], ValueHead]:
        if not keys:
            return {}
        params = {"thread": _utf8(thread_id), "wanted": _json_keys([list(key) for key in keys])}
        return {
            (ns, channel, version): ValueHead(bool(is_list), depth, length, bytes(digest))
            for ns, channel, version, is_list, depth, length, digest in await self._x.rows(
                "value_heads", params
            )
        }

    async def pending_writes(
        self, keys: Sequence[CheckpointKey]
    ) -> dict[CheckpointKey, list[StoredWrite]]:
        if not keys:
            return {}
        wanted = _json_keys([[k.thread_id, k.checkpoint_ns, k.checkpoint_id] for k in keys])
        found: dict[CheckpointKey, list[StoredWrite]] = {}
        for row in await self._x.rows("pending_writes", {"wanted": wanted}):
            thread, ns, checkpoint, task, path, idx, channel, is_list, packed = row
            key = CheckpointKey(_text(thread), _text(ns), _text(checkpoint))
            write = StoredWrite(
                _text(task),
                _text(path),
                idx,
                _text(channel),
                StoredValue(bool(is_list), _digests(packed)),
            )
            found.setdefault(key, []).append(write)
        return found

    async def blobs(self, thread_id: str, digests: Sequence[bytes]) -> dict[bytes, Blob]:
        if not digests:
            return {}
        params = {"thread": _utf8(thread_id), "packed": b"".join(digests)}
        return {
            bytes(digest): Blob(bytes(digest), _text(kind), bytes(data))
            for digest, kind, data in await self._x.rows("blobs_of", params)
        }


class CheckpointWrite(CheckpointRead, CheckpointWriter):
    __slots__ = ()

    async def hold_thread(self, thread_id: str) -> str:
        params = {"thread": _utf8(thread_id)}
        await self._x.run(Statement("create_thread", params))
        row = await self._x.row("hold_thread", params)
        assert row is not None
        return _text(row[0])

    async def create_thread(self, thread_id: str) -> None:
        await self._x.run(Statement("create_thread", {"thread": _utf8(thread_id)}))

    async def lock_threads(self, thread_ids: Sequence[str]) -> dict[str, str]:
        if not thread_ids:
            return {}
        rows = await self._x.rows("lock_threads", {"threads": _json_keys(thread_ids)})
        return {_text(thread): _text(erased) for thread, erased in rows}

    async def stored(
        self, thread_id: str, checkpoint_ns: str, checkpoint_ids: Sequence[str]
    ) -> set[str]:
        params = {
            "thread": _utf8(thread_id),
            "ns": _utf8(checkpoint_ns),
            "ids": _json_keys(checkpoint_ids),
        }
        return {_text(found) for (found,) in await self._x.rows("stored_checkpoints", params)}

    async def put_checkpoint(
        self, row: CheckpointRow, blobs: Sequence[Blob], values: Sequence[NewValue]
    ) -> None:
        key = row.key
        thread = {"thread": _utf8(key.thread_id)}
        statements = []
        if blobs:
            statements.append(_insert_blobs(thread, blobs))
        if values:
            columns: dict[str, list[Any]] = {
                "channel": [_utf8(value.channel) for value in values],
                "version": [_utf8(value.version) for value in values],
                "is_list": [value.is_list for value in values],
                "base_version": [
                    None if value.base_version is None else _utf8(value.base_version)
                    for value in values
                ],
                "depth": [value.depth for value in values],
                "length": [value.length for value in values],
                "list_sha256": [value.list_sha256 for value in values],
                "items": [b"".join(value.digests) for value in values],
            }
            params = thread | {"ns": _utf8(key.checkpoint_ns)}
            statements.append(Statement("insert_values", params, columns))
        kind, data = row.checkpoint
        checkpoint = thread | {
            "ns": _utf8(key.checkpoint_ns),
            "checkpoint": _utf8(key.checkpoint_id),
            "parent": None if row.parent_id is None else _utf8(row.parent_id),
            "type": _utf8(kind),
            "data": data,
            "metadata": _utf8(row.metadata_json),
            "versions": _utf8(json.dumps(dict(row.channel_versions), ensure_ascii=False)),
            "run": None if row.run_id is None else _utf8(row.run_id),
        }
        statements.append(Statement("put_checkpoint", checkpoint))
        await self._x.run(*statements)

    async def put_writes(
        self,
        key: CheckpointKey,
        task_id: str,
        task_path: str,
        blobs: Sequence[Blob],
        writes: Sequence[NewWrite],
    ) -> None:
        thread = {"thread": _utf8(key.thread_id)}
        statements = [_insert_blobs(thread, blobs)] if blobs else []
        params = thread | {
            "ns": _utf8(key.checkpoint_ns),
            "checkpoint": _utf8(key.checkpoint_id),
            "task": _utf8(task_id),
            "task_path": _utf8(task_path),
        }
        columns: dict[str, list[Any]] = {
            "idx": [write.idx for write in writes],
            "channel": [_utf8(write.channel) for write in writes],
            "is_list": [write.is_list for write in writes],
            "items": [b"".join(write.digests) for write in writes],
        }
        statements.append(Statement("put_writes", params, columns))
        await self._x.run(*statements)

    async def greatest_ids(self, thread_id: str) -> tuple[str, str]:
        row = await self._x.row("greatest_ids", {"thread": _utf8(thread_id)})
        assert row is not None
        return (
            "" if row[0] is None else _text(row[0]),
            "" if row[1] is None else _text(row[1]),
        )

    async def erase_thread(self, thread_id: str, erased_through: str) -> int:
        thread = {"thread": _utf8(thread_id)}
        row = await self._x.row("count_checkpoints", thread)
        assert row is not None
        await self._x.run(
            *_thread_erasure(thread),
            Statement("mark_erased", thread | {"erased": _utf8(erased_through)}),
        )
        count: int = row[0]
        return count

    async def copy_thread(self, source: str, target: str) -> int:
        params = {"source": _utf8(source), "target": _utf8(target)}
        await self._x.run(
            *(
                Statement(query, params)
                for query in ("copy_checkpoints", "copy_values", "copy_writes", "copy_blobs")
            )
        )
        row = await self._x.row("count_checkpoints", {"thread": params["target"]})
        assert row is not None
        count: int = row[0]
        return count

    async def thread_checkpoints(self, thread_id: str) -> list[CheckpointRow]:
        rows = await self._x.rows("thread_checkpoints", {"thread": _utf8(thread_id)})
        return [
            CheckpointRow(
                CheckpointKey(thread_id, _text(ns), _text(checkpoint)),
                _optional_text(parent),
                ("", b""),
                "",
                json.loads(bytes(versions)),
                _optional_text(run),
            )
            for ns, checkpoint, parent, versions, run in rows
        ]

    async def run_checkpoints(self, run_ids: Sequence[str]) -> list[CheckpointKey]:
        if not run_ids:
            return []
        rows = await self._x.rows("run_checkpoints", {"runs": _json_keys(run_ids)})
        return [CheckpointKey(_text(t), _text(n), _text(c)) for t, n, c in rows]

    async def delete_checkpoints(self, thread_id: str, keys: Sequence[CheckpointKey]) -> None:
        if not keys:
            return
        thread = {"thread": _utf8(thread_id)}
        columns: dict[str, list[Any]] = {
            "ns": [_utf8(key.checkpoint_ns) for key in keys],
            "checkpoint": [_utf8(key.checkpoint_id) for key in keys],
        }
        await self._x.run(
            Statement("delete_checkpoints", thread, columns),
            Statement("delete_checkpoint_writes", thread, columns),
            Statement("orphan_children", thread),
        )

    async def thread_values(self, thread_id: str) -> list[ThreadValue]:
        rows = await self._x.rows("thread_values", {"thread": _utf8(thread_id)})
        return [
            ThreadValue(
                ValueKey(thread_id, _text(ns), _text(channel), _text(version)),
                _optional_text(base),
                _digests(packed),
            )
            for ns, channel, version, base, packed in rows
        ]

    async def thread_write_digests(self, thread_id: str) -> set[bytes]:
        rows = await self._x.rows("thread_write_items", {"thread": _utf8(thread_id)})
        return {digest for (packed,) in rows for digest in _digests(packed)}

    async def thread_blob_digests(self, thread_id: str) -> set[bytes]:
        rows = await self._x.rows("thread_blob_digests", {"thread": _utf8(thread_id)})
        return {bytes(digest) for (digest,) in rows}

    async def delete_values(self, keys: Sequence[ValueKey]) -> None:
        if not keys:
            return
        columns: dict[str, list[Any]] = {
            "thread": [_utf8(key.thread_id) for key in keys],
            "ns": [_utf8(key.checkpoint_ns) for key in keys],
            "channel": [_utf8(key.channel) for key in keys],
            "version": [_utf8(key.version) for key in keys],
        }
        await self._x.run(Statement("delete_values", {}, columns))

    async def delete_blobs(self, thread_id: str, digests: Sequence[bytes]) -> None:
        if digests:
            await self._x.run(
                Statement("delete_blobs", {"thread": _utf8(thread_id)}, {"sha256": list(digests)})
            )


def _insert_blobs(thread: Params, blobs: Sequence[Blob]) -> Statement:
    columns: dict[str, list[Any]] = {
        "sha256": [blob.sha256 for blob in blobs],
        "type": [_utf8(blob.type) for blob in blobs],
        "data": [blob.data for blob in blobs],
    }
    return Statement("insert_blobs", thread, columns)


def _thread_erasure(thread: Params) -> list[Statement]:
    return [
        Statement(query, thread)
        for query in ("erase_checkpoints", "erase_values", "erase_writes", "erase_blobs")
    ]
