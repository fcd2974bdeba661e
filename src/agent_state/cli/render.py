"""What the client commands print: text for people at a terminal, JSON for scripts.

Text output escapes control characters in stored content (stored text can
hold anything, including terminal escape sequences); colour comes from
click's styles, which click drops unless stdout is a terminal or colour is
forced. JSON is the protobuf JSON mapping (camelCase names, int64 as
strings, bytes as base64) with every field present.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, cast

import click
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2

from agent_state_client._gen import agent_state_pb2 as pb

ROLE_BY_NAME: dict[str, pb.Role] = {
    name.removeprefix("ROLE_").lower(): cast(pb.Role, value)
    for name, value in pb.Role.items()
    if value != pb.ROLE_UNSPECIFIED
}
SERVING = health_pb2.HealthCheckResponse.SERVING
_ROLE_COLOURS = {pb.ROLE_USER: "green", pb.ROLE_ASSISTANT: "blue", pb.ROLE_TOOL: "magenta"}
_INDENT = "    "


def escape_controls(text: str) -> str:
    """``text`` with control characters (other than newline and tab) written as escapes,
    so stored content cannot drive the terminal."""
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char in "\n\t" or not (code < 0x20 or 0x7F <= code <= 0x9F):
            out.append(char)
        elif char == "\r":
            out.append("\\r")
        else:
            out.append(f"\\x{code:02x}")
    return "".join(out)


def quote(value: str) -> str:
    """A value for a ``key=value`` field: bare when unambiguous, else JSON-quoted."""
    plain = value and not any(
        char.isspace() or char in '="\\' or not char.isprintable() for char in value
    )
    return value if plain else escape_controls(json.dumps(value, ensure_ascii=False))


def role_name(role: int) -> str:
    try:
        return pb.Role.Name(role).removeprefix("ROLE_").lower()
    except ValueError:
        return f"role({role})"


def detail_name(detail: int) -> str:
    try:
        return pb.ImageDetail.Name(detail).removeprefix("IMAGE_DETAIL_").lower()
    except ValueError:
        return f"detail({detail})"


def timestamp(value: Timestamp, present: bool = True) -> str:
    return value.ToJsonString() if present else "-"


def _field(name: str, value: str) -> str:
    return click.style(f"{name}=", dim=True) + quote(value)


def _titled(title: str, *pairs: tuple[str, str]) -> str:
    """A bold title, then `key=value` fields."""
    return "  ".join([click.style(title, bold=True)] + [_field(name, v) for name, v in pairs])


def render_body(body: pb.MessageBody) -> list[str]:
    """The body's lines, unindented: every MessageBody and ToolOutputBody variant."""
    variant = body.WhichOneof("body")
    if variant == "text":
        if not body.text.text:
            return [click.style("(empty text)", dim=True)]
        return escape_controls(body.text.text).split("\n")
    if variant == "tool_output":
        return render_tool_output(body.tool_output)
    return [click.style("(no body variant this client knows)", fg="red")]


def render_tool_output(output: pb.ToolOutputBody) -> list[str]:
    lines = [
        _titled(
            "tool output", ("tool_name", output.tool_name), ("tool_call_id", output.tool_call_id)
        )
    ]
    variant = output.WhichOneof("output")
    if variant == "text":
        if output.text.text:
            lines.append(click.style("text:", dim=True))
            lines += [_INDENT + line for line in escape_controls(output.text.text).split("\n")]
        else:
            lines.append(click.style("text: (empty)", dim=True))
    elif variant == "image":
        image = output.image
        lines.append(
            _titled(
                "image",
                ("external_url", image.external_url),
                ("mime_type", image.mime_type),
                ("detail", detail_name(image.detail)),
                ("width_px", str(image.width_px)),
                ("height_px", str(image.height_px)),
                ("sha256", image.sha256),
            )
        )
    else:
        lines.append(click.style("(no output this client knows)", fg="red"))
    if output.metadata:
        lines.append(_titled("metadata", *sorted(output.metadata.items())))
    return lines


def render_message(message: pb.Message, index: int | None) -> list[str]:
    """A header line (index, id, role, kind, created_at), then the indented body."""
    position = "[?]" if index is None else f"[{index}]"
    header = "  ".join(
        [
            click.style(position, bold=True),
            click.style(message.id, fg="yellow"),
            click.style(role_name(message.role), fg=_ROLE_COLOURS.get(message.role, "red")),
            _field("kind", message.kind),
            click.style(timestamp(message.created_at, message.HasField("created_at")), dim=True),
        ]
    )
    return [header] + [_INDENT + line for line in render_body(message.body)]


def render_messages(messages: Iterable[tuple[int | None, pb.Message]]) -> Iterator[str]:
    """Each (index, message) as render_message, as they come; a line saying
    so when there is none."""
    empty = True
    for index, message in messages:
        empty = False
        yield from render_message(message, index)
    if empty:
        yield click.style("(no messages)", dim=True)


def _metadata_pairs(metadata: pb.ConversationMetadata) -> list[tuple[str, str]]:
    return [
        ("conversation_id", metadata.conversation_id),
        ("message_count", str(metadata.message_count)),
        ("updated_at", timestamp(metadata.updated_at, metadata.HasField("updated_at"))),
    ]


def render_metadata(metadata: pb.ConversationMetadata) -> list[str]:
    """One aligned `name  value` line per metadata field."""
    return _key_values(_metadata_pairs(metadata))


def render_conversation_header(metadata: pb.ConversationMetadata) -> str:
    """The line `show` prints above the messages."""
    return _titled("conversation", *_metadata_pairs(metadata))


def render_snapshot_header(snapshot_id: str) -> str:
    """The line `snapshot` prints above the messages."""
    return _titled("snapshot", ("snapshot_id", snapshot_id))


def render_appended(response: pb.AppendConversationMessagesResponse) -> list[str]:
    """The new messages' ids, then the conversation's metadata, aligned."""
    message_ids = [("message_id", message.id) for message in response.appended]
    return _key_values(message_ids + _metadata_pairs(response.metadata))


def _key_values(pairs: list[tuple[str, str]]) -> list[str]:
    width = max(len(name) for name, _ in pairs)
    return [click.style(name.ljust(width), dim=True) + "  " + quote(v) for name, v in pairs]


def to_json(message: ProtoMessage) -> dict[str, Any]:
    """The protobuf JSON mapping, with fields at their default values included."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def message_json(message: pb.Message, index: int | None) -> dict[str, Any]:
    return {"index": index, **to_json(message)}


def status_name(status: int) -> str:
    try:
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    except ValueError:
        return f"status({status})"
    return name


def render_health(status: int) -> str:
    """The serving status's name, green when SERVING, else red."""
    colour = "green" if status == SERVING else "red"
    return click.style(status_name(status), fg=colour, bold=True)
