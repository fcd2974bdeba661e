"""The hand-written encoding and the size arithmetic must equal what the
protobuf runtime encodes."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state.companion import MessagesById, TailMessages
from agent_state.model import (
    ConversationDetails,
    ConversationRecord,
    ConversationState,
    EncodedMessage,
    NewMessage,
    Retention,
    Snapshot,
    StoredMessage,
)
from agent_state.server import convert, wire
from agent_state.server.companion_servicer import CompanionCodec
from agent_state.service import (
    Appended,
    Deleted,
    MessagePage,
    Replaced,
    SnapshotCreated,
    SnapshotMessagePage,
)
from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb

from ..._gen_helpers import text_body

CODEC = wire.WireCodec()


def _timestamp(micros: int) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def _entry(conversation_id: uuid.UUID, message: StoredMessage) -> EncodedMessage:
    head, tail = CODEC.frame(conversation_id, message.header)
    return EncodedMessage(head + message.body + tail)


def _state(message_count: int = 3, updated_at: int = 1_795_312_973_712_916) -> ConversationState:
    return ConversationState(uuid.uuid4(), message_count, updated_at, 0, 0, 0)


@pytest.mark.parametrize("role", [1, 2, 3, 77])
@pytest.mark.parametrize("kind", ["", "k", "x" * 200, "ü\x00" * 100])
@pytest.mark.parametrize("body_text", ["", "a", "b" * 127, "c" * 128, "d" * 20_000])
@pytest.mark.parametrize("created_at", [0, 1, 999_999, 1_000_000, 1_795_312_973_712_916, -5])
def test_message_frame_matches_protobuf(
    role: int, kind: str, body_text: str, created_at: int
) -> None:
    body = pb.MessageBody(text=pb.TextBody(text=body_text)).SerializeToString()
    stored = StoredMessage(uuid.uuid4(), role, kind, body, created_at)
    conversation_id = uuid.uuid4()
    message = pb.Message(
        id=str(stored.id),
        conversation_id=str(conversation_id),
        role=role,  # type: ignore[arg-type]
        kind=kind,
        body=pb.MessageBody.FromString(body),
        created_at=_timestamp(created_at),
    )
    entry = _entry(conversation_id, stored)
    listed = pb.ListConversationMessagesResponse(messages=[message]).SerializeToString()
    assert entry == listed
    snapshot = pb.ListSnapshotMessagesResponse(messages=[message]).SerializeToString()
    assert wire.retagged(entry, wire.SNAPSHOT_ENTRY_TAG) == snapshot


def test_hand_built_responses_parse_as_the_contract_says() -> None:
    body = pb.MessageBody(
        tool_output=pb.ToolOutputBody(
            tool_name="t", image=pb.ToolImageOutput(external_url="u"), metadata={"b": "1", "a": ""}
        )
    ).SerializeToString(deterministic=True)
    entry = _entry(uuid.uuid4(), StoredMessage(uuid.uuid4(), 3, "", body, 7))
    token = "tok"
    encoded = entry + wire.field(wire.TOKEN_TAG_OF_LIST, token.encode())
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


def test_varint_of_zero() -> None:
    # Protobuf omits a zero scalar, so it cannot be compared there.
    assert wire.varint(0) == b"\x00"
    assert wire.varint_size(0) == 1


@pytest.mark.parametrize("value", [1, 127, 128, 16383, 16384, 2**35, 2**63 - 1, -1, -(2**63)])
def test_varint_matches_protobuf(value: int) -> None:
    # message_count is field 2 of ConversationMetadata, an int64: its tag
    # byte, then the value as a varint.
    encoded = pb.ConversationMetadata(message_count=value).SerializeToString()
    assert encoded == b"\x10" + wire.varint(value)
    assert wire.varint_size(value) == len(encoded) - 1


@pytest.mark.parametrize("message_count", [0, 5, 300])
@pytest.mark.parametrize("token", ["", "t" * 44])
def test_message_page_sizes_match_what_is_sent(message_count: int, token: str) -> None:
    state = _state(message_count)
    messages = [StoredMessage(uuid.uuid4(), 1, "k", text_body("x" * n), n) for n in (1, 200)]
    entries = [_entry(state.id, message) for message in messages]
    encoded = CODEC.message_page(MessagePage(state, entries, token))
    parsed = pb.ListConversationMessagesResponse.FromString(encoded)
    assert parsed.metadata.message_count == message_count
    assert [message.id for message in parsed.messages] == [str(m.id) for m in messages]
    assert parsed.next_page_token == token
    token_size = CODEC.token_field_size(len(token)) if token else 0
    expected = CODEC.message_page_header_size(state) + sum(map(len, entries)) + token_size
    assert len(encoded) == expected == parsed.ByteSize()


@pytest.mark.parametrize("token", ["", "t" * 44])
def test_snapshot_page_sizes_match_what_is_sent(token: str) -> None:
    conversation_id = uuid.uuid4()
    messages = [StoredMessage(uuid.uuid4(), 2, "", text_body("y" * n), n) for n in (1, 60)]
    entries = [_entry(conversation_id, message) for message in messages]
    encoded = CODEC.snapshot_message_page(SnapshotMessagePage(entries, token))
    parsed = pb.ListSnapshotMessagesResponse.FromString(encoded)
    assert [message.id for message in parsed.messages] == [str(m.id) for m in messages]
    assert parsed.next_page_token == token
    token_size = CODEC.token_field_size(len(token)) if token else 0
    expected = CODEC.snapshot_page_header_size() + sum(map(len, entries)) + token_size
    assert len(encoded) == expected == parsed.ByteSize()


def test_responses_of_the_mutating_calls() -> None:
    state = _state()
    stored = StoredMessage(uuid.uuid4(), 1, "k", text_body("hi"), 9)
    head, tail = CODEC.frame(state.id, stored.header)
    appended = pb.AppendConversationMessagesResponse.FromString(
        CODEC.appended(Appended(state, [NewMessage(stored, b"", head, tail)]))
    )
    assert appended.metadata.conversation_id == str(state.id)
    assert appended.metadata.message_count == state.message_count
    assert [message.id for message in appended.appended] == [str(stored.id)]
    assert appended.appended[0].body.text.text == "hi"

    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    replaced = pb.ReplaceConversationMessagesRangeResponse.FromString(
        CODEC.replaced(Replaced(state, [a, b], [c]))
    )
    assert list(replaced.replaced_message_ids) == [str(a), str(b)]
    assert list(replaced.inserted_message_ids) == [str(c)]
    assert replaced.metadata.updated_at == _timestamp(state.updated_at)

    deleted = pb.DeleteConversationMessagesRangeResponse.FromString(
        CODEC.deleted(Deleted(state, [b]))
    )
    assert list(deleted.deleted_message_ids) == [str(b)]
    assert deleted.metadata.message_count == state.message_count

    snapshot = Snapshot(uuid.uuid4(), state.id, 1_000_001, 2)
    created = pb.CreateSnapshotResponse.FromString(
        CODEC.snapshot_created(SnapshotCreated(state, snapshot))
    )
    assert created.snapshot.snapshot_id == str(snapshot.id)
    assert created.snapshot.conversation_id == str(state.id)
    assert created.snapshot.created_at == _timestamp(1_000_001)


# --- the companion API's responses -----------------------------------------------------


def _messages(state: ConversationState) -> tuple[list[pb.Message], list[EncodedMessage]]:
    stored = [
        StoredMessage(uuid.uuid4(), role, kind, text_body(text), at)
        for role, kind, text, at in [(1, "k", "x", 5), (3, "", "y" * 300, 0), (2, "ü", "", 7)]
    ]
    messages = [
        pb.Message(
            id=str(m.id),
            conversation_id=str(state.id),
            role=m.role,  # type: ignore[arg-type]
            kind=m.kind,
            body=pb.MessageBody.FromString(m.body),
            created_at=_timestamp(m.created_at),
        )
        for m in stored
    ]
    return messages, [_entry(state.id, m) for m in stored]


@pytest.mark.parametrize("truncated", [False, True])
@pytest.mark.parametrize("message_count", [0, 3, 10**9])
def test_tail_response_is_what_protobuf_writes(truncated: bool, message_count: int) -> None:
    state = _state(message_count)
    messages, entries = _messages(state)
    encoded = wire.tail_messages(TailMessages(state, entries, truncated))
    expected = cpb.TailConversationMessagesResponse(
        metadata=convert.metadata(state), messages=messages, truncated=truncated
    )
    assert encoded == expected.SerializeToString()
    # The header size counts `truncated` whether it is set or not.
    header = wire.tail_header_size(state)
    assert len(encoded) == header + sum(map(len, entries)) - (0 if truncated else 2)


def test_get_messages_response_is_what_protobuf_writes() -> None:
    state = _state()
    messages, entries = _messages(state)
    asked = [entries[2], entries[0], entries[2]]
    encoded = wire.messages_by_id(MessagesById(state, asked))
    expected = cpb.GetMessagesResponse(messages=[messages[2], messages[0], messages[2]])
    assert encoded == expected.SerializeToString()
    # Retagged, not resized: the limit is the entries' sizes.
    assert len(encoded) == sum(map(len, asked))


@pytest.mark.parametrize("count", [0, 1, 1000])
def test_fork_response_and_its_id_size(count: int) -> None:
    codec = CompanionCodec()
    state = _state(count)
    record = ConversationRecord(state, 12, ConversationDetails("t", {"a": "b"}, None))
    ids = [uuid.uuid4() for _ in range(count)]
    encoded = codec.forked(record, ids)
    parsed = cpb.ForkConversationResponse.FromString(encoded)
    assert list(parsed.message_ids) == [str(i) for i in ids]
    assert parsed.conversation.conversation_id == str(state.id)
    ids_alone = cpb.ForkConversationResponse(message_ids=[str(i) for i in ids]).ByteSize()
    assert ids_alone == count * codec.message_id_size()


_LARGEST = 2**63 - 1
_LATEST = 253_402_300_799_999_999


@pytest.mark.parametrize(
    "details",
    [
        ConversationDetails("", {}, None),
        ConversationDetails("t", {"a": ""}, Retention(0, 0)),
        # The largest a client can make: 1,000 four-byte code points, 64
        # labels of 63-character keys and 256 four-byte code points.
        ConversationDetails(
            "\U0001f600" * 1000,
            {f"{i:02d}" + "k" * 61: "\U0001f600" * 256 for i in range(64)},
            Retention(_LARGEST, _LARGEST),
        ),
        ConversationDetails("é" * 300, {"a" * 63: "b" * 127, "c": "d" * 128}, Retention(1, 1)),
    ],
    ids=["empty", "small", "largest", "mixed"],
)
@pytest.mark.parametrize("number", [0, _LARGEST])
def test_listed_conversation_size_bounds_its_encoding(
    details: ConversationDetails, number: int
) -> None:
    state = ConversationState(uuid.uuid4(), number, _LATEST, 0, 0, number)
    record = ConversationRecord(state, _LATEST, details)
    listed = cpb.ListConversationsResponse(conversations=[convert.conversation(record)])
    bound = CompanionCodec().listed_conversation_size(record)
    assert listed.ByteSize() <= bound <= listed.ByteSize() + 200


def test_companion_codec_frames_as_the_contract() -> None:
    stored = StoredMessage(uuid.uuid4(), 2, "kind", text_body("z"), 3)
    conversation_id = uuid.uuid4()
    assert CompanionCodec().frame(conversation_id, stored.header) == CODEC.frame(
        conversation_id, stored.header
    )
