"""Encoded sizes of the contract's messages, computed without building them.

The list RPCs stop a page early so that its encoding stays under a byte
limit; these functions give the exact protobuf sizes from stored columns.
They follow the proto3 rules: default scalars are omitted, set sub-messages
are always written. Unit-tested against the protobuf runtime.
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


def message_size(role: int, kind_bytes: int, body_bytes: int, created_at: int) -> int:
    """Size of an encoded ``Message`` with id and conversation id set."""
    size = 2 * length_delimited_size(UUID_TEXT_LENGTH)
    if role:
        size += 1 + varint_size(role)
    if kind_bytes:
        size += length_delimited_size(kind_bytes)
    size += length_delimited_size(body_bytes)
    size += length_delimited_size(timestamp_size(created_at))
    return size


def metadata_size(message_count: int, updated_at: int) -> int:
    """Size of an encoded ``ConversationMetadata``."""
    size = length_delimited_size(UUID_TEXT_LENGTH)
    if message_count:
        size += 1 + varint_size(message_count)
    size += length_delimited_size(timestamp_size(updated_at))
    return size
