"""The gRPC face of AgentStateService: decode, call ConversationService,
encode. Every method goes through the one call path of dispatch.py (token
check, idempotency key, if-version, error status, the conversation's
version, logs, metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import grpc

from agent_state_client._gen import agent_state_pb2 as pb

from ..model import ConversationState, EncodedResponse, ExpectedVersion
from ..service import ConversationService, Idempotency, Replay
from . import convert, dispatch
from .dispatch import Versioned
from .wire import WireCodec

SERVICE = pb.DESCRIPTOR.services_by_name["AgentStateService"]
SERVICE_NAME = SERVICE.full_name

_R = TypeVar("_R", bound="_Versioned")


class _Versioned(Protocol):
    """A mutating call's result: it carries the conversation's state."""

    @property
    def state(self) -> ConversationState: ...


class AgentStateServicer:
    def __init__(self, service: ConversationService) -> None:
        self._service = service
        # The encoding of what the service answers; stateless, like the one
        # the service was given.
        self._codec = WireCodec()

    def routes(self) -> dict[str, dispatch.Route]:
        """Every method of the contract, by name."""
        handlers: dict[str, dispatch.Handler] = {
            "AppendConversationMessages": self.append,
            "ListConversationMessages": self.list_messages,
            "ReplaceConversationMessagesRange": self.replace_range,
            "DeleteConversationMessagesRange": self.delete_range,
            "GetConversation": self.get_conversation,
            "ListConversationMessageIds": self.list_message_ids,
            "ListSnapshotMessages": self.list_snapshot_messages,
            "ListSnapshotMessageIds": self.list_snapshot_message_ids,
            "CreateSnapshot": self.create_snapshot,
        }
        # The writes take an idempotency key and if-version; every method
        # but the snapshot lists names one conversation.
        return {
            name: dispatch.Route(
                handler,
                write=name in WRITES,
                if_version=name in WRITES,
                conversation=None if name in _SNAPSHOT_READS else _conversation_id,
            )
            for name, handler in handlers.items()
        }

    async def append(
        self,
        request: pb.AppendConversationMessagesRequest,
        key: Idempotency | None,
        expected: ExpectedVersion | None,
    ) -> Versioned:
        inputs = [convert.message_input(message) for message in request.messages]
        result = await self._service.append(request.conversation_id, inputs, key, expected)
        return _answer(result, self._codec.appended)

    async def list_messages(self, request: pb.ListConversationMessagesRequest) -> Versioned:
        page = await self._service.list_messages(
            request.conversation_id,
            list(request.roles),
            list(request.kinds),
            request.page_size,
            request.page_token,
        )
        return Versioned(self._codec.message_page(page), page.state.version)

    async def replace_range(
        self,
        request: pb.ReplaceConversationMessagesRangeRequest,
        key: Idempotency | None,
        expected: ExpectedVersion | None,
    ) -> Versioned:
        result = await self._service.replace_range(
            request.conversation_id,
            request.from_message_id,
            request.to_message_id,
            list(request.new_message_ids),
            key,
            expected,
        )
        return _answer(result, self._codec.replaced)

    async def delete_range(
        self,
        request: pb.DeleteConversationMessagesRangeRequest,
        key: Idempotency | None,
        expected: ExpectedVersion | None,
    ) -> Versioned:
        result = await self._service.delete_range(
            request.conversation_id, request.from_message_id, request.to_message_id, key, expected
        )
        return _answer(result, self._codec.deleted)

    async def get_conversation(self, request: pb.GetConversationRequest) -> Versioned:
        state = await self._service.get_conversation(request.conversation_id)
        return Versioned(
            pb.GetConversationResponse(metadata=convert.metadata(state)), state.version
        )

    async def list_message_ids(self, request: pb.ListConversationMessageIdsRequest) -> Versioned:
        page = await self._service.list_message_ids(
            request.conversation_id, request.page_size, request.page_token
        )
        response = pb.ListConversationMessageIdsResponse(
            message_ids=convert.ids(page.message_ids), next_page_token=page.next_page_token
        )
        return Versioned(response, page.version)

    # The snapshot lists name a snapshot, which never changes, not a
    # conversation: they report no version.

    async def list_snapshot_messages(self, request: pb.ListSnapshotMessagesRequest) -> Versioned:
        page = await self._service.list_snapshot_messages(
            request.snapshot_id, request.page_size, request.page_token
        )
        return Versioned(self._codec.snapshot_message_page(page), None)

    async def list_snapshot_message_ids(
        self, request: pb.ListSnapshotMessageIdsRequest
    ) -> Versioned:
        page = await self._service.list_snapshot_message_ids(
            request.snapshot_id, request.page_size, request.page_token
        )
        response = pb.ListSnapshotMessageIdsResponse(
            message_ids=convert.ids(page.message_ids), next_page_token=page.next_page_token
        )
        return Versioned(response, None)

    async def create_snapshot(
        self,
        request: pb.CreateSnapshotRequest,
        key: Idempotency | None,
        expected: ExpectedVersion | None,
    ) -> Versioned:
        result = await self._service.create_snapshot(
            request.conversation_id, list(request.message_ids), key, expected
        )
        return _answer(result, self._codec.snapshot_created)


def _answer(result: _R | Replay, encode: Callable[[_R], EncodedResponse]) -> Versioned:
    """What a mutating call answers: the response its idempotency key
    replays, or its result encoded; with the conversation's version now."""
    if isinstance(result, Replay):
        return Versioned(result.response, result.version)
    return Versioned(encode(result), result.state.version)


WRITES = frozenset(
    {
        "AppendConversationMessages",
        "ReplaceConversationMessagesRange",
        "DeleteConversationMessagesRange",
        "CreateSnapshot",
    }
)
"""The methods that change data: a read-only token may not call them, and
they take an idempotency key."""

_SNAPSHOT_READS = frozenset({"ListSnapshotMessages", "ListSnapshotMessageIds"})
"""The methods that name a snapshot, not a conversation."""


def _conversation_id(request: pb.GetConversationRequest) -> str:
    return request.conversation_id


def register(
    server: grpc.aio.Server,
    servicer: AgentStateServicer,
    edge: dispatch.Edge,
    versions: dispatch.Versions,
) -> None:
    """Serve every method of the contract's AgentStateService on `server`;
    `versions` gives failed calls their conversation's version."""
    routes = servicer.routes()
    missing = {method.name for method in SERVICE.methods} ^ set(routes)
    if missing:
        raise RuntimeError(f"servicer and contract disagree on methods: {sorted(missing)}")
    dispatch.register(server, SERVICE, routes, edge, versions)
