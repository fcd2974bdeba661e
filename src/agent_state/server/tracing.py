"""Optional OpenTelemetry tracing: a span per AgentStateService call, with
the SQL statements it ran as child spans.

Off unless `tracing` is set; then the `otel` extra must be installed. The
exporter follows OpenTelemetry's own variables: OTEL_TRACES_EXPORTER
(`otlp`, the default, or `console`), OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_SERVICE_NAME and the rest.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

_tracer: Any = None


class TracingUnavailable(Exception):
    pass


_EXPORTERS = ("otlp", "console")
# What `enable` imports, of each package of the otel extra.
_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.instrumentation.psycopg",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


def check() -> None:
    """Raise TracingUnavailable where `enable` would, installing nothing:
    `agent-state config` refuses what `serve` would."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    if exporter_name not in _EXPORTERS:
        raise TracingUnavailable(f"OTEL_TRACES_EXPORTER={exporter_name}: use otlp or console")
    try:
        for module in _MODULES:
            importlib.import_module(module)
    except ImportError as exc:
        raise TracingUnavailable(
            f"needs the OpenTelemetry packages: pip install 'agent-state[otel]' ({exc.name})"
        ) from exc


def enable() -> None:
    """Install a tracer provider and instrument psycopg; `check` must have
    passed (`serve` runs it with the other checks of its settings)."""
    global _tracer
    from opentelemetry import trace
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "agent-state")})
    provider = TracerProvider(resource=resource)
    if exporter_name == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider)
    _tracer = trace.get_tracer("agent_state")


@contextmanager
def span(method: str) -> Iterator[Any]:
    """A server span around one call (nothing when tracing is off)."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(
        f"agynio.api.agent_state.v1.AgentStateService/{method}",
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": "agynio.api.agent_state.v1.AgentStateService",
            "rpc.method": method,
        },
    ) as current:
        yield current


def finish(current: Any, code: grpc.StatusCode) -> None:
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    current.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        current.set_status(Status(StatusCode.ERROR, code.name))


def shutdown() -> None:
    """Flush spans still queued (at server stop)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
