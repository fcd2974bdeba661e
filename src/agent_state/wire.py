"""The contract's wire format where the service writes it by hand.

Messages are encoded once, at append, and list responses are assembled from
stored bytes; sizes of the few messages built with protobuf are computed
here too, so a page can stop before its limit. Everything follows the
proto3 rules (default scalars omitted, set sub-messages always written) and
is unit-tested byte for byte against the protobuf runtime.
"""

from __future__ import annotations

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


def message_frame(
    message_id: str, conversation_id: str, role: int, kind: str, body_length: int, created_at: int
) -> tuple[bytes, bytes]:
    """(head, tail) such that ``head + body + tail`` is one ``Message`` as an
    entry of a field with tag LIST_ENTRY_TAG, byte for byte what protobuf
    writes. Ids are given in their canonical text form."""
    fields = field(0x0A, message_id.encode("ascii")) + field(0x12, conversation_id.encode("ascii"))
    if role:
        fields += b"\x18" + varint(role)
    kind_bytes = kind.encode("utf-8")
    if kind_bytes:
        fields += field(0x22, kind_bytes)
    fields += b"\x2a" + varint(body_length)
    tail = field(0x32, timestamp(created_at))
    size = len(fields) + body_length + len(tail)
    return bytes((LIST_ENTRY_TAG,)) + varint(size) + fields, tail


def retagged(entry: bytes, tag: int) -> bytes:
    """The same entry as a field with another one-byte tag."""
    return bytes((tag,)) + entry[1:]
