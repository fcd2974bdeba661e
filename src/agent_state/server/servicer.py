"""The gRPC face of the service: decode, call ConversationService, encode.

Handlers are registered from the contract's service descriptor rather than
through the generated servicer base class, so that a request that does not
even parse is answered INVALID_ARGUMENT (instead of the runtime's generic
failure) and every method shares one error path.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from .._gen import agent_state_pb2 as pb
from ..errors import InvalidArgument
from ..model import ConversationState, EncodedResponse, ExpectedVersion
from ..service import ConversationService, Idempotency, Replay
from . import convert, observe, tracing, versions
from .auth import Refusal, Tokens
from .observe import Observer
from .status import status_of
from .versions import Answer
from .wire import WireCodec

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentStateService"].full_name

log = logging.getLogger("agent_state.rpc")

# A handler answers a message, or the bytes of one it encoded itself, with
# the version of the conversation it names. The handlers of WRITES also take
# the call's idempotency key and the version it expects (if-version).
Handler = Callable[..., Awaitable[Answer]]

_R = TypeVar("_R", bound="_Versioned")


class _Versioned(Protocol):
    """A mutating call's result: it carries the conversation's state."""

    @property
    def state(self) -> ConversationState: ...


class _Malformed:
    """Stands for a request whose bytes did not parse."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


class AgentStateServicer:
    def __init__(self, service: ConversationService) -> None:
        self._service = service
        # The encoding of what the service answers; stateless, like the one
        # the service was given.
        self._codec = WireCodec()
        self.in_flight = 0
        """Calls whose handler is running; the graceful stop watches it."""

    def handlers(self) -> dict[str, Handler]:
        """Method name -> coroutine taking the request message."""
        return {
            "AppendConversationMessages": self.append,
            "ListConversationMessages": self.list_messages,
            "ReplaceConversationMessagesRange": self.replace_range,
            "DeleteConversationMessagesRange": self.delete_range,
            "GetConversation": self.get_conversation,
            "ListConversationMessageIds": self.list_message_ids,
            "ListSnapshotMessages": self.list_snapshot_messages,
            "ListSnapshotMessageIds": self.list_snapshot_message_ids,
            "CreateSnapshot": self.create_snapshot,
        }

    async def append(
        self,
        request: pb.AppendConversationMessagesRequest,
        key: Idempotency | None,
        expected: ExpectedVersion | None,
    ) -> Answer:
        inputs = [convert.message_input(message) for message in request.messages]
        result = await self._service.append(request.conversation_id, inputs, key, expected)
        return _answer(result, self._codec.appended)

    async def list_messages(self, request: pb.ListConversationMessagesRequest) -> Answer:
        page = await self._service.list_messages(
            request.conversation_id,
            list(request.roles),
            list(request.kinds),
            request.page_size,
            request.page_token,
        )
        return Answer(self._codec.message_page(page), page.state.version)

    async def replace_range(
        self,
        request: pb.ReplaceConversationMessagesRangeRequest,
        key: Idempotency | None,
        expected: ExpectedVersion | None,
    ) -> Answer:
        result = await self._service.replace_range(
            request.conversation_id,
            request.from_message_id,
            request.to_message_id,
            list(request.new_message_ids),
            key,
            expected,
        )
        return _answer(result, self._codec.replaced)

    async def delete_range(
        self,
        request: pb.DeleteConversationMessagesRangeRequest,
        key: Idempotency | None,
        expected: ExpectedVersion | None,
    ) -> Answer:
        result = await self._service.delete_range(
            request.conversation_id, request.from_message_id, request.to_message_id, key, expected
        )
        return _answer(result, self._codec.deleted)

    async def get_conversation(self, request: pb.GetConversationRequest) -> Answer:
        state = await self._service.get_conversation(request.conversation_id)
        return Answer(pb.GetConversationResponse(metadata=convert.metadata(state)), state.version)

    async def list_message_ids(self, request: pb.ListConversationMessageIdsRequest) -> Answer:
        page = await self._service.list_message_ids(
            request.conversation_id, request.page_size, request.page_token
        )
        response = pb.ListConversationMessageIdsResponse(
            message_ids=convert.ids(page.message_ids), next_page_token=page.next_page_token
        )
        return Answer(response, page.version)

    # The snapshot lists name a snapshot, which never changes, not a
    # conversation: they report no version.

    async def list_snapshot_messages(self, request: pb.ListSnapshotMessagesRequest) -> Answer:
        page = await self._service.list_snapshot_messages(
            request.snapshot_id, request.page_size, request.page_token
        )
        return Answer(self._codec.snapshot_message_page(page), None)

    async def list_snapshot_message_ids(self, request: pb.ListSnapshotMessageIdsRequest) -> Answer:
        page = await self._service.list_snapshot_message_ids(
            request.snapshot_id, request.page_size, request.page_token
        )
        response = pb.ListSnapshotMessageIdsResponse(
            message_ids=convert.ids(page.message_ids), next_page_token=page.next_page_token
        )
        return Answer(response, None)

    async def create_snapshot(
        self,
        request: pb.CreateSnapshotRequest,
        key: Idempotency | None,
        expected: ExpectedVersion | None,
    ) -> Answer:
        result = await self._service.create_snapshot(
            request.conversation_id, list(request.message_ids), key, expected
        )
        return _answer(result, self._codec.snapshot_created)


def _answer(result: _R | Replay, encode: Callable[[_R], EncodedResponse]) -> Answer:
    """What a mutating call answers: the response its idempotency key
    replays, or its result encoded; with the conversation's version now."""
    if isinstance(result, Replay):
        return Answer(result.response, result.version)
    return Answer(encode(result), result.state.version)


WRITES = frozenset(
    {
        "AppendConversationMessages",
        "ReplaceConversationMessagesRange",
        "DeleteConversationMessagesRange",
        "CreateSnapshot",
    }
)
"""The methods that change data: a read-only token may not call them, and
they take an idempotency key."""

IDEMPOTENCY_KEY = "idempotency-key"


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


def _deserializer(message_type: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    def parse(data: bytes) -> Message | _Malformed:
        try:
            return message_type.FromString(data)
        except (DecodeError, RuntimeError, ValueError):
            return _Malformed(message_type.DESCRIPTOR.full_name)

    return parse


def _serialize(response: Message | bytes) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def _target(request: Any) -> tuple[str, str] | None:
    """The id a call is about, for its log line."""
    for name in ("conversation_id", "snapshot_id"):
        value = getattr(request, name, None)
        if value:
            return name, value
    return None


def _behaviour(
    servicer: AgentStateServicer,
    method: str,
    handler: Handler,
    observer: Observer,
    tokens: Tokens | None,
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message | bytes]]:
    write = method in WRITES

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message | bytes:
        started = time.perf_counter()
        metadata = context.invocation_metadata()
        request_id = observe.request_id(metadata)
        context.set_trailing_metadata(((observe.REQUEST_ID, request_id),))
        # Cancelled (the client went away) unless we get to set the outcome.
        code, text = grpc.StatusCode.CANCELLED, ""
        answer = Answer(b"", None)
        observer.started()
        servicer.in_flight += 1
        try:
            with tracing.span(method) as span:
                try:
                    if tokens is not None:
                        tokens.check(metadata, write=write)
                    if isinstance(request, _Malformed):
                        raise InvalidArgument("request", f"not a valid {request.type_name} message")
                    expected = versions.if_version(metadata)
                    if write:
                        key = _idempotency(method, request, metadata)
                        answer = await handler(request, key, expected)
                    elif expected is not None:
                        raise InvalidArgument(versions.IF_VERSION, "is taken by writes only")
                    else:
                        answer = await handler(request)
                    code = grpc.StatusCode.OK
                except Refusal as refusal:
                    code, text = refusal.code, refusal.text
                except Exception as error:
                    code, text = status_of(error)
                    answer = Answer(b"", versions.version_of(error))
                    if code is grpc.StatusCode.INTERNAL:
                        log.exception("%s failed unexpectedly", method)
                    elif code is grpc.StatusCode.UNAVAILABLE:
                        log.warning("%s: storage unavailable: %r", method, error.__cause__)
                finally:
                    tracing.finish(span, code)
        finally:
            # Recorded before the answer leaves, so that a client that has
            # its answer finds the call in the log and the metrics.
            servicer.in_flight -= 1
            observer.finished(
                method,
                code,
                time.perf_counter() - started,
                request_id,
                None if isinstance(request, _Malformed) else _target(request),
                text or None,
            )
        if answer.version is not None:
            context.set_trailing_metadata(
                ((observe.REQUEST_ID, request_id), *versions.trailer(answer.version))
            )
        if code is grpc.StatusCode.OK:
            return answer.response
        await context.abort(code, text)
        raise AssertionError("abort returns only by raising")

    return call


def register(
    server: grpc.aio.Server,
    servicer: AgentStateServicer,
    observer: Observer,
    tokens: Tokens | None,
) -> None:
    """Serve every method of the contract's AgentStateService on `server`,
    checking `tokens` (None: no auth) and reporting calls to `observer`."""
    service = pb.DESCRIPTOR.services_by_name["AgentStateService"]
    handlers = servicer.handlers()
    missing = {method.name for method in service.methods} ^ set(handlers)
    if missing:
        raise RuntimeError(f"servicer and contract disagree on methods: {sorted(missing)}")
    method_handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            _behaviour(servicer, method.name, handlers[method.name], observer, tokens),
            request_deserializer=_deserializer(getattr(pb, method.input_type.name)),
            response_serializer=_serialize,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, method_handlers),)
    )
    server.add_registered_method_handlers(service.full_name, method_handlers)
