"""The server's spans continue the caller's trace: a call the client makes
inside an OpenTelemetry span carries its trace context (W3C traceparent),
and the server's span for that call is a child of the caller's span, in
the same trace, for both services.

The server runs in this process (an in-memory span exporter cannot reach
a server process), on a SQLite store: trace context is about the edge,
not the storage.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agent_state.checkpoints import CheckpointService
from agent_state.companion import CompanionService
from agent_state.config import Settings
from agent_state.server import tracing
from agent_state.server.app import Server
from agent_state.server.companion_servicer import CompanionCodec
from agent_state.server.wire import WireCodec
from agent_state.service import ConversationService
from agent_state_client import AsyncClient, MessageInput
from tests.conftest import factory

APPEND = "agynio.api.agent_state.v1.AgentStateService/AppendConversationMessages"
DESCRIBE = "agentstate.v1.ConversationsService/DescribeConversation"


@dataclass
class TracedServer:
    address: str
    spans: InMemorySpanExporter

    def server_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.kind is SpanKind.SERVER]


@pytest.fixture
async def traced_server(tmp_path: Path) -> AsyncIterator[TracedServer]:
    """A server in this process whose spans go to an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(grpc_address="127.0.0.1:0", shutdown_grace_seconds=1)
    store = factory("sqlite", str(tmp_path / "traced.db"))()
    await store.open()
    try:
        await store.migrate()
        service = ConversationService(store, WireCodec(), settings.limits())
        companion = CompanionService(store, CompanionCodec(), settings.limits(), messages=service)
        server = Server(settings, service, companion, CheckpointService(store), metrics=None)
        # The server is started outside any span, so that no context of
        # the test's can reach its handlers except through the metadata.
        tracing.use(provider)
        await server.start()
        try:
            yield TracedServer(f"127.0.0.1:{server.port}", exporter)
        finally:
            await server.stop()
    finally:
        tracing.use(None)
        await store.close()


async def test_server_spans_are_children_of_the_callers_span(
    traced_server: TracedServer,
) -> None:
    caller = TracerProvider().get_tracer("an agent")
    conversation = str(uuid.uuid4())
    async with AsyncClient(traced_server.address) as client:
        with caller.start_as_current_span("model call") as parent:
            await client.append(conversation, MessageInput.user("hello"))
            await client.describe_conversation(conversation)
    expected = parent.get_span_context()

    spans = traced_server.server_spans()
    assert [span.name for span in spans] == [APPEND, DESCRIBE]
    for span in spans:
        assert span.context is not None
        assert span.context.trace_id == expected.trace_id
        assert span.parent is not None
        assert span.parent.span_id == expected.span_id
        # Remote: it came in the request metadata, not through this
        # process's own context.
        assert span.parent.is_remote
        assert span.context.span_id != expected.span_id
    assert spans[1].attributes is not None
    assert spans[1].attributes["rpc.service"] == "agentstate.v1.ConversationsService"
    assert spans[1].attributes["rpc.method"] == "DescribeConversation"


async def test_a_call_without_trace_context_starts_a_trace_of_its_own(
    traced_server: TracedServer,
) -> None:
    caller = TracerProvider().get_tracer("an agent")
    async with AsyncClient(traced_server.address) as client:
        with caller.start_as_current_span("model call") as parent:
            pass
        await client.append(str(uuid.uuid4()), MessageInput.user("outside any span"))

    [span] = traced_server.server_spans()
    assert span.name == APPEND
    assert span.parent is None
    assert span.context is not None
    assert span.context.trace_id != parent.get_span_context().trace_id
