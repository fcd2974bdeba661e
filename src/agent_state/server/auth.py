"""Bearer tokens: who may read and who may write.

A call carries ``authorization: Bearer <token>`` metadata. Every token is
compared with every configured one in constant time, so neither the
outcome nor its timing tells which configured token came close. Health
checks never need a token; the methods of AgentStateService,
ConversationsService and CheckpointsService are checked in their call path
(so that refusals are logged and counted with the rest), any other service
(reflection) here, as a read.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from .access import Access

HEALTH_PREFIX = "/grpc.health.v1.Health/"

if TYPE_CHECKING:  # the stubs' generics do not exist at run time
    Metadata: TypeAlias = Sequence[tuple[str, str | bytes]] | grpc.aio.Metadata
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]


class Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Tokens:
    def __init__(self, tokens: dict[str, Access]) -> None:
        self._tokens = [(token.encode(), access) for token, access in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def check(self, metadata: Metadata | None, *, write: bool) -> None:
        """Raises Refusal unless the call's token allows it."""
        presented = _bearer(metadata)
        if presented is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization: missing; send `authorization: Bearer <token>` metadata",
            )
        granted: Access | None = None
        for token, access in self._tokens:
            if hmac.compare_digest(token, presented):
                granted = access
        if granted is None:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "authorization: unknown token")
        if write and granted is not Access.READ_WRITE:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "authorization: this token is read-only; the method changes data",
            )


def _bearer(metadata: Metadata | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip().encode()
            return None
    return None


class ReadAuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks a read token on services other than health and the `exempt`
    method prefixes (services that check tokens per method themselves)."""

    def __init__(self, tokens: Tokens, exempt_prefixes: tuple[str, ...]) -> None:
        self._tokens = tokens
        self._exempt = (HEALTH_PREFIX, *exempt_prefixes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(self._exempt):
            return handler
        try:
            self._tokens.check(handler_call_details.invocation_metadata, write=False)
        except Refusal as refusal:
            return _refusing(handler, refusal)
        return handler


def _refusing(handler: Handler, refusal: Refusal) -> Handler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(refusal.code, refusal.text)

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **serializers)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **serializers)
    return grpc.unary_unary_rpc_method_handler(refuse, **serializers)
