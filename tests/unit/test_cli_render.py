"""What the CLI's client commands print, without a server: every body
variant, messages, metadata, JSON, and escaping of untrusted content."""

from __future__ import annotations

from typing import cast

import click
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state.cli.render import (
    ROLE_BY_NAME,
    escape_controls,
    message_json,
    quote,
    render_body,
    render_message,
    render_metadata,
)
from agent_state_client._gen import agent_state_pb2 as pb

MESSAGE_ID = "01a200fd-0000-7000-8000-000000000001"
CONVERSATION_ID = "0191c6a4-5d2e-7c3a-9f00-2b1e4c6d8a10"


def plain(lines: list[str]) -> list[str]:
    return [click.unstyle(line) for line in lines]


def message(body: pb.MessageBody, role: int = pb.ROLE_USER, kind: str = "user") -> pb.Message:
    created = Timestamp()
    created.FromJsonString("2026-11-22T02:10:11.123456Z")
    return pb.Message(
        id=MESSAGE_ID,
        conversation_id=CONVERSATION_ID,
        role=cast(pb.Role, role),
        kind=kind,
        body=body,
        created_at=created,
    )


def tool_output(**fields: object) -> pb.MessageBody:
    output = pb.ToolOutputBody(tool_name="search", tool_call_id="call_7", **fields)  # type: ignore[arg-type]
    return pb.MessageBody(tool_output=output)


# --- bodies ----------------------------------------------------------------------


def test_text_body_keeps_its_lines() -> None:
    body = pb.MessageBody(text=pb.TextBody(text="hello\nworld"))
    assert plain(render_body(body)) == ["hello", "world"]


def test_empty_text_body_says_so() -> None:
    body = pb.MessageBody(text=pb.TextBody(text=""))
    assert plain(render_body(body)) == ["(empty text)"]


def test_tool_text_output_shows_tool_call_and_text() -> None:
    body = tool_output(text=pb.ToolTextOutput(text="3 results\nfirst: x"))
    assert plain(render_body(body)) == [
        "tool output  tool_name=search  tool_call_id=call_7",
        "text:",
        "    3 results",
        "    first: x",
    ]


def test_empty_tool_text_output_is_still_a_text_output() -> None:
    body = tool_output(text=pb.ToolTextOutput(text=""))
    assert body.tool_output.WhichOneof("output") == "text"
    assert plain(render_body(body))[1] == "text: (empty)"


def test_tool_image_output_shows_every_image_field() -> None:
    image = pb.ToolImageOutput(
        external_url="https://img.example/a b.png",
        mime_type="image/png",
        detail=pb.IMAGE_DETAIL_HIGH,
        width_px=640,
        height_px=480,
        sha256="ab" * 32,
    )
    lines = plain(render_body(tool_output(image=image)))
    assert lines == [
        "tool output  tool_name=search  tool_call_id=call_7",
        'image  external_url="https://img.example/a b.png"  mime_type=image/png  detail=high'
        f"  width_px=640  height_px=480  sha256={'ab' * 32}",
    ]


def test_an_empty_image_output_shows_empty_fields() -> None:
    body = tool_output(image=pb.ToolImageOutput())
    body.tool_output.image.SetInParent()
    assert plain(render_body(body))[1] == (
        'image  external_url=""  mime_type=""  detail=unspecified  width_px=0  height_px=0'
        '  sha256=""'
    )


def test_tool_output_metadata_is_shown_sorted_and_quoted() -> None:
    body = tool_output(
        text=pb.ToolTextOutput(text="ok"), metadata={"z": "last", "a": "two words", "m": ""}
    )
    assert plain(render_body(body))[-1] == 'metadata  a="two words"  m=""  z=last'


def test_tool_output_without_output_and_body_without_variant() -> None:
    assert plain(render_body(tool_output()))[1] == "(no output this client knows)"
    assert plain(render_body(pb.MessageBody())) == ["(no body variant this client knows)"]


# --- messages and metadata ---------------------------------------------------------


def test_message_header_then_indented_body() -> None:
    lines = plain(render_message(message(pb.MessageBody(text=pb.TextBody(text="hi"))), 3))
    assert lines == [
        f"[3]  {MESSAGE_ID}  user  kind=user  2026-11-22T02:10:11.123456Z",
        "    hi",
    ]


@pytest.mark.parametrize(
    ("role", "name"),
    [(pb.ROLE_ASSISTANT, "assistant"), (pb.ROLE_TOOL, "tool"), (0, "unspecified"), (9, "role(9)")],
)
def test_roles_render_by_name(role: int, name: str) -> None:
    header = plain(render_message(message(pb.MessageBody(), role=role, kind=""), None))[0]
    assert header.startswith(f'[?]  {MESSAGE_ID}  {name}  kind=""  ')


def test_metadata_lines() -> None:
    metadata = pb.ConversationMetadata(conversation_id=CONVERSATION_ID, message_count=12)
    assert plain(render_metadata(metadata)) == [
        f"conversation_id  {CONVERSATION_ID}",
        "message_count    12",
        "updated_at       -",
    ]


def test_role_choices_are_the_contract_roles() -> None:
    assert ROLE_BY_NAME == {
        "user": pb.ROLE_USER,
        "assistant": pb.ROLE_ASSISTANT,
        "tool": pb.ROLE_TOOL,
    }


def test_message_json_is_the_protobuf_mapping_plus_index() -> None:
    document = message_json(message(pb.MessageBody(text=pb.TextBody(text="hi")), kind=""), 4)
    assert document == {
        "index": 4,
        "id": MESSAGE_ID,
        "conversationId": CONVERSATION_ID,
        "role": "ROLE_USER",
        "kind": "",
        "body": {"text": {"text": "hi"}},
        "createdAt": "2026-11-22T02:10:11.123456Z",
    }


# --- untrusted content cannot drive the terminal ------------------------------------


def test_control_characters_are_escaped() -> None:
    assert escape_controls("a\x1b[31mb\rc\x00d\x9be\tf\ng") == "a\\x1b[31mb\\rc\\x00d\\x9be\tf\ng"


def test_escape_sequences_in_stored_text_never_reach_the_output() -> None:
    body = pb.MessageBody(text=pb.TextBody(text="\x1b]0;title\x07\x1b[2J"))
    rendered = "\n".join(render_body(body))
    assert "\x1b" not in click.unstyle(rendered)
    assert "\x07" not in rendered
    image = pb.ToolImageOutput(external_url="\x1b[2J", mime_type="\x9b2J")
    assert "\x1b" not in click.unstyle("\n".join(render_body(tool_output(image=image))))
    assert "\x9b" not in "\n".join(render_body(tool_output(image=image)))


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
