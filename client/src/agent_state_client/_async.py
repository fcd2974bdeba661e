"""AsyncClient: every method of AgentStateService, of the companion
ConversationsService and of the checkpoint store's CheckpointsService,
with typed answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message as ProtoMessage

from . import _call, _convert, _ids
from ._base import Configured
from ._call import Reply, ResponseT
from ._gen import agent_state_pb2 as pb
from ._gen import checkpoints_pb2 as kpb
from ._gen import conversations_pb2 as cpb
from .errors import ContextChanged, NotFound, PagingError
from .types import (
    AppendResult,
    AppendWithStateResult,
    ChannelValue,
    ChannelWrite,
    CheckpointPage,
    Context,
    Conversation,
    ConversationMetadata,
    ConversationPage,
    DeletedConversation,
    DeleteRangeResult,
    Fork,
    IdPage,
    Message,
    MessageInput,
    MessagePage,
    Messages,
    PruneStrategy,
    ReplaceResult,
    Retention,
    Role,
    Serialized,
    Snapshot,
    SnapshotInfo,
    SnapshotInfoPage,
    SnapshotPage,
    State,
    StateUpdate,
    StoredCheckpoint,
    Tail,
)

# The server caps pages at 1,000: the helpers that read everything ask for
# that many, to make as few round trips as they can.
_LARGEST_PAGE = 1000


class _Unchanged:
    """Stands for a field UpdateConversation leaves alone."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()
"""Default of `AsyncClient.update_conversation`'s fields: not in the update."""


class _Paged(Protocol):
    @property
    def next_page_token(self) -> str: ...


PageT = TypeVar("PageT", bound=_Paged)
ItemT = TypeVar("ItemT")


def _list_request(
    conversation_id: str,
    roles: Iterable[Role],
    kinds: Iterable[str],
    page_size: int,
    page_token: str,
) -> pb.ListConversationMessagesRequest:
    return pb.ListConversationMessagesRequest(
        conversation_id=conversation_id,
        roles=_convert.roles(roles),
        kinds=list(kinds),
        page_size=page_size,
        page_token=page_token,
    )


async def _pages(fetch: Callable[[str], Awaitable[PageT]]) -> AsyncIterator[PageT]:
    """Every page of a list, from the first, following next_page_token to
    its empty end."""
    token = ""
    seen: set[str] = set()
    while True:
        page = await fetch(token)
        yield page
        token = page.next_page_token
        if not token:
            return
        if token in seen:
            raise PagingError("the server repeated a page token; paging would not end")
        seen.add(token)


def _every(
    fetch: Callable[[str], Awaitable[PageT]], items: Callable[[PageT], Iterable[ItemT]]
) -> AsyncIterator[ItemT]:
    """The items of every page, page by page as the iteration goes."""

    async def iterate() -> AsyncIterator[ItemT]:
        async for page in _pages(fetch):
            for item in items(page):
                yield item

    return iterate()


def _batch(messages: MessageInput | Iterable[MessageInput]) -> list[pb.AppendMessageInput]:
    if isinstance(messages, MessageInput):
        messages = (messages,)
    return [_convert.message_input(message) for message in messages]


def _if_version(expected_version: int | None) -> int | None:
    """An agynio write's `if-version` (0 on an append: only while the
    conversation does not exist)."""
    if expected_version is not None and expected_version < 0:
        raise ValueError("expected_version: must be 0 or more (None: no check)")
    return expected_version


def _expected_field(expected_version: int | None) -> int:
    """A companion write's `expected_version` field, where 0 means no check
    on the wire: a 0 given here would silently drop the condition."""
    if expected_version is None:
        return 0
    if expected_version < 1:
        raise ValueError(
            "expected_version: must be 1 or more (None: no check); versions start at 1"
        )
    return expected_version


def _labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    return dict(labels or {})


class AsyncClient(Configured):
    """An asyncio client of an agent-state server.

    Use it as an async context manager, or call `close` when done::

        async with AsyncClient("127.0.0.1:50051", token=...) as client:
            result = await client.append(conversation_id, MessageInput.user("hi"))
            async for message in client.messages(conversation_id):
                ...

    Methods named ``list_*`` return one page; the plural nouns
    (`messages`, `message_ids`, `conversations`, ...) iterate over every
    page. Failures raise `agent_state_client.errors.AgentStateError`
    subclasses named after their condition.

    Writes: each carries an ``idempotency-key`` the client makes (or the
    `idempotency_key` given), the same on every retry of the call, so a
    retried write applies once. `expected_version` makes a write
    conditional: it fails `VersionConflict` (nothing changed) unless the
    conversation is at that version. On AgentStateService's writes it is
    sent as ``if-version`` metadata (0 on `append`: only while the
    conversation does not exist); on the companion API's, as the request's
    field (1 or more there). Every answer has `version`: the conversation's
    version after the call.
    """

    async def close(self) -> None:
        """Close the connection (a view made by `with_options` leaves it open)."""
        if self._owner:
            await self._caller.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self,
        rpc: _call.Rpc[_call.ResponseT],
        request: Any,
        *,
        idempotency_key: str | None = None,
        if_version: int | None = None,
    ) -> Reply[_call.ResponseT]:
        return await self._caller.call(
            self._options, rpc, request, idempotency_key=idempotency_key, if_version=if_version
        )

    async def call_unary(
        self, method: str, request: ProtoMessage, response_type: type[ResponseT]
    ) -> ResponseT:
        """Call a unary method of another service on the same server, such
        as ``"/grpc.health.v1.Health/Check"``, over this client's connection
        and with its token, request id, deadline and errors. It is retried
        like a read (no idempotency key), so use it for methods safe to
        repeat. The library wraps agent-state's own services; this reaches
        the others the server offers (health, reflection) without a second
        connection."""
        service, _, name = method.strip("/").rpartition("/")
        if not service or not name:
            raise ValueError(f"method {method!r}: expected /package.Service/Method")
        reply = await self._call(_call.Rpc(service, name, response_type), request)
        return reply.response

    # --- AgentStateService ---------------------------------------------------

    async def append(
        self,
        conversation_id: str,
        messages: MessageInput | Iterable[MessageInput],
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append messages at the tail, in order, atomically; the
        conversation is created if it does not exist. Returns the stored
        messages, whole."""
        request = pb.AppendConversationMessagesRequest(
            conversation_id=conversation_id, messages=_batch(messages)
        )
        reply = await self._call(
            _call.APPEND,
            request,
            idempotency_key=idempotency_key,
            if_version=_if_version(expected_version),
        )
        return _convert.appended(reply.response, reply.version)

    async def get_conversation(self, conversation_id: str) -> ConversationMetadata:
        """The conversation's message count and last update."""
        reply = await self._call(
            _call.GET_CONVERSATION, pb.GetConversationRequest(conversation_id=conversation_id)
        )
        return _convert.metadata(reply.response.metadata, reply.version)

    async def list_messages(
        self,
        conversation_id: str,
        *,
        roles: Iterable[Role] = (),
        kinds: Iterable[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> MessagePage:
        """One page of the ordering, oldest first, keeping only `roles` and
        `kinds` when given (page_size 0: the server's default, 100)."""
        request = _list_request(conversation_id, roles, kinds, page_size, page_token)
        reply = await self._call(_call.LIST_MESSAGES, request)
        return _convert.message_page(reply.response, reply.version)

    def messages(
        self,
        conversation_id: str,
        *,
        roles: Iterable[Role] = (),
        kinds: Iterable[str] = (),
        page_size: int = 0,
    ) -> AsyncIterator[Message]:
        """Every message of the ordering (that the filters keep), oldest
        first, fetched page by page as the iteration goes."""
        roles, kinds = tuple(roles), tuple(kinds)

        def fetch(token: str) -> Awaitable[MessagePage]:
            return self.list_messages(
                conversation_id, roles=roles, kinds=kinds, page_size=page_size, page_token=token
            )

        return _every(fetch, lambda page: page.messages)

    async def context(
        self,
        conversation_id: str,
        *,
        roles: Iterable[Role] = (),
        kinds: Iterable[str] = (),
        attempts: int = 5,
    ) -> Context:
        """The whole ordering (or what the filters keep), as one consistent
        state: when the conversation changes between two pages, the read
        starts over (up to `attempts` times, then `ContextChanged`). A
        context of up to 1,000 messages under 3 MiB is one call."""
        pages, version = await self._context_pages(conversation_id, roles, kinds, attempts)
        messages = tuple(_convert.message(message) for page in pages for message in page.messages)
        return Context(_convert.metadata(pages[-1].metadata, version), messages)

    async def _context_pages(
        self,
        conversation_id: str,
        roles: Iterable[Role] = (),
        kinds: Iterable[str] = (),
        attempts: int = 5,
    ) -> tuple[list[pb.ListConversationMessagesResponse], int | None]:
        """`context`'s pages as they came, with the version the last one
        reported: for the framework integrations, which convert each
        message straight to what they hand out (a Message of its own costs
        several microseconds, a long context's reading time)."""
        roles, kinds = tuple(roles), tuple(kinds)
        versions: list[int | None] = []

        async def fetch(token: str) -> pb.ListConversationMessagesResponse:
            request = _list_request(conversation_id, roles, kinds, _LARGEST_PAGE, token)
            reply = await self._call(_call.LIST_MESSAGES, request)
            versions.append(reply.version)
            return reply.response

        for _ in range(attempts):
            pages: list[pb.ListConversationMessagesResponse] = []
            async for page in _pages(fetch):
                if pages and page.metadata.updated_at != pages[0].metadata.updated_at:
                    break
                pages.append(page)
            else:
                return pages, versions[-1]
        raise ContextChanged(
            f"conversation {conversation_id} changed during each of {attempts} reads"
        )

    async def list_message_ids(
        self, conversation_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> IdPage:
        """One page of the ordering's message ids, oldest first."""
        request = pb.ListConversationMessageIdsRequest(
            conversation_id=conversation_id, page_size=page_size, page_token=page_token
        )
        reply = await self._call(_call.LIST_MESSAGE_IDS, request)
        return _convert.id_page(reply.response, reply.version)

    def message_ids(self, conversation_id: str, *, page_size: int = 0) -> AsyncIterator[str]:
        """Every message id of the ordering, oldest first."""

        def fetch(token: str) -> Awaitable[IdPage]:
            return self.list_message_ids(conversation_id, page_size=page_size, page_token=token)

        return _every(fetch, lambda page: page.message_ids)

    async def replace_range(
        self,
        conversation_id: str,
        *,
        from_message_id: str | None = None,
        to_message_id: str | None = None,
        new_message_ids: Iterable[str] = (),
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> ReplaceResult:
        """Replace the inclusive range [from..to] of the ordering by
        `new_message_ids` (messages of this conversation, in the ordering or
        detached; one in the ordering elsewhere is moved). None given an
        empty list detaches the range. With only `from_message_id` the ids
        go right after it, with only `to_message_id` right before it.

        Summarising is one call: append the summary, then replace
        [first..last] with [summary id].
        """
        request = pb.ReplaceConversationMessagesRangeRequest(
            conversation_id=conversation_id,
            from_message_id=from_message_id or "",
            to_message_id=to_message_id or "",
            new_message_ids=list(new_message_ids),
        )
        reply = await self._call(
            _call.REPLACE_RANGE,
            request,
            idempotency_key=idempotency_key,
            if_version=_if_version(expected_version),
        )
        return _convert.replaced(reply.response, reply.version)

    async def delete_range(
        self,
        conversation_id: str,
        *,
        from_message_id: str | None = None,
        to_message_id: str | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> DeleteRangeResult:
        """Delete for good the inclusive range [from..to]; with only
        `from_message_id` through the tail, with only `to_message_id` from
        the head. Snapshots taken earlier still read the messages back."""
        request = pb.DeleteConversationMessagesRangeRequest(
            conversation_id=conversation_id,
            from_message_id=from_message_id or "",
            to_message_id=to_message_id or "",
        )
        reply = await self._call(
            _call.DELETE_RANGE,
            request,
            idempotency_key=idempotency_key,
            if_version=_if_version(expected_version),
        )
        return _convert.deleted(reply.response, reply.version)

    async def create_snapshot(
        self,
        conversation_id: str,
        message_ids: Iterable[str],
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Snapshot:
        """Record the exact context of one model call: the named messages,
        in this order (repeats allowed). It reads back unchanged forever,
        whatever happens to the conversation. It changes no version."""
        request = pb.CreateSnapshotRequest(
            conversation_id=conversation_id, message_ids=list(message_ids)
        )
        reply = await self._call(
            _call.CREATE_SNAPSHOT,
            request,
            idempotency_key=idempotency_key,
            if_version=_if_version(expected_version),
        )
        return _convert.snapshot(reply.response.snapshot, reply.version)

    async def list_snapshot_messages(
        self, snapshot_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> SnapshotPage:
        """One page of a snapshot's messages, in stored order."""
        request = pb.ListSnapshotMessagesRequest(
            snapshot_id=snapshot_id, page_size=page_size, page_token=page_token
        )
        reply = await self._call(_call.LIST_SNAPSHOT_MESSAGES, request)
        return SnapshotPage(
            _convert.messages(reply.response.messages),
            reply.response.next_page_token,
            reply.version,
        )

    def snapshot_messages(self, snapshot_id: str, *, page_size: int = 0) -> AsyncIterator[Message]:
        """Every message of a snapshot, in stored order."""

        def fetch(token: str) -> Awaitable[SnapshotPage]:
            return self.list_snapshot_messages(snapshot_id, page_size=page_size, page_token=token)

        return _every(fetch, lambda page: page.messages)

    async def list_snapshot_message_ids(
        self, snapshot_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> IdPage:
        """One page of a snapshot's message ids, in stored order."""
        request = pb.ListSnapshotMessageIdsRequest(
            snapshot_id=snapshot_id, page_size=page_size, page_token=page_token
        )
        reply = await self._call(_call.LIST_SNAPSHOT_MESSAGE_IDS, request)
        return _convert.id_page(reply.response, reply.version)

    def snapshot_message_ids(self, snapshot_id: str, *, page_size: int = 0) -> AsyncIterator[str]:
        """Every message id of a snapshot, in stored order."""

        def fetch(token: str) -> Awaitable[IdPage]:
            return self.list_snapshot_message_ids(
                snapshot_id, page_size=page_size, page_token=token
            )

        return _every(fetch, lambda page: page.message_ids)

    # --- ConversationsService: conversations as a whole --------------------

    async def create_conversation(
        self,
        conversation_id: str | None = None,
        *,
        title: str = "",
        labels: Mapping[str, str] | None = None,
        retention: Retention | None = None,
        idempotency_key: str | None = None,
    ) -> Conversation:
        """Create an empty conversation (version 1). Without an id the
        client makes a time-ordered (v7) UUID, so that a retry cannot make
        a second conversation. An existing id: `AlreadyExists`."""
        request = cpb.CreateConversationRequest(
            conversation_id=conversation_id or _ids.uuid7(), title=title, labels=_labels(labels)
        )
        if retention is not None:
            request.retention.CopyFrom(_convert.retention(retention))
        reply = await self._call(
            _call.CREATE_CONVERSATION, request, idempotency_key=idempotency_key
        )
        return _convert.conversation(reply.response)

    async def describe_conversation(self, conversation_id: str) -> Conversation:
        """One conversation: title, labels, retention, counts, version, times."""
        reply = await self._call(
            _call.DESCRIBE_CONVERSATION,
            cpb.DescribeConversationRequest(conversation_id=conversation_id),
        )
        return _convert.conversation(reply.response)

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | _Unchanged = UNCHANGED,
        labels: Mapping[str, str] | _Unchanged = UNCHANGED,
        retention: Retention | _Unchanged | None = UNCHANGED,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Conversation:
        """Change the fields given: `title`, `labels` (replaced whole),
        `retention` (replaced whole; None: back to the server's default).
        Adds 1 to the version; `updated_at` stays."""
        given = cpb.Conversation(conversation_id=conversation_id)
        paths: list[str] = []
        if not isinstance(title, _Unchanged):
            given.title = title
            paths.append("title")
        if not isinstance(labels, _Unchanged):
            given.labels.update(labels)
            paths.append("labels")
        if not isinstance(retention, _Unchanged):
            if retention is not None:
                given.retention.CopyFrom(_convert.retention(retention))
            paths.append("retention")
        if not paths:
            raise ValueError("update_conversation: give title, labels or retention to change")
        request = cpb.UpdateConversationRequest(
            conversation=given, expected_version=_expected_field(expected_version)
        )
        request.update_mask.paths.extend(paths)
        reply = await self._call(
            _call.UPDATE_CONVERSATION, request, idempotency_key=idempotency_key
        )
        return _convert.conversation(reply.response)

    async def list_conversations(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        oldest_first: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> ConversationPage:
        """One page of conversations carrying every one of `labels`, updated
        strictly between the bounds (aware datetimes), newest first (or
        oldest first)."""
        request = cpb.ListConversationsRequest(
            labels=_labels(labels),
            order_by="updated_at" if oldest_first else "updated_at desc",
            page_size=page_size,
            page_token=page_token,
        )
        if updated_after is not None:
            request.updated_after.CopyFrom(_convert.timestamp(updated_after, "updated_after"))
        if updated_before is not None:
            request.updated_before.CopyFrom(_convert.timestamp(updated_before, "updated_before"))
        reply = await self._call(_call.LIST_CONVERSATIONS, request)
        return ConversationPage(
            tuple(_convert.conversation(found) for found in reply.response.conversations),
            reply.response.next_page_token,
            reply.version,
        )

    def conversations(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        oldest_first: bool = False,
        page_size: int = 0,
    ) -> AsyncIterator[Conversation]:
        """Every conversation `list_conversations` would page through."""

        def fetch(token: str) -> Awaitable[ConversationPage]:
            return self.list_conversations(
                labels=labels,
                updated_after=updated_after,
                updated_before=updated_before,
                oldest_first=oldest_first,
                page_size=page_size,
                page_token=token,
            )

        return _every(fetch, lambda page: page.conversations)

    async def delete_conversation(
        self,
        conversation_id: str,
        *,
        expected_version: int | None = None,
        allow_missing: bool = False,
        idempotency_key: str | None = None,
    ) -> DeletedConversation:
        """Erase a conversation and everything of it (messages, snapshots,
        labels, its scope's state) in one transaction; a retry after a lost
        answer gets that answer again. An absent conversation is
        `NotFound`, or zero counts with `allow_missing`."""
        request = cpb.DeleteConversationRequest(
            conversation_id=conversation_id,
            expected_version=_expected_field(expected_version),
            allow_missing=allow_missing,
        )
        reply = await self._call(
            _call.DELETE_CONVERSATION, request, idempotency_key=idempotency_key
        )
        return DeletedConversation(
            reply.response.deleted_message_count,
            reply.response.deleted_snapshot_count,
            reply.version,
        )

    # --- ConversationsService: reading and forking -----------------------------

    async def tail(
        self,
        conversation_id: str,
        count: int,
        *,
        roles: Iterable[Role] = (),
        kinds: Iterable[str] = (),
    ) -> Tail:
        """The last `count` (1 to 1,000) messages of the ordering that the
        filters keep, oldest first."""
        request = cpb.TailConversationMessagesRequest(
            conversation_id=conversation_id,
            count=count,
            roles=_convert.roles(roles),
            kinds=list(kinds),
        )
        reply = await self._call(_call.TAIL, request)
        return _convert.tail(reply.response, reply.version)

    async def get_messages(self, conversation_id: str, message_ids: Iterable[str]) -> Messages:
        """Messages of the ordering by id (1 to 1,000, repeats allowed), in
        the order asked."""
        request = cpb.GetMessagesRequest(
            conversation_id=conversation_id, message_ids=list(message_ids)
        )
        reply = await self._call(_call.GET_MESSAGES, request)
        return Messages(_convert.messages(reply.response.messages), reply.version)

    async def fork_conversation(
        self,
        conversation_id: str,
        *,
        up_to_message_id: str | None = None,
        new_conversation_id: str | None = None,
        title: str = "",
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Fork:
        """Copy the ordering, up to and including `up_to_message_id` (None:
        all of it), into a new conversation (version 1) under new message
        ids. Without `new_conversation_id` the client makes a v7 UUID, so
        that a retry cannot fork twice."""
        request = cpb.ForkConversationRequest(
            conversation_id=conversation_id,
            up_to_message_id=up_to_message_id or "",
            new_conversation_id=new_conversation_id or _ids.uuid7(),
            title=title,
            labels=_labels(labels),
        )
        reply = await self._call(_call.FORK, request, idempotency_key=idempotency_key)
        return Fork(
            _convert.conversation(reply.response.conversation), tuple(reply.response.message_ids)
        )

    async def list_snapshots(
        self, conversation_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> SnapshotInfoPage:
        """One page of a conversation's snapshots, oldest first."""
        request = cpb.ListConversationSnapshotsRequest(
            conversation_id=conversation_id, page_size=page_size, page_token=page_token
        )
        reply = await self._call(_call.LIST_SNAPSHOTS, request)
        return SnapshotInfoPage(
            tuple(_convert.snapshot_info(found) for found in reply.response.snapshots),
            reply.response.next_page_token,
            reply.version,
        )

    def snapshots(self, conversation_id: str, *, page_size: int = 0) -> AsyncIterator[SnapshotInfo]:
        """Every snapshot of a conversation, oldest first."""

        def fetch(token: str) -> Awaitable[SnapshotInfoPage]:
            return self.list_snapshots(conversation_id, page_size=page_size, page_token=token)

        return _every(fetch, lambda page: page.snapshots)

    # --- ConversationsService: state -----------------------------------------

    async def get_state(self, scope: str) -> State:
        """One scope's state (``app/{app}``, ``user/{app}/{user}`` or
        ``conversation/{uuid}``); an unknown scope is ``{}`` at version 0."""
        reply = await self._call(_call.GET_STATE, cpb.GetStateRequest(scope=scope))
        return State(scope, reply.response.values_json, reply.response.version)

    async def update_state(
        self,
        scope: str,
        *,
        # `set`, as StateUpdate and the proto (set_json) call it.
        set: Mapping[str, Any] | str | None = None,
        remove: Iterable[str] = (),
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> State:
        """Set keys (a mapping of JSON values, or a JSON object's text sent
        as it is) and remove keys of one scope's state, in one transaction;
        `expected_version` is the scope's version."""
        request = cpb.UpdateStateRequest(
            scope=scope,
            set_json="" if set is None else _convert.json_object(set, "set"),
            remove_keys=list(remove),
            expected_version=_expected_field(expected_version),
        )
        reply = await self._call(_call.UPDATE_STATE, request, idempotency_key=idempotency_key)
        return State(scope, reply.response.values_json, reply.response.version)

    async def append_with_state(
        self,
        conversation_id: str,
        messages: MessageInput | Iterable[MessageInput],
        state_updates: Iterable[StateUpdate] = (),
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendWithStateResult:
        """Append messages (as `append`) and apply state updates in one
        transaction: everything lands or nothing does."""
        request = cpb.AppendMessagesWithStateRequest(
            conversation_id=conversation_id,
            messages=_batch(messages),
            state_updates=[
                cpb.StateUpdate(
                    scope=update.scope,
                    set_json=_convert.json_object(update.set, f"{update.scope}.set")
                    if update.set
                    else "",
                    remove_keys=list(update.remove),
                )
                for update in state_updates
            ],
            expected_version=_expected_field(expected_version),
        )
        reply = await self._call(_call.APPEND_WITH_STATE, request, idempotency_key=idempotency_key)
        return _convert.appended_with_state(reply.response, reply.version)

    # --- CheckpointsService --------------------------------------------------
    #
    # A LangGraph checkpointer's store (agent_state_client.integrations.
    # langgraph.AgentStateSaver uses these). Its writes are idempotent by
    # themselves, so they are retried as they are; they answer no version.

    async def put_checkpoint(
        self,
        thread_id: str,
        checkpoint_id: str,
        checkpoint: Serialized,
        *,
        checkpoint_ns: str = "",
        parent_checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | str | None = None,
        channel_versions: Mapping[str, str] | None = None,
        values: Iterable[ChannelValue] = (),
    ) -> None:
        """Store a checkpoint (replacing one with the same key) and the
        values of the channel versions it introduces; `channel_versions`
        names every channel the checkpoint has a value for."""
        request = kpb.PutCheckpointRequest(
            thread_id=thread_id,
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint_id,
            parent_checkpoint_id=parent_checkpoint_id or "",
            checkpoint=kpb.Blob(type=checkpoint.type, data=checkpoint.data),
            metadata_json=_convert.json_object(metadata or {}, "metadata"),
            channel_versions=dict(channel_versions or {}),
            values=[
                kpb.ChannelValue(
                    channel=found.channel,
                    version=found.version,
                    value=_convert.value_message(found.value),
                )
                for found in values
            ],
        )
        await self._call(_call.PUT_CHECKPOINT, request)

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        task_id: str,
        writes: Iterable[ChannelWrite],
        *,
        checkpoint_ns: str = "",
        task_path: str = "",
    ) -> None:
        """Store a task's writes against a checkpoint (which need not be
        stored yet)."""
        request = kpb.PutWritesRequest(
            thread_id=thread_id,
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint_id,
            task_id=task_id,
            task_path=task_path,
            writes=[
                kpb.ChannelWrite(
                    idx=write.idx, channel=write.channel, value=_convert.value_message(write.value)
                )
                for write in writes
            ],
        )
        await self._call(_call.PUT_WRITES, request)

    async def get_checkpoint(
        self, thread_id: str, *, checkpoint_ns: str = "", checkpoint_id: str | None = None
    ) -> StoredCheckpoint | None:
        """The checkpoint named, or the newest of the thread's namespace;
        None when there is none."""
        request = kpb.GetCheckpointRequest(
            thread_id=thread_id, checkpoint_ns=checkpoint_ns, checkpoint_id=checkpoint_id or ""
        )
        try:
            reply = await self._call(_call.GET_CHECKPOINT, request)
        except NotFound:
            return None
        return _convert.stored_checkpoint(reply.response.checkpoint)

    async def list_checkpoints(
        self,
        thread_id: str | None = None,
        *,
        checkpoint_ns: str | None = None,
        before: str | None = None,
        metadata_filter: Mapping[str, Any] | str | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> CheckpointPage:
        """One page of checkpoints, newest first: of one thread (None:
        every thread), one namespace (None: every namespace), with ids
        before `before`, whose metadata has each key of `metadata_filter`
        with an equal value."""
        request = kpb.ListCheckpointsRequest(
            thread_id=thread_id or "",
            before_checkpoint_id=before or "",
            metadata_filter_json=""
            if metadata_filter is None
            else _convert.json_object(metadata_filter, "metadata_filter"),
            page_size=page_size,
            page_token=page_token,
        )
        if checkpoint_ns is not None:
            request.checkpoint_ns = checkpoint_ns
        reply = await self._call(_call.LIST_CHECKPOINTS, request)
        return CheckpointPage(
            tuple(_convert.stored_checkpoint(found) for found in reply.response.checkpoints),
            reply.response.next_page_token,
        )

    def checkpoints(
        self,
        thread_id: str | None = None,
        *,
        checkpoint_ns: str | None = None,
        before: str | None = None,
        metadata_filter: Mapping[str, Any] | str | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[StoredCheckpoint]:
        """Every checkpoint `list_checkpoints` would list, newest first."""

        def fetch(token: str) -> Awaitable[CheckpointPage]:
            return self.list_checkpoints(
                thread_id,
                checkpoint_ns=checkpoint_ns,
                before=before,
                metadata_filter=metadata_filter,
                page_size=page_size,
                page_token=token,
            )

        return _every(fetch, lambda page: page.checkpoints)

    async def delete_thread(self, thread_id: str) -> int:
        """Erase every checkpoint, value and write of a thread; later writes
        of its erased history are refused (FailedPrecondition). Returns the
        checkpoints deleted."""
        request = kpb.DeleteThreadRequest(thread_id=thread_id)
        reply = await self._call(_call.DELETE_THREAD, request)
        return reply.response.deleted_checkpoint_count

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> int:
        """Copy a thread into another, replacing its previous content;
        returns the checkpoints copied."""
        request = kpb.CopyThreadRequest(
            source_thread_id=source_thread_id, target_thread_id=target_thread_id
        )
        reply = await self._call(_call.COPY_THREAD, request)
        return reply.response.copied_checkpoint_count

    async def prune(
        self, thread_ids: Iterable[str], strategy: PruneStrategy = PruneStrategy.KEEP_LATEST
    ) -> int:
        """Keep only the newest checkpoint of each namespace of the threads
        (or erase them, with PruneStrategy.DELETE); returns the checkpoints
        deleted."""
        request = kpb.PruneRequest(thread_ids=list(thread_ids), strategy=int(strategy))  # type: ignore[arg-type]
        reply = await self._call(_call.PRUNE, request)
        return reply.response.deleted_checkpoint_count

    async def delete_for_runs(self, run_ids: Iterable[str]) -> int:
        """Delete the checkpoints whose metadata names one of the runs as
        "run_id", in every thread; returns how many went."""
        request = kpb.DeleteForRunsRequest(run_ids=list(run_ids))
        reply = await self._call(_call.DELETE_FOR_RUNS, request)
        return reply.response.deleted_checkpoint_count
