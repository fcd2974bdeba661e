"""Naming the string field whose bytes are not UTF-8 (server/malformed.py)."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from agent_state.server.malformed import Malformed, deserializer
from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb

# A marker that occurs once in the serialized request, swapped for as many bytes
# that are not UTF-8.
BAD = b"\xff\xfe\xfd\xfc"


def _named(request: Message, marker: str) -> str | None:
    data = request.SerializeToString()
    assert data.count(marker.encode()) == 1
    parsed = deserializer(type(request))(data.replace(marker.encode(), BAD))
    assert isinstance(parsed, Malformed)
    return parsed.bad_text


@pytest.mark.parametrize(
    ("request_message", "named"),
    [
        (pb.GetConversationRequest(conversation_id="MARK"), "conversation_id"),
        (
            pb.AppendConversationMessagesRequest(
                conversation_id="c",
                messages=[
                    pb.AppendMessageInput(kind="a"),
                    pb.AppendMessageInput(
                        kind="b", body=pb.MessageBody(text=pb.TextBody(text="MARK"))
                    ),
                ],
            ),
            "messages[1].body.text.text",
        ),
        (
            cpb.UpdateStateRequest(scope="app/x", remove_keys=["k", "MARK"]),
            "remove_keys[1]",
        ),
        (cpb.CreateConversationRequest(labels={"MARK": "v"}), "labels.key"),
        (cpb.CreateConversationRequest(labels={"k": "MARK"}), "labels.value"),
        (
            cpb.AppendMessagesWithStateRequest(
                state_updates=[cpb.StateUpdate(scope="s"), cpb.StateUpdate(set_json="MARK")]
            ),
            "state_updates[1].set_json",
        ),
    ],
)
def test_the_field_whose_text_is_not_utf8_is_named(request_message: Message, named: str) -> None:
    assert _named(request_message, "MARK") == named


def test_the_error_names_the_field_and_the_reason() -> None:
    parsed = deserializer(pb.GetConversationRequest)(b"\x0a\x04" + BAD)
    assert isinstance(parsed, Malformed)
    error = parsed.error()
    assert (error.field, "UTF-8" in error.reason) == ("conversation_id", True)


@pytest.mark.parametrize("data", [b"\x0a\x10abc", b"\x0f", bytes(range(256))])
def test_bytes_that_do_not_parse_at_all_name_the_request(data: bytes) -> None:
    parsed = deserializer(pb.GetConversationRequest)(data)
    assert isinstance(parsed, Malformed)
    assert parsed.bad_text is None
    assert parsed.error().field == "request"


def test_a_request_that_parses_is_returned_as_is() -> None:
    request = pb.GetConversationRequest(conversation_id="x")
    assert deserializer(pb.GetConversationRequest)(request.SerializeToString()) == request
