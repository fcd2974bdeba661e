"""The grpc.aio server: AgentStateService, health, reflection, and a
graceful stop on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from .. import logs
from ..config import Settings
from ..errors import StorageUnavailable
from ..service import ConversationService
from ..storage import Store, make_store
from ..storage.migrations import MigrationError
from . import tracing
from .auth import ReadAuthInterceptor, Tokens
from .observe import Metrics, Observer
from .servicer import SERVICE_NAME, AgentStateServicer, register
from .wire import WireCodec

log = logging.getLogger("agent_state.server")

# A drain waits for this long with no call running, but no longer than
# _DISPATCH_SECONDS, before it stops the server.
_QUIET_SECONDS = 0.2
_DISPATCH_SECONDS = 1.5
# How often expired idempotency keys are deleted, at most.
_SWEEP_SECONDS = 600.0


def store_from(settings: Settings) -> Store:
    return make_store(
        settings.database_url,
        sqlite_path=settings.sqlite_path,
        pool_min_size=settings.pool_min_size,
        pool_max_size=settings.pool_max_size,
        statement_timeout_ms=settings.statement_timeout_ms,
    )


class Server:
    """One running server: `start`, then `stop`."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store
        self._health = health.aio.HealthServicer()
        tokens = Tokens(settings.tokens())
        self._tokens = tokens or None
        self._grpc = grpc.aio.server(
            interceptors=[ReadAuthInterceptor(tokens, f"/{SERVICE_NAME}/")] if tokens else [],
            options=[
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        self.port = 0
        self.metrics_port = 0
        self._servicer: AgentStateServicer | None = None
        self._metrics = Metrics(store) if settings.metrics_address else None
        self._metrics_server: WSGIServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._store.open()
        try:
            if self._settings.migrate_on_start:
                applied = await self._store.migrate()
                if applied:
                    log.info("applied migrations %s", applied)
            elif pending := await self._store.pending_migrations():
                raise MigrationError(
                    f"the database schema lacks migrations {pending}; run `agent-state migrate`"
                    " or start without --no-migrate"
                )
            service = ConversationService(self._store, WireCodec(), self._settings.limits())
            self._sweeper = asyncio.create_task(_sweep_expired_keys(service))
            self._servicer = AgentStateServicer(service)
            register(self._grpc, self._servicer, Observer(self._metrics), self._tokens)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
            )
            self.port = self._listen()
            if self._metrics is not None and self._settings.metrics_address:
                host, _, port = self._settings.metrics_address.rpartition(":")
                self._metrics_server, _thread = start_http_server(
                    int(port), host.strip("[]"), registry=self._metrics.registry
                )
                self.metrics_port = self._metrics_server.server_port
            await self._grpc.start()
        except BaseException:
            if self._sweeper is not None:
                self._sweeper.cancel()
            self._stop_metrics()
            await self._store.close()
            raise
        serving = health_pb2.HealthCheckResponse.SERVING
        await self._health.set("", serving)
        await self._health.set(SERVICE_NAME, serving)

    def _listen(self) -> int:
        settings = self._settings
        address = settings.grpc_address
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            port = self._grpc.add_insecure_port(address)
        else:
            ca = settings.tls_client_ca_file
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
                root_certificates=ca.read_bytes() if ca is not None else None,
                require_client_auth=ca is not None,
            )
            port = self._grpc.add_secure_port(address, credentials)
        if not port:
            raise OSError(f"cannot listen on {address}")
        return port

    def _stop_metrics(self) -> None:
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    async def stop(self) -> None:
        """Report NOT_SERVING, drain, refuse new calls, close the database.

        Requests that reached the server just before the signal may still
        wait for the event loop to dispatch them, and gRPC cancels calls it
        had not dispatched when the server stops. So the drain first waits
        briefly for a quiet moment with no call running (serving whatever
        arrives meanwhile), then stops the server, which refuses new calls
        and gives those still running the grace period.
        """
        grace = self._settings.shutdown_grace_seconds
        await self._health.enter_graceful_shutdown()
        await self._wait_until_quiet(min(grace, _DISPATCH_SECONDS))
        await self._grpc.stop(grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._stop_metrics()
        await self._store.close()
        tracing.shutdown()

    async def _wait_until_quiet(self, limit: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        quiet_since = loop.time()
        while loop.time() < deadline:
            if self._servicer is not None and self._servicer.in_flight:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= _QUIET_SECONDS:
                return
            await asyncio.sleep(_QUIET_SECONDS / 5)


async def _sweep_expired_keys(service: ConversationService) -> None:
    """Deletes idempotency keys past their window, now and then. A key is
    ignored once expired anyway; this only keeps the table small."""
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


def _stop_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, installed before start-up so that
    a signal arriving while the server starts stops it cleanly afterwards."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve(settings: Settings) -> None:
    stop = _stop_signal()
    store = store_from(settings)
    server = Server(settings, store)
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
        ),
    )
    await stop.wait()
    log.info("stop signal received; draining in-flight calls")
    await server.stop()
    log.info("stopped")
