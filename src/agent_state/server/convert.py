"""Between protobuf messages and the model: pure functions, no rules."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from .._gen import agent_state_pb2 as pb
from ..model import ConversationState, MessageInput


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


def metadata(state: ConversationState) -> pb.ConversationMetadata:
    return pb.ConversationMetadata(
        conversation_id=str(state.id),
        message_count=state.message_count,
        updated_at=timestamp(state.updated_at),
    )


def ids(values: Iterable[UUID]) -> list[str]:
    return [str(value) for value in values]
