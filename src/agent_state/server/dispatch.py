"""The one path every call takes, whichever service it is for.

Handlers are registered from a service's descriptor rather than through
the generated servicer base class, so that a request that does not even
parse is answered INVALID_ARGUMENT (instead of the runtime's generic
failure), and every method of every service shares one error path: the
token check, the request's idempotency key (writes), the handler, the
error's status (status.py), the trailing metadata, the log line, the
metrics and the span.

A service supplies a table of `Route`s, one per method it serves.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from ..errors import InvalidArgument
from ..idempotency import Idempotency
from . import observe, tracing
from . import versions as versions_edge
from .auth import Refusal, Tokens
from .malformed import Malformed, deserializer
from .observe import Observer
from .status import status_of

log = logging.getLogger("agent_state.rpc")

IDEMPOTENCY_KEY = "idempotency-key"


@dataclass(frozen=True, slots=True)
class Versioned:
    """An answer with the version of the conversation its call named,
    after the call (sent as x-conversation-version; None: it names none)."""

    response: Message | bytes
    version: int | None


Answer = Message | bytes | Versioned
"""What a handler returns: a message, the bytes of one it encoded itself,
or either with a conversation's version."""

Handler = Callable[..., Awaitable[Answer]]
"""Takes the request; a write's handler also takes its idempotency key."""


@dataclass(frozen=True, slots=True)
class Route:
    """How a method is served."""

    handler: Handler
    write: bool = False
    """Whether it changes data: it then needs a read-write token and takes
    an idempotency key."""
    if_version: bool = False
    """Whether the write takes request metadata if-version (its handler
    then also takes the ExpectedVersion, or None); elsewhere it is refused."""
    conversation: Callable[[Any], str] | None = None
    """The id of the one conversation the request names (as sent), for the
    log line and the version on errors; None: the method names none."""
    versioned: Callable[[Any], str] | None = None
    """The id of the conversation whose version a failed call answers
    with, where that is another one (a fork's new conversation); None:
    `conversation`."""


class Versions(Protocol):
    """Where a failed call finds the version of the conversation it named."""

    async def after_error(self, conversation_id: str, error: Exception) -> int | None:
        """The conversation's version after the failed call; None when it
        does not exist (or cannot be told)."""
        ...


def set_trailing(
    context: grpc.aio.ServicerContext[Any, Any], request_id: str, version: int | None
) -> None:
    """The call's trailing metadata: its request id and, when it named a
    conversation that exists after it, that conversation's version."""
    trailing = [(observe.REQUEST_ID, request_id)]
    if version is not None:
        trailing.append((versions_edge.VERSION_TRAILER, str(version)))
    context.set_trailing_metadata(tuple(trailing))


def _idempotency(method: str, request: Message, metadata: Any) -> Idempotency | None:
    """The call's idempotency key, if it sent one, with the fingerprint of
    exactly this method and request."""
    for key, value in metadata or ():
        if key != IDEMPOTENCY_KEY:
            continue
        readable = isinstance(value, str) and value.isascii() and value.isprintable()
        if not (readable and 0 < len(value) <= 256):
            raise InvalidArgument(IDEMPOTENCY_KEY, "must be 1 to 256 printable ASCII characters")
        digest = hashlib.sha256(method.encode())
        digest.update(b"\n" + request.SerializeToString(deterministic=True))
        return Idempotency(value, digest.digest())
    return None


def _serialize(response: Message | bytes) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def _target(route: Route, request: Any) -> tuple[str, str] | None:
    """The id a call is about, for its log line."""
    if isinstance(request, Malformed):
        return None
    if route.conversation is not None:
        value = route.conversation(request)
        return ("conversation_id", value) if value else None
    for name in ("conversation_id", "snapshot_id", "thread_id"):
        found = getattr(request, name, None)
        if found:
            return name, found
    return None


@dataclass(frozen=True, slots=True)
class Edge:
    """What every call of the server shares."""

    observer: Observer
    tokens: Tokens | None


def _behaviour(
    service: str, method: str, route: Route, edge: Edge, versions: Versions | None
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message | bytes]]:
    handler, write = route.handler, route.write
    named = route.versioned or route.conversation

    async def version_after(request: Any, error: Exception) -> int | None:
        """The version of the conversation a failed call named, if any."""
        if named is None or versions is None or isinstance(request, Malformed):
            return None
        return await versions.after_error(named(request), error)

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message | bytes:
        started = time.perf_counter()
        metadata = context.invocation_metadata()
        request_id = observe.request_id(metadata)
        # Cancelled (the client went away) unless we get to set the outcome.
        code, text = grpc.StatusCode.CANCELLED, ""
        response: Message | bytes = b""
        version: int | None = None
        edge.observer.started()
        try:
            with tracing.span(service, method, metadata) as span:
                try:
                    if edge.tokens is not None:
                        edge.tokens.check(metadata, write=write)
                    if isinstance(request, Malformed):
                        raise request.error()
                    expected = versions_edge.if_version(metadata)
                    if expected is not None and not route.if_version:
                        raise InvalidArgument(
                            versions_edge.IF_VERSION, "is taken by AgentStateService's writes only"
                        )
                    if route.if_version:
                        key = _idempotency(method, request, metadata)
                        answer = await handler(request, key, expected)
                    elif write:
                        answer = await handler(request, _idempotency(method, request, metadata))
                    else:
                        answer = await handler(request)
                    if isinstance(answer, Versioned):
                        response, version = answer.response, answer.version
                    else:
                        response = answer
                    code = grpc.StatusCode.OK
                except Refusal as refusal:
                    # No version: the caller may not see the conversation.
                    code, text = refusal.code, refusal.text
                except Exception as error:
                    code, text = status_of(error)
                    if code is grpc.StatusCode.INTERNAL:
                        log.exception("%s failed unexpectedly", method)
                    elif code is grpc.StatusCode.UNAVAILABLE:
                        log.warning("%s: storage unavailable: %r", method, error.__cause__)
                    # The service sets it where it read the conversation;
                    # otherwise the route may look it up.
                    version = versions_edge.version_of(error)
                    if version is None:
                        version = await version_after(request, error)
                finally:
                    tracing.finish(span, code)
        finally:
            # Recorded before the answer leaves, so that a client that has
            # its answer finds the call in the log and the metrics.
            edge.observer.finished(
                method,
                code,
                time.perf_counter() - started,
                request_id,
                _target(route, request),
                text or None,
            )
        # Every outcome but a cancellation (the client is gone) gets here.
        set_trailing(context, request_id, version)
        if code is grpc.StatusCode.OK:
            return response
        await context.abort(code, text)
        raise AssertionError("abort returns only by raising")

    return call


def register(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    routes: Mapping[str, Route],
    edge: Edge,
    versions: Versions | None = None,
) -> None:
    """Serve the methods of `service` that `routes` names on `server`
    (the others answer UNIMPLEMENTED, as gRPC does), through the one call
    path; `versions` (None: none) gives failed calls that name a
    conversation its version."""
    unknown = set(routes) - {method.name for method in service.methods}
    if unknown:
        raise RuntimeError(f"{service.full_name} has no methods {sorted(unknown)}")
    method_handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            _behaviour(service.full_name, method.name, routes[method.name], edge, versions),
            request_deserializer=deserializer(GetMessageClass(method.input_type)),
            response_serializer=_serialize,
        )
        for method in service.methods
        if method.name in routes
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, method_handlers),)
    )
    server.add_registered_method_handlers(service.full_name, method_handlers)
