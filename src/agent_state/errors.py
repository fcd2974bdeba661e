"""One tree of errors, named after the condition a caller can act on.

The gRPC layer maps each class to a status code in one table
(`agent_state.server.status`); nothing else decides codes.
"""

from __future__ import annotations

from uuid import UUID


class AgentStateError(Exception):
    """Base of every error this package raises on purpose.

    `field` names the request field at fault (``messages[3].body``), or is
    empty when the error is not about one field. `version` is the version of
    the conversation the call names, when the error was found after reading
    it (the service sets it; the gRPC edge sends it back as trailing
    metadata), and None otherwise.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        self.version: int | None = None
        super().__init__(f"{field}: {reason}" if field else reason)


class InvalidArgument(AgentStateError):
    """The request alone shows the mistake (a malformed id, a missing mode...)."""


class NotFound(AgentStateError):
    """Something the request names does not exist."""


class ConversationNotFound(NotFound):
    pass


def conversation_not_found(conversation_id: UUID) -> ConversationNotFound:
    return ConversationNotFound("conversation_id", f"conversation {conversation_id} does not exist")


class SnapshotNotFound(NotFound):
    pass


class MessageNotFound(NotFound):
    """A named message is not a message of the conversation (or not in its
    ordering, where the rule asks for that)."""


class AlreadyExists(AgentStateError):
    """What the request would create exists already (a conversation id)."""


class VersionMismatch(AgentStateError):
    """A conditional write named another version than the conversation's
    (or, `subject` saying so, another version than a state scope's)."""

    def __init__(
        self, field: str, expected: int, current: int, subject: str = "the conversation"
    ) -> None:
        super().__init__(field, f"{subject} is at version {current}, not {expected}")
        self.expected = expected
        self.current = current


class FailedPrecondition(AgentStateError):
    """The request conflicts with what an earlier request established (an
    idempotency key reused for a different request)."""


class ResourceExhausted(AgentStateError):
    """A storage limit of one conversation was reached."""


class StorageUnavailable(AgentStateError):
    """The database cannot be reached or gave up; safe to retry.

    The message never carries SQL, a DSN or a password: the driver error is
    kept as ``__cause__`` for the logs only.
    """

    def __init__(self, reason: str = "the database is unavailable, retry later") -> None:
        super().__init__("", reason)
