"""W3C trace context for the calls made inside an OpenTelemetry span.

OpenTelemetry is optional (the `otel` extra): without it, or outside an
active span, nothing is sent. With it, the globally configured propagator
(W3C ``traceparent``/``tracestate`` and baggage by default) writes the
current context into the call's metadata.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

_Inject = Callable[[MutableMapping[str, str]], None]

_inject: _Inject | None
try:
    from opentelemetry.propagate import inject as _otel_inject
except ImportError:  # the otel extra is not installed
    _inject = None
else:
    _inject = _otel_inject


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context as gRPC metadata (lower-case keys); empty
    without OpenTelemetry or an active span."""
    if _inject is None:
        return ()
    carrier: dict[str, str] = {}
    _inject(carrier)
    return tuple((key.lower(), value) for key, value in carrier.items())
