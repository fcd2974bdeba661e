"""The composition root: from settings to a running service.

It builds the store, brings its schema up to date, constructs the
`ConversationService`, the companion API's `CompanionService` and the
checkpoint store's `CheckpointService` over it (here only), runs the
sweepers of expired idempotency keys and of retention beside them, and
hands them to the gRPC server (server/app.py). `check_serving` holds the
checks `serve` makes before it opens anything; `agent-state config` makes
the same ones.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from . import logs
from .checkpoints import CheckpointService
from .companion import CompanionService
from .config import Settings
from .errors import StorageUnavailable
from .retention import RetentionSweeper
from .server import tracing
from .server.access import exposure
from .server.app import Server
from .server.companion_servicer import CompanionCodec
from .server.observe import Metrics
from .server.wire import WireCodec
from .service import ConversationService
from .storage import Store, database_location, make_store
from .storage.migrations import MigrationError

log = logging.getLogger("agent_state.server")

# How often expired idempotency keys are deleted, at most.
_SWEEP_SECONDS = 600.0
# How often a fresh database is checked for data its planner statistics
# do not know of yet, until they do.
_FRESH_STATISTICS_SECONDS = 1.0


class NotServable(ValueError):
    """Settings that load, but that `serve` refuses; the message says why."""


def build_store(settings: Settings) -> Store:
    """The backend the settings name, not yet opened (building one opens
    nothing). Raises UnsupportedDatabaseUrl."""
    return make_store(
        settings.database_url,
        sqlite_path=settings.sqlite_path,
        pool_min_size=settings.pool_min_size,
        pool_max_size=settings.pool_max_size,
        statement_timeout_ms=settings.statement_timeout_ms or None,
        prepared_statements=settings.prepared_statements,
    )


def check_serving(settings: Settings) -> None:
    """Raises NotServable (or UnsupportedDatabaseUrl) if `serve` would refuse
    these settings before opening anything. `migrate` listens on nothing,
    so it checks only the database URL (when it builds its store)."""
    problem = exposure(
        settings.grpc_address,
        settings.tokens(),
        allow_unauthenticated=settings.allow_unauthenticated,
    )
    if problem is not None:
        raise NotServable(f"invalid settings: {problem}")
    if settings.workers > 1 and settings.grpc_address.rsplit(":", 1)[-1] == "0":
        raise NotServable("--workers needs a fixed port, not port 0")
    if settings.tracing:
        try:
            tracing.check()
        except tracing.TracingUnavailable as exc:
            raise NotServable(f"invalid setting tracing: {exc}") from exc
    database_location(settings.database_url, settings.sqlite_path)


async def migrate(settings: Settings) -> list[int]:
    """Applies pending migrations; returns their numbers."""
    async with build_store(settings) as store:
        return await store.migrate()


async def serve(settings: Settings) -> None:
    """Serve AgentStateService until SIGTERM or SIGINT, then drain and close."""
    stop = _stop_signal()
    async with build_store(settings) as store:
        await _bring_schema_up_to_date(store, migrate_on_start=settings.migrate_on_start)
        service = ConversationService(store, WireCodec(), settings.limits())
        companion = CompanionService(store, CompanionCodec(), settings.limits(), messages=service)
        metrics = Metrics(store) if settings.metrics_address else None
        checkpoints = CheckpointService(store)
        server = Server(settings, service, companion, checkpoints, metrics)
        sweeper = RetentionSweeper(store, settings.default_retention())
        async with (
            # A key is ignored once expired anyway; deleting keys only
            # keeps the table small.
            _in_background(_sweep_expired_keys(service)),
            _in_background(_sweep_retention(sweeper, settings.retention_sweep_seconds, metrics)),
            _in_background(_analyze_fresh_tables(store)),
        ):
            await server.start()
            backend = (
                settings.database_url.partition(":")[0]
                if settings.database_url
                else f"sqlite file {settings.sqlite_path}"
            )
            log.info(
                "agent-state listening on %s",
                settings.grpc_address,
                extra=logs.fields(
                    port=server.port,
                    storage=backend,
                    tls="mtls" if settings.tls_client_ca_file else bool(settings.tls_cert_file),
                    auth="tokens" if settings.tokens() else "none",
                    metrics_port=server.metrics_port or None,
                    event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
                ),
            )
            await stop.wait()
            log.info("stop signal received; draining in-flight calls")
            await server.stop()
    tracing.shutdown()
    log.info("stopped")


async def _bring_schema_up_to_date(store: Store, *, migrate_on_start: bool) -> None:
    if migrate_on_start:
        applied = await store.migrate()
        if applied:
            log.info("applied migrations %s", applied)
    elif pending := await store.pending_migrations():
        raise MigrationError(
            f"the database schema lacks migrations {pending}; run `agent-state migrate`"
            " or start without --no-migrate"
        )


@asynccontextmanager
async def _in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Runs `work` as a task while the block runs, then cancels it."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        # Waited for so that the store is not closed under it; wait()
        # never raises the task's cancellation as if it were this one's.
        await asyncio.wait({task})


async def _sweep_expired_keys(service: ConversationService) -> None:
    period = min(_SWEEP_SECONDS, service.limits.idempotency_window_seconds)
    while True:
        try:
            forgotten = await service.forget_expired_keys()
        except StorageUnavailable:
            log.warning("could not delete expired idempotency keys: database unavailable")
        else:
            if forgotten:
                log.info("deleted %d expired idempotency keys", forgotten)
        await asyncio.sleep(period)


async def _sweep_retention(
    sweeper: RetentionSweeper, period: float, metrics: Metrics | None
) -> None:
    while True:
        try:
            swept = await sweeper.sweep()
        except StorageUnavailable:
            log.warning("could not apply retention: database unavailable")
        except Exception:
            # Logged and tried again next period: retention must not stop
            # for good over one bad sweep.
            log.exception("retention sweep failed")
        else:
            if metrics is not None:
                metrics.retention_conversations.inc(swept.conversations)
                metrics.retention_messages.inc(swept.messages)
            if swept.conversations or swept.messages:
                log.info(
                    "retention deleted %d conversations and trimmed %d messages",
                    swept.conversations,
                    swept.messages,
                    extra=logs.fields(
                        retention_conversations_deleted=swept.conversations,
                        retention_messages_trimmed=swept.messages,
                    ),
                )
        await asyncio.sleep(period)


async def _analyze_fresh_tables(store: Store) -> None:
    """Gives the planner statistics as soon as a fresh database holds data,
    rather than up to a minute later when autovacuum first gets to it:
    until then PostgreSQL may scan a whole conversation once per id where
    it should probe the primary key (storage/sql/postgres.sql,
    tables_marked_empty). Stops once no table is left marked empty."""
    done: list[str] = []
    while True:
        try:
            analyzed, waiting = await store.analyze_tables_marked_empty()
        except StorageUnavailable:
            waiting = True
        except Exception as exc:
            log.warning("could not analyze tables marked empty: %s", exc)
            return
        else:
            if set(analyzed) & set(done):
                # ANALYZE changed nothing: a role that does not own the
                # tables only gets a warning from PostgreSQL. Autovacuum
                # still will, later.
                log.warning("could not analyze %s: their statistics still say empty", analyzed)
                return
            if analyzed:
                log.info("analyzed %s: their planner statistics said empty", analyzed)
                done += analyzed
            if not waiting:
                return
        await asyncio.sleep(_FRESH_STATISTICS_SECONDS)


def _stop_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, installed before start-up so that
    a signal arriving while the server starts stops it cleanly afterwards."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
