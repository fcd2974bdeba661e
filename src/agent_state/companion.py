"""The companion API's rules (agentstate.v1.ConversationsService), one
method per RPC: conversations as a whole, reading the ordering (its tail,
messages by id, the snapshots) and forking it.

As in service.py, each method checks the request (rules.py) before it
touches storage, so INVALID_ARGUMENT comes before NOT_FOUND; it opens one
storage transaction and returns typed results. It knows nothing of gRPC:
the edge (server/companion_servicer.py) maps values and errors to the wire
and gives it a CompanionCodec for the responses idempotency keys replay.

Versions: a conversation is at 1 when created and gains 1 on every change;
`expected_version` (0: no check) makes a write conditional, and a mismatch
changes nothing (VersionMismatch, ABORTED).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from . import exact_json, paging, positions, rules
from . import idempotency as idempotency_keys
from .clock import now_micros
from .errors import (
    AlreadyExists,
    ConversationNotFound,
    InvalidArgument,
    NotFound,
    StorageUnavailable,
    VersionMismatch,
    conversation_not_found,
)
from .idempotency import Idempotency
from .ids import new_id, parse_uuid
from .model import (
    EMPTY_STATE,
    ConversationInput,
    ConversationKey,
    ConversationRange,
    ConversationRecord,
    ConversationState,
    EncodedMessage,
    EncodedResponse,
    Erased,
    Item,
    MessageCopy,
    MessageHeader,
    MessageInput,
    Moment,
    Original,
    RememberedCall,
    Snapshot,
    StateUpdateInput,
    StoredState,
)
from .paging import ConversationCursor, SnapshotCursor
from .service import Appended, ConversationService
from .storage.base import StateWriter, Store, WriteTransaction

_NIL = UUID(int=0)
_LAST = UUID(int=(1 << 128) - 1)
# Below and above every key a conversation can have.
_LOWEST = ConversationKey(rules.MIN_TIME, _NIL)
_HIGHEST = ConversationKey(rules.MAX_TIME, _LAST)


FORK_BATCH = 1000
"""Messages a fork reads and copies at a time (their bodies stay in the
database)."""


class CompanionCodec(Protocol):
    """The wire format, as far as the companion API must store or count it
    (implemented at the gRPC edge): the responses its writes keep for their
    idempotency keys, the encoding of a fork's copies, and the sizes its
    reads are cut to."""

    def conversation(self, record: ConversationRecord) -> EncodedResponse: ...

    def forked(self, record: ConversationRecord, message_ids: Sequence[UUID]) -> EncodedResponse:
        """ForkConversation's response."""
        ...

    def frame(self, conversation_id: UUID, message: MessageHeader) -> tuple[bytes, bytes]:
        """A message's encoding before and after its body (service.Codec's)."""
        ...

    def tail_header_size(self, state: ConversationState) -> int:
        """Bytes a tail's response takes besides its entries (at most)."""
        ...

    def message_id_size(self) -> int:
        """Bytes each message id adds to a response that lists ids."""
        ...

    def listed_conversation_size(self, record: ConversationRecord) -> int:
        """Bytes the conversation adds to a ListConversations response (at
        most)."""
        ...

    def token_field_size(self, token_length: int) -> int:
        """Bytes a page token of this length adds to a response."""
        ...

    def appended_with_state(self, result: AppendedWithState) -> EncodedResponse: ...


@dataclass(frozen=True, slots=True)
class Replayed:
    """The response an earlier call with the same idempotency key sent, and
    the conversation's version now (the response's may be older)."""

    response: EncodedResponse
    version: int


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """A page of ListConversations, in the order asked."""

    conversations: list[ConversationRecord]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class TailMessages:
    """The last messages of a conversation, oldest first, as the codec
    framed them, with the conversation's row read with them; `truncated`
    when the response limit left out the oldest of them."""

    state: ConversationState
    entries: list[EncodedMessage]
    truncated: bool


@dataclass(frozen=True, slots=True)
class MessagesById:
    """Messages of a conversation's ordering in the order asked (as the
    codec framed them), and the conversation's row read with them."""

    state: ConversationState
    entries: list[EncodedMessage]


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """A page of a conversation's snapshots, oldest first, and the
    conversation's row read with them."""

    state: ConversationState
    snapshots: list[Snapshot]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Forked:
    """A fork: the new conversation, its copies' ids in order, and the
    response (encoded to check its size, and kept for an idempotency key)."""

    record: ConversationRecord
    message_ids: list[UUID]
    response: EncodedResponse


@dataclass(frozen=True, slots=True)
class DeletedConversation:
    """DeleteConversation's answer: what went, and the conversation's
    version after the call: 0, as it is gone, unless a replay finds a
    conversation made under its id since."""

    erased: Erased
    version: int = 0


@dataclass(frozen=True, slots=True)
class ScopeState:
    """A scope's state as GetState and UpdateState answer it: its JSON
    object's canonical text, and its version."""

    values_json: str
    version: int


@dataclass(frozen=True, slots=True)
class AppendedWithState:
    """What AppendMessagesWithState stored: the append, and each changed
    scope's version afterwards, keyed by the scope as the request spelled
    it."""

    appended: Appended
    state_versions: dict[str, int]


class CompanionService:
    """ConversationsService's RPCs over `store` (the one ConversationService
    uses), with `codec` for the responses idempotency keys replay, and
    `messages`, the ConversationService whose appends (rules, limits,
    framing) AppendMessagesWithState makes."""

    def __init__(
        self,
        store: Store,
        codec: CompanionCodec,
        limits: rules.Limits | None = None,
        clock: Callable[[], int] = now_micros,
        messages: ConversationService | None = None,
    ) -> None:
        self._store = store
        self._codec = codec
        self._limits = limits or rules.Limits()
        self._clock = clock
        self._messages = messages

    # -- writes ---------------------------------------------------------

    async def create_conversation(
        self,
        conversation_id: str,
        given: ConversationInput,
        idempotency: Idempotency | None = None,
    ) -> ConversationRecord | Replayed:
        """A new, empty conversation at version 1, created and updated now."""
        named = parse_uuid(conversation_id, "conversation_id") if conversation_id else None
        details = rules.conversation_details(given)
        conversation = named or new_id()
        now = self._clock()
        try:
            async with self._store.write(conversation, create=True) as tx:
                if replay := await self._refuse_existing(
                    tx, named, _CREATED, "conversation_id", idempotency, now
                ):
                    return replay
                state = dataclasses.replace(tx.state, updated_at=now, version=1)
                record = ConversationRecord(state, now, details)
                await tx.save_record(record)
                if idempotency is not None:
                    response = self._codec.conversation(record)
                    await self._remember_creation(tx, named, _CREATED, idempotency, now, response)
                return record
        except idempotency_keys.Superseded as superseded:
            return await self._replayed_creation(superseded.call)

    async def update_conversation(
        self,
        conversation_id: str,
        paths: Sequence[str],
        given: ConversationInput,
        expected_version: int,
        idempotency: Idempotency | None = None,
    ) -> ConversationRecord | Replayed:
        """Replaces the fields `paths` names with `given`'s; +1 to the
        version, updated_at unchanged (it follows the ordering)."""
        conversation = parse_uuid(conversation_id, "conversation.conversation_id")
        update = rules.conversation_update(paths, given)
        expected = rules.expected_version(expected_version)
        now = self._clock()
        key = idempotency_keys.key_of(idempotency)
        async with self._store.write(conversation, recall=key) as tx:
            if replay := await self._recall(tx, idempotency, now):
                return replay
            _check_version(tx.state, expected)
            current = await tx.record()
            record = dataclasses.replace(
                current,
                state=dataclasses.replace(current.state, version=current.state.version + 1),
                details=update.applied_to(current.details),
            )
            await tx.save_record(record)
            return await self._remember(tx, idempotency, now, record)

    async def fork_conversation(
        self,
        conversation_id: str,
        up_to_message_id: str,
        new_conversation_id: str,
        title: str,
        labels: Mapping[str, str],
        idempotency: Idempotency | None = None,
    ) -> Forked | Replayed:
        """A new conversation (version 1) holding copies of the source's
        ordering up to `up_to_message_id` (inclusive; empty: all) under new
        ids, in one transaction. The source is held meanwhile: its writers
        wait, so the copy is of one state of it."""
        request = rules.fork_request(
            conversation_id, up_to_message_id, new_conversation_id, title, labels
        )
        named = request.new_conversation_id
        conversation = named or new_id()
        subject = _subject("ForkConversation", request.source)
        now = self._clock()
        try:
            return await self._fork(request, conversation, subject, idempotency, now)
        except idempotency_keys.Superseded as superseded:
            return await self._replayed_creation(superseded.call)

    async def _fork(
        self,
        request: rules.ForkRequest,
        conversation: UUID,
        subject: str,
        idempotency: Idempotency | None,
        now: int,
    ) -> Forked | Replayed:
        named = request.new_conversation_id
        async with self._store.write(conversation, create=True) as tx:
            if replay := await self._refuse_existing(
                tx, named, subject, "new_conversation_id", idempotency, now
            ):
                return replay
            if request.source == conversation:
                # Into itself: it existed (ALREADY_EXISTS above) or the
                # source is absent (the rollback takes back what was made).
                raise conversation_not_found(request.source)
            source = await tx.hold(request.source)
            last = source.tail_position
            if request.up_to is not None:
                places = await tx.lookup([request.up_to], request.source)
                last = rules.ordering_position(request.up_to, "up_to_message_id", places)
            items = await self._copy_ordering(tx, request.source, last)
            state = dataclasses.replace(
                tx.state,
                message_count=len(items),
                updated_at=now,
                tail_position=items[-1].position if items else 0,
                version=1,
            )
            record = ConversationRecord(state, now, request.details)
            await tx.save_record(record)
            message_ids = [item.message_id for item in items]
            response = self._codec.forked(record, message_ids)
            if len(response) >= self._limits.max_response_bytes:
                raise _too_large_to_fork(len(message_ids))
            await self._remember_creation(tx, named, subject, idempotency, now, response)
            return Forked(record, message_ids, response)

    async def _copy_ordering(self, tx: WriteTransaction, source: UUID, last: int) -> list[Item]:
        """Copies the ordering of `source` (held) up to position `last` into
        the transaction's conversation under new ids, a batch at a time:
        only the batch's headers come into memory, never a body. Returns
        the copies' items, in order."""
        # The answer lists every copy's id: past this many it cannot be sent.
        most = self._limits.max_response_bytes // self._codec.message_id_size()
        items: list[Item] = []
        after = 0
        while True:
            originals = await tx.originals(source, after, last, FORK_BATCH)
            if len(items) + len(originals) > most:
                raise _too_large_to_fork(len(items) + len(originals))
            slots = positions.append_positions(items[-1].position if items else 0, len(originals))
            copies = [
                self._copy_of(tx.state.id, original, slot)
                for slot, original in zip(slots, originals, strict=True)
            ]
            await tx.copy_messages(source, copies)
            items += [copy.item for copy in copies]
            if len(originals) < FORK_BATCH:
                return items
            after = originals[-1].position

    def _copy_of(self, conversation: UUID, original: Original, position: int) -> MessageCopy:
        """`original` copied to `position` of `conversation`, under a new id."""
        header = dataclasses.replace(original.header, id=new_id())
        head, tail = self._codec.frame(conversation, header)
        return MessageCopy(original.header.id, Item(position, header.id), head, tail)

    async def delete_conversation(
        self,
        conversation_id: str,
        expected_version: int,
        allow_missing: bool,
        idempotency: Idempotency | None = None,
    ) -> DeletedConversation:
        """Erases the conversation and everything of it, in one transaction
        (nothing when it is absent and `allow_missing`)."""
        conversation = parse_uuid(conversation_id, "conversation_id")
        expected = rules.expected_version(expected_version)
        subject = _subject("DeleteConversation", conversation)
        now = self._clock()
        try:
            async with self._store.write(conversation) as tx:
                if earlier := await self._recall_of(tx, subject, idempotency, now):
                    # Made again since: it stays.
                    return DeletedConversation(_erased_again(earlier), tx.state.version)
                _check_version(tx.state, expected)
                erased = await tx.erase()
                await self._keep(tx, subject, idempotency, now, _erasure_answer(erased))
                return DeletedConversation(erased)
        except idempotency_keys.Superseded as superseded:
            return DeletedConversation(_erased_again(superseded.call))
        except ConversationNotFound:
            if idempotency is None:
                if allow_missing:
                    return DeletedConversation(Erased(messages=0, snapshots=0))
                raise
        # Absent, perhaps erased by this key's first call.
        return await self._delete_absent(conversation, subject, allow_missing, idempotency, now)

    async def _delete_absent(
        self,
        conversation: UUID,
        subject: str,
        allow_missing: bool,
        idempotency: Idempotency,
        now: int,
    ) -> DeletedConversation:
        """DeleteConversation under a key, of a conversation that is absent:
        the answer of the key's first call; else zero counts, with
        `allow_missing` (kept under the key), or NOT_FOUND."""
        try:
            async with self._store.write_state() as tx:
                if earlier := await self._recall_of(tx, subject, idempotency, now):
                    return DeletedConversation(_erased_again(earlier))
                if not allow_missing:
                    raise conversation_not_found(conversation)
                erased = Erased(messages=0, snapshots=0)
                await self._keep(tx, subject, idempotency, now, _erasure_answer(erased))
                return DeletedConversation(erased)
        except idempotency_keys.Superseded as superseded:
            return DeletedConversation(_erased_again(superseded.call))

    # -- reads ----------------------------------------------------------

    async def describe_conversation(self, conversation_id: str) -> ConversationRecord:
        conversation = parse_uuid(conversation_id, "conversation_id")
        async with self._store.read() as rx:
            return await rx.describe(conversation)

    async def list_conversations(
        self,
        labels: Mapping[str, str],
        updated_after: Moment | None,
        updated_before: Moment | None,
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> ConversationPage:
        """A page of the conversations with every one of `labels`, updated
        strictly between the bounds, keyset-paged on (updated_at, id)."""
        chosen = rules.conversation_filter(labels, updated_after, updated_before, order_by)
        limit = rules.page_size(page_size, self._limits)
        fingerprint = paging.conversation_filter_fingerprint(
            chosen.labels, chosen.updated_after, chosen.updated_before, chosen.newest_first
        )
        cursor = paging.decode_conversations(page_token, fingerprint)
        if cursor is not None:
            _check_possible(cursor.updated_at, cursor.ceiling)
        async with self._store.read() as rx:
            if cursor is not None:
                ceiling = cursor.ceiling
            elif chosen.newest_first:
                ceiling = 0  # unused: updates move conversations behind the cursor
            else:
                # The latest update of a conversation this listing can show.
                newest = _range(chosen, None, 0, 1, newest_first=True)
                latest = (await rx.conversation_page(newest)).rows
                ceiling = latest[0].state.updated_at if latest else rules.MIN_TIME
            page = await rx.conversation_page(_range(chosen, cursor, ceiling, limit))
        # Titles and labels can make a page of them large: it stops early so
        # that the response stays under the limit, as the message lists do.
        room = self._limits.max_response_bytes - self._codec.token_field_size(paging.token_length())
        sizes = [self._codec.listed_conversation_size(record) for record in page.rows]
        kept = rules.fitting(sizes, room)
        rows, more = page.rows[:kept], page.more or kept < len(page.rows)
        token = ""
        if more:
            last = rows[-1].state
            token = paging.encode_conversations(
                fingerprint, ConversationCursor(last.updated_at, last.id, ceiling)
            )
        return ConversationPage(rows, token)

    async def tail_messages(
        self, conversation_id: str, count: int, roles: Sequence[int], kinds: Sequence[str]
    ) -> TailMessages:
        """The last `count` messages of the ordering that match the filters,
        oldest first; past the response limit, the oldest of them are left
        out (the newest always comes)."""
        conversation = parse_uuid(conversation_id, "conversation_id")
        wanted = rules.tail_count(count)
        role_set = rules.role_filter(roles)
        kind_set = frozenset(kinds)
        budget = self._limits.max_response_bytes
        # One step: the metadata and the messages agree.
        async with self._store.read_once() as rx:
            state, page = await rx.tail_page(conversation, wanted, role_set, kind_set, budget)
        newest_first = [entry for _, entry in page.rows]
        room = budget - self._codec.tail_header_size(state)
        kept = rules.fitting([len(entry) for entry in newest_first], room)
        oldest_first = [EncodedMessage(entry) for entry in reversed(newest_first[:kept])]
        return TailMessages(state, oldest_first, page.more or kept < len(newest_first))

    async def get_messages(self, conversation_id: str, message_ids: Sequence[str]) -> MessagesById:
        """Messages of the ordering by id, in the order asked (repeats
        too), or INVALID_ARGUMENT when they would pass the response limit."""
        conversation = parse_uuid(conversation_id, "conversation_id")
        wanted = rules.wanted_ids(message_ids)
        distinct = list(dict.fromkeys(wanted))
        budget = self._limits.max_response_bytes
        async with self._store.read() as rx:
            state = await rx.conversation(conversation)
            sizes = await rx.entry_sizes(conversation, distinct)
            rules.check_in_ordering(conversation, wanted, sizes)
            # GetMessagesResponse is its entries alone, each as large as stored.
            total = sum(sizes[message_id] for message_id in wanted)
            # One message comes alone however large, as on a list's page.
            if total >= budget and len(wanted) > 1:
                raise InvalidArgument(
                    "message_ids",
                    f"the {len(wanted)} messages take {total} bytes; a response stays under"
                    f" {budget}; ask for fewer",
                )
            found = await rx.entries(conversation, distinct)
        return MessagesById(state, [EncodedMessage(found[message_id]) for message_id in wanted])

    async def list_snapshots(
        self, conversation_id: str, page_size: int, page_token: str
    ) -> SnapshotPage:
        """A page of the conversation's snapshots, oldest first (by
        created_at, then id), keyset-paged on that key."""
        conversation = parse_uuid(conversation_id, "conversation_id")
        limit = rules.page_size(page_size, self._limits)
        cursor = paging.decode_snapshots(page_token, conversation)
        after = (rules.MIN_TIME, _NIL)
        if cursor is not None:
            _check_possible(cursor.created_at)
            after = (cursor.created_at, cursor.snapshot_id)
        async with self._store.read() as rx:
            state = await rx.conversation(conversation)
            page = await rx.snapshot_list(conversation, after, limit)
        token = ""
        if page.more:
            last = page.rows[-1]
            token = paging.encode_snapshots(conversation, SnapshotCursor(last.created_at, last.id))
        return SnapshotPage(state, page.rows, token)

    async def version_of(self, conversation_id: str) -> int | None:
        """The conversation's version now, for the trailing metadata of a
        call that failed; None when the id is malformed, the conversation
        absent or the database unavailable."""
        try:
            conversation = parse_uuid(conversation_id, "conversation_id")
            async with self._store.read_once() as rx:
                return (await rx.conversation(conversation)).version
        except (InvalidArgument, ConversationNotFound, StorageUnavailable):
            return None

    # -- idempotency keys -------------------------------------------------

    async def _recall(
        self, tx: WriteTransaction, idempotency: Idempotency | None, now: int
    ) -> Replayed | None:
        window = self._limits.idempotency_window_us
        call = await idempotency_keys.recall(tx, idempotency, now, window)
        if call is None:
            return None
        # Only AppendConversationMessages keeps its key in one step (with a
        # partial response), and a key's fingerprint names its method: a
        # call that gets here was remembered whole.
        return Replayed(EncodedResponse(call.response), tx.state.version)

    async def _refuse_existing(
        self,
        tx: WriteTransaction,
        named: UUID | None,
        subject: str,
        field: str,
        idempotency: Idempotency | None,
        now: int,
    ) -> Replayed | None:
        """In a transaction that creates a conversation, the one the request
        `named` (None: a new id): None when it is new and no earlier call
        with the same idempotency key made one. Else that call's answer;
        failing that, ALREADY_EXISTS naming `field`. The key of a call that
        named its conversation is that conversation's; of one that did
        not, `subject`'s."""
        if named is None:
            if earlier := await self._recall_of(tx, subject, idempotency, now):
                # Roll the new conversation back.
                raise idempotency_keys.Superseded(earlier)
            return None
        if tx.created:
            return None
        if replay := await self._recall(tx, idempotency, now):
            return replay
        raise AlreadyExists(field, f"conversation {tx.state.id} exists")

    async def _recall_of(
        self, tx: StateWriter, subject: str, idempotency: Idempotency | None, now: int
    ) -> RememberedCall | None:
        window = self._limits.idempotency_window_us
        return await idempotency_keys.recall_of(tx, subject, idempotency, now, window)

    async def _keep(
        self,
        tx: StateWriter,
        subject: str,
        idempotency: Idempotency | None,
        now: int,
        response: bytes,
        owner: UUID | None = None,
    ) -> None:
        window = self._limits.idempotency_window_us
        await idempotency_keys.keep_for(tx, subject, idempotency, now, window, response, owner)

    async def _remember_creation(
        self,
        tx: WriteTransaction,
        named: UUID | None,
        subject: str,
        idempotency: Idempotency | None,
        now: int,
        response: EncodedResponse,
    ) -> None:
        """Keep the answer of a call that created the transaction's
        conversation under its key: the conversation's own when the request
        `named` it, else `subject`'s, erased with the conversation."""
        if named is not None:
            await idempotency_keys.remember(tx, idempotency, now, response)
        else:
            await self._keep(tx, subject, idempotency, now, response, tx.state.id)

    async def _replayed_creation(self, call: RememberedCall) -> Replayed:
        """The answer of an earlier call that created a conversation under
        the same key, with that conversation's version now."""
        assert call.owner is not None
        try:
            async with self._store.read_once() as rx:
                version = (await rx.conversation(call.owner)).version
        except ConversationNotFound:
            # Deleted just now, and the key with it.
            version = 0
        return Replayed(EncodedResponse(call.response), version)

    async def _remember(
        self,
        tx: WriteTransaction,
        idempotency: Idempotency | None,
        now: int,
        record: ConversationRecord,
    ) -> ConversationRecord:
        if idempotency is not None:
            response = self._codec.conversation(record)
            await idempotency_keys.remember(tx, idempotency, now, response)
        return record

    # -- scoped state -----------------------------------------------------

    async def get_state(self, scope: str) -> ScopeState:
        """The scope's state; `{}` at version 0 if nobody has updated it."""
        checked = rules.scope(scope, "scope")
        async with self._store.read_once() as rx:
            stored = await rx.scoped_state(checked)
        return _shown(stored or EMPTY_STATE)

    async def update_state(
        self,
        given: StateUpdateInput,
        expected_version: int,
        idempotency: Idempotency | None = None,
    ) -> ScopeState:
        """Sets and removes keys of one scope's state, +1 to its version,
        in one transaction; `expected_version` (0: none) is the scope's."""
        change = rules.state_change(given)
        expected = rules.expected_version(expected_version)
        subject = f"UpdateState/{change.scope.key}"
        now = self._clock()
        try:
            async with self._store.write_state() as tx:
                await _hold_conversations(tx, [change])
                locked = await tx.lock_states([change.scope])
                if earlier := await self._recall_of(tx, subject, idempotency, now):
                    return _state_again(earlier)
                current = locked[change.scope.key].version
                if expected and current != expected:
                    raise VersionMismatch(
                        "expected_version", expected, current, subject="the scope"
                    )
                (state,) = await _change_states(tx, [change], locked)
                # A conversation's scope: its erasure takes the key along.
                owner = change.scope.conversation_id
                await self._keep(tx, subject, idempotency, now, _state_answer(state), owner)
        except idempotency_keys.Superseded as superseded:
            return _state_again(superseded.call)
        return _shown(state)

    async def append_with_state(
        self,
        conversation_id: str,
        inputs: Sequence[MessageInput],
        updates: Sequence[StateUpdateInput],
        expected_version: int,
        idempotency: Idempotency | None = None,
    ) -> AppendedWithState | Replayed:
        """Appends as AppendConversationMessages does (creating the
        conversation if absent) and changes the scopes' states, in one
        transaction: all of it lands or none. `expected_version` (0: none)
        is the conversation's; an absent one is at 0."""
        if self._messages is None:
            raise RuntimeError("CompanionService needs `messages` for AppendMessagesWithState")
        conversation = parse_uuid(conversation_id, "conversation_id")
        digests = self._messages.checked_append(inputs)
        changes = rules.state_updates(updates)
        expected = rules.expected_version(expected_version)
        now = self._clock()
        key = idempotency_keys.key_of(idempotency)
        async with self._store.write(conversation, create=True, recall=key) as tx:
            if replay := await self._recall(tx, idempotency, now):
                return replay
            await _hold_conversations(tx, changes)
            # A conversation this transaction created is at version 0.
            _check_version(tx.state, expected)
            appended = await self._messages.append_locked(tx, inputs, digests, now)
            locked = await tx.lock_states(sorted(change.scope for change in changes))
            states = await _change_states(tx, changes, locked)
            result = AppendedWithState(
                appended,
                {change.sent: state.version for change, state in zip(changes, states, strict=True)},
            )
            if idempotency is not None:
                response = self._codec.appended_with_state(result)
                await idempotency_keys.remember(tx, idempotency, now, response)
            return result


async def _hold_conversations(tx: StateWriter, changes: Sequence[rules.StateChange]) -> None:
    """Keeps the conversations of the changes' `conversation/{uuid}` scopes
    from being deleted until the transaction ends; NOT_FOUND naming the
    first change whose conversation does not exist."""
    owners = {change.scope.conversation_id for change in changes}
    present = await tx.hold_conversations(sorted(owner for owner in owners if owner is not None))
    for change in changes:
        owner = change.scope.conversation_id
        if owner is not None and owner not in present:
            raise NotFound(f"{change.prefix}scope", f"conversation {owner} does not exist")


async def _change_states(
    tx: StateWriter, changes: Sequence[rules.StateChange], locked: dict[str, StoredState]
) -> list[StoredState]:
    """Makes the changes to the states `lock_states` locked, +1 to each
    one's version; the new states, in the order of the changes."""
    saved = []
    for change in changes:
        current = locked[change.scope.key]
        values = change.applied_to(exact_json.load_object(current.values_json.decode()))
        text = rules.state_text(values, f"{change.prefix}set_json")
        saved.append((change.scope, StoredState(text, current.version + 1)))
    await tx.save_states(saved)
    return [state for _, state in saved]


def _shown(state: StoredState) -> ScopeState:
    return ScopeState(state.values_json.decode(), state.version)


_CREATED = "CreateConversation"
"""The subject of the keys of CreateConversation calls that name no id."""


def _subject(method: str, conversation: UUID) -> str:
    """The subject of the keys of `method`'s calls about `conversation`: by
    a digest of its id, which the key may outlive (a delete's does)."""
    return f"{method}/{hashlib.sha256(conversation.bytes).hexdigest()}"


_ERASED = struct.Struct(">qq")
_STATE_VERSION = struct.Struct(">q")


def _erasure_answer(erased: Erased) -> bytes:
    """DeleteConversation's answer, as its idempotency key keeps it."""
    return _ERASED.pack(erased.messages, erased.snapshots)


def _erased_again(call: RememberedCall) -> Erased:
    messages, snapshots = _ERASED.unpack(call.response)
    return Erased(messages=messages, snapshots=snapshots)


def _state_answer(state: StoredState) -> bytes:
    """UpdateState's answer, as its idempotency key keeps it."""
    return _STATE_VERSION.pack(state.version) + state.values_json


def _state_again(call: RememberedCall) -> ScopeState:
    (version,) = _STATE_VERSION.unpack_from(call.response)
    return _shown(StoredState(call.response[_STATE_VERSION.size :], version))


def _check_possible(*times: int) -> None:
    """A page token's cursor holds times a page could have ended at."""
    if not all(rules.MIN_TIME <= time <= rules.MAX_TIME for time in times):
        raise InvalidArgument("page_token", "is not a page token issued by this service")


def _too_large_to_fork(copies: int) -> InvalidArgument:
    return InvalidArgument(
        "up_to_message_id",
        f"a fork of {copies} or more messages would answer with more ids than the response"
        " limit allows; fork up to an earlier message",
    )


def _check_version(state: ConversationState, expected: int) -> None:
    if expected and state.version != expected:
        raise VersionMismatch("expected_version", expected, state.version)


def _range(
    chosen: rules.ConversationFilter,
    cursor: ConversationCursor | None,
    ceiling: int,
    limit: int,
    *,
    newest_first: bool | None = None,
) -> ConversationRange:
    """The keys a page lies strictly between. An updated_after of X is the
    key (X, the last id), an updated_before of Y the key (Y, the nil id): no
    conversation updated at X or at Y is strictly between. The cursor
    narrows the side the page moves away from; oldest first, the ceiling
    caps the other. `newest_first` overrides the filter's order."""
    if newest_first is None:
        newest_first = chosen.newest_first
    after = _LOWEST
    if chosen.updated_after is not None:
        after = ConversationKey(chosen.updated_after, _LAST)
    before = _HIGHEST
    if chosen.updated_before is not None:
        before = ConversationKey(chosen.updated_before, _NIL)
    position = (
        None if cursor is None else ConversationKey(cursor.updated_at, cursor.conversation_id)
    )
    if newest_first:
        if position is not None:
            before = min(before, position)
    else:
        before = min(before, ConversationKey(ceiling + 1, _NIL))
        if position is not None:
            after = max(after, position)
    return ConversationRange(chosen.labels, after, before, newest_first, limit)
