"""The size arithmetic must equal what the protobuf runtime encodes."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state import wire
from agent_state._gen import agent_state_pb2 as pb


def _timestamp(micros: int) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


@pytest.mark.parametrize("role", [1, 2, 3, 77])
@pytest.mark.parametrize("kind", ["", "k", "x" * 200, "ü\x00" * 100])
@pytest.mark.parametrize("body_text", ["", "a", "b" * 127, "c" * 128, "d" * 20_000])
@pytest.mark.parametrize("created_at", [0, 1, 999_999, 1_000_000, 1_795_312_973_712_916, -5])
def test_message_frame_matches_protobuf(
    role: int, kind: str, body_text: str, created_at: int
) -> None:
    body = pb.MessageBody(text=pb.TextBody(text=body_text)).SerializeToString()
    message = pb.Message(
        id=str(uuid.uuid4()),
        conversation_id=str(uuid.uuid4()),
        role=role,  # type: ignore[arg-type]
        kind=kind,
        body=pb.MessageBody.FromString(body),
        created_at=_timestamp(created_at),
    )
    head, tail = wire.message_frame(
        message.id, message.conversation_id, role, kind, len(body), created_at
    )
    listed = pb.ListConversationMessagesResponse(messages=[message]).SerializeToString()
    assert head + body + tail == listed
    snapshot = pb.ListSnapshotMessagesResponse(messages=[message]).SerializeToString()
    assert wire.retagged(head + body + tail, wire.SNAPSHOT_ENTRY_TAG) == snapshot


def test_hand_built_responses_parse_as_the_contract_says() -> None:
    body = pb.MessageBody(
        tool_output=pb.ToolOutputBody(
            tool_name="t", image=pb.ToolImageOutput(external_url="u"), metadata={"b": "1", "a": ""}
        )
    ).SerializeToString(deterministic=True)
    head, tail = wire.message_frame(str(uuid.uuid4()), str(uuid.uuid4()), 3, "", len(body), 7)
    token = "tok"
    encoded = head + body + tail + wire.field(wire.TOKEN_TAG_OF_LIST, token.encode())
    parsed = pb.ListConversationMessagesResponse.FromString(encoded)
    assert parsed.next_page_token == token
    assert parsed.messages[0].body.SerializeToString(deterministic=True) == body
    assert parsed.messages[0].created_at.nanos == 7000


@pytest.mark.parametrize("count", [0, 1, 127, 128, 10**12])
@pytest.mark.parametrize("updated_at", [0, 1_795_312_973_712_916, 1_795_312_973_000_000])
def test_metadata_size_matches_protobuf(count: int, updated_at: int) -> None:
    metadata = pb.ConversationMetadata(
        conversation_id=str(uuid.uuid4()),
        message_count=count,
        updated_at=_timestamp(updated_at),
    )
    assert wire.metadata_size(count, updated_at) == metadata.ByteSize()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**35, 2**63 - 1])
def test_varint_size(value: int) -> None:
    assert wire.varint_size(value) == len(_varint(value))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
