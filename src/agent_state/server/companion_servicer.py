"""The gRPC face of the companion API, agentstate.v1.ConversationsService:
decode, call CompanionService, encode. Served on the same port as
AgentStateService through the same call path (dispatch.py): the same token
scopes, errors, logs and metrics.

Every call that names one conversation answers with the trailing metadata
x-conversation-version (dispatch.set_trailing): its version after the
call; 0 after DeleteConversation (the conversation no longer exists, as
`if-version: 0` means); on errors too when the conversation exists.
ForkConversation answers with the new conversation's version (its log
line names the source).

To serve another method, add its handler to `routes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import grpc

from agent_state_client._gen import conversations_pb2 as cpb

from ..companion import AppendedWithState, CompanionService, Replayed, ScopeState
from ..idempotency import Idempotency
from ..model import ConversationRecord, ConversationState, EncodedResponse, MessageHeader
from . import convert, dispatch, wire
from .wire import WireCodec

SERVICE = cpb.DESCRIPTOR.services_by_name["ConversationsService"]
SERVICE_NAME = SERVICE.full_name


class CompanionCodec:
    """companion.CompanionCodec in the companion API's wire format."""

    def __init__(self) -> None:
        self._messages = wire.WireCodec()

    def conversation(self, record: ConversationRecord) -> EncodedResponse:
        return EncodedResponse(convert.conversation(record).SerializeToString())

    def forked(self, record: ConversationRecord, message_ids: Sequence[UUID]) -> EncodedResponse:
        response = cpb.ForkConversationResponse(
            conversation=convert.conversation(record), message_ids=convert.ids(message_ids)
        )
        return EncodedResponse(response.SerializeToString())

    def frame(self, conversation_id: UUID, message: MessageHeader) -> tuple[bytes, bytes]:
        # Messages are stored as the agynio service encodes them.
        return self._messages.frame(conversation_id, message)

    def tail_header_size(self, state: ConversationState) -> int:
        return wire.tail_header_size(state)

    def message_id_size(self) -> int:
        return wire.MESSAGE_ID_FIELD_SIZE

    def listed_conversation_size(self, record: ConversationRecord) -> int:
        # A bound, not the encoding: its text as UTF-8, and at most what the
        # encoding adds to each label and to the rest (a test holds it to
        # the encoded size of the largest conversations).
        details = record.details
        text = len(details.title.encode("utf-8", "surrogatepass")) + sum(
            len(key.encode()) + len(value.encode("utf-8", "surrogatepass")) + _LABEL_FRAMING
            for key, value in details.labels.items()
        )
        return text + _CONVERSATION_FRAMING

    def token_field_size(self, token_length: int) -> int:
        return wire.length_delimited_size(token_length)

    def appended_with_state(self, result: AppendedWithState) -> EncodedResponse:
        # AppendMessagesWithStateResponse: metadata = 1 and appended = 2, as
        # in AppendConversationMessagesResponse (the stored entries are
        # written once), then the state_versions entries (3).
        versions = cpb.AppendMessagesWithStateResponse(state_versions=result.state_versions)
        return EncodedResponse(
            _WIRE.appended(result.appended) + versions.SerializeToString(deterministic=True)
        )


_LABEL_FRAMING = 8
"""A label's map entry besides its key and value: the entry's tag and
length, and the key's and value's tags and lengths."""
_CONVERSATION_FRAMING = 160
"""A listed Conversation besides its title and labels' text, at most: its
entry's tag and length, the id, counts, times, retention, the title's tag
and length."""

_WIRE = WireCodec()
_CODEC = CompanionCodec()


def _conversation_id(request: cpb.DescribeConversationRequest) -> str:
    return request.conversation_id


def _updated_conversation_id(request: cpb.UpdateConversationRequest) -> str:
    return request.conversation.conversation_id


def _new_conversation_id(request: cpb.ForkConversationRequest) -> str:
    return request.new_conversation_id


def _answer(result: ConversationRecord | Replayed) -> dispatch.Versioned:
    """A write's Conversation answer: the response its idempotency key
    replays, or the conversation encoded."""
    if isinstance(result, Replayed):
        return dispatch.Versioned(result.response, result.version)
    return dispatch.Versioned(convert.conversation(result), result.state.version)


class CompanionServicer:
    def __init__(self, service: CompanionService) -> None:
        self._service = service

    def routes(self) -> dict[str, dispatch.Route]:
        """The methods served, by name; the others answer UNIMPLEMENTED."""
        one = _conversation_id
        return {
            "CreateConversation": dispatch.Route(
                self.create_conversation, write=True, conversation=one
            ),
            "DescribeConversation": dispatch.Route(self.describe_conversation, conversation=one),
            "UpdateConversation": dispatch.Route(
                self.update_conversation, write=True, conversation=_updated_conversation_id
            ),
            "ListConversations": dispatch.Route(self.list_conversations),
            "DeleteConversation": dispatch.Route(
                self.delete_conversation, write=True, conversation=one
            ),
            "TailConversationMessages": dispatch.Route(self.tail_messages, conversation=one),
            "GetMessages": dispatch.Route(self.get_messages, conversation=one),
            "ListConversationSnapshots": dispatch.Route(self.list_snapshots, conversation=one),
            "ForkConversation": dispatch.Route(
                self.fork_conversation,
                write=True,
                conversation=one,
                versioned=_new_conversation_id,
            ),
        } | self._state_routes()

    def _state_routes(self) -> dict[str, dispatch.Route]:
        """Scoped state: its reads and writes name no conversation (their
        version is the scope's, in the answer), but an append with state
        does."""
        return {
            "GetState": dispatch.Route(self.get_state),
            "UpdateState": dispatch.Route(self.update_state, write=True),
            "AppendMessagesWithState": dispatch.Route(
                self.append_with_state, write=True, conversation=_conversation_id
            ),
        }

    async def create_conversation(
        self, request: cpb.CreateConversationRequest, key: Idempotency | None
    ) -> dispatch.Versioned:
        retention = request.retention if request.HasField("retention") else None
        given = convert.conversation_input(request.title, request.labels, retention)
        result = await self._service.create_conversation(request.conversation_id, given, key)
        return _answer(result)

    async def describe_conversation(
        self, request: cpb.DescribeConversationRequest
    ) -> dispatch.Versioned:
        record = await self._service.describe_conversation(request.conversation_id)
        return dispatch.Versioned(convert.conversation(record), record.state.version)

    async def update_conversation(
        self, request: cpb.UpdateConversationRequest, key: Idempotency | None
    ) -> dispatch.Versioned:
        conversation = request.conversation
        retention = conversation.retention if conversation.HasField("retention") else None
        given = convert.conversation_input(conversation.title, conversation.labels, retention)
        result = await self._service.update_conversation(
            conversation.conversation_id,
            list(request.update_mask.paths),
            given,
            request.expected_version,
            key,
        )
        return _answer(result)

    async def list_conversations(
        self, request: cpb.ListConversationsRequest
    ) -> cpb.ListConversationsResponse:
        after = request.updated_after if request.HasField("updated_after") else None
        before = request.updated_before if request.HasField("updated_before") else None
        page = await self._service.list_conversations(
            request.labels,
            None if after is None else convert.moment(after),
            None if before is None else convert.moment(before),
            request.order_by,
            request.page_size,
            request.page_token,
        )
        return cpb.ListConversationsResponse(
            conversations=[convert.conversation(record) for record in page.conversations],
            next_page_token=page.next_page_token,
        )

    async def delete_conversation(
        self, request: cpb.DeleteConversationRequest, key: Idempotency | None
    ) -> dispatch.Versioned:
        deleted = await self._service.delete_conversation(
            request.conversation_id, request.expected_version, request.allow_missing, key
        )
        response = cpb.DeleteConversationResponse(
            deleted_message_count=deleted.erased.messages,
            deleted_snapshot_count=deleted.erased.snapshots,
        )
        return dispatch.Versioned(response, deleted.version)

    async def tail_messages(
        self, request: cpb.TailConversationMessagesRequest
    ) -> dispatch.Versioned:
        result = await self._service.tail_messages(
            request.conversation_id, request.count, list(request.roles), list(request.kinds)
        )
        return dispatch.Versioned(wire.tail_messages(result), result.state.version)

    async def get_messages(self, request: cpb.GetMessagesRequest) -> dispatch.Versioned:
        result = await self._service.get_messages(
            request.conversation_id, list(request.message_ids)
        )
        return dispatch.Versioned(wire.messages_by_id(result), result.state.version)

    async def list_snapshots(
        self, request: cpb.ListConversationSnapshotsRequest
    ) -> dispatch.Versioned:
        page = await self._service.list_snapshots(
            request.conversation_id, request.page_size, request.page_token
        )
        response = cpb.ListConversationSnapshotsResponse(
            snapshots=[
                cpb.SnapshotInfo(
                    snapshot_id=str(snapshot.id),
                    created_at=convert.timestamp(snapshot.created_at),
                    item_count=snapshot.item_count,
                )
                for snapshot in page.snapshots
            ],
            next_page_token=page.next_page_token,
        )
        return dispatch.Versioned(response, page.state.version)

    async def fork_conversation(
        self, request: cpb.ForkConversationRequest, key: Idempotency | None
    ) -> dispatch.Versioned:
        result = await self._service.fork_conversation(
            request.conversation_id,
            request.up_to_message_id,
            request.new_conversation_id,
            request.title,
            request.labels,
            key,
        )
        if isinstance(result, Replayed):
            return dispatch.Versioned(result.response, result.version)
        return dispatch.Versioned(result.response, result.record.state.version)

    # -- scoped state

    async def get_state(self, request: cpb.GetStateRequest) -> cpb.GetStateResponse:
        state = await self._service.get_state(request.scope)
        return cpb.GetStateResponse(values_json=state.values_json, version=state.version)

    async def update_state(
        self, request: cpb.UpdateStateRequest, key: Idempotency | None
    ) -> cpb.UpdateStateResponse:
        state: ScopeState = await self._service.update_state(
            convert.state_update(request), request.expected_version, key
        )
        return cpb.UpdateStateResponse(values_json=state.values_json, version=state.version)

    async def append_with_state(
        self, request: cpb.AppendMessagesWithStateRequest, key: Idempotency | None
    ) -> dispatch.Versioned:
        result = await self._service.append_with_state(
            request.conversation_id,
            [convert.message_input(message) for message in request.messages],
            [convert.state_update(update) for update in request.state_updates],
            request.expected_version,
            key,
        )
        if isinstance(result, Replayed):
            return dispatch.Versioned(result.response, result.version)
        response = _CODEC.appended_with_state(result)
        return dispatch.Versioned(bytes(response), result.appended.state.version)


def register(
    server: grpc.aio.Server,
    servicer: CompanionServicer,
    edge: dispatch.Edge,
    versions: dispatch.Versions,
) -> None:
    """Serve ConversationsService's methods that `servicer` routes on
    `server`; `versions` gives failed calls their conversation's version."""
    dispatch.register(server, SERVICE, servicer.routes(), edge, versions)
