"""UUID parsing in exactly the spellings the API accepts, and new ids.

Accepted: 8-4-4-4-12 hex digits in any case, the same inside braces or after
``urn:uuid:``, or 32 hex digits. ``uuid.UUID()`` alone is more lenient (it
drops hyphens anywhere), so the forms are checked first.
"""

from __future__ import annotations

import re
import uuid

import uuid_utils.compat

from .errors import InvalidArgument

_HYPHENATED = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID_FORMS = re.compile(
    rf"(?:{_HYPHENATED}|\{{{_HYPHENATED}\}}|(?i:urn:uuid:){_HYPHENATED}|[0-9a-fA-F]{{32}})"
)


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """The UUID `value` spells, or InvalidArgument naming `field`."""
    if not value:
        raise InvalidArgument(field, "is required (a UUID)")
    if _UUID_FORMS.fullmatch(value) is None:
        raise InvalidArgument(field, f"{shorten(value)!r} is not a UUID")
    return uuid.UUID(value[-36:] if value.startswith(("u", "U")) else value)


def parse_optional_uuid(value: str, field: str) -> uuid.UUID | None:
    """Like parse_uuid, but the empty string means "not set"."""
    return parse_uuid(value, field) if value else None


def new_id() -> uuid.UUID:
    """A fresh time-ordered (version 7) UUID, so ids sort by creation."""
    return uuid_utils.compat.uuid7()


def shorten(value: str, limit: int = 64) -> str:
    """`value`, cut for an error message."""
    return value if len(value) <= limit else value[:limit] + "..."
