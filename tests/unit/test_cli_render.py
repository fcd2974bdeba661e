"""What the CLI's client commands print, without a server: every body
variant, messages, conversations, state, JSON, and escaping of untrusted
content."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click
import pytest

from agent_state.cli.inputs import ROLES
from agent_state.cli.render import (
    escape_controls,
    message_json,
    quote,
    render_body,
    render_conversation,
    render_conversation_line,
    render_message,
    render_metadata,
    render_state,
    state_json,
    to_json,
)
from agent_state_client.types import (
    Body,
    Conversation,
    ConversationMetadata,
    ImageDetail,
    Message,
    Retention,
    Role,
    State,
    Text,
    ToolImage,
    ToolOutput,
    ToolText,
    UnknownBody,
)

MESSAGE_ID = "01a200fd-0000-7000-8000-000000000001"
CONVERSATION_ID = "0191c6a4-5d2e-7c3a-9f00-2b1e4c6d8a10"
CREATED = datetime(2026, 11, 22, 2, 10, 11, 123456, tzinfo=UTC)
CREATED_TEXT = "2026-11-22T02:10:11.123456Z"


def plain(lines: list[str]) -> list[str]:
    return [click.unstyle(line) for line in lines]


def message(body: Body, role: Role = Role.USER, kind: str = "user") -> Message:
    return Message(MESSAGE_ID, CONVERSATION_ID, role, kind, body, CREATED)


def tool_output(output: ToolText | ToolImage, **metadata: str) -> ToolOutput:
    return ToolOutput("search", "call_7", output, metadata)


# --- bodies ----------------------------------------------------------------------


def test_text_body_keeps_its_lines() -> None:
    assert plain(render_body(Text("hello\nworld"))) == ["hello", "world"]


def test_empty_text_body_says_so() -> None:
    assert plain(render_body(Text(""))) == ["(empty text)"]


def test_tool_text_output_shows_tool_call_and_text() -> None:
    assert plain(render_body(tool_output(ToolText("3 results\nfirst: x")))) == [
        "tool output  tool_name=search  tool_call_id=call_7",
        "text:",
        "    3 results",
        "    first: x",
    ]


def test_empty_tool_text_output_is_still_a_text_output() -> None:
    assert plain(render_body(tool_output(ToolText(""))))[1] == "text: (empty)"


def test_tool_image_output_shows_every_image_field() -> None:
    image = ToolImage(
        external_url="https://img.example/a b.png",
        mime_type="image/png",
        detail=ImageDetail.HIGH,
        width_px=640,
        height_px=480,
        sha256="ab" * 32,
    )
    assert plain(render_body(tool_output(image))) == [
        "tool output  tool_name=search  tool_call_id=call_7",
        'image  external_url="https://img.example/a b.png"  mime_type=image/png  detail=high'
        f"  width_px=640  height_px=480  sha256={'ab' * 32}",
    ]


def test_an_empty_image_output_shows_empty_fields() -> None:
    assert plain(render_body(tool_output(ToolImage(""))))[1] == (
        'image  external_url=""  mime_type=""  detail=unspecified  width_px=0  height_px=0'
        '  sha256=""'
    )


def test_tool_output_metadata_is_shown_sorted_and_quoted() -> None:
    output = tool_output(ToolText("ok"), z="last", a="two words", m="")
    assert plain(render_body(output))[-1] == 'metadata  a="two words"  m=""  z=last'


def test_a_body_this_client_has_no_type_for_says_its_size() -> None:
    assert plain(render_body(UnknownBody(b"\x1a\x03abc"))) == [
        "(a body this client has no type for, 5 bytes)"
    ]


# --- messages, metadata, conversations, state ------------------------------------------


def test_message_header_then_indented_body() -> None:
    assert plain(render_message(message(Text("hi")), 3)) == [
        f"[3]  {MESSAGE_ID}  user  kind=user  {CREATED_TEXT}",
        "    hi",
    ]


@pytest.mark.parametrize(
    ("role", "name"),
    [
        (Role.ASSISTANT, "assistant"),
        (Role.TOOL, "tool"),
        (Role(0), "unspecified"),
        (Role(9), "role_9"),
    ],
)
def test_roles_render_by_name(role: Role, name: str) -> None:
    header = plain(render_message(message(Text(""), role=role, kind=""), None))[0]
    assert header.startswith(f'[?]  {MESSAGE_ID}  {name}  kind=""  ')


def test_metadata_lines_end_with_the_version() -> None:
    metadata = ConversationMetadata(CONVERSATION_ID, 12, CREATED, 7)
    assert plain(render_metadata(metadata)) == [
        f"conversation_id  {CONVERSATION_ID}",
        "message_count    12",
        f"updated_at       {CREATED_TEXT}",
        "version          7",
    ]
    unreported = ConversationMetadata(CONVERSATION_ID, 0, CREATED)
    assert plain(render_metadata(unreported))[-1] == "version          -"


def conversation(labels: dict[str, str], retention: Retention | None) -> Conversation:
    return Conversation(CONVERSATION_ID, "Trip to Paris", labels, 3, 5, CREATED, CREATED, retention)


def test_a_conversation_as_lines_and_as_one_line() -> None:
    found = conversation({"user": "u 1", "team": "search"}, Retention(timedelta(hours=1), 50))
    assert plain(render_conversation(found)) == [
        f"conversation_id  {CONVERSATION_ID}",
        'title            "Trip to Paris"',
        'labels           team=search user="u 1"',
        "message_count    3",
        "version          5",
        f"created_at       {CREATED_TEXT}",
        f"updated_at       {CREATED_TEXT}",
        "retention        max_idle=3600s max_messages=50",
    ]
    assert click.unstyle(render_conversation_line(found)) == (
        f'{CONVERSATION_ID}  title="Trip to Paris"  labels="team=search user=\\"u 1\\""'
        f"  message_count=3  version=5  updated_at={CREATED_TEXT}"
    )
    bare = plain(render_conversation(conversation({}, None)))
    assert bare[2] == "labels           -"
    assert bare[-1] == "retention        server default"


def test_state_values_are_printed_exactly_as_stored() -> None:
    stored = State("app/demo", '{"t":0.10000000000000000001,"n":null}', 4)
    assert plain(render_state(stored)) == [
        "scope    app/demo",
        "version  4",
        'values   {"t":0.10000000000000000001,"n":null}',
    ]
    document = state_json(stored)
    assert json.loads(document) == {"scope": "app/demo", "version": 4, "values": stored.values}
    assert '"values": {"t":0.10000000000000000001,"n":null}' in document


def test_role_choices_are_the_contract_roles() -> None:
    assert ROLES == {"user": Role.USER, "assistant": Role.ASSISTANT, "tool": Role.TOOL}


# --- JSON ---------------------------------------------------------------------------


def test_message_json_tags_the_body_and_puts_the_index_first() -> None:
    document = message_json(message(Text("hi"), kind=""), 4)
    assert list(document) == [
        "index", "id", "conversation_id", "role", "kind", "created_at", "body",
    ]  # fmt: skip
    assert document == {
        "index": 4,
        "id": MESSAGE_ID,
        "conversation_id": CONVERSATION_ID,
        "role": "user",
        "kind": "",
        "created_at": CREATED_TEXT,
        "body": {"text": "hi"},
    }
    assert "index" not in message_json(message(Text("hi")))


def test_every_body_variant_as_json() -> None:
    image = ToolImage("https://i.example/x.png", "image/png", ImageDetail.LOW, 2, 3, "ff")
    assert to_json(tool_output(image, k="v")) == {
        "tool_output": {
            "tool_name": "search",
            "tool_call_id": "call_7",
            "image": {
                "external_url": "https://i.example/x.png",
                "mime_type": "image/png",
                "detail": "low",
                "width_px": 2,
                "height_px": 3,
                "sha256": "ff",
            },
            "metadata": {"k": "v"},
        }
    }
    assert to_json(tool_output(ToolText("out")))["tool_output"]["text"] == "out"
    assert to_json(UnknownBody(b"\x01\x02")) == {"unknown": "AQI="}


def test_a_conversation_as_json() -> None:
    assert to_json(conversation({"a": "b"}, Retention(timedelta(seconds=90.5)))) == {
        "conversation_id": CONVERSATION_ID,
        "title": "Trip to Paris",
        "labels": {"a": "b"},
        "message_count": 3,
        "version": 5,
        "created_at": CREATED_TEXT,
        "updated_at": CREATED_TEXT,
        "retention": {"max_idle_seconds": 90.5, "max_messages": None},
    }


# --- untrusted content cannot drive the terminal ------------------------------------


def test_control_characters_are_escaped() -> None:
    assert escape_controls("a\x1b[31mb\rc\x00d\x9be\tf\ng") == "a\\x1b[31mb\\rc\\x00d\\x9be\tf\ng"


def test_escape_sequences_in_stored_content_never_reach_the_output() -> None:
    rendered = "\n".join(render_body(Text("\x1b]0;title\x07\x1b[2J")))
    assert "\x1b" not in click.unstyle(rendered)
    assert "\x07" not in rendered
    image = tool_output(ToolImage("\x1b[2J", mime_type="\x9b2J"))
    assert "\x1b" not in click.unstyle("\n".join(render_body(image)))
    assert "\x9b" not in "\n".join(render_body(image))
    labelled = conversation({"k\x1b": "\x1b[2J"}, None)
    assert "\x1b" not in click.unstyle("\n".join(render_conversation(labelled)))
    assert "\x1b" not in click.unstyle(render_conversation_line(labelled))
    assert "\x1b" not in click.unstyle("\n".join(render_state(State("s", '{"\x1b":1}', 1))))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        ("", '""'),
        ("two words", '"two words"'),
        ("a=b", '"a=b"'),
        ('say "x"', '"say \\"x\\""'),
        ("line\nbreak", '"line\\nbreak"'),
        ("\x7f", '"\\x7f"'),
        ("ünïcode", "ünïcode"),
    ],
)
def test_quote(value: str, shown: str) -> None:
    assert quote(value) == shown
