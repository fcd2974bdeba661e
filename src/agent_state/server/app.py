"""The grpc.aio server: AgentStateService, the companion API's
ConversationsService and the checkpoint store's CheckpointsService on one
port, health, reflection, the Prometheus
endpoint, and a graceful stop. It serves the services it is given;
runtime.py builds them and their store and decides when to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from ..checkpoints import CheckpointService
from ..companion import CompanionService
from ..config import Settings
from ..service import ConversationService
from . import checkpoints_servicer, companion_servicer, servicer
from .auth import ReadAuthInterceptor, Tokens
from .dispatch import Edge
from .observe import Metrics, Observer
from .versions import VersionsAfterErrors

log = logging.getLogger("agent_state.server")

# Checked per method by the call path (dispatch.py), so that refusals are
# logged and counted with the rest.
_SERVICES = (
    servicer.SERVICE_NAME,
    companion_servicer.SERVICE_NAME,
    checkpoints_servicer.SERVICE_NAME,
)

# A drain waits for this long with no call running, but no longer than
# _DISPATCH_SECONDS, before it stops the server.
_QUIET_SECONDS = 0.2
_DISPATCH_SECONDS = 1.5


class Server:
    """One running server: `start`, then `stop`. `metrics` (None: none) is
    served on settings.metrics_address."""

    def __init__(
        self,
        settings: Settings,
        service: ConversationService,
        companion: CompanionService,
        checkpoints: CheckpointService,
        metrics: Metrics | None,
    ) -> None:
        self._settings = settings
        self._service = service
        self._companion = companion
        self._checkpoints = checkpoints
        self._health = health.aio.HealthServicer()
        tokens = Tokens(settings.tokens())
        self._tokens = tokens or None
        exempt = tuple(f"/{name}/" for name in _SERVICES)
        self._in_flight = InFlight()
        interceptors: list[grpc.aio.ServerInterceptor] = [self._in_flight]
        if tokens:
            interceptors.append(ReadAuthInterceptor(tokens, exempt))
        self._grpc = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        self.port = 0
        self.metrics_port = 0
        self._metrics = metrics
        self._metrics_server: WSGIServer | None = None

    async def start(self) -> None:
        try:
            edge = Edge(Observer(self._metrics), self._tokens)
            versions = VersionsAfterErrors(self._companion.version_of)
            agynio = servicer.AgentStateServicer(self._service)
            servicer.register(self._grpc, agynio, edge, versions)
            companion = companion_servicer.CompanionServicer(self._companion)
            companion_servicer.register(self._grpc, companion, edge, versions)
            checkpoints = checkpoints_servicer.CheckpointsServicer(self._checkpoints)
            checkpoints_servicer.register(self._grpc, checkpoints, edge)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
            reflection.enable_server_reflection(
                (*_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
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
            self._stop_metrics()
            raise
        serving = health_pb2.HealthCheckResponse.SERVING
        await self._health.set("", serving)
        for name in _SERVICES:
            await self._health.set(name, serving)

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
        """Report NOT_SERVING, drain, refuse new calls.

        Requests that reached the server just before the signal may still
        wait for the event loop to dispatch them, and gRPC cancels calls it
        had not dispatched when the server stops. So the drain first waits
        briefly for a quiet moment with no call running (serving whatever
        arrives meanwhile), then stops the server, which refuses new calls
        and gives those still running the grace period.

        grpc.aio can accept a call in the instant it begins to stop and then
        never hand it to the server, and gRPC holds such a call open to the
        end of the grace period (about one stop in six under the end-to-end
        test's load). Once every call handed to the server has finished and
        the server has stayed quiet, nothing more will be served, so the
        calls left are cancelled then.
        """
        grace = self._settings.shutdown_grace_seconds
        await self._health.enter_graceful_shutdown()
        await self._wait_until_quiet(min(grace, _DISPATCH_SECONDS))
        stopping = asyncio.ensure_future(self._grpc.stop(grace))
        await self._wait_until_quiet(grace, unless_done=stopping)
        if not stopping.done():
            log.info("cancelling calls accepted while stopping but never dispatched")
            await self._grpc.stop(None)
        await stopping
        self._stop_metrics()

    async def _wait_until_quiet(
        self, limit: float, unless_done: asyncio.Future[None] | None = None
    ) -> None:
        """Returns once no call has been in flight for _QUIET_SECONDS, after
        `limit` seconds, or as soon as `unless_done` is done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        quiet_since = loop.time()
        while loop.time() < deadline and not (unless_done and unless_done.done()):
            if self._in_flight.count:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= _QUIET_SECONDS:
                return
            await asyncio.sleep(_QUIET_SECONDS / 5)


class InFlight(grpc.aio.ServerInterceptor):
    """Counts the calls gRPC has handed to this server and not yet finished
    (answered, failed or cancelled), on every service; the graceful stop
    watches it. A call counts from the moment gRPC looks up its handler,
    before its request has arrived, so a slow upload counts too."""

    def __init__(self) -> None:
        self.count = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        # grpc.aio runs each call, from this lookup to its last write, in
        # a task of its own, which ends when gRPC is done with the call.
        call = asyncio.current_task()
        if call is not None:
            self.count += 1
            call.add_done_callback(self._end)
        return await continuation(handler_call_details)

    def _end(self, _call: object) -> None:
        self.count -= 1
