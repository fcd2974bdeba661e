"""What the client takes and returns: frozen dataclasses and enums, never
protobuf messages.

Times are timezone-aware `datetime`s in UTC with microsecond precision (the
server keeps microseconds). Ids are strings, in the lowercase hyphenated
form the server answers with. Every answer carries `version`: the version
of the conversation the call named, after the call, as the server reported
it in the trailing metadata ``x-conversation-version`` (None when it sent
none: a call that names no conversation, or a server that predates
versions).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any


class _OpenEnum(enum.IntEnum):
    """An enum that keeps numbers it has no name for (proto3 enums are
    open: a newer server may send one), instead of failing or changing them."""

    @classmethod
    def _missing_(cls, value: object) -> _OpenEnum | None:
        if not isinstance(value, int):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"{cls.__name__.upper()}_{value}"
        member._value_ = value
        return member


class Role(_OpenEnum):
    """Who a message is from (the contract's `Role`)."""

    UNSPECIFIED = 0
    USER = 1
    ASSISTANT = 2
    TOOL = 3


class ImageDetail(_OpenEnum):
    """How closely a model should look at an image (the contract's `ImageDetail`)."""

    UNSPECIFIED = 0
    AUTO = 1
    LOW = 2
    HIGH = 3


def _frozen_mapping(values: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy, so that a frozen value cannot change through it."""
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True, slots=True)
class Text:
    """A plain text body."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolText:
    """A tool's output as text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolImage:
    """An image a tool produced, referenced by URL (no inline bytes)."""

    external_url: str
    mime_type: str = ""
    detail: ImageDetail = ImageDetail.UNSPECIFIED
    width_px: int = 0
    height_px: int = 0
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What a tool call returned: its text or image output, and free-form
    string metadata (read-only once made)."""

    tool_name: str
    tool_call_id: str
    output: ToolText | ToolImage
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _frozen_mapping(self.metadata))


@dataclass(frozen=True, slots=True)
class UnknownBody:
    """A body this client has no type for (a variant added by a newer
    contract). `encoded` is its exact protobuf encoding (a `MessageBody`),
    sent back unchanged when it is appended again."""

    encoded: bytes


Body = Text | ToolOutput | UnknownBody
"""A message body: one of the contract's variants."""


def body_text(body: Body) -> str | None:
    """The text of a text body or of a tool's text output; None for other
    bodies (Message.text)."""
    if isinstance(body, Text):
        return body.text
    if isinstance(body, ToolOutput) and isinstance(body.output, ToolText):
        return body.output.text
    return None


@dataclass(frozen=True, slots=True)
class MessageInput:
    """A message to append. `kind` is a free-form tag of the caller's
    (``system``, ``summary``, ``tool_output``...), empty by default."""

    role: Role
    body: Body
    kind: str = ""

    @classmethod
    def user(cls, text: str, *, kind: str = "") -> MessageInput:
        """A text message from the user."""
        return cls(Role.USER, Text(text), kind)

    @classmethod
    def assistant(cls, text: str, *, kind: str = "") -> MessageInput:
        """A text message from the assistant (the model)."""
        return cls(Role.ASSISTANT, Text(text), kind)

    @classmethod
    def tool_output(
        cls,
        tool_name: str,
        tool_call_id: str,
        output: str | ToolText | ToolImage,
        *,
        metadata: Mapping[str, str] | None = None,
        kind: str = "",
    ) -> MessageInput:
        """A tool's output (a string is its text output), from role TOOL."""
        if isinstance(output, str):
            output = ToolText(output)
        body = ToolOutput(tool_name, tool_call_id, output, _frozen_mapping(metadata))
        return cls(Role.TOOL, body, kind)


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message. Messages never change once appended."""

    id: str
    conversation_id: str
    role: Role
    kind: str
    body: Body
    created_at: datetime

    @property
    def text(self) -> str | None:
        """The text of a text body or of a tool's text output; None for
        other bodies."""
        return body_text(self.body)

    def as_input(self) -> MessageInput:
        """The same role, kind and body, to append (elsewhere) as a new message."""
        return MessageInput(self.role, self.body, self.kind)


@dataclass(frozen=True, slots=True)
class ConversationMetadata:
    """A conversation's place as the contract reports it: the length of its
    ordering and its last change (which strictly increases on every append,
    replace and delete)."""

    conversation_id: str
    message_count: int
    updated_at: datetime
    version: int | None = None


class _WithMetadata:
    """An answer that carries the conversation's metadata: its version is
    the metadata's."""

    __slots__ = ()
    metadata: ConversationMetadata

    @property
    def version(self) -> int | None:
        """The conversation's version after the call (None: not reported)."""
        return self.metadata.version


@dataclass(frozen=True, slots=True)
class AppendResult(_WithMetadata):
    """What an append stored: the messages, whole, in the order sent."""

    metadata: ConversationMetadata
    messages: tuple[Message, ...]

    @property
    def message_ids(self) -> tuple[str, ...]:
        return tuple(message.id for message in self.messages)


@dataclass(frozen=True, slots=True)
class MessagePage(_WithMetadata):
    """One page of a conversation's messages, oldest first. `next_page_token`
    is empty exactly at the end."""

    metadata: ConversationMetadata
    messages: tuple[Message, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """One page of a snapshot's messages, in stored order."""

    messages: tuple[Message, ...]
    next_page_token: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class IdPage:
    """One page of message ids (of a conversation's ordering or of a snapshot)."""

    message_ids: tuple[str, ...]
    next_page_token: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class ReplaceResult(_WithMetadata):
    """What a range replace did: the ids that were in the range, in order,
    and the ids put in their place."""

    metadata: ConversationMetadata
    replaced_message_ids: tuple[str, ...]
    inserted_message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeleteRangeResult(_WithMetadata):
    """The ids a range delete removed for good, in ordering order."""

    metadata: ConversationMetadata
    deleted_message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot just recorded: the exact context of one model call."""

    snapshot_id: str
    conversation_id: str
    created_at: datetime
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Context(_WithMetadata):
    """A conversation's whole ordering (or the part a filter keeps), read
    in one consistent state: every page saw the same `updated_at`."""

    metadata: ConversationMetadata
    messages: tuple[Message, ...]

    @property
    def message_ids(self) -> tuple[str, ...]:
        return tuple(message.id for message in self.messages)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a conversation is kept. None (or zero) sets no limit of its kind."""

    max_idle: timedelta | None = None
    """Delete the conversation when it has not been updated for this long."""
    max_messages: int | None = None
    """Keep at most this many messages in the ordering; the oldest leave first."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation as a whole (the companion API). `version` is 1 when
    created and gains 1 on every change; `updated_at` is the last change to
    the ordering. `retention` None: the server's default applies."""

    conversation_id: str
    title: str
    labels: Mapping[str, str]
    message_count: int
    version: int
    created_at: datetime
    updated_at: datetime
    retention: Retention | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen_mapping(self.labels))


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """One page of conversations, in the order asked."""

    conversations: tuple[Conversation, ...]
    next_page_token: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class DeletedConversation:
    """What erasing a conversation removed. `version` is 0 afterwards: the
    conversation no longer exists."""

    deleted_message_count: int
    deleted_snapshot_count: int
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Tail(_WithMetadata):
    """The last messages of a conversation, oldest first. `truncated`: the
    response budget (3 MiB) dropped the oldest of them; the newest is
    always there."""

    metadata: ConversationMetadata
    messages: tuple[Message, ...]
    truncated: bool


@dataclass(frozen=True, slots=True)
class Messages:
    """Messages asked for by id, in the order asked."""

    messages: tuple[Message, ...]
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Fork:
    """A new conversation copied from another: the copies' new ids, in order."""

    conversation: Conversation
    message_ids: tuple[str, ...]

    @property
    def version(self) -> int:
        return self.conversation.version


@dataclass(frozen=True, slots=True)
class State:
    """One scope's state: a JSON object, exactly as the server keeps it
    (`values_json`), and the scope's version (0: nothing stored yet)."""

    scope: str
    values_json: str
    version: int

    @property
    def values(self) -> dict[str, Any]:
        """The object, parsed. Numbers that are not integers become floats;
        read `values_json` where their exact decimal text matters."""
        parsed: dict[str, Any] = json.loads(self.values_json)
        return parsed


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """A change to one scope's state within `append_with_state`: keys to
    set and keys to remove. `set` maps keys to JSON values (None is stored
    as null), or is the JSON object's text, sent as it is (so that numbers
    keep exactly the digits written)."""

    scope: str
    set: Mapping[str, Any] | str = field(default_factory=dict)
    remove: Iterable[str] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.set, str):
            object.__setattr__(self, "set", MappingProxyType(dict(self.set)))
        object.__setattr__(self, "remove", tuple(self.remove))


@dataclass(frozen=True, slots=True)
class AppendWithStateResult(_WithMetadata):
    """What `append_with_state` stored: the messages, and each updated
    scope's version afterwards."""

    metadata: ConversationMetadata
    messages: tuple[Message, ...]
    state_versions: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_versions", MappingProxyType(dict(self.state_versions)))


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One snapshot of a conversation, without its messages."""

    snapshot_id: str
    created_at: datetime
    item_count: int


@dataclass(frozen=True, slots=True)
class SnapshotInfoPage:
    """One page of a conversation's snapshots, oldest first."""

    snapshots: tuple[SnapshotInfo, ...]
    next_page_token: str
    version: int | None = None


# --- CheckpointsService -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Serialized:
    """A value as the caller serialized it: the serialization's name (as
    LangGraph's serializer names it: "msgpack", "json", ...) and the bytes.
    The server stores it and gives it back unchanged."""

    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Value:
    """A channel's or a write's value: one serialized item, or a list of
    them (the server stores each distinct item once per thread, so a list
    that grows costs only what it gained)."""

    items: tuple[Serialized, ...]
    is_list: bool = False

    @classmethod
    def whole(cls, item: Serialized) -> Value:
        return cls((item,), is_list=False)

    @classmethod
    def of_list(cls, items: Iterable[Serialized]) -> Value:
        return cls(tuple(items), is_list=True)


@dataclass(frozen=True, slots=True)
class ChannelValue:
    """A channel's value at a version."""

    channel: str
    version: str
    value: Value


@dataclass(frozen=True, slots=True)
class ChannelWrite:
    """One write of a task: its index among the task's writes (negative for
    LangGraph's special writes), the channel and the value."""

    idx: int
    channel: str
    value: Value


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A write stored against a checkpoint."""

    task_id: str
    task_path: str
    idx: int
    channel: str
    value: Value


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A stored checkpoint, whole: the checkpoint as it was put, its
    metadata (a JSON object's text), the values of its channel versions
    and its pending writes (LangGraph's order)."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint: Serialized
    metadata_json: str
    values: tuple[ChannelValue, ...]
    pending_writes: tuple[PendingWrite, ...]

    @property
    def metadata(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.metadata_json)
        return parsed


@dataclass(frozen=True, slots=True)
class CheckpointPage:
    """A page of checkpoints, newest first; `next_page_token` is empty at
    the end."""

    checkpoints: tuple[StoredCheckpoint, ...]
    next_page_token: str


class PruneStrategy(_OpenEnum):
    """How `prune` prunes (the API's `PruneStrategy`)."""

    UNSPECIFIED = 0
    KEEP_LATEST = 1
    """Keep the newest checkpoint of each namespace."""
    DELETE = 2
    """Erase the thread, as `delete_thread` does."""
