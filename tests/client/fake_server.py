"""An in-process gRPC server that answers every method as a test scripts
it and records what each call sent (method, metadata, request bytes), for
the client's own behaviour: retries, metadata, trace context. Everything
else is tested against the real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message as ProtoMessage


@dataclass(frozen=True)
class Received:
    """One call as the server saw it."""

    method: str
    metadata: dict[str, str]
    request: bytes


@dataclass(frozen=True)
class Fail:
    """An answer that fails with this status (and trailing metadata)."""

    code: grpc.StatusCode
    details: str = ""
    trailing: tuple[tuple[str, str], ...] = ()


Outcome = ProtoMessage | Fail


@dataclass
class FakeServer:
    """Answers calls with `outcomes` in turn (the last one again once they
    run out), and records them in `received`."""

    outcomes: list[Outcome] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    trailing: tuple[tuple[str, str], ...] = ()
    """Trailing metadata of every successful answer."""
    address: str = ""

    def script(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)

    def _next(self) -> Outcome:
        return self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]

    def _handler(self, method: str) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
            self.received.append(Received(method, metadata, request))
            outcome = self._next()
            if isinstance(outcome, Fail):
                context.set_trailing_metadata(outcome.trailing)
                await context.abort(outcome.code, outcome.details)
            context.set_trailing_metadata(self.trailing)
            assert isinstance(outcome, ProtoMessage)
            return outcome.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(answer)


class _AnyMethod(grpc.GenericRpcHandler):
    def __init__(self, fake: FakeServer) -> None:
        self._fake = fake

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        return self._fake._handler(method)


@asynccontextmanager
async def fake_server(*outcomes: Outcome) -> AsyncIterator[FakeServer]:
    """A FakeServer listening on a free loopback port while the block runs."""
    fake = FakeServer(list(outcomes))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_AnyMethod(fake),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fake.address = f"127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await server.stop(grace=None)


def methods(fake: FakeServer) -> list[str]:
    return [call.method for call in fake.received]


def header(fake: FakeServer, key: str) -> Callable[[int], str | None]:
    """The value of metadata `key` in call number i."""
    return lambda i: fake.received[i].metadata.get(key)
