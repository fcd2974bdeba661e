"""The conversation rules, one method per RPC.

Each method validates the request (rules.py), opens one storage
transaction, asks storage only for what the decision needs (never the whole
conversation, except where the caller asked for all of it), and writes the
outcome. It knows nothing of gRPC: the server layer maps its values and
errors to the wire, and gives it a Codec for the few bytes of the wire
format it must store (each message's encoding, the responses idempotency
keys replay) or count (a page's size).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast
from uuid import UUID

from . import idempotency as idempotency_keys
from . import paging, positions, rules
from .clock import now_micros
from .errors import (
    AgentStateError,
    ConversationNotFound,
    InvalidArgument,
    StorageUnavailable,
    VersionMismatch,
)
from .idempotency import Idempotency as Idempotency  # re-exported: the edge names it here
from .ids import new_id, parse_uuid
from .model import (
    AppendKey,
    ConversationState,
    EncodedMessage,
    EncodedResponse,
    ExpectedVersion,
    Item,
    MessageHeader,
    MessageInput,
    NewMessage,
    Page,
    RememberedCall,
    Snapshot,
    StoredMessage,
)
from .paging import Cursor, PagedList
from .storage.base import ReadTransaction, Store, WriteTransaction


@dataclass(frozen=True, slots=True)
class Appended:
    """The conversation after an append, and the messages as stored."""

    state: ConversationState
    messages: list[NewMessage]


@dataclass(frozen=True, slots=True)
class MessagePage:
    """`entries` are the listed messages as the codec framed them."""

    state: ConversationState
    entries: list[EncodedMessage]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class IdPage:
    """A page of a conversation's or a snapshot's message ids, in order;
    `version` is the conversation's (None on a snapshot's page)."""

    message_ids: list[UUID]
    next_page_token: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class SnapshotMessagePage:
    """`entries` as in MessagePage."""

    entries: list[EncodedMessage]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Replaced:
    """The conversation after a Replace: the ids that were in the range
    (now detached) and the ids put in its place."""

    state: ConversationState
    replaced: list[UUID]
    inserted: list[UUID]


@dataclass(frozen=True, slots=True)
class Deleted:
    """The conversation after a Delete, and the ids of the deleted messages."""

    state: ConversationState
    deleted: list[UUID]


@dataclass(frozen=True, slots=True)
class SnapshotCreated:
    """The snapshot a CreateSnapshot made, and its conversation (unchanged)."""

    state: ConversationState
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class Replay:
    """The response an earlier call with the same idempotency key sent, and
    the conversation's version now (the replay changed nothing)."""

    response: EncodedResponse
    version: int


class Codec(Protocol):
    """The wire format, as far as the service must store or count it.

    Implemented at the gRPC edge (server/wire.py). What it returns, the
    service stores and hands back without looking inside.
    """

    def frame(self, conversation_id: UUID, message: MessageHeader) -> tuple[bytes, bytes]:
        """The message's encoding before and after its body (head, tail),
        which together with the body make an EncodedMessage. Computed once,
        at append (or when a fork copies the message), and stored."""
        ...

    def message_page_header_size(self, state: ConversationState) -> int:
        """Bytes a conversation's message page takes besides its entries
        and its page token."""
        ...

    def snapshot_page_header_size(self) -> int:
        """Bytes a snapshot's message page takes besides its entries and
        its page token."""
        ...

    def token_field_size(self, token_length: int) -> int:
        """Bytes a page token of `token_length` characters adds to a page."""
        ...

    # The responses of the mutating calls, kept for their idempotency keys.

    def appended(self, result: Appended) -> EncodedResponse:
        """appended_again of the result's parts."""
        ...

    def appended_messages(self, messages: Sequence[NewMessage]) -> bytes:
        """The appended messages' part of an append's response: what an
        append that keeps its key in its one step stores (AppendKey)."""
        ...

    def appended_again(
        self, conversation_id: UUID, message_count: int, updated_at: int, appended: bytes
    ) -> EncodedResponse:
        """An append's response from its parts: the conversation's metadata
        and `appended_messages`."""
        ...

    def replaced(self, result: Replaced) -> EncodedResponse: ...

    def deleted(self, result: Deleted) -> EncodedResponse: ...

    def snapshot_created(self, result: SnapshotCreated) -> EncodedResponse: ...


_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class _PageRequest:
    """Which page a list call asks for: of which list, of which conversation
    or snapshot, under which filter; how many rows; after which cursor."""

    listed: PagedList
    target: UUID
    fingerprint: bytes
    limit: int
    cursor: Cursor | None

    @property
    def after_index(self) -> int:
        """The snapshot index a snapshot page starts after (-1: the start)."""
        return self.cursor.position if self.cursor else -1

    def token_after(self, position: int, layout_version: int = 0) -> str:
        """The token of the next page, which starts after `position`."""
        return paging.encode(
            self.listed, self.target, self.fingerprint, Cursor(position, layout_version)
        )


class ConversationService:
    """The nine RPCs of the contract over `store`, with `codec` for the few
    bytes of the wire format that are stored or counted."""

    def __init__(
        self,
        store: Store,
        codec: Codec,
        limits: rules.Limits | None = None,
        clock: Callable[[], int] = now_micros,
    ) -> None:
        self._store = store
        self._codec = codec
        self._limits = limits or rules.Limits()
        self._clock = clock
        # Every page token has the same length.
        self._token_field_size = codec.token_field_size(paging.token_length())

    @property
    def limits(self) -> rules.Limits:
        return self._limits

    # -- writes ---------------------------------------------------------

    async def append(
        self,
        conversation_id: str,
        inputs: Sequence[MessageInput],
        idempotency: Idempotency | None = None,
        expected: ExpectedVersion | None = None,
    ) -> Appended | Replay:
        conversation = parse_uuid(conversation_id, "conversation_id")
        digests = self.checked_append(inputs)
        # Usually the clock has moved on since the conversation's last change
        # and its position space has room: then updated_at is simply now, the
        # entries go one GAP apart after the tail, and the store does it all
        # in one step. Otherwise (a clock that stood still or stepped back,
        # positions used up) the general path below applies the full rules.
        now = self._clock()
        messages = [
            self._new_message(conversation, message, digest, now)
            for message, digest in zip(inputs, digests, strict=True)
        ]
        # A keyed append keeps its key in the same step; a retry finds the
        # key there, and the locked path below replays it.
        key = (
            None
            if idempotency is None
            else AppendKey(
                idempotency.key, idempotency.fingerprint, self._codec.appended_messages(messages)
            )
        )
        fast = await self._store.append_at_tail(
            conversation,
            messages,
            updated_at=now,
            gap=positions.GAP,
            max_position=positions.MAX_POSITION,
            if_version=None if expected is None else expected.version,
            key=key,
        )
        if fast is not None:
            return Appended(fast, messages)
        # Created here (at version 0) if absent, and gone again with the
        # rollback if the call fails.
        async with self._writing(conversation, expected, idempotency, create=True) as tx:
            if replay := await self._admit(tx, idempotency, expected, now):
                return replay
            result = await self.append_locked(tx, inputs, digests, now)
            return await self._remember(tx, idempotency, now, result, self._codec.appended)

    def checked_append(self, inputs: Sequence[MessageInput]) -> list[bytes]:
        """An append's messages checked against the rules and limits; the
        SHA-256 of each one's body."""
        rules.validate_append(inputs, self._limits)
        return [hashlib.sha256(message.body).digest() for message in inputs]

    async def append_locked(
        self,
        tx: WriteTransaction,
        inputs: Sequence[MessageInput],
        digests: Sequence[bytes],
        now: int,
    ) -> Appended:
        """Append `checked_append`'s messages at the tail of the conversation
        `tx` locks, as of `now`, under the full rules (updated_at strictly
        increases, version + 1); also the companion API's append with state."""
        state = tx.state
        slots = positions.append_positions(state.tail_position, len(inputs))
        updated_at = rules.next_updated_at(state.updated_at, now)
        messages = [
            self._new_message(state.id, message, digest, updated_at)
            for message, digest in zip(inputs, digests, strict=True)
        ]
        state = dataclasses.replace(
            state,
            message_count=state.message_count + len(messages),
            updated_at=updated_at,
            tail_position=slots[-1],
            version=state.version + 1,
        )
        items = [Item(slot, m.message.id) for slot, m in zip(slots, messages, strict=True)]
        await tx.append(messages, items, state)
        return Appended(state, messages)

    async def replace_range(
        self,
        conversation_id: str,
        from_id: str,
        to_id: str,
        new_ids: Sequence[str],
        idempotency: Idempotency | None = None,
        expected: ExpectedVersion | None = None,
    ) -> Replaced | Replay:
        request = rules.parse_range(conversation_id, from_id, to_id, new_ids)
        now = self._clock()
        async with self._writing(request.conversation_id, expected, idempotency) as tx:
            if replay := await self._admit(tx, idempotency, expected, now):
                return replay
            state = tx.state
            places = await tx.lookup(request.named)
            ends = rules.check_range(request, places)
            replaced: list[Item] = []
            if ends.from_position is not None and ends.to_position is not None:
                replaced = await tx.items_between(ends.from_position, ends.to_position)
            in_range = {item.message_id for item in replaced}
            # Ids already in the ordering elsewhere move: they leave their place.
            moved = [
                message_id
                for message_id in request.new_ids
                if places[message_id] is not None and message_id not in in_range
            ]
            removed = [item.message_id for item in replaced] + moved
            if removed:
                await tx.unplace(removed)
            tail = state.tail_position
            layout_version = state.layout_version
            if request.new_ids:
                lower, upper = await _gap(tx, ends)
                room = await make_room(tx, lower, upper, len(request.new_ids), layout_version)
                if room.renumbering is not None:
                    await tx.renumber(room.renumbering)
                    layout_version = room.renumbering.layout_version
                    tail = max([tail, *room.renumbering.new_positions])
                await tx.place(
                    [Item(slot, m) for slot, m in zip(room.positions, request.new_ids, strict=True)]
                )
                tail = max(tail, room.positions[-1])
            state = dataclasses.replace(
                state,
                message_count=state.message_count - len(removed) + len(request.new_ids),
                updated_at=rules.next_updated_at(state.updated_at, now),
                tail_position=tail,
                layout_version=layout_version,
                version=state.version + 1,
            )
            await tx.save(state)
            result = Replaced(state, [item.message_id for item in replaced], list(request.new_ids))
            listed = len(result.replaced) + len(result.inserted)
            self._check_answer(request, listed, result, self._codec.replaced)
            return await self._remember(tx, idempotency, now, result, self._codec.replaced)

    async def delete_range(
        self,
        conversation_id: str,
        from_id: str,
        to_id: str,
        idempotency: Idempotency | None = None,
        expected: ExpectedVersion | None = None,
    ) -> Deleted | Replay:
        request = rules.parse_range(conversation_id, from_id, to_id, None)
        now = self._clock()
        async with self._writing(request.conversation_id, expected, idempotency) as tx:
            if replay := await self._admit(tx, idempotency, expected, now):
                return replay
            state = tx.state
            ends = rules.check_range(request, await tx.lookup(request.named))
            items = await tx.items_between(ends.from_position or 0, ends.to_position)
            deleted = [item.message_id for item in items]
            await tx.delete(deleted)
            state = dataclasses.replace(
                state,
                message_count=state.message_count - len(deleted),
                updated_at=rules.next_updated_at(state.updated_at, now),
                version=state.version + 1,
            )
            await tx.save(state)
            result = Deleted(state, deleted)
            self._check_answer(request, len(deleted), result, self._codec.deleted)
            return await self._remember(tx, idempotency, now, result, self._codec.deleted)

    async def create_snapshot(
        self,
        conversation_id: str,
        message_ids: Sequence[str],
        idempotency: Idempotency | None = None,
        expected: ExpectedVersion | None = None,
    ) -> SnapshotCreated | Replay:
        conversation = parse_uuid(conversation_id, "conversation_id")
        ids = rules.parse_ids(message_ids, "message_ids")
        if not ids:
            raise InvalidArgument("message_ids", "must name at least one message")
        now = self._clock()
        async with self._writing(conversation, expected, idempotency) as tx:
            if replay := await self._admit(tx, idempotency, expected, now):
                return replay
            snapshot = Snapshot(new_id(), conversation, now, len(ids))
            if await tx.create_snapshot(snapshot, ids) != len(ids):
                # Some id is not a message of the conversation: name it
                # (raising rolls the snapshot back).
                rules.check_snapshot_ids(conversation, ids, await tx.lookup(ids))
                raise AssertionError("a snapshot item went missing")
            return await self._remember(
                tx,
                idempotency,
                now,
                SnapshotCreated(tx.state, snapshot),
                self._codec.snapshot_created,
            )

    def _check_answer(
        self,
        request: rules.RangeRequest,
        ids: int,
        result: _R,
        encode: Callable[[_R], EncodedResponse],
    ) -> None:
        """Refuses a change whose answer, which lists the ids of its range,
        would reach the response limit: a client could not read it (4 MiB
        by default), though the change was made. Raising in the write's
        transaction rolls the change back."""
        # An id takes 38 bytes: so few leave the answer far below the limit.
        if ids * 64 < self._limits.max_response_bytes:
            return
        size = len(encode(result))
        if size >= self._limits.max_response_bytes:
            field = "to_message_id" if request.to_id is not None else "from_message_id"
            raise InvalidArgument(
                field,
                f"the answer would list {ids} message ids in {size} bytes, past the response"
                f" limit of {self._limits.max_response_bytes}; change the range in parts",
            )

    # -- preconditions: versions and idempotency keys -----------------------

    @asynccontextmanager
    async def _writing(
        self,
        conversation: UUID,
        expected: ExpectedVersion | None,
        idempotency: Idempotency | None,
        *,
        create: bool = False,
    ) -> AsyncIterator[WriteTransaction]:
        """The conversation's write transaction (Store.write), whose errors
        carry the conversation's version; it reads the idempotency key's
        earlier call with the lock. An absent conversation fails a
        precondition on a version above 0 with ABORTED rather than
        NOT_FOUND: the caller's view of it is out of date."""
        opened = False
        key = idempotency_keys.key_of(idempotency)
        try:
            async with self._store.write(conversation, create=create, recall=key) as tx:
                opened = True
                with _naming_version(tx.state):
                    yield tx
        except ConversationNotFound:
            if opened or expected is None or expected.version == 0:
                raise
            raise VersionMismatch(expected.field, expected.version, 0) from None

    async def _admit(
        self,
        tx: WriteTransaction,
        idempotency: Idempotency | None,
        expected: ExpectedVersion | None,
        now: int,
    ) -> Replay | None:
        """The earlier response for this key, if it is recent enough,
        whatever the version is now; otherwise None, once the expected
        version (if any) is the conversation's. Runs under the
        conversation's lock, so concurrent duplicates see each other: the
        first applies, the rest replay it; and of concurrent writers
        expecting one version, one goes ahead."""
        if replay := await self._recall(tx, idempotency, now):
            return replay
        rules.check_version(tx.state.version, expected)
        return None

    async def _recall(
        self, tx: WriteTransaction, idempotency: Idempotency | None, now: int
    ) -> Replay | None:
        """The earlier response for this key, if it is recent enough."""
        call = await idempotency_keys.recall(
            tx, idempotency, now, self._limits.idempotency_window_us
        )
        if call is None:
            return None
        return Replay(self._response_of(tx.state.id, call), tx.state.version)

    def _response_of(self, conversation: UUID, call: RememberedCall) -> EncodedResponse:
        """The response a remembered call sent: kept whole, or, for an
        append that kept its key in one step, rebuilt from its parts (its
        updated_at is when the key was kept)."""
        if call.message_count is None:
            return EncodedResponse(call.response)
        return self._codec.appended_again(
            conversation, call.message_count, call.created_at, call.response
        )

    async def _remember(
        self,
        tx: WriteTransaction,
        idempotency: Idempotency | None,
        now: int,
        result: _R,
        encode: Callable[[_R], EncodedResponse],
    ) -> _R:
        """Keep `result`'s response under the call's idempotency key, if it
        sent one, for retries to replay."""
        if idempotency is not None:
            await idempotency_keys.remember(tx, idempotency, now, encode(result))
        return result

    async def forget_expired_keys(self, batch: int = 1000) -> int:
        """Delete idempotency keys past the window; returns how many."""
        forgotten = 0
        while True:
            cutoff = self._clock() - self._limits.idempotency_window_us
            count = await self._store.forget_calls(cutoff, batch)
            forgotten += count
            if count < batch:
                return forgotten

    # -- reads ----------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> ConversationState:
        conversation = parse_uuid(conversation_id, "conversation_id")
        async with self._store.read_once() as rx:
            return await rx.conversation(conversation)

    async def list_messages(
        self,
        conversation_id: str,
        roles: Sequence[int],
        kinds: Sequence[str],
        page_size: int,
        page_token: str,
    ) -> MessagePage:
        conversation = parse_uuid(conversation_id, "conversation_id")
        role_set = rules.role_filter(roles)
        kind_set = frozenset(kinds)
        fingerprint = paging.filter_fingerprint(role_set, kind_set)
        request = self._paging(
            PagedList.CONVERSATION_MESSAGES, conversation, page_size, page_token, fingerprint
        )
        cursor = request.cursor
        budget = self._limits.max_response_bytes
        # Usually the layout has not changed since the page token was
        # issued (or there is none): then the token's position holds, and
        # the metadata and the page come in one step.
        async with self._store.read_once() as rx:
            state, page = await rx.message_page(
                conversation,
                cursor.position if cursor else 0,
                request.limit,
                role_set,
                kind_set,
                budget,
            )
        if cursor is not None and cursor.layout_version != state.layout_version:
            # Renumbered since: follow the token's position through the
            # renumberings recorded after it (all of them, however many
            # there are by now) and read the page in the same transaction.
            async with self._store.read() as rx:
                with _naming_version(state):
                    after = await _resume(rx, state, cursor)
                state, page = await rx.message_page(
                    conversation, after, request.limit, role_set, kind_set, budget
                )
        rows, more = self._fit(page, self._codec.message_page_header_size(state))
        token = request.token_after(rows[-1][0], state.layout_version) if more else ""
        return MessagePage(state, _entries(rows), token)

    async def list_message_ids(
        self, conversation_id: str, page_size: int, page_token: str
    ) -> IdPage:
        conversation = parse_uuid(conversation_id, "conversation_id")
        request = self._paging(
            PagedList.CONVERSATION_MESSAGE_IDS, conversation, page_size, page_token
        )
        async with self._store.read() as rx:
            state = await rx.conversation(conversation)
            with _naming_version(state):
                after = await _resume(rx, state, request.cursor)
            page = await rx.id_page(conversation, after, request.limit)
        more = page.more
        token = request.token_after(page.rows[-1].position, state.layout_version) if more else ""
        return IdPage([item.message_id for item in page.rows], token, state.version)

    async def list_snapshot_messages(
        self, snapshot_id: str, page_size: int, page_token: str
    ) -> SnapshotMessagePage:
        snapshot_key = parse_uuid(snapshot_id, "snapshot_id")
        request = self._paging(PagedList.SNAPSHOT_MESSAGES, snapshot_key, page_size, page_token)
        async with self._store.read() as rx:
            snapshot = await rx.snapshot(snapshot_key)
            page = await rx.snapshot_message_page(
                snapshot, request.after_index, request.limit, self._limits.max_response_bytes
            )
        rows, more = self._fit(page, self._codec.snapshot_page_header_size())
        token = request.token_after(rows[-1][0]) if more else ""
        return SnapshotMessagePage(_entries(rows), token)

    async def list_snapshot_message_ids(
        self, snapshot_id: str, page_size: int, page_token: str
    ) -> IdPage:
        snapshot_key = parse_uuid(snapshot_id, "snapshot_id")
        request = self._paging(PagedList.SNAPSHOT_MESSAGE_IDS, snapshot_key, page_size, page_token)
        async with self._store.read() as rx:
            snapshot = await rx.snapshot(snapshot_key)
            page = await rx.snapshot_id_page(snapshot, request.after_index, request.limit)
        token = request.token_after(page.rows[-1][0]) if page.more else ""
        return IdPage([message_id for _, message_id in page.rows], token)

    def _paging(
        self,
        listed: PagedList,
        target: UUID,
        page_size: int,
        page_token: str,
        fingerprint: bytes = paging.NO_FILTER,
    ) -> _PageRequest:
        """A list call's paging, checked: its page size and page token."""
        limit = rules.page_size(page_size, self._limits)
        cursor = paging.decode(page_token, listed, target, fingerprint)
        return _PageRequest(listed, target, fingerprint, limit, cursor)

    def _fit(
        self, page: Page[tuple[int, bytes]], header: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        """The leading rows whose encoding, with `header` bytes and a page
        token, stays under the response limit (at least one row)."""
        room = self._limits.max_response_bytes - header - self._token_field_size
        kept = rules.fitting([len(entry) for _, entry in page.rows], room)
        if kept < len(page.rows):
            return page.rows[:kept], True
        return page.rows, page.more

    def _new_message(
        self, conversation: UUID, message: MessageInput, digest: bytes, created_at: int
    ) -> NewMessage:
        stored = StoredMessage(new_id(), message.role, message.kind, message.body, created_at)
        head, tail = self._codec.frame(conversation, stored.header)
        return NewMessage(stored, digest, head, tail)


@contextmanager
def _naming_version(state: ConversationState) -> Iterator[None]:
    """An error raised in the block carries the version of the conversation
    read as `state`, for the caller's trailing metadata. Not when the
    conversation was created for the call (version 0: the rollback takes it
    back), nor when the database failed (its outcome is not known)."""
    try:
        yield
    except AgentStateError as error:
        if state.version and error.version is None and not isinstance(error, StorageUnavailable):
            error.version = state.version
        raise


def _entries(rows: list[tuple[int, bytes]]) -> list[EncodedMessage]:
    """The encodings of a page's rows: storage returns what the codec framed
    at append. (Only named so: nothing is converted, per row or at all.)"""
    return cast(list[EncodedMessage], [entry for _, entry in rows])


async def _resume(rx: ReadTransaction, state: ConversationState, cursor: Cursor | None) -> int:
    """The position a conversation page starts after."""
    if cursor is None:
        return 0
    if cursor.layout_version > state.layout_version:
        raise InvalidArgument("page_token", "is not a page token issued by this service")
    if cursor.layout_version == state.layout_version:
        return cursor.position
    changes = await rx.renumberings_since(state.id, cursor.layout_version)
    return positions.follow(cursor.position, changes)


async def _gap(tx: WriteTransaction, ends: rules.RangeEnds) -> tuple[int, int | None]:
    """The free interval new entries go into (after removals): between the
    entry before it (0 at the head) and the one after it (None at the tail)."""
    lower, upper = rules.gap_edges(ends)
    if isinstance(lower, rules.Neighbour):
        before = await tx.items_before(lower.anchor, 1)
        lower = before[0].position if before else 0
    if isinstance(upper, rules.Neighbour):
        after = await tx.items_after(upper.anchor, 1)
        return lower, after[0].position if after else None
    return lower, upper


class Neighbourhood(Protocol):
    """The reads room-making needs (a WriteTransaction has them)."""

    async def items_before(self, position: int, limit: int) -> list[Item]: ...

    async def items_after(self, position: int, limit: int) -> list[Item]: ...


async def make_room(
    tx: Neighbourhood, lower: int, upper: int | None, count: int, layout_version: int
) -> positions.Room:
    """Positions for `count` entries between `lower` and `upper`, and the
    renumbering that makes room for them if the gap is used up: fetches
    what the planner asks for until it has a plan."""
    neighbours: positions.Neighbours | None = None
    while True:
        step = positions.plan_room(lower, upper, count, layout_version, neighbours)
        if isinstance(step, positions.Room):
            return step
        neighbours = positions.Neighbours(
            step,
            await tx.items_before(step.below, step.limit),
            await tx.items_after(step.above, step.limit),
        )
