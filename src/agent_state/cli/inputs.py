"""What the client commands read: messages as JSON lines (`append
--batch`), labels, durations and times given as options. Pure: a problem
is a ValueError whose text names the line or value at fault."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_state_client.types import (
    Body,
    ImageDetail,
    MessageInput,
    Role,
    Text,
    ToolImage,
    ToolOutput,
    ToolText,
    UnknownBody,
)

ROLES = {role.name.lower(): role for role in Role if role is not Role.UNSPECIFIED}
_DETAILS = {detail.name.lower(): detail for detail in ImageDetail}

# Fields of a message as the commands print it that the server assigns:
# accepted and left out, so that printed messages can be appended again.
_ASSIGNED = frozenset({"index", "id", "conversation_id", "created_at"})
_MESSAGE_KEYS = frozenset({"role", "kind", "body", "text"})
_TOOL_OUTPUT_KEYS = frozenset({"tool_name", "tool_call_id", "text", "image", "metadata"})
_IMAGE_KEYS = frozenset({"external_url", "mime_type", "detail", "width_px", "height_px", "sha256"})


def messages_from_lines(lines: Iterable[str]) -> list[MessageInput]:
    """One message per non-blank line, each a JSON object (see `message_from_json`)."""
    messages = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not JSON ({exc.msg})") from None
        try:
            messages.append(message_from_json(document))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    if not messages:
        raise ValueError("no messages in it (one JSON object per line)")
    return messages


def message_from_json(document: object) -> MessageInput:
    """A message to append from ``{"role", "kind", "body"}`` (``"text": ...``
    stands for ``"body": {"text": ...}``). The role defaults to ``tool``
    for a tool output, else ``user``."""
    fields = _object(document, "a message", _MESSAGE_KEYS | _ASSIGNED)
    if ("text" in fields) == ("body" in fields):
        raise ValueError('give either "text" or "body"')
    body = Text(_string(fields, "text")) if "text" in fields else body_from_json(fields["body"])
    default_role = "tool" if isinstance(body, ToolOutput) else "user"
    role_name = _string(fields, "role", default_role)
    if role_name not in ROLES:
        raise ValueError(f"role: {role_name!r} is not one of {', '.join(ROLES)}")
    return MessageInput(ROLES[role_name], body, _string(fields, "kind"))


def body_from_json(document: object) -> Body:
    """``{"text": "..."}``, ``{"tool_output": {...}}`` or ``{"unknown": base64}``."""
    fields = _object(document, "body", {"text", "tool_output", "unknown"})
    if len(fields) != 1:
        raise ValueError('body: needs exactly one of "text", "tool_output", "unknown"')
    if "text" in fields:
        return Text(_string(fields, "text", where="body."))
    if "unknown" in fields:
        try:
            encoded = base64.b64decode(_string(fields, "unknown", where="body."), validate=True)
        except binascii.Error:
            raise ValueError("body.unknown: not base64") from None
        return UnknownBody(encoded)
    output = _object(fields["tool_output"], "body.tool_output", _TOOL_OUTPUT_KEYS)
    where = "body.tool_output."
    if ("text" in output) == ("image" in output):
        raise ValueError(f'{where[:-1]}: give either "text" or "image"')
    result: ToolText | ToolImage
    if "text" in output:
        result = ToolText(_string(output, "text", where=where))
    else:
        result = _image(output["image"])
    metadata = _object(output.get("metadata", {}), f"{where}metadata", None)
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ValueError(f"{where}metadata[{key!r}]: must be a string")
    return ToolOutput(
        _string(output, "tool_name", where=where),
        _string(output, "tool_call_id", where=where),
        result,
        metadata,
    )


def _image(document: object) -> ToolImage:
    where = "body.tool_output.image."
    fields = _object(document, where[:-1], _IMAGE_KEYS)
    detail = _string(fields, "detail", "unspecified", where=where)
    if detail not in _DETAILS:
        raise ValueError(f"{where}detail: {detail!r} is not one of {', '.join(_DETAILS)}")
    return ToolImage(
        external_url=_string(fields, "external_url", where=where),
        mime_type=_string(fields, "mime_type", where=where),
        detail=_DETAILS[detail],
        width_px=_integer(fields, "width_px", where),
        height_px=_integer(fields, "height_px", where),
        sha256=_string(fields, "sha256", where=where),
    )


def _object(document: object, what: str, allowed: Iterable[str] | None) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ValueError(f"{what}: must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(document) - set(allowed))
        if unknown:
            raise ValueError(f"{what}: unknown field {unknown[0]!r}")
    return document


def _string(fields: Mapping[str, Any], name: str, default: str = "", *, where: str = "") -> str:
    value = fields.get(name, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}{name}: must be a string")
    return value


def _integer(fields: Mapping[str, Any], name: str, where: str) -> int:
    value = fields.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}{name}: must be an integer")
    return value


# --- option values ---------------------------------------------------------------------


def label(text: str) -> tuple[str, str]:
    """``key=value`` (the value may be empty)."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise ValueError(f"{text!r} is not key=value")
    return key, value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """Seconds, or a number with a unit: ``90``, ``90s``, ``15m``, ``12h``, ``30d``."""
    matched = _DURATION.fullmatch(text.strip())
    if matched is None:
        raise ValueError(f"{text!r} is not a duration (90, 90s, 15m, 12h, 30d)")
    return timedelta(seconds=float(matched.group(1)) * _UNIT_SECONDS[matched.group(2)])


def moment(text: str) -> datetime:
    """An ISO 8601 time; without a UTC offset it is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (2026-01-31T12:00:00Z)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
