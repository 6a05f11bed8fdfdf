"""The gRPC server (grpc.aio) and its life: loading -> serving -> draining -> stopped.

`create_server` builds it on any address (tests bind 127.0.0.1:0); `run_serve` is
`attnserve serve`: it answers health checks (NOT_SERVING) while the models load, serves, and on
SIGTERM/SIGINT drains: health NOT_SERVING, new requests refused with UNAVAILABLE, running ones
finish (up to --drain-seconds), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service._pb import grpc_service_pb2 as kserve_pb
from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from service.api import kserve
from service.api.health import HealthState
from service.api.interceptors.auth import load_tokens, token_interceptor
from service.api.interceptors.decode_guard import DecodeGuardInterceptor
from service.api.interceptors.metrics import MetricsInterceptor
from service.api.interceptors.request_log import request_log_interceptor
from service.api.metrics_http import start_metrics_server
from service.api.rest.app import build_app
from service.api.rest.server import RestServer
from service.api.servicer import SERVICE_NAME, AttentionServicer
from service.api.tls import bind_port
from service.api.upkeep import release_memory_periodically, watch_event_loop
from service.config import ServerSettings, SettingsError, settings_from_args
from service.metrics import ServerMetrics
from service.runtime.heap import freeze_heap
from service.runtime.memory import tune_allocator

if TYPE_CHECKING:
    import argparse

    from service.api.tracing import Tracing
    from service.engine.engine import Engine

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0  # after the drain's time: for the last responses to go out


class AttnserveServer:
    """A grpc.aio server with AttentionService, health and reflection, and its engine."""

    def __init__(self, settings: ServerSettings, address: str, metrics: ServerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine: Engine | None = None
        self._repository_watch: asyncio.Task | None = None  # --poll-seconds
        self._upkeep: list[asyncio.Task] = []  # event-loop lag, memory trimming, step watch
        self.attention = AttentionServicer()
        self.health = HealthState([SERVICE_NAME, kserve.SERVICE_NAME])
        self.tracing = _tracing(settings.otlp_endpoint)
        # Outermost first: every RPC is counted, refused ones included; only admitted ones logged.
        # Undecodable messages are refused innermost, so every outer one sees a parsed request.
        interceptors = (
            MetricsInterceptor(metrics, _served_method_names()),
            _tracing_interceptor(self.tracing),
            token_interceptor(settings.security),
            request_log_interceptor(settings.log_requests),
            DecodeGuardInterceptor(),
        )
        self.grpc_server = grpc.aio.server(
            interceptors=[i for i in interceptors if i is not None],
            options=[
                # By default larger than any accepted image, so an oversized one reaches the
                # engine's check and gets INVALID_ARGUMENT with the limit; above this limit
                # grpc itself answers RESOURCE_EXHAUSTED.
                ("grpc.max_receive_message_length", settings.receive_limit_bytes),
                ("grpc.so_reuseport", 0),  # a second server on a busy port fails loudly
            ],
        )
        pb_grpc.add_AttentionServiceServicer_to_server(self.attention, self.grpc_server)
        self.kserve = kserve.add_kserve_servicer(self.grpc_server)
        self.health.add_to_server(self.grpc_server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, kserve.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self.grpc_server,
        )
        self.port = bind_port(self.grpc_server, address, settings.security)
        self.rest: RestServer | None = None  # --http-port: the same servicers over HTTP
        if settings.http_port is not None:
            app = build_app(settings, self.attention, self.kserve, metrics, self.tracing)
            self.rest = RestServer(app, settings, settings.http_port)

    async def start(self) -> None:
        """Listen; every service reports NOT_SERVING until `serve` is called."""
        await self.health.set_loading()
        await self.grpc_server.start()
        if self.rest is not None:
            await self.rest.start()
        self._upkeep = [
            asyncio.ensure_future(watch_event_loop(self.metrics)),
            asyncio.ensure_future(release_memory_periodically()),
        ]

    async def serve(self, engine: Engine) -> None:
        """Start the engine and answer requests with it; health turns SERVING. With
        --poll-seconds, new model versions are swapped in as they appear."""
        await engine.start()
        self.engine = engine
        served = engine if self.tracing is None else _traced(engine, self.tracing)
        self.attention.attach(served)
        self.kserve.attach(served)
        if self.settings.poll_seconds > 0:
            watch = engine.watch_repository(self.settings.poll_seconds)
            self._repository_watch = asyncio.ensure_future(watch)
        await self.health.set_serving()
        if self.settings.stall_seconds > 0:
            steps = self.health.watch_steps(engine, self.settings.stall_seconds)
            self._upkeep.append(asyncio.ensure_future(steps))

    async def drain_and_stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new work, finish running work, stop.

        The gRPC port stops taking calls at once: its clients get GOAWAY and open their next
        calls elsewhere (a Service's ready pods; gRPC retries calls the server never took),
        instead of UNAVAILABLE from this pod for the whole drain; the calls it has keep
        running until the engine drained them (or the drain's time is up)."""
        await self.health.enter_graceful_shutdown()
        drain_seconds = self.settings.drain_seconds
        grpc_stopped = asyncio.ensure_future(
            self.grpc_server.stop(drain_seconds + STOP_GRACE_SECONDS)
        )
        if self._repository_watch is not None:
            self._repository_watch.cancel()
            await asyncio.gather(self._repository_watch, return_exceptions=True)
        try:
            if self.engine is not None:
                try:
                    await asyncio.wait_for(self.engine.stop(drain=True), drain_seconds)
                except TimeoutError:
                    log.warning("requests still running after %.0f s; stopping them", drain_seconds)
                    await self.engine.stop(drain=False)
        finally:
            # the engine is done: calls that outlive it (a health Watch, an idle KServe stream)
            # get the short grace, not what is left of the drain's
            await self.grpc_server.stop(STOP_GRACE_SECONDS)
            await grpc_stopped
        for task in self._upkeep:
            task.cancel()
        await asyncio.gather(*self._upkeep, return_exceptions=True)
        if self.rest is not None:
            await self.rest.stop()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # the last spans leave


def _served_method_names() -> frozenset[str]:
    """Every method of the services this server registers (their metric labels)."""
    services = (
        pb.DESCRIPTOR.services_by_name["AttentionService"],
        kserve_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    )
    return frozenset(method.name for service in services for method in service.methods)


def _tracing(endpoint: str | None) -> Tracing | None:
    """--otlp-endpoint's tracer; OpenTelemetry is imported only when it is set."""
    if endpoint is None:
        return None
    from service.api.tracing import Tracing

    return Tracing(endpoint)


def _tracing_interceptor(tracing: Tracing | None) -> grpc.aio.ServerInterceptor | None:
    if tracing is None:
        return None
    from service.api.interceptors.tracing import TracingInterceptor

    return TracingInterceptor(tracing)


def _traced(engine: Engine, tracing: Tracing) -> Engine:
    from service.api.tracing import TracedEngine

    return TracedEngine(engine, tracing)  # what the servicers use of an Engine, traced


async def create_server(
    settings: ServerSettings,
    engine: Engine | None,
    address: str,
    metrics: ServerMetrics | None = None,
) -> tuple[AttnserveServer, int]:
    """A started server on `address` and its bound port; serving `engine` if given (else call
    `serve(engine)` once loaded). Its RPCs are counted in `metrics` (give the engine's, so that
    one /metrics shows both; a private ServerMetrics if None)."""
    server = AttnserveServer(settings, address, metrics or ServerMetrics())
    await server.start()
    if engine is not None:
        await server.serve(engine)
    return server, server.port


def _load_engine(settings: ServerSettings, metrics: ServerMetrics) -> Engine:
    from service.engine.engine import Engine  # keeps onnxruntime out of service.api's imports

    return Engine.load(settings.models, settings.engine, metrics, settings.keep_versions)


def _log_models(engine: Engine) -> None:
    for info in engine.models():
        default = " [default]" if info.is_default else ""
        log.info(
            "serving %s v%s (%s, %s, %s, %s)%s",
            *(info.name, info.version, info.task, info.architecture, info.dtype, info.provider),
            default,
        )


async def _serve(settings: ServerSettings) -> int:
    """Serve /metrics for as long as the gRPC server runs."""
    metrics = ServerMetrics()
    security = settings.security
    host = settings.metrics_host or settings.host
    tls = (security.tls_cert, security.tls_key) if settings.metrics_tls else None
    try:
        tokens = load_tokens(security.auth_tokens_file) if settings.metrics_auth else None
        metrics_server, metrics_port = start_metrics_server(
            metrics, host, settings.metrics_port, tls, tokens
        )
    except (OSError, SettingsError) as exc:  # e.g. the port is taken
        log.error("cannot serve metrics on %s:%d: %s", host, settings.metrics_port, exc)
        return 1
    scheme = "https" if tls else "http"
    log.info("metrics on %s://%s:%d/metrics", scheme, host, metrics_port)
    try:
        return await _serve_grpc(settings, metrics)
    finally:
        metrics_server.shutdown()
        metrics_server.server_close()


async def _serve_grpc(settings: ServerSettings, metrics: ServerMetrics) -> int:
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)

    try:
        server, port = await create_server(settings, None, settings.address, metrics)
    except SettingsError as exc:  # a TLS or tokens file that cannot be used
        log.error("bad setting: %s", exc)
        return 2
    except OSError as exc:  # the gRPC or the HTTP port is taken
        log.error("cannot listen on %s", exc)
        return 1
    log.info("listening on %s:%d; loading models from %s", settings.host, port, settings.models)
    loading = asyncio.ensure_future(asyncio.to_thread(_load_engine, settings, metrics))
    stopping = asyncio.ensure_future(stop_requested.wait())
    await asyncio.wait((loading, stopping), return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        try:
            engine = loading.result()
        except (OSError, ValueError) as exc:  # missing files, bad manifests: the operator's to fix
            log.error("cannot load the models in %s: %s", settings.models, exc)
            await server.grpc_server.stop(0)
            return 1
        await server.serve(engine)
        frozen = freeze_heap()  # the process is this server's: its start-up heap can freeze
        log.info("%d start-up objects frozen out of the cyclic collector's reach", frozen)
        _log_models(engine)
        log.info("ready on port %d", port)
        await stopping
    log.info("stop requested: draining (up to %.0f s)", settings.drain_seconds)
    await server.drain_and_stop()
    log.info("stopped")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """`attnserve serve`: exit code 0 after a clean drain, 1 if the models fail to load,
    2 for bad settings."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tune_allocator()
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        log.error("bad setting: %s", exc)
        return 2
    return asyncio.run(_serve(settings))
