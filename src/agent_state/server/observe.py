"""What every call of AgentStateService, ConversationsService and
CheckpointsService leaves behind: a log line, metrics, and (with tracing
on) a span. Request ids come from `x-request-id` metadata or are made up,
and go back to the client in trailing metadata.

Only the method, status, duration and ids are recorded: never a body, a
token or a database URL.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import logs
from ..storage import Store

REQUEST_ID = "x-request-id"

log = logging.getLogger("agent_state.rpc")

# Seconds; agent-state calls run from a fraction of a millisecond (a small
# append) to a second or more (a 3 MiB page over a slow link).
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def request_id(metadata: object) -> str:
    """The caller's request id if it is a sane one, else a new one."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == REQUEST_ID and isinstance(value, str):
            if 0 < len(value) <= 128 and value.isascii() and value.isprintable():
                return value
            break
    return uuid.uuid4().hex


class _PoolCollector(Collector):
    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._store.pool_stats()
        connections = GaugeMetricFamily(
            "agent_state_db_pool_connections",
            "Database connections of the pool, by state.",
            labels=["state"],
        )
        connections.add_metric(["open"], stats.open)
        connections.add_metric(["idle"], stats.idle)
        yield connections
        yield GaugeMetricFamily(
            "agent_state_db_pool_waiting",
            "Calls waiting for a database connection.",
            value=stats.waiting,
        )
        yield GaugeMetricFamily(
            "agent_state_db_pool_max", "Most connections the pool opens.", value=stats.max
        )


class Metrics:
    """The Prometheus metrics of one server, in their own registry."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agent_state_rpc_requests",
            "Calls handled (both services), by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "agent_state_rpc_duration_seconds",
            "Time from a call's dispatch to its answer, by method.",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "agent_state_rpc_in_flight", "Calls being handled now.", registry=self.registry
        )
        self.storage_errors = Counter(
            "agent_state_storage_errors",
            "Calls that failed because the database was unavailable, by method.",
            ["method"],
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(store))
        self.retention_conversations = Counter(
            "agent_state_retention_conversations_deleted",
            "Conversations the retention sweeper deleted (idle past their max_idle).",
            registry=self.registry,
        )
        self.retention_messages = Counter(
            "agent_state_retention_messages_trimmed",
            "Messages the retention sweeper trimmed (past their conversation's max_messages).",
            registry=self.registry,
        )


class Observer:
    """Records finished calls; metrics only when an address is configured."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics

    def started(self) -> None:
        if self.metrics is not None:
            self.metrics.in_flight.inc()

    def finished(
        self,
        method: str,
        code: grpc.StatusCode,
        seconds: float,
        request: str,
        target: tuple[str, str] | None,
        error: str | None,
    ) -> None:
        if self.metrics is not None:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(method, code.name).inc()
            self.metrics.duration.labels(method).observe(seconds)
            if code is grpc.StatusCode.UNAVAILABLE:
                self.metrics.storage_errors.labels(method).inc()
        if log.isEnabledFor(logging.INFO):
            values: dict[str, object] = {
                "method": method,
                "code": code.name,
                "duration_ms": round(seconds * 1000, 3),
                "request_id": request,
            }
            if target is not None:
                values[target[0]] = target[1]
            if error is not None:
                values["error"] = error
            log.info("rpc", extra=logs.fields(**values))
