"""Between protobuf messages and the model: pure functions, no rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from uuid import UUID

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb

from ..model import (
    ConversationInput,
    ConversationRecord,
    ConversationState,
    MessageInput,
    Moment,
    RetentionInput,
    StateUpdateInput,
)


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
    return metadata_of(state.id, state.message_count, state.updated_at)


def metadata_of(
    conversation_id: UUID, message_count: int, updated_at: int
) -> pb.ConversationMetadata:
    return pb.ConversationMetadata(
        conversation_id=str(conversation_id),
        message_count=message_count,
        updated_at=timestamp(updated_at),
    )


def ids(values: Iterable[UUID]) -> list[str]:
    return [str(value) for value in values]


# --- the companion API ---------------------------------------------------------


def moment(value: Timestamp | Duration) -> Moment:
    return Moment(value.seconds, value.nanos)


def conversation_input(
    title: str, labels: Mapping[str, str], retention: cpb.Retention | None
) -> ConversationInput:
    """A conversation's fields as sent (`retention` None: unset)."""
    given = None
    if retention is not None:
        max_idle = moment(retention.max_idle) if retention.HasField("max_idle") else None
        given = RetentionInput(max_idle, retention.max_messages)
    return ConversationInput(title, dict(labels), given)


def conversation(record: ConversationRecord) -> cpb.Conversation:
    state, details = record.state, record.details
    message = cpb.Conversation(
        conversation_id=str(state.id),
        title=details.title,
        labels=details.labels,
        message_count=state.message_count,
        version=state.version,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(state.updated_at),
    )
    if details.retention is not None:
        seconds, micros = divmod(details.retention.max_idle, 1_000_000)
        message.retention.max_messages = details.retention.max_messages
        if details.retention.max_idle:
            message.retention.max_idle.CopyFrom(Duration(seconds=seconds, nanos=micros * 1000))
        message.retention.SetInParent()
    return message


# --- the companion API: scoped state ------------------------------------------------


def state_update(update: cpb.StateUpdate | cpb.UpdateStateRequest) -> StateUpdateInput:
    return StateUpdateInput(update.scope, update.set_json, list(update.remove_keys))
