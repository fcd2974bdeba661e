"""Optional OpenTelemetry tracing: a server span per call of either
service, with the SQL statements it ran as child spans.

A call that carries a trace context (W3C ``traceparent``/``tracestate``,
or whatever the globally configured propagator reads, in the request
metadata, as agent-state-client sends inside an active span) gets its span
in the caller's trace, as a child of the caller's span; other calls start
a trace of their own.

Off unless `tracing` is set; then the `otel` extra must be installed. The
exporter follows OpenTelemetry's own variables: OTEL_TRACES_EXPORTER
(`otlp`, the default, or `console`), OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_SERVICE_NAME and the rest.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

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
    use(provider)


def use(provider: TracerProvider | None) -> None:
    """Make the calls' spans with `provider`'s tracer (None: no spans).
    `enable` gives it the provider it builds from the environment."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("agent_state")


@contextmanager
def span(
    service: str, method: str, metadata: Iterable[tuple[str, str | bytes]] | None
) -> Iterator[Any]:
    """A server span around one call of `service`, in the trace the call's
    request `metadata` carries, if any (nothing when tracing is off)."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    # gRPC gives metadata keys in lower case, as the propagators look them up.
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    with _tracer.start_as_current_span(
        f"{service}/{method}",
        context=extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
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
