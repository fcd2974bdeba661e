"""Errors, named after the condition a caller can act on.

Every failed call raises an `AgentStateError` subclass chosen by its gRPC
status code (and, for NOT_FOUND, by the field the server names). Each one
keeps what the server said: `code`, `details` (the status text), `field`
and `reason` (the server writes ``field: reason``, e.g.
``messages[3].body: must have text or tool_output set``), `request_id`
(the ``x-request-id`` the server logged the call under, to quote), the
conversation's `version` when the server reported it, and the raw
`trailing_metadata`.
"""

from __future__ import annotations

import re

import grpc

REQUEST_ID = "x-request-id"
CONVERSATION_VERSION = "x-conversation-version"

# A request field path: `conversation_id`, `messages[3].body`,
# `labels['user']`, or a metadata key such as `if-version`; then ": reason".
_INDEX = r"""(?:\[(?:\d+|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\])"""
_NAME = r"[a-z_][a-z0-9_]*"
_FIELD = re.compile(
    rf"^([a-z_][a-z0-9_-]*{_INDEX}*(?:\.{_NAME}{_INDEX}*)*): (.+)$",
    re.S,
)
_AT_VERSION = re.compile(r"\bis at version (\d+)\b")

Metadata = tuple[tuple[str, str | bytes], ...]


class AgentStateError(Exception):
    """A call failed. The base of every error the client raises for a
    gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode | None = None,
        request_id: str | None = None,
        version: int | None = None,
        trailing_metadata: Metadata = (),
    ) -> None:
        super().__init__(details)
        if code is not None:
            self.code = code
        self.details = details
        matched = _FIELD.match(details)
        self.field: str | None = matched.group(1) if matched else None
        """The request field (or metadata key) at fault, when the server named one."""
        self.reason = matched.group(2) if matched else details
        self.request_id = request_id
        self.version = version
        """The conversation's version after the failed call, when the server sent it."""
        self.trailing_metadata = trailing_metadata

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.details}"
        return f"{text} (request id {self.request_id})" if self.request_id else text


class InvalidArgument(AgentStateError):
    """The request alone shows the mistake; `field` names it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AgentStateError):
    """Something the request names does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class ConversationNotFound(NotFound):
    """The conversation does not exist."""


class MessageNotFound(NotFound):
    """A named message is not one of the conversation (or not in its
    ordering, where the call needs that)."""


class SnapshotNotFound(NotFound):
    """The snapshot does not exist."""


class AlreadyExists(AgentStateError):
    """What the call would create exists already (a conversation id)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class VersionConflict(AgentStateError):
    """A conditional write named another version than the current one, and
    changed nothing. `current_version` is the version now (from the
    ``x-conversation-version`` trailer, else from the status text; None
    when neither tells)."""

    code = grpc.StatusCode.ABORTED

    @property
    def current_version(self) -> int | None:
        if self.version is not None:
            return self.version
        found = _AT_VERSION.search(self.details)
        return int(found.group(1)) if found else None


class FailedPrecondition(AgentStateError):
    """The request conflicts with an earlier one (an idempotency key reused
    for a different request)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(AgentStateError):
    """A size limit was passed (a request over the server's maximum)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class PermissionDenied(AgentStateError):
    """The token may not do this (a read-only token on a write)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(AgentStateError):
    """No token, or one the server does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(AgentStateError):
    """The server or its database could not be reached (after the client's
    retries); safe to retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AgentStateError):
    """No answer in time (after the client's retries)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(AgentStateError):
    """The call was cancelled."""

    code = grpc.StatusCode.CANCELLED


class Unimplemented(AgentStateError):
    """The server does not serve this method (an older server)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(AgentStateError):
    """The server failed unexpectedly; it logged the details under `request_id`."""

    code = grpc.StatusCode.INTERNAL


class PagingError(Exception):
    """The server answered a page token that would make paging loop forever."""


class ContextChanged(Exception):
    """The conversation kept changing while its whole context was read, so
    no consistent view was found in the attempts allowed."""


_BY_CODE: dict[grpc.StatusCode, type[AgentStateError]] = {
    kind.code: kind
    for kind in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        VersionConflict,
        FailedPrecondition,
        ResourceExhausted,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unimplemented,
        InternalError,
    )
}


def _not_found_kind(field: str | None) -> type[NotFound]:
    if field is None:
        return NotFound
    name = field.rsplit(".", 1)[-1]
    # A `conversation/{id}` scope names a conversation (state_updates[i].scope too).
    if name.endswith("conversation_id") or name == "scope":
        return ConversationNotFound
    if name == "snapshot_id":
        return SnapshotNotFound
    if "message_id" in name:
        return MessageNotFound
    return NotFound


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _value(metadata: Metadata, key: str) -> str | None:
    for name, value in metadata:
        if name == key:
            return _text(value)
    return None


def version_in(metadata: Metadata) -> int | None:
    """The ``x-conversation-version`` a call's trailing metadata carries."""
    value = _value(metadata, CONVERSATION_VERSION)
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def request_id_in(metadata: Metadata, sent: str | None) -> str | None:
    """The request id the server logged the call under (it echoes the one
    sent, or makes one)."""
    return _value(metadata, REQUEST_ID) or sent


def from_status(
    code: grpc.StatusCode, details: str, trailing_metadata: Metadata, sent_request_id: str | None
) -> AgentStateError:
    """The exception for a failed call's status."""
    kind = _BY_CODE.get(code, AgentStateError)
    matched = _FIELD.match(details)
    if kind is NotFound:
        kind = _not_found_kind(matched.group(1) if matched else None)
    return kind(
        details,
        code=code,
        request_id=request_id_in(trailing_metadata, sent_request_id),
        version=version_in(trailing_metadata),
        trailing_metadata=trailing_metadata,
    )
