"""What the client commands print: text for people at a terminal, JSON for
scripts, both from the client library's typed results.

Text output escapes control characters in stored content (stored text can
hold anything, including terminal escape sequences); colour comes from
click's styles, which click drops unless stdout is a terminal or colour is
forced.

JSON is the result's fields under their names in agent_state_client.types
(snake_case), every field present: roles and image details by lower-case
name, times in RFC 3339 UTC with microseconds, a retention's idle time in
seconds, and a message's body as an object with one key, ``text`` (a
string), ``tool_output`` (an object) or ``unknown`` (base64 of its
encoding). `append --batch` reads messages in the same form.

Nothing here imports grpc (see client_commands).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import click

from agent_state_client.types import (
    AppendResult,
    AppendWithStateResult,
    Body,
    Conversation,
    ConversationMetadata,
    DeletedConversation,
    DeleteRangeResult,
    Fork,
    Message,
    ReplaceResult,
    Retention,
    Role,
    Snapshot,
    SnapshotInfo,
    State,
    Text,
    ToolOutput,
    ToolText,
    UnknownBody,
)

SERVING = "SERVING"
_ROLE_COLOURS = {Role.USER: "green", Role.ASSISTANT: "blue", Role.TOOL: "magenta"}
_INDENT = "    "

# --- text: values ----------------------------------------------------------------


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


def name_of(value: enum.Enum) -> str:
    """A role's or an image detail's name, lower case (``user``, ``high``); a
    number this client has no name for keeps its number (``role_9``)."""
    return value.name.lower()


def moment(when: datetime) -> str:
    """RFC 3339 in UTC with the microseconds the server keeps."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds(duration: timedelta) -> int | float:
    total = duration.total_seconds()
    return int(total) if total.is_integer() else total


def version_text(version: int | None) -> str:
    """A version, or ``-`` when the server reported none."""
    return "-" if version is None else str(version)


class Shown(str):
    """A value already written for the terminal (escaped, quoted where it
    needs to be): printed as it is."""

    __slots__ = ()


def labels_text(labels: Mapping[str, str]) -> Shown:
    """``key=value`` pairs, sorted; ``-`` for none."""
    pairs = [f"{escape_controls(key)}={quote(value)}" for key, value in sorted(labels.items())]
    return Shown(" ".join(pairs) or "-")


def retention_text(retention: Retention | None) -> Shown:
    if retention is None:
        return Shown("server default")
    parts = []
    if retention.max_idle is not None:
        parts.append(f"max_idle={seconds(retention.max_idle)}s")
    if retention.max_messages is not None:
        parts.append(f"max_messages={retention.max_messages}")
    return Shown(" ".join(parts) or "keep forever")


def _shown(value: str) -> str:
    return value if isinstance(value, Shown) else quote(value)


def _field(name: str, value: str) -> str:
    return click.style(f"{name}=", dim=True) + _shown(value)


def _titled(title: str, *pairs: tuple[str, str]) -> str:
    """A bold title, then `key=value` fields."""
    return "  ".join([click.style(title, bold=True)] + [_field(name, v) for name, v in pairs])


def key_values(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """One aligned ``name  value`` line per pair."""
    pairs = list(pairs)
    width = max(len(name) for name, _ in pairs)
    return [click.style(name.ljust(width), dim=True) + "  " + _shown(v) for name, v in pairs]


def note(text: str) -> str:
    """A dim line saying something about the output (not data)."""
    return click.style(f"({text})", dim=True)


# --- text: messages ----------------------------------------------------------------


def render_body(body: Body) -> list[str]:
    """The body's lines, unindented: every body variant and tool output."""
    if isinstance(body, Text):
        if not body.text:
            return [click.style("(empty text)", dim=True)]
        return escape_controls(body.text).split("\n")
    if isinstance(body, ToolOutput):
        return render_tool_output(body)
    return [
        click.style(f"(a body this client has no type for, {len(body.encoded)} bytes)", fg="red")
    ]


def render_tool_output(output: ToolOutput) -> list[str]:
    lines = [
        _titled(
            "tool output", ("tool_name", output.tool_name), ("tool_call_id", output.tool_call_id)
        )
    ]
    if isinstance(output.output, ToolText):
        if output.output.text:
            lines.append(click.style("text:", dim=True))
            lines += [_INDENT + line for line in escape_controls(output.output.text).split("\n")]
        else:
            lines.append(click.style("text: (empty)", dim=True))
    else:
        image = output.output
        lines.append(
            _titled(
                "image",
                ("external_url", image.external_url),
                ("mime_type", image.mime_type),
                ("detail", name_of(image.detail)),
                ("width_px", str(image.width_px)),
                ("height_px", str(image.height_px)),
                ("sha256", image.sha256),
            )
        )
    if output.metadata:
        lines.append(_titled("metadata", *sorted(output.metadata.items())))
    return lines


def render_message(message: Message, index: int | None) -> list[str]:
    """A header line (index, id, role, kind, created_at), then the indented body."""
    position = "[?]" if index is None else f"[{index}]"
    header = "  ".join(
        [
            click.style(position, bold=True),
            click.style(message.id, fg="yellow"),
            click.style(name_of(message.role), fg=_ROLE_COLOURS.get(message.role, "red")),
            _field("kind", message.kind),
            click.style(moment(message.created_at), dim=True),
        ]
    )
    return [header] + [_INDENT + line for line in render_body(message.body)]


def render_messages(messages: Iterable[tuple[int | None, Message]]) -> Iterator[str]:
    """Each (index, message) as render_message; a line saying so when there is none."""
    rendered = (line for index, message in messages for line in render_message(message, index))
    yield from _or_none(rendered, "messages")


# --- text: conversations, snapshots, state -------------------------------------------


def _metadata_pairs(metadata: ConversationMetadata) -> list[tuple[str, str]]:
    return [
        ("conversation_id", metadata.conversation_id),
        ("message_count", str(metadata.message_count)),
        ("updated_at", moment(metadata.updated_at)),
        ("version", version_text(metadata.version)),
    ]


def render_metadata(metadata: ConversationMetadata) -> list[str]:
    return key_values(_metadata_pairs(metadata))


def render_conversation_header(metadata: ConversationMetadata) -> str:
    """The line above a conversation's messages."""
    return _titled("conversation", *_metadata_pairs(metadata))


def render_snapshot_header(snapshot_id: str) -> str:
    """The line above a snapshot's messages."""
    return _titled("snapshot", ("snapshot_id", snapshot_id))


def render_appended(result: AppendResult | AppendWithStateResult) -> list[str]:
    """The new messages' ids, then the conversation's metadata (and each
    scope's state version, when state changed with them)."""
    pairs = [("message_id", message.id) for message in result.messages]
    pairs += _metadata_pairs(result.metadata)
    if isinstance(result, AppendWithStateResult):
        pairs += [(f"state_version[{scope}]", str(v)) for scope, v in result.state_versions.items()]
    return key_values(pairs)


def render_replaced(result: ReplaceResult) -> list[str]:
    pairs = [("replaced_message_id", found) for found in result.replaced_message_ids]
    pairs += [("inserted_message_id", found) for found in result.inserted_message_ids]
    return key_values(pairs + _metadata_pairs(result.metadata))


def render_deleted_range(result: DeleteRangeResult) -> list[str]:
    pairs = [("deleted_message_id", found) for found in result.deleted_message_ids]
    return key_values(pairs + _metadata_pairs(result.metadata))


def _conversation_pairs(conversation: Conversation) -> list[tuple[str, str]]:
    return [
        ("conversation_id", conversation.conversation_id),
        ("title", conversation.title),
        ("labels", labels_text(conversation.labels)),
        ("message_count", str(conversation.message_count)),
        ("version", str(conversation.version)),
        ("created_at", moment(conversation.created_at)),
        ("updated_at", moment(conversation.updated_at)),
        ("retention", retention_text(conversation.retention)),
    ]


def render_conversation(conversation: Conversation) -> list[str]:
    return key_values(_conversation_pairs(conversation))


def render_conversation_line(conversation: Conversation) -> str:
    """One line of `conversation list`: the id, then what tells conversations apart."""
    pairs = [
        ("title", conversation.title),
        ("labels", labels_text(conversation.labels) if conversation.labels else ""),
        ("message_count", str(conversation.message_count)),
        ("version", str(conversation.version)),
        ("updated_at", moment(conversation.updated_at)),
    ]
    # Each value quoted as one field: labels hold spaces and "=".
    return "  ".join(
        [click.style(conversation.conversation_id, fg="yellow")]
        + [_field(name, str(value)) for name, value in pairs]
    )


def render_conversations(conversations: Iterable[Conversation]) -> Iterator[str]:
    """One line per conversation; a line saying so when there is none."""
    yield from _or_none((render_conversation_line(one) for one in conversations), "conversations")


def _or_none(lines: Iterable[str], what: str) -> Iterator[str]:
    empty = True
    for line in lines:
        empty = False
        yield line
    if empty:
        yield note(f"no {what}")


def render_fork(fork: Fork) -> list[str]:
    copied = ("copied_messages", str(len(fork.message_ids)))
    return key_values([*_conversation_pairs(fork.conversation), copied])


def render_deleted_conversation(conversation_id: str, deleted: DeletedConversation) -> list[str]:
    return key_values(
        [
            ("conversation_id", conversation_id),
            ("deleted_messages", str(deleted.deleted_message_count)),
            ("deleted_snapshots", str(deleted.deleted_snapshot_count)),
            ("version", version_text(deleted.version)),
        ]
    )


def render_snapshot(snapshot: Snapshot, item_count: int) -> list[str]:
    return key_values(
        [
            ("snapshot_id", snapshot.snapshot_id),
            ("conversation_id", snapshot.conversation_id),
            ("created_at", moment(snapshot.created_at)),
            ("item_count", str(item_count)),
            ("version", version_text(snapshot.version)),
        ]
    )


def render_snapshot_line(snapshot: SnapshotInfo) -> str:
    """One line of `snapshot list`."""
    return "  ".join(
        [
            click.style(snapshot.snapshot_id, fg="yellow"),
            _field("created_at", moment(snapshot.created_at)),
            _field("item_count", str(snapshot.item_count)),
        ]
    )


def render_snapshots(snapshots: Iterable[SnapshotInfo]) -> Iterator[str]:
    """One line per snapshot; a line saying so when there is none."""
    yield from _or_none((render_snapshot_line(one) for one in snapshots), "snapshots")


def render_state(state: State) -> list[str]:
    """The scope, its version, then its values as the server keeps them."""
    # The JSON text exactly as stored (numbers keep their digits), not quoted again.
    values = Shown(escape_controls(state.values_json))
    return key_values([("scope", state.scope), ("version", str(state.version)), ("values", values)])


def render_health(status: str) -> str:
    """The serving status's name, green when SERVING, else red."""
    colour = "green" if status == SERVING else "red"
    return click.style(status, fg=colour, bold=True)


# --- JSON --------------------------------------------------------------------------


def body_json(body: Body) -> dict[str, Any]:
    """A body as an object with one key: ``text``, ``tool_output`` or ``unknown``."""
    if isinstance(body, Text):
        return {"text": body.text}
    if isinstance(body, UnknownBody):
        return {"unknown": base64.b64encode(body.encoded).decode("ascii")}
    output: dict[str, Any] = {"tool_name": body.tool_name, "tool_call_id": body.tool_call_id}
    if isinstance(body.output, ToolText):
        output["text"] = body.output.text
    else:
        output["image"] = to_json(body.output)
    output["metadata"] = dict(body.metadata)
    return {"tool_output": output}


def messages_json(indexed: Iterable[tuple[int | None, Message]]) -> list[dict[str, Any]]:
    return [message_json(message, index) for index, message in indexed]


def message_json(message: Message, index: int | None = None) -> dict[str, Any]:
    """A message's fields; with `index`, its place first."""
    document: dict[str, Any] = {} if index is None else {"index": index}
    document.update(
        id=message.id,
        conversation_id=message.conversation_id,
        role=name_of(message.role),
        kind=message.kind,
        created_at=moment(message.created_at),
        body=body_json(message.body),
    )
    return document


def to_json(value: object) -> Any:
    """A result of the client library as JSON values (see the module's docstring)."""
    if isinstance(value, Message):
        return message_json(value)
    if isinstance(value, Retention):
        return {
            "max_idle_seconds": None if value.max_idle is None else seconds(value.max_idle),
            "max_messages": value.max_messages,
        }
    if isinstance(value, Text | ToolOutput | UnknownBody):
        return body_json(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return name_of(value)
    if isinstance(value, datetime):
        return moment(value)
    if isinstance(value, timedelta):
        return seconds(value)
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


class JsonText(str):
    """A JSON document already written."""

    __slots__ = ()


def state_json(state: State) -> JsonText:
    """A state as a JSON document whose ``values`` is the stored JSON text
    itself, so that numbers keep exactly their digits (a float would not)."""
    head = json.dumps({"scope": state.scope, "version": state.version}, indent=2)
    return JsonText(head[: -len("\n}")] + f',\n  "values": {state.values_json}\n}}')


def dumps(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)
