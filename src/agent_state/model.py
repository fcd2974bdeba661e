"""Plain values the service, the storage and the gRPC layer exchange.

Times are integers of microseconds since the Unix epoch (UTC): the precision
the API promises, exact in every backend. Bodies stay the deterministic
protobuf encoding of ``MessageBody`` the client sent, so nothing in them is
reinterpreted on the way through.
"""

from __future__ import annotations

import enum
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
class StoredMessage:
    id: UUID
    role: int
    kind: str
    body: bytes
    created_at: int


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


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows of one page; `more` tells whether rows exist past the last one."""

    rows: list[T]
    more: bool
