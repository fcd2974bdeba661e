"""Between protobuf messages and the model: pure functions, no rules."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from .._gen import agent_state_pb2 as pb
from ..model import ConversationState, MessageInput, StoredMessage


def timestamp(micros: int) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def message_input(message: pb.AppendMessageInput) -> MessageInput:
    body = message.body
    variant = body.WhichOneof("body") if message.HasField("body") else None
    output = body.tool_output.WhichOneof("output") if variant == "tool_output" else None
    return MessageInput(
        role=message.role,
        kind=message.kind,
        # Deterministic (sorted map keys), and unknown fields are kept.
        body=body.SerializeToString(deterministic=True),
        body_variant=variant,
        tool_output_variant=output,
    )


def message(conversation_id: UUID, stored: StoredMessage) -> pb.Message:
    return pb.Message(
        id=str(stored.id),
        conversation_id=str(conversation_id),
        role=stored.role,  # type: ignore[arg-type]
        kind=stored.kind,
        body=pb.MessageBody.FromString(stored.body),
        created_at=timestamp(stored.created_at),
    )


def messages(conversation_id: UUID, stored: Iterable[StoredMessage]) -> list[pb.Message]:
    return [message(conversation_id, one) for one in stored]


def metadata(state: ConversationState) -> pb.ConversationMetadata:
    return pb.ConversationMetadata(
        conversation_id=str(state.id),
        message_count=state.message_count,
        updated_at=timestamp(state.updated_at),
    )


def ids(values: Iterable[UUID]) -> list[str]:
    return [str(value) for value in values]
