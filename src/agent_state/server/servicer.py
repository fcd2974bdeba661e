"""The gRPC face of AgentStateService: decode, call ConversationService,
encode. Every method goes through the one call path of dispatch.py (token
check, idempotency key, error status, logs, metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from agent_state_client._gen import agent_state_pb2 as pb

from ..model import EncodedResponse
from ..service import ConversationService, Idempotency, Replay
from . import convert, dispatch
from .wire import WireCodec

SERVICE = pb.DESCRIPTOR.services_by_name["AgentStateService"]
SERVICE_NAME = SERVICE.full_name

_R = TypeVar("_R")


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
        return {
            name: dispatch.Route(handler, write=name in WRITES)
            for name, handler in handlers.items()
        }

    async def append(
        self, request: pb.AppendConversationMessagesRequest, key: Idempotency | None
    ) -> bytes:
        inputs = [convert.message_input(message) for message in request.messages]
        result = await self._service.append(request.conversation_id, inputs, key)
        return _response(result, self._codec.appended)

    async def list_messages(self, request: pb.ListConversationMessagesRequest) -> bytes:
        page = await self._service.list_messages(
            request.conversation_id,
            list(request.roles),
            list(request.kinds),
            request.page_size,
            request.page_token,
        )
        return self._codec.message_page(page)

    async def replace_range(
        self, request: pb.ReplaceConversationMessagesRangeRequest, key: Idempotency | None
    ) -> bytes:
        result = await self._service.replace_range(
            request.conversation_id,
            request.from_message_id,
            request.to_message_id,
            list(request.new_message_ids),
            key,
        )
        return _response(result, self._codec.replaced)

    async def delete_range(
        self, request: pb.DeleteConversationMessagesRangeRequest, key: Idempotency | None
    ) -> bytes:
        result = await self._service.delete_range(
            request.conversation_id, request.from_message_id, request.to_message_id, key
        )
        return _response(result, self._codec.deleted)

    async def get_conversation(
        self, request: pb.GetConversationRequest
    ) -> pb.GetConversationResponse:
        state = await self._service.get_conversation(request.conversation_id)
        return pb.GetConversationResponse(metadata=convert.metadata(state))

    async def list_message_ids(
        self, request: pb.ListConversationMessageIdsRequest
    ) -> pb.ListConversationMessageIdsResponse:
        page = await self._service.list_message_ids(
            request.conversation_id, request.page_size, request.page_token
        )
        return pb.ListConversationMessageIdsResponse(
            message_ids=convert.ids(page.message_ids), next_page_token=page.next_page_token
        )

    async def list_snapshot_messages(self, request: pb.ListSnapshotMessagesRequest) -> bytes:
        page = await self._service.list_snapshot_messages(
            request.snapshot_id, request.page_size, request.page_token
        )
        return self._codec.snapshot_message_page(page)

    async def list_snapshot_message_ids(
        self, request: pb.ListSnapshotMessageIdsRequest
    ) -> pb.ListSnapshotMessageIdsResponse:
        page = await self._service.list_snapshot_message_ids(
            request.snapshot_id, request.page_size, request.page_token
        )
        return pb.ListSnapshotMessageIdsResponse(
            message_ids=convert.ids(page.message_ids), next_page_token=page.next_page_token
        )

    async def create_snapshot(
        self, request: pb.CreateSnapshotRequest, key: Idempotency | None
    ) -> bytes:
        result = await self._service.create_snapshot(
            request.conversation_id, list(request.message_ids), key
        )
        return _response(result, self._codec.snapshot_created)


def _response(result: _R | Replay, encode: Callable[[_R], EncodedResponse]) -> bytes:
    """What a mutating call answers: the response its idempotency key
    replays, or its result encoded."""
    return result.response if isinstance(result, Replay) else encode(result)


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


def register(server: grpc.aio.Server, servicer: AgentStateServicer, edge: dispatch.Edge) -> None:
    """Serve every method of the contract's AgentStateService on `server`."""
    routes = servicer.routes()
    missing = {method.name for method in SERVICE.methods} ^ set(routes)
    if missing:
        raise RuntimeError(f"servicer and contract disagree on methods: {sorted(missing)}")
    dispatch.register(server, SERVICE, routes, edge)
