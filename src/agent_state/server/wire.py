"""The contract's wire format where the server writes it by hand, and the
codec that gives the service what it needs of it.

Messages are encoded once, at append, and list responses are assembled from
stored bytes; sizes of the few messages built with protobuf are computed
here too, so a page can stop before its limit. Everything follows the
proto3 rules (default scalars omitted, set sub-messages always written) and
is unit-tested byte for byte against the protobuf runtime.

The service does not import this module: it declares what it needs as
`service.Codec`, and the server hands it a WireCodec. The responses of the
mutating calls are encoded here too, once for the client and once for the
idempotency key that may replay them.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from agent_state_client._gen import agent_state_pb2 as pb

from ..companion import MessagesById, TailMessages
from ..model import ConversationState, EncodedResponse, MessageHeader, NewMessage
from ..service import (
    Appended,
    Deleted,
    MessagePage,
    Replaced,
    SnapshotCreated,
    SnapshotMessagePage,
)
from . import convert

UUID_TEXT_LENGTH = 36


def varint_size(value: int) -> int:
    if value < 0:
        return 10  # negative int64 values are always ten bytes
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def length_delimited_size(payload: int) -> int:
    """Tag, length prefix and payload of a field with one-byte tag."""
    return 1 + varint_size(payload) + payload


def timestamp_size(micros: int) -> int:
    seconds, rest = divmod(micros, 1_000_000)
    nanos = rest * 1000
    size = 0
    if seconds:
        size += 1 + varint_size(seconds)
    if nanos:
        size += 1 + varint_size(nanos)
    return size


def metadata_size(message_count: int, updated_at: int) -> int:
    """Size of an encoded ``ConversationMetadata``."""
    size = length_delimited_size(UUID_TEXT_LENGTH)
    if message_count:
        size += 1 + varint_size(message_count)
    size += length_delimited_size(timestamp_size(updated_at))
    return size


# -- encoding ---------------------------------------------------------------
#
# Messages are immutable, so their encoding is computed once, at append, and
# stored next to the body as a head (everything before the body bytes) and
# a tail (everything after). A list response is then the stored pieces
# joined, with no protobuf object built per message.

LIST_ENTRY_TAG = 0x12
"""Tag of field 2, length-delimited: ``messages`` of
ListConversationMessagesResponse and ``appended`` of
AppendConversationMessagesResponse."""

SNAPSHOT_ENTRY_TAG = 0x0A
"""Tag of field 1, length-delimited: ``messages`` of ListSnapshotMessagesResponse."""

MESSAGES_BY_ID_ENTRY_TAG = 0x0A
"""Tag of field 1, length-delimited: ``messages`` of GetMessagesResponse.
(``messages`` of TailConversationMessagesResponse is field 2, as stored.)"""

TRUNCATED_FIELD = b"\x18\x01"
"""``truncated = true`` (field 3, varint) of TailConversationMessagesResponse."""

TOKEN_TAG_OF_LIST = 0x1A
"""``next_page_token`` (field 3) of ListConversationMessagesResponse."""

TOKEN_TAG_OF_SNAPSHOT_LIST = 0x12
"""``next_page_token`` (field 2) of ListSnapshotMessagesResponse."""


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (one-byte tag)."""
    return bytes((tag,)) + varint(len(payload)) + payload


def timestamp(micros: int) -> bytes:
    seconds, rest = divmod(micros, 1_000_000)
    out = b""
    if seconds:
        out += b"\x08" + varint(seconds)
    if rest:
        out += b"\x10" + varint(rest * 1000)
    return out


def retagged(entry: bytes, tag: int) -> bytes:
    """The same entry as a field with another one-byte tag."""
    return bytes((tag,)) + entry[1:]


def string_field(tag: int, value: str) -> bytes:
    """A string field, omitted when empty (proto3)."""
    return field(tag, value.encode("utf-8")) if value else b""


def metadata_field(state: ConversationState) -> bytes:
    """``metadata`` as field 1 of a response."""
    return metadata_field_of(state.id, state.message_count, state.updated_at)


def metadata_field_of(conversation_id: UUID, message_count: int, updated_at: int) -> bytes:
    """metadata_field of a conversation's parts."""
    metadata = convert.metadata_of(conversation_id, message_count, updated_at)
    return field(0x0A, metadata.SerializeToString())


# -- responses ----------------------------------------------------------------


class WireCodec:
    """service.Codec in the contract's wire format, and the encoding of the
    responses built from stored bytes. Holds no state, so the service and
    the servicer may each have their own."""

    def frame(self, conversation_id: UUID, message: MessageHeader) -> tuple[bytes, bytes]:
        """(head, tail) such that ``head + body + tail`` is the message as
        an entry of a field with tag LIST_ENTRY_TAG, byte for byte what
        protobuf writes."""
        # Ids in their canonical text form, which is ASCII.
        message_id = str(message.id).encode("ascii")
        fields = field(0x0A, message_id) + field(0x12, str(conversation_id).encode("ascii"))
        if message.role:
            fields += b"\x18" + varint(message.role)
        kind_bytes = message.kind.encode("utf-8")
        if kind_bytes:
            fields += field(0x22, kind_bytes)
        body_length = message.body_length
        fields += b"\x2a" + varint(body_length)
        tail = field(0x32, timestamp(message.created_at))
        size = len(fields) + body_length + len(tail)
        return bytes((LIST_ENTRY_TAG,)) + varint(size) + fields, tail

    def message_page_header_size(self, state: ConversationState) -> int:
        # The metadata field; the entries follow it.
        return length_delimited_size(metadata_size(state.message_count, state.updated_at))

    def snapshot_page_header_size(self) -> int:
        # ListSnapshotMessagesResponse starts with its entries.
        return 0

    def token_field_size(self, token_length: int) -> int:
        return length_delimited_size(token_length)

    def message_page(self, page: MessagePage) -> bytes:
        # ListConversationMessagesResponse: metadata = 1, messages = 2,
        # next_page_token = 3; the stored entries are already field 2.
        return (
            metadata_field(page.state)
            + b"".join(page.entries)
            + string_field(TOKEN_TAG_OF_LIST, page.next_page_token)
        )

    def snapshot_message_page(self, page: SnapshotMessagePage) -> bytes:
        # ListSnapshotMessagesResponse: messages = 1, next_page_token = 2.
        return b"".join(retagged(entry, SNAPSHOT_ENTRY_TAG) for entry in page.entries) + (
            string_field(TOKEN_TAG_OF_SNAPSHOT_LIST, page.next_page_token)
        )

    # Responses of the mutating calls: what the client gets, and what an
    # idempotency key replays.

    def appended(self, result: Appended) -> EncodedResponse:
        state = result.state
        return self.appended_again(
            state.id, state.message_count, state.updated_at, self.appended_messages(result.messages)
        )

    def appended_messages(self, messages: Sequence[NewMessage]) -> bytes:
        return b"".join(message.entry for message in messages)

    def appended_again(
        self, conversation_id: UUID, message_count: int, updated_at: int, appended: bytes
    ) -> EncodedResponse:
        # AppendConversationMessagesResponse: metadata = 1, appended = 2.
        metadata = metadata_field_of(conversation_id, message_count, updated_at)
        return EncodedResponse(metadata + appended)

    def replaced(self, result: Replaced) -> EncodedResponse:
        response = pb.ReplaceConversationMessagesRangeResponse(
            metadata=convert.metadata(result.state),
            replaced_message_ids=convert.ids(result.replaced),
            inserted_message_ids=convert.ids(result.inserted),
        )
        return EncodedResponse(response.SerializeToString())

    def deleted(self, result: Deleted) -> EncodedResponse:
        response = pb.DeleteConversationMessagesRangeResponse(
            metadata=convert.metadata(result.state),
            deleted_message_ids=convert.ids(result.deleted),
        )
        return EncodedResponse(response.SerializeToString())

    def snapshot_created(self, result: SnapshotCreated) -> EncodedResponse:
        snapshot = result.snapshot
        response = pb.CreateSnapshotResponse(
            snapshot=pb.ContextSnapshot(
                snapshot_id=str(snapshot.id),
                conversation_id=str(snapshot.conversation_id),
                created_at=convert.timestamp(snapshot.created_at),
            )
        )
        return EncodedResponse(response.SerializeToString())


# -- the companion API's responses built from stored bytes -----------------------


def tail_messages(result: TailMessages) -> bytes:
    """TailConversationMessagesResponse: metadata = 1, messages = 2 (the
    stored entries, as they are), truncated = 3."""
    truncated = TRUNCATED_FIELD if result.truncated else b""
    return metadata_field(result.state) + b"".join(result.entries) + truncated


def tail_header_size(state: ConversationState) -> int:
    """Bytes of a TailConversationMessagesResponse besides its entries, with
    `truncated` set."""
    return length_delimited_size(metadata_size(state.message_count, state.updated_at)) + len(
        TRUNCATED_FIELD
    )


def messages_by_id(result: MessagesById) -> bytes:
    """GetMessagesResponse: messages = 1, the stored entries retagged (the
    same size)."""
    return b"".join(retagged(entry, MESSAGES_BY_ID_ENTRY_TAG) for entry in result.entries)


MESSAGE_ID_FIELD_SIZE = length_delimited_size(UUID_TEXT_LENGTH)
"""Bytes one message id takes in a repeated string field (field number
below 16)."""
