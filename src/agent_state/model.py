"""Plain values the service, the storage and the gRPC layer exchange.

Times are integers of microseconds since the Unix epoch (UTC): the precision
the API promises, exact in every backend. Bodies stay the deterministic
protobuf encoding of ``MessageBody`` the client sent, so nothing in them is
reinterpreted on the way through.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, NewType, TypeVar
from uuid import UUID

T = TypeVar("T")


class Role(enum.IntEnum):
    USER = 1
    ASSISTANT = 2
    TOOL = 3


@dataclass(frozen=True, slots=True)
class MessageInput:
    """One message of an append request, as decoded from the wire.

    `body_variant` is the MessageBody oneof that is set ("text",
    "tool_output" or None); `tool_output_variant` the ToolOutputBody oneof.
    """

    role: int
    kind: str
    body: bytes
    body_variant: str | None
    tool_output_variant: str | None = None


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """A message but the bytes of its body: all that its encoding around
    the body depends on (the body only by its length)."""

    id: UUID
    role: int
    kind: str
    body_length: int
    created_at: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: UUID
    role: int
    kind: str
    body: bytes
    created_at: int

    @property
    def header(self) -> MessageHeader:
        return MessageHeader(self.id, self.role, self.kind, len(self.body), self.created_at)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as stored at append: with the SHA-256 of its body and its
    encoding around the body, as the service's codec framed it."""

    message: StoredMessage
    body_sha256: bytes
    wire_head: bytes
    wire_tail: bytes

    @property
    def entry(self) -> bytes:
        return self.wire_head + self.message.body + self.wire_tail


EncodedMessage = NewType("EncodedMessage", bytes)
"""A stored message's encoding (``wire_head + body + wire_tail``), as an
entry of a list response. Made by the codec at the gRPC edge; the service
and storage keep and return it without looking inside."""

EncodedResponse = NewType("EncodedResponse", bytes)
"""A mutating call's response as the codec encoded it, which an idempotency
key replays. Opaque to the service and storage, as EncodedMessage."""


@dataclass(frozen=True, slots=True)
class ConversationState:
    """A conversation's row. `tail_position` is the highest position ever
    given out; `layout_version` counts renumberings (see positions.py);
    `version` counts successful mutations."""

    id: UUID
    message_count: int
    updated_at: int
    tail_position: int
    layout_version: int
    version: int


@dataclass(frozen=True, slots=True)
class ExpectedVersion:
    """A write's precondition: the conversation is at `version` (0: it does
    not exist; no conversation that exists is at version 0). `field` names
    where the request said so, for the error when it does not hold."""

    version: int
    field: str


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of a conversation's ordering."""

    position: int
    message_id: UUID


@dataclass(frozen=True, slots=True)
class Original:
    """A message of a conversation's ordering that a fork copies: its
    position, and all of it but its body, which stays in the database."""

    position: int
    header: MessageHeader


@dataclass(frozen=True, slots=True)
class MessageCopy:
    """A copy of message `original` of another conversation: its place in
    this conversation's ordering under its new id, and its encoding before
    and after the original's body (as the codec framed it for the copy)."""

    original: UUID
    item: Item
    wire_head: bytes
    wire_tail: bytes


@dataclass(frozen=True, slots=True)
class Renumbering:
    """Positions of a window of items changed, order kept.

    Every item strictly between `lower` and `upper` (None: no upper bound)
    moved from ``old_positions[i]`` to ``new_positions[i]``. Kept so that a
    page token issued before the change can still find its place.
    """

    layout_version: int
    lower: int
    upper: int | None
    old_positions: tuple[int, ...]
    new_positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: UUID
    conversation_id: UUID
    created_at: int
    item_count: int


@dataclass(frozen=True, slots=True)
class RememberedCall:
    """What an idempotency key recorded: the request's fingerprint, the
    response sent, and when."""

    fingerprint: bytes
    response: bytes
    created_at: int
    message_count: int | None = None
    """Set for an append whose key was kept in its one step (AppendKey):
    `response` then holds the appended messages only, and the response's
    metadata is the conversation, this message count and created_at as its
    updated_at."""
    owner: UUID | None = None
    """For a key of a subject (StateWriter.keep_call): the conversation
    whose erasure takes the key with it (None: none)."""


@dataclass(frozen=True, slots=True)
class AppendKey:
    """An append's idempotency key, for append_at_tail to keep in the same
    step as the messages (a keyed append then costs one round trip, as a
    plain one does): the request's fingerprint and the response's appended
    messages, encoded. The step adds what it alone knows, the
    conversation's new message count (RememberedCall.message_count)."""

    key: str
    fingerprint: bytes
    appended: bytes


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows of one page; `more` tells whether rows exist past the last one."""

    rows: list[T]
    more: bool


# --- The companion API's view of a conversation ------------------------------------


@dataclass(frozen=True, slots=True)
class Moment:
    """A protobuf Timestamp or Duration as the client sent it, before any
    check: whole seconds and nanoseconds."""

    seconds: int
    nanos: int


@dataclass(frozen=True, slots=True)
class RetentionInput:
    """A Retention as sent (max_idle None: unset)."""

    max_idle: Moment | None
    max_messages: int


@dataclass(frozen=True, slots=True)
class ConversationInput:
    """A conversation's title, labels and retention as sent (retention
    None: unset), before any check."""

    title: str
    labels: Mapping[str, str]
    retention: RetentionInput | None


@dataclass(frozen=True, slots=True)
class Retention:
    """A conversation's own retention, which replaces the server's default
    whole. 0 sets no limit of its kind."""

    max_idle: int
    """Microseconds without an update after which the conversation goes."""
    max_messages: int


@dataclass(frozen=True, slots=True)
class ConversationDetails:
    """What a client says about a conversation: its title, its labels, and
    its own retention (None: the server's default)."""

    title: str
    labels: Mapping[str, str]
    retention: Retention | None


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation as the companion API shows it: its row, when it was
    created, and its details."""

    state: ConversationState
    created_at: int
    details: ConversationDetails


@dataclass(frozen=True, slots=True, order=True)
class ConversationKey:
    """A place in the order ListConversations pages through: (updated_at,
    conversation id). UUIDs compare as their integers, which is the order
    of their 16 bytes, as both databases compare them."""

    updated_at: int
    conversation_id: UUID


@dataclass(frozen=True, slots=True)
class ConversationRange:
    """Which conversations a ListConversations page reads: those carrying
    every one of `labels`, with keys strictly between `after` and `before`,
    at most `limit`, newest first or oldest first."""

    labels: Mapping[str, str]
    after: ConversationKey
    before: ConversationKey
    newest_first: bool
    limit: int


@dataclass(frozen=True, slots=True)
class Erased:
    """What erasing a conversation removed: its messages (detached ones
    too) and its snapshots."""

    messages: int
    snapshots: int


# --- The companion API: scoped state -----------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """A checked state scope: `key` is its canonical text (a conversation's
    id in its lowercase hyphenated form), under which it is stored;
    `conversation_id` is set for a `conversation/{uuid}` scope, whose
    state goes with the conversation."""

    key: str
    conversation_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class StateUpdateInput:
    """One scope's change as sent: the scope, a JSON object of the keys to
    set (empty: none) and the keys to remove, before any check."""

    scope: str
    set_json: str
    remove_keys: Sequence[str]


@dataclass(frozen=True, slots=True)
class StoredState:
    """A scope's state as stored: its JSON object's canonical UTF-8 text
    and its version (+1 on every update; 0: never updated)."""

    values_json: bytes
    version: int


EMPTY_STATE = StoredState(b"{}", 0)
"""The state of a scope nobody has updated."""


# --- Retention ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overlong:
    """A conversation holding more messages than its retention keeps:
    `message_count` in its ordering, at most `max_messages` to keep."""

    conversation_id: UUID
    message_count: int
    max_messages: int


@dataclass(frozen=True, slots=True)
class Trim:
    """Take the `count` oldest entries out of a conversation's ordering
    (their messages deleted) and count one change to it."""

    conversation_id: UUID
    count: int


# --- Checkpoints (agentstate.v1.CheckpointsService) ---------------------------------


@dataclass(frozen=True, slots=True)
class Blob:
    """A value as the client serialized it, with its serialization's name;
    `sha256` names it within its thread (of the name, a NUL, the bytes)."""

    sha256: bytes
    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Value:
    """A channel's or a write's value: one blob (`is_list` False), or a
    list of them."""

    items: tuple[Blob, ...]
    is_list: bool


@dataclass(frozen=True, slots=True, order=True)
class CheckpointKey:
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str


@dataclass(frozen=True, slots=True, order=True)
class ValueKey:
    """A channel's value at a version, within a thread's namespace."""

    thread_id: str
    checkpoint_ns: str
    channel: str
    version: str


@dataclass(frozen=True, slots=True)
class NewValue:
    """A channel value as stored: its items' digests, after those of the
    value at `base_version` (the same channel's, whose list this one
    extends; None: the whole value), `depth` links from a whole value;
    `length` items in all, whose digests hash to `list_sha256`."""

    channel: str
    version: str
    is_list: bool
    base_version: str | None
    depth: int
    length: int
    list_sha256: bytes
    digests: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ValueHead:
    """A stored value without its items: what a put that may extend it
    needs."""

    is_list: bool
    depth: int
    length: int
    list_sha256: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A stored checkpoint without its values and writes."""

    key: CheckpointKey
    parent_id: str | None
    checkpoint: tuple[str, bytes]
    """The checkpoint's serialization's name and bytes."""
    metadata_json: str
    channel_versions: Mapping[str, str]
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredValue:
    """A channel value as read: its items' digests in order (bases
    resolved)."""

    is_list: bool
    digests: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class NewWrite:
    idx: int
    channel: str
    is_list: bool
    digests: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StoredWrite:
    task_id: str
    task_path: str
    idx: int
    channel: str
    value: StoredValue


@dataclass(frozen=True, slots=True)
class CheckpointRange:
    """A page of ListCheckpoints: rows newest first whose key sorts below
    `below` (checkpoint id, namespace, thread), within the thread and
    namespace named (None: any), at most `limit`."""

    thread_id: str | None
    checkpoint_ns: str | None
    below: tuple[str, str, str]
    limit: int


@dataclass(frozen=True, slots=True)
class ThreadValue:
    """A stored value's key, base and digests, for collecting garbage."""

    key: ValueKey
    base_version: str | None
    digests: tuple[bytes, ...]
