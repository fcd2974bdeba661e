"""Conversation versions at the gRPC edge, for every service that names
conversations.

A write may send request metadata ``if-version: N``: it goes ahead only
while the conversation is at version N (0: while it does not exist). Every
call that names one conversation answers with trailing metadata
``x-conversation-version: N``, the conversation's version after the call;
also when it fails, while the conversation exists: the service sets
`AgentStateError.version` where it had read the conversation, and
`VersionsAfterErrors` reads it otherwise (a request wrong in itself never
got that far). Handlers answer with that version (dispatch.Versioned), and
dispatch.py's one call path sends it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..errors import (
    AgentStateError,
    ConversationNotFound,
    InvalidArgument,
    StorageUnavailable,
    VersionMismatch,
)
from ..model import ExpectedVersion

IF_VERSION = "if-version"
VERSION_TRAILER = "x-conversation-version"
"""The trailing metadata that reports the version (dispatch.set_trailing)."""

_LARGEST = 2**63 - 1
"""Versions are stored as signed 64-bit integers."""


def if_version(metadata: Iterable[tuple[str, Any]] | None) -> ExpectedVersion | None:
    """The version the call's ``if-version`` metadata requires, if it sent one."""
    values = [value for key, value in metadata or () if key == IF_VERSION]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument(IF_VERSION, "must be sent at most once")
    value = values[0]
    # isascii: str.isdigit also accepts other scripts' digits.
    digits = isinstance(value, str) and value.isascii() and value.isdigit()
    if not (digits and len(value) <= len(str(_LARGEST)) and int(value) <= _LARGEST):
        raise InvalidArgument(IF_VERSION, f"must be a whole number from 0 to {_LARGEST}")
    return ExpectedVersion(int(value), IF_VERSION)


def version_of(error: BaseException) -> int | None:
    """The conversation's version a failed call reports (None: none)."""
    return error.version if isinstance(error, AgentStateError) else None


class VersionsAfterErrors:
    """dispatch.Versions for every service: a failed call's conversation
    version, read after the failure where the error does not carry it."""

    def __init__(self, version_of: Callable[[str], Awaitable[int | None]]) -> None:
        # The conversation's version now; None when the id is malformed or
        # the conversation absent.
        self._version_of = version_of

    async def after_error(self, conversation_id: str, error: Exception) -> int | None:
        if isinstance(error, VersionMismatch):
            # 0: a write expected a version of a conversation that does not
            # exist, which has none to report.
            return error.current or None
        if isinstance(error, ConversationNotFound | StorageUnavailable):
            return None
        return await self._version_of(conversation_id)
