"""The one narrow interface between the conversation rules and a database.

Operations are shaped after what the service needs, not after tables. A
backend implements `Store`, `ReadTransaction` and `WriteTransaction`; the
shared suite in tests/storage runs the same assertions against every
backend. Backends contain no conversation rules: they store and fetch what
the service decides, and raise only the errors named here
(ConversationNotFound, SnapshotNotFound, StorageUnavailable).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from uuid import UUID

from ..model import (
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


class ReadTransaction(ABC):
    """Reads that see one consistent state of the database."""

    @abstractmethod
    async def conversation(self, conversation_id: UUID) -> ConversationState:
        """The conversation's row; raises ConversationNotFound."""

    @abstractmethod
    async def renumberings_since(
        self, conversation_id: UUID, layout_version: int
    ) -> list[Renumbering]:
        """Renumberings with a layout version above `layout_version`, oldest first."""

    @abstractmethod
    async def message_page(
        self,
        conversation_id: UUID,
        after: int,
        limit: int,
        roles: frozenset[int],
        kinds: frozenset[str],
        body_budget: int,
    ) -> tuple[ConversationState, Page[tuple[int, bytes]]]:
        """The conversation's row and its ordered entries with position >
        `after`, each with its message's encoding (``wire_head + body +
        wire_tail``); raises ConversationNotFound.

        At most `limit` rows, matching `roles` and `kinds` (an empty set
        matches everything). A row is returned only while the encodings of
        the rows before it add up to less than `body_budget` bytes, so a
        page stops early on large messages; the first row always comes back.
        `more` is True when further matching rows exist.

        The row and the page are read in one step that sees one consistent
        state by itself, so it may run under `Store.read_once` (a list
        call's hot path). `after` is only meaningful in the layout the
        caller saw: a caller whose position comes from another
        layout_version must read through `Store.read`.
        """

    @abstractmethod
    async def tail_page(
        self,
        conversation_id: UUID,
        count: int,
        roles: frozenset[int],
        kinds: frozenset[str],
        body_budget: int,
    ) -> tuple[ConversationState, Page[tuple[int, bytes]]]:
        """The conversation's row and the last `count` entries of its
        ordering that match `roles` and `kinds` (an empty set matches
        everything), newest first, each with its message's encoding;
        raises ConversationNotFound.

        A row is returned only while the encodings of the rows before it
        add up to less than `body_budget` bytes; the first (the newest)
        always comes back. `more` is True when the budget left out some of
        the `count`. Reads no entry past the last it returns, and, as
        message_page, sees one consistent state by itself, so it may run
        under `Store.read_once`."""

    @abstractmethod
    async def id_page(self, conversation_id: UUID, after: int, limit: int) -> Page[Item]:
        """Ordered entries with position > `after`, at most `limit`."""

    @abstractmethod
    async def entry_sizes(
        self, conversation_id: UUID, message_ids: Sequence[UUID]
    ) -> dict[UUID, int]:
        """Of the given ids, those of messages in the conversation's
        ordering, mapped to the size of their encoding (found without
        reading the encoding)."""

    @abstractmethod
    async def entries(
        self, conversation_id: UUID, message_ids: Sequence[UUID]
    ) -> dict[UUID, bytes]:
        """The encodings of those of the given messages that are in the
        conversation's ordering."""

    @abstractmethod
    async def describe(self, conversation_id: UUID) -> ConversationRecord:
        """The conversation with its details and labels; raises
        ConversationNotFound. Two reads: consistent under `Store.read`."""

    @abstractmethod
    async def conversation_page(self, selection: ConversationRange) -> Page[ConversationRecord]:
        """The conversations `selection` names, in its order, with their
        details and labels; `more` is True when further ones exist. Reads
        no message. Two reads: consistent under `Store.read`."""

    @abstractmethod
    async def snapshot_list(
        self, conversation_id: UUID, after: tuple[int, UUID], limit: int
    ) -> Page[Snapshot]:
        """The conversation's snapshots whose key (created_at, id) is above
        `after`, oldest first (by that key), at most `limit`."""

    @abstractmethod
    async def snapshot(self, snapshot_id: UUID) -> Snapshot:
        """The snapshot's row; raises SnapshotNotFound."""

    @abstractmethod
    async def snapshot_message_page(
        self, snapshot: Snapshot, after: int, limit: int, body_budget: int
    ) -> Page[tuple[int, bytes]]:
        """Items with index > `after` (indexes start at 0; pass -1 for the
        first page), each with the frozen message's encoding, with `limit`
        and `body_budget` as for message_page."""

    @abstractmethod
    async def snapshot_id_page(
        self, snapshot: Snapshot, after: int, limit: int
    ) -> Page[tuple[int, UUID]]:
        """Message ids of items with index > `after`, at most `limit`."""

    # -- the companion API: scoped state

    @abstractmethod
    async def scoped_state(self, scope: Scope) -> StoredState | None:
        """The scope's state (None: nobody has updated it). One statement:
        may run under `Store.read_once`."""


class StateWriter(ABC):
    """The state half of a write transaction: changes to scopes, each
    scope's row locked until the transaction ends."""

    @abstractmethod
    async def hold_conversations(self, conversation_ids: Sequence[UUID]) -> set[UUID]:
        """Of the given conversations, those that exist; they cannot be
        deleted until the transaction ends (their rows are share-locked).
        Call it before `lock_states`, with the ids sorted."""

    @abstractmethod
    async def lock_states(self, scopes: Sequence[Scope]) -> dict[str, StoredState]:
        """The scopes' states by key, each row locked (created if absent, at
        EMPTY_STATE, and gone again if the transaction rolls back). `scopes`
        sorted by key, distinct; a conversation's scope only after
        `hold_conversations` found the conversation."""

    @abstractmethod
    async def save_states(self, states: Sequence[tuple[Scope, StoredState]]) -> None:
        """Write the states of scopes `lock_states` locked."""

    @abstractmethod
    async def recall_call(self, subject: str, key: str) -> RememberedCall | None:
        """What `keep_call` kept under this idempotency key of `subject`."""

    @abstractmethod
    async def keep_call(
        self, subject: str, key: str, call: RememberedCall, expired_at: int
    ) -> bool:
        """Keep `call` under this idempotency key of `subject` (what a call
        that belongs to no one existing conversation was about: the
        conversation it erased, the scope it changed...), unless the key
        holds a call made after `expired_at`: then keep nothing and return
        False. A concurrent keeper of the same key waits for this
        transaction's end, so one of them keeps it."""


class WriteTransaction(StateWriter):
    """A transaction holding the lock of one conversation.

    Everything done through it commits together when the ``async with``
    block exits normally, and is rolled back when it raises.
    """

    @property
    @abstractmethod
    def state(self) -> ConversationState:
        """The conversation's row as locked at the start."""

    @property
    @abstractmethod
    def created(self) -> bool:
        """Whether this transaction created the conversation (`Store.write`
        with `create`, and it was absent)."""

    @abstractmethod
    async def record(self) -> ConversationRecord:
        """The conversation with its details and labels, as this
        transaction has it now."""

    @abstractmethod
    async def save_record(self, record: ConversationRecord) -> None:
        """Write the conversation's whole row, its creation time and details
        included, and replace its labels with the record's."""

    @abstractmethod
    async def erase(self) -> Erased:
        """Delete the conversation and everything of it: its messages
        (detached ones too), ordering, renumberings, snapshots and their
        frozen copies, idempotency keys, labels and the state of its
        scope, and the keys of subjects it owns (StateWriter.keep_call).
        Returns what went. Nothing more of the conversation may be done
        through the transaction afterwards."""

    @abstractmethod
    async def lookup(
        self, message_ids: Sequence[UUID], conversation_id: UUID | None = None
    ) -> dict[UUID, int | None]:
        """Of the given ids, those that are messages of the conversation
        (or of `conversation_id`, one this transaction holds), mapped to
        their position in the ordering (None when detached)."""

    @abstractmethod
    async def hold(self, conversation_id: UUID) -> ConversationState:
        """Another conversation's row, which nobody may change, nor its
        ordering, until this transaction ends (others may still read it and
        hold it): for copying from it consistently. Raises
        ConversationNotFound."""

    @abstractmethod
    async def originals(
        self, conversation_id: UUID, after: int, last: int, limit: int
    ) -> list[Original]:
        """Up to `limit` entries of the ordering of a held conversation
        with after < position <= last, in order, each with all of its
        message but the body."""

    @abstractmethod
    async def copy_messages(self, source: UUID, copies: Sequence[MessageCopy]) -> None:
        """Store copies of messages of `source` (held) in this conversation,
        in its ordering at the copies' positions, under their ids: each
        with its original's role, kind, body, body_sha256 and created_at,
        and as its encoding the copy's head and tail around the body."""

    @abstractmethod
    async def items_between(self, lower: int, upper: int | None) -> list[Item]:
        """Entries with lower <= position <= upper (None: no upper bound), ordered."""

    @abstractmethod
    async def items_before(self, position: int, limit: int) -> list[Item]:
        """Up to `limit` entries with a position below `position`, nearest first."""

    @abstractmethod
    async def items_after(self, position: int, limit: int) -> list[Item]:
        """Up to `limit` entries with a position above `position`, nearest first."""

    @abstractmethod
    async def insert_messages(self, messages: Sequence[NewMessage]) -> None:
        """Store new messages, detached (not in the ordering)."""

    @abstractmethod
    async def append(
        self, messages: Sequence[NewMessage], items: Sequence[Item], state: ConversationState
    ) -> None:
        """Store new messages at the items' positions and save `state`, as
        one step, which a backend may send as one statement (appends are
        the hot path)."""

    @abstractmethod
    async def place(self, items: Sequence[Item]) -> None:
        """Put existing, currently detached messages into the ordering."""

    @abstractmethod
    async def unplace(self, message_ids: Sequence[UUID]) -> None:
        """Take entries out of the ordering; the messages stay, detached."""

    @abstractmethod
    async def delete(self, message_ids: Sequence[UUID]) -> None:
        """Take entries out of the ordering and delete their messages."""

    @abstractmethod
    async def renumber(self, renumbering: Renumbering) -> None:
        """Move entries to new positions (order kept) and record the change."""

    @abstractmethod
    async def save(self, state: ConversationState) -> None:
        """Write the conversation's row."""

    @abstractmethod
    async def recall(self, key: str) -> RememberedCall | None:
        """What `remember` stored for this idempotency key of the conversation."""

    @abstractmethod
    async def remember(self, key: str, call: RememberedCall) -> None:
        """Store `call` under this idempotency key of the conversation,
        replacing what the key held before."""

    @abstractmethod
    async def create_snapshot(self, snapshot: Snapshot, message_ids: Sequence[UUID]) -> int:
        """Store the snapshot with the named ids in order, freezing copies
        of the messages they name.

        Returns how many of the ids (repeats counted) are messages of the
        conversation; when that is fewer than were named, the caller must
        roll back. (Checking first would look every id up twice.)"""


class SweepTransaction(ABC):
    """A write transaction of the retention sweeper: it locks the
    conversations it works on, skipping those another transaction holds
    (another server's sweeper, a writer), so that many servers sweep one
    database without doing anything twice."""

    @abstractmethod
    async def lock_idle(self, now: int, default_max_idle: int, limit: int) -> list[UUID]:
        """Up to `limit` conversations not updated for longer than their
        max_idle (their own retention's, else `default_max_idle`; 0: kept
        forever) at `now`, locked."""

    @abstractmethod
    async def erase(self, conversation_ids: Sequence[UUID]) -> None:
        """Erase locked conversations as WriteTransaction.erase does."""

    @abstractmethod
    async def lock_overlong(self, default_max_messages: int, limit: int) -> list[Overlong]:
        """Up to `limit` conversations holding more messages than their
        max_messages (their own retention's, else `default_max_messages`;
        0: no limit), locked."""

    @abstractmethod
    async def trim(self, trims: Sequence[Trim]) -> None:
        """For each locked conversation, delete the oldest `count` entries
        of its ordering and their messages (snapshots keep their frozen
        copies), take `count` from message_count and add 1 to version;
        updated_at stays."""


class CheckpointReader(ABC):
    """Reads of the checkpoint store (agentstate.v1.CheckpointsService)."""

    @abstractmethod
    async def checkpoint(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        """The checkpoint (None: the newest of the thread's namespace), or
        None when there is none."""

    @abstractmethod
    async def checkpoint_page(self, selection: CheckpointRange) -> list[CheckpointRow]:
        """The checkpoints `selection` names, newest first."""

    @abstractmethod
    async def values(self, keys: Sequence[ValueKey]) -> dict[ValueKey, StoredValue]:
        """The stored values among `keys`, each with every digest of its
        items (those of its bases first)."""

    @abstractmethod
    async def value_heads(
        self, thread_id: str, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], ValueHead]:
        """Of the thread's values named by (namespace, channel, version),
        those stored, without their items."""

    @abstractmethod
    async def pending_writes(
        self, keys: Sequence[CheckpointKey]
    ) -> dict[CheckpointKey, list[StoredWrite]]:
        """The writes of each checkpoint that has any, in writes_sort_key
        order (task_path, task_id, idx)."""

    @abstractmethod
    async def blobs(self, thread_id: str, digests: Sequence[bytes]) -> dict[bytes, Blob]:
        """The thread's blobs among `digests`."""


class CheckpointWriter(CheckpointReader):
    """A write transaction of the checkpoint store. Writers of checkpoints
    and writes hold their thread shared (`hold_thread`); the thread-wide
    operations lock it (`lock_threads`), so they wait for each other and
    never see half of a put."""

    @abstractmethod
    async def hold_thread(self, thread_id: str) -> str:
        """Creates the thread's row if absent and holds it shared until the
        transaction ends; returns the greatest checkpoint id its erasures
        removed ("" when never erased)."""

    @abstractmethod
    async def create_thread(self, thread_id: str) -> None:
        """Creates the thread's row if absent, without holding it."""

    @abstractmethod
    async def lock_threads(self, thread_ids: Sequence[str]) -> dict[str, str]:
        """Of the given threads (sorted, distinct), those that have a row,
        locked until the transaction ends, with what `hold_thread` returns."""

    @abstractmethod
    async def stored(
        self, thread_id: str, checkpoint_ns: str, checkpoint_ids: Sequence[str]
    ) -> set[str]:
        """Of the given ids, those of checkpoints stored in the thread's
        namespace."""

    @abstractmethod
    async def put_checkpoint(
        self, row: CheckpointRow, blobs: Sequence[Blob], values: Sequence[NewValue]
    ) -> None:
        """Store the blobs the thread lacks, the values its namespace lacks,
        and the checkpoint (replacing one with its key)."""

    @abstractmethod
    async def put_writes(
        self,
        key: CheckpointKey,
        task_id: str,
        task_path: str,
        blobs: Sequence[Blob],
        writes: Sequence[NewWrite],
    ) -> None:
        """Store the blobs the thread lacks and the task's writes: one with
        idx >= 0 already stored stays, one with a negative idx replaces it."""

    @abstractmethod
    async def erase_thread(self, thread_id: str, erased_through: str) -> int:
        """Delete every checkpoint, value, write and blob of the thread and
        set its tombstone to `erased_through` (its row locked); returns the
        checkpoints deleted."""

    @abstractmethod
    async def greatest_ids(self, thread_id: str) -> tuple[str, str]:
        """The greatest checkpoint id of the thread's checkpoints and of its
        writes ("" for none)."""

    @abstractmethod
    async def copy_thread(self, source: str, target: str) -> int:
        """Copy every checkpoint, value, write and blob of `source` into
        `target` (erased before, both locked); returns the checkpoints
        copied."""

    @abstractmethod
    async def thread_checkpoints(self, thread_id: str) -> list[CheckpointRow]:
        """Every checkpoint of the thread (metadata and checkpoint bytes
        left empty), in no order."""

    @abstractmethod
    async def run_checkpoints(self, run_ids: Sequence[str]) -> list[CheckpointKey]:
        """The checkpoints whose run is one of `run_ids`, any thread."""

    @abstractmethod
    async def delete_checkpoints(self, thread_id: str, keys: Sequence[CheckpointKey]) -> None:
        """Delete these checkpoints of the (locked) thread and their writes;
        a checkpoint whose parent is no longer stored gets none."""

    @abstractmethod
    async def thread_values(self, thread_id: str) -> list[ThreadValue]:
        """Every value of the thread."""

    @abstractmethod
    async def thread_write_digests(self, thread_id: str) -> set[bytes]:
        """The digests every write of the thread names."""

    @abstractmethod
    async def thread_blob_digests(self, thread_id: str) -> set[bytes]:
        """The digests of every blob of the thread."""

    @abstractmethod
    async def delete_values(self, keys: Sequence[ValueKey]) -> None: ...

    @abstractmethod
    async def delete_blobs(self, thread_id: str, digests: Sequence[bytes]) -> None: ...


@dataclass(frozen=True)
class PoolStats:
    """The store's connections right now, for metrics."""

    open: int
    idle: int
    waiting: int
    max: int


class Store(ABC):
    """A database holding conversations. Open before use, close after."""

    @abstractmethod
    def pool_stats(self) -> PoolStats: ...

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations (migrations.load/pending) under a database
        lock, each in its own transaction; return the versions applied.
        Works on an open store; raises migrations.MigrationError on mismatch."""

    @abstractmethod
    async def pending_migrations(self) -> list[int]:
        """Versions this code has that the database lacks (after the same
        checks as migrate), without applying anything."""

    @abstractmethod
    async def analyze_tables_marked_empty(self) -> tuple[list[str], bool]:
        """Analyzes the tables that hold rows while the planner's
        statistics still say they are empty, as a fresh PostgreSQL
        database's do until autovacuum first analyzes them. Returns the
        tables analyzed and whether any is still marked empty (it holds no
        rows yet). SQLite keeps no such statistics: nothing to do."""

    @abstractmethod
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
        """The common append as one step, whose arithmetic the caller chose.

        Creates the conversation if it is absent (and `if_version` is None
        or 0: an absent conversation is at version 0). Then, only if its
        version is `if_version` (None: any), its updated_at is below
        `updated_at` and tail_position + gap * n stays within
        `max_position` (n = len(messages)): stores the messages at
        positions tail_position + gap, + 2 gap, ..., adds n to message_count,
        moves tail_position to the last of them, sets updated_at, adds 1 to
        version, and returns the new state. Otherwise it writes nothing, not
        even the conversation, and returns None (the caller then appends, or
        finds out why not, through `write`).

        With `key`, the same step keeps it (created_at: `updated_at`,
        message_count: the new one), unless the conversation already has
        that key, recent or expired: then nothing is written and it returns
        None (`write` then replays or replaces the key under the lock).
        """

    @abstractmethod
    async def forget_calls(self, created_before: int, limit: int) -> int:
        """Delete up to `limit` idempotency keys of conversations and up to
        `limit` of subjects (StateWriter.keep_call) created before
        `created_before`; return how many went."""

    @abstractmethod
    def read(self) -> AbstractAsyncContextManager[ReadTransaction]:
        """A read-only transaction over one consistent state."""

    @abstractmethod
    def read_once(self) -> AbstractAsyncContextManager[ReadTransaction]:
        """Reads without an explicit transaction, for a caller that makes
        one call that sees one consistent state by itself (`conversation`,
        `message_page`): cheaper than `read` by a BEGIN and a
        COMMIT. Two calls through it may see two different states."""

    @abstractmethod
    def write(
        self, conversation_id: UUID, *, create: bool = False, recall: str | None = None
    ) -> AbstractAsyncContextManager[WriteTransaction]:
        """A transaction that locks the conversation.

        Writers to one conversation are serialized. Writers to different
        conversations do not wait for each other where the database allows
        concurrent writers (PostgreSQL); SQLite has one writer at a time.

        With `create`, an absent conversation is created empty (and vanishes
        again if the transaction rolls back); without, an absent one raises
        ConversationNotFound.

        With `recall`, an idempotency key, the transaction reads what the
        key keeps together with the lock (PostgreSQL: in the same round
        trip), and WriteTransaction.recall of that key answers from it.
        """

    # -- the companion API: scoped state and retention

    @abstractmethod
    def write_state(self) -> AbstractAsyncContextManager[StateWriter]:
        """A write transaction that locks no conversation, for changes to
        state scopes (UpdateState)."""

    @abstractmethod
    def sweep(self) -> AbstractAsyncContextManager[SweepTransaction]:
        """A write transaction of the retention sweeper: short, one batch."""

    # -- the checkpoint store

    @abstractmethod
    def read_checkpoints(self) -> AbstractAsyncContextManager[CheckpointReader]:
        """A read-only transaction over one consistent state."""

    @abstractmethod
    def write_checkpoints(self) -> AbstractAsyncContextManager[CheckpointWriter]:
        """A write transaction that locks nothing by itself."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
