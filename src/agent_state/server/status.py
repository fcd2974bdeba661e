"""THE table from errors to gRPC status codes.

Client mistakes carry their field and reason; anything unexpected becomes
INTERNAL with a fixed text (details go to the log only, never the client).
"""

from __future__ import annotations

import grpc

from ..errors import (
    AgentStateError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    StorageUnavailable,
    VersionMismatch,
)

_CODES: list[tuple[type[AgentStateError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (VersionMismatch, grpc.StatusCode.ABORTED),
    (StorageUnavailable, grpc.StatusCode.UNAVAILABLE),
]

INTERNAL_TEXT = "internal error; it has been logged"


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The code and client-facing text for `error`."""
    if isinstance(error, AgentStateError):
        for kind, code in _CODES:
            if isinstance(error, kind):
                return code, str(error)
    return grpc.StatusCode.INTERNAL, INTERNAL_TEXT
