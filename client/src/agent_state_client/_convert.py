"""Between the generated protobuf messages and the client's own types. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from ._gen import agent_state_pb2 as pb
from ._gen import checkpoints_pb2 as kpb
from ._gen import conversations_pb2 as cpb
from .types import (
    AppendResult,
    AppendWithStateResult,
    Body,
    ChannelValue,
    Conversation,
    ConversationMetadata,
    DeleteRangeResult,
    IdPage,
    ImageDetail,
    Message,
    MessageInput,
    MessagePage,
    PendingWrite,
    ReplaceResult,
    Retention,
    Role,
    Serialized,
    Snapshot,
    SnapshotInfo,
    StoredCheckpoint,
    Tail,
    Text,
    ToolImage,
    ToolOutput,
    ToolText,
    UnknownBody,
    Value,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- times -------------------------------------------------------------------


def moment(stamp: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime (microseconds: what the server keeps)."""
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def timestamp(when: datetime, field: str) -> Timestamp:
    """An aware datetime as a Timestamp; a naive one is refused rather than
    guessed at."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{field}: needs a timezone-aware datetime")
    since = when - _EPOCH
    seconds, micros = divmod(since // timedelta(microseconds=1), 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def duration(span: timedelta) -> Duration:
    seconds, micros = divmod(span // timedelta(microseconds=1), 1_000_000)
    if seconds < 0 and micros:
        # Duration keeps seconds and nanos of one sign.
        seconds, micros = seconds + 1, micros - 1_000_000
    return Duration(seconds=seconds, nanos=micros * 1000)


def span(value: Duration) -> timedelta:
    return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


# --- bodies and messages -----------------------------------------------------


def body(value: pb.MessageBody) -> Body:
    variant = value.WhichOneof("body")
    if variant == "text":
        return Text(value.text.text)
    if variant == "tool_output":
        tool = value.tool_output
        which = tool.WhichOneof("output")
        output: ToolText | ToolImage
        if which == "text":
            output = ToolText(tool.text.text)
        elif which == "image":
            image = tool.image
            output = ToolImage(
                external_url=image.external_url,
                mime_type=image.mime_type,
                detail=ImageDetail(image.detail),
                width_px=image.width_px,
                height_px=image.height_px,
                sha256=image.sha256,
            )
        else:
            return UnknownBody(value.SerializeToString(deterministic=True))
        return ToolOutput(tool.tool_name, tool.tool_call_id, output, dict(tool.metadata))
    return UnknownBody(value.SerializeToString(deterministic=True))


def body_text_of(value: pb.MessageBody) -> str | None:
    """types.body_text(body(value)), read off the wire message without
    building the Body: the framework integrations read a long history's
    texts this way (a Body costs about 2 microseconds a message)."""
    variant = value.WhichOneof("body")
    if variant == "text":
        return value.text.text
    if variant == "tool_output" and value.tool_output.WhichOneof("output") == "text":
        return value.tool_output.text.text
    return None


def body_message(value: Body) -> pb.MessageBody:
    if isinstance(value, Text):
        return pb.MessageBody(text=pb.TextBody(text=value.text))
    if isinstance(value, ToolOutput):
        tool = pb.ToolOutputBody(
            tool_name=value.tool_name,
            tool_call_id=value.tool_call_id,
            metadata=dict(value.metadata),
        )
        if isinstance(value.output, ToolText):
            tool.text.text = value.output.text
        else:
            image = value.output
            tool.image.CopyFrom(
                pb.ToolImageOutput(
                    external_url=image.external_url,
                    mime_type=image.mime_type,
                    detail=cast(pb.ImageDetail, int(image.detail)),
                    width_px=image.width_px,
                    height_px=image.height_px,
                    sha256=image.sha256,
                )
            )
        return pb.MessageBody(tool_output=tool)
    return pb.MessageBody.FromString(value.encoded)


def message_input(value: MessageInput) -> pb.AppendMessageInput:
    return pb.AppendMessageInput(
        role=wire_role(value.role),
        kind=value.kind,
        body=body_message(value.body),
    )


def message(value: pb.Message) -> Message:
    return Message(
        id=value.id,
        conversation_id=value.conversation_id,
        role=Role(value.role),
        kind=value.kind,
        body=body(value.body),
        created_at=moment(value.created_at),
    )


def messages(values: Iterable[pb.Message]) -> tuple[Message, ...]:
    return tuple(message(value) for value in values)


def wire_role(value: Role | int) -> pb.Role:
    # The generated stubs type enum fields as their wrapper class; any int goes.
    return cast(pb.Role, int(value))


def roles(values: Iterable[Role | int]) -> list[pb.Role]:
    return [wire_role(value) for value in values]


# --- agynio answers ----------------------------------------------------------


def metadata(value: pb.ConversationMetadata, version: int | None) -> ConversationMetadata:
    return ConversationMetadata(
        conversation_id=value.conversation_id,
        message_count=value.message_count,
        updated_at=moment(value.updated_at),
        version=version,
    )


def appended(value: pb.AppendConversationMessagesResponse, version: int | None) -> AppendResult:
    return AppendResult(metadata(value.metadata, version), messages(value.appended))


def message_page(value: pb.ListConversationMessagesResponse, version: int | None) -> MessagePage:
    return MessagePage(
        metadata(value.metadata, version), messages(value.messages), value.next_page_token
    )


def replaced(
    value: pb.ReplaceConversationMessagesRangeResponse, version: int | None
) -> ReplaceResult:
    return ReplaceResult(
        metadata(value.metadata, version),
        tuple(value.replaced_message_ids),
        tuple(value.inserted_message_ids),
    )


def deleted(
    value: pb.DeleteConversationMessagesRangeResponse, version: int | None
) -> DeleteRangeResult:
    return DeleteRangeResult(metadata(value.metadata, version), tuple(value.deleted_message_ids))


def id_page(
    value: pb.ListConversationMessageIdsResponse | pb.ListSnapshotMessageIdsResponse,
    version: int | None,
) -> IdPage:
    return IdPage(tuple(value.message_ids), value.next_page_token, version)


def snapshot(value: pb.ContextSnapshot, version: int | None) -> Snapshot:
    return Snapshot(value.snapshot_id, value.conversation_id, moment(value.created_at), version)


# --- the companion API -------------------------------------------------------


def retention(value: Retention) -> cpb.Retention:
    result = cpb.Retention(max_messages=value.max_messages or 0)
    if value.max_idle:
        result.max_idle.CopyFrom(duration(value.max_idle))
    return result


def conversation(value: cpb.Conversation) -> Conversation:
    kept: Retention | None = None
    if value.HasField("retention"):
        kept = Retention(
            max_idle=span(value.retention.max_idle)
            if value.retention.HasField("max_idle")
            else None,
            max_messages=value.retention.max_messages or None,
        )
    return Conversation(
        conversation_id=value.conversation_id,
        title=value.title,
        labels=dict(value.labels),
        message_count=value.message_count,
        version=value.version,
        created_at=moment(value.created_at),
        updated_at=moment(value.updated_at),
        retention=kept,
    )


def tail(value: cpb.TailConversationMessagesResponse, version: int | None) -> Tail:
    return Tail(metadata(value.metadata, version), messages(value.messages), value.truncated)


def appended_with_state(
    value: cpb.AppendMessagesWithStateResponse, version: int | None
) -> AppendWithStateResult:
    return AppendWithStateResult(
        metadata(value.metadata, version), messages(value.appended), dict(value.state_versions)
    )


def snapshot_info(value: cpb.SnapshotInfo) -> SnapshotInfo:
    return SnapshotInfo(value.snapshot_id, moment(value.created_at), value.item_count)


def json_object(values: Mapping[str, Any] | str, field: str) -> str:
    """The text of a JSON object: a string is sent as it is (the server
    checks it, and keeps numbers exactly as written); a mapping is encoded
    (NaN and infinities refused, as JSON has none)."""
    if isinstance(values, str):
        return values
    if not isinstance(values, Mapping):
        raise TypeError(f"{field}: must be a mapping of keys to JSON values, or JSON text")
    try:
        return json.dumps(dict(values), ensure_ascii=False, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"{field}: {error}") from None


# --- CheckpointsService ---------------------------------------------------------


def value_message(value: Value) -> kpb.Value:
    return kpb.Value(
        items=[kpb.Blob(type=item.type, data=item.data) for item in value.items],
        is_list=value.is_list,
    )


def _value(message: kpb.Value) -> Value:
    return Value(tuple(Serialized(item.type, item.data) for item in message.items), message.is_list)


def stored_checkpoint(message: kpb.CheckpointTuple) -> StoredCheckpoint:
    return StoredCheckpoint(
        thread_id=message.thread_id,
        checkpoint_ns=message.checkpoint_ns,
        checkpoint_id=message.checkpoint_id,
        parent_checkpoint_id=message.parent_checkpoint_id or None,
        checkpoint=Serialized(message.checkpoint.type, message.checkpoint.data),
        metadata_json=message.metadata_json,
        values=tuple(
            ChannelValue(found.channel, found.version, _value(found.value))
            for found in message.values
        ),
        pending_writes=tuple(
            PendingWrite(w.task_id, w.task_path, w.idx, w.channel, _value(w.value))
            for w in message.pending_writes
        ),
    )
