"""The client's own types and their conversion to and from the wire, pure."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from agent_state_client import (
    ImageDetail,
    Message,
    MessageInput,
    Retention,
    Role,
    State,
    StateUpdate,
    Text,
    ToolImage,
    ToolOutput,
    ToolText,
    UnknownBody,
)
from agent_state_client import _convert as convert
from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client.types import body_text


def test_enums_keep_numbers_they_have_no_name_for() -> None:
    assert Role(1) is Role.USER
    future = Role(7)
    assert future == 7
    assert future.name == "ROLE_7"
    assert ImageDetail(9) == 9
    with pytest.raises(ValueError, match="Role"):
        Role("USER")  # type: ignore[arg-type]


def test_message_input_shorthands() -> None:
    assert MessageInput.user("hi") == MessageInput(Role.USER, Text("hi"), "")
    assert MessageInput.assistant("ok", kind="answer") == MessageInput(
        Role.ASSISTANT, Text("ok"), "answer"
    )
    tool = MessageInput.tool_output("search", "call-1", "found", metadata={"k": "v"})
    assert tool.role is Role.TOOL
    assert tool.body == ToolOutput("search", "call-1", ToolText("found"), {"k": "v"})


def test_values_are_frozen_and_their_maps_read_only() -> None:
    body = ToolOutput("t", "c", ToolText("x"), {"k": "v"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        body.tool_name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        body.metadata["k"] = "changed"  # type: ignore[index]
    source = {"k": "v"}
    copied = ToolOutput("t", "c", ToolText("x"), source)
    source["k"] = "changed"
    assert copied.metadata == {"k": "v"}


EVERY_BODY = [
    Text(""),
    Text("nul \x00 żółw 🐢"),
    ToolOutput("t", "c", ToolText("out"), {"b": "2", "a": "1"}),
    ToolOutput("", "", ToolText("")),
    ToolOutput(
        "cam", "c2", ToolImage("https://x.test/a.png", "image/png", ImageDetail.LOW, 3, 4, "ab")
    ),
    ToolOutput("cam", "c3", ToolImage("u", detail=ImageDetail(9))),
    UnknownBody(b"\x4a\x03new"),
]


@pytest.mark.parametrize("body", EVERY_BODY)
def test_bodies_round_trip_through_the_wire_form(body: object) -> None:
    wire = convert.body_message(body)  # type: ignore[arg-type]
    again = convert.body(pb.MessageBody.FromString(wire.SerializeToString()))
    assert again == body


@pytest.mark.parametrize("body", [*EVERY_BODY, UnknownBody(b"")])
def test_a_bodys_text_reads_the_same_off_the_wire(body: object) -> None:
    wire = pb.MessageBody.FromString(convert.body_message(body).SerializeToString())  # type: ignore[arg-type]
    assert convert.body_text_of(wire) == body_text(convert.body(wire))


def test_a_tool_output_of_an_unknown_kind_is_kept_whole() -> None:
    # ToolOutputBody with a name and an output variant (field 5) this contract lacks.
    tool = pb.ToolOutputBody.FromString(b"\x0a\x01t\x2a\x01z")
    wire = pb.MessageBody(tool_output=tool)
    read = convert.body(wire)
    assert isinstance(read, UnknownBody)
    assert convert.body_message(read).SerializeToString() == wire.SerializeToString()


def test_message_text() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    image = ToolOutput("t", "c", ToolImage("u"))

    def message(body: object) -> Message:
        return Message("m", "c", Role.TOOL, "", body, at)  # type: ignore[arg-type]

    assert message(Text("a")).text == "a"
    assert message(ToolOutput("t", "c", ToolText("b"))).text == "b"
    assert message(image).text is None
    assert message(image).as_input() == MessageInput(Role.TOOL, image, "")


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 22, 2, 10, 11, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=5))),
    ],
)
def test_times_keep_microseconds_and_come_back_in_utc(moment: datetime) -> None:
    back = convert.moment(convert.timestamp(moment, "t"))
    assert back == moment
    assert back.tzinfo is UTC


@pytest.mark.parametrize(
    "span", [timedelta(0), timedelta(days=30, microseconds=1), timedelta(seconds=-1.5)]
)
def test_durations_round_trip(span: timedelta) -> None:
    assert convert.span(convert.duration(span)) == span


def test_retention_round_trip() -> None:
    for kept in (Retention(max_idle=timedelta(hours=2)), Retention(max_messages=5), Retention()):
        wire = pb.DESCRIPTOR  # the companion message lives in conversations_pb2
        assert wire is not None
        message = convert.retention(kept)
        assert (message.max_messages or None) == kept.max_messages
        if kept.max_idle is None:
            assert not message.HasField("max_idle")
        else:
            assert convert.span(message.max_idle) == kept.max_idle


def test_state_json() -> None:
    state = State("app/a", '{"n": 12345678901234567890, "f": 0.5, "z": null}', 3)
    assert state.values == {"n": 12345678901234567890, "f": 0.5, "z": None}
    assert json.loads(convert.json_object({"k": [1, "two"], "none": None}, "set")) == {
        "k": [1, "two"],
        "none": None,
    }
    assert convert.json_object('{"exact": 0.10}', "set") == '{"exact": 0.10}'
    with pytest.raises(ValueError, match="set"):
        convert.json_object({"bad": float("nan")}, "set")
    with pytest.raises(TypeError, match="set"):
        convert.json_object(["not", "an", "object"], "set")  # type: ignore[arg-type]
    update = StateUpdate("app/a", {"k": 1}, ["x"])
    assert update.remove == ("x",)
    with pytest.raises(TypeError):
        update.set["k"] = 2  # type: ignore[index]
