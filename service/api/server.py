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
from grpc_reflection.v1alpha import reflection

from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from service.api import kserve
from service.api.health import HealthState
from service.api.servicer import SERVICE_NAME, AttentionServicer
from service.config import ServerSettings, SettingsError, settings_from_args

if TYPE_CHECKING:
    import argparse

    from service.engine.engine import Engine

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0  # after the engine drained: time for the last responses to go out
_MESSAGE_SLACK_BYTES = 1 << 20  # room for the request's other fields around the largest image


class AttnserveServer:
    """A grpc.aio server with AttentionService, health and reflection, and its engine."""

    def __init__(self, settings: ServerSettings, address: str) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self.attention = AttentionServicer()
        self.health = HealthState([SERVICE_NAME, kserve.SERVICE_NAME])
        self.grpc_server = grpc.aio.server(
            options=[
                # Larger than any accepted image, so an oversized one reaches the engine's check
                # and gets INVALID_ARGUMENT with the limit instead of a transport error.
                (
                    "grpc.max_receive_message_length",
                    settings.engine.max_image_bytes + _MESSAGE_SLACK_BYTES,
                ),
                ("grpc.so_reuseport", 0),  # a second server on a busy port fails loudly
            ]
        )
        pb_grpc.add_AttentionServiceServicer_to_server(self.attention, self.grpc_server)
        self.kserve = kserve.add_kserve_servicer(self.grpc_server)
        self.health.add_to_server(self.grpc_server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, kserve.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self.grpc_server,
        )
        self.port = self.grpc_server.add_insecure_port(address)

    async def start(self) -> None:
        """Listen; every service reports NOT_SERVING until `serve` is called."""
        await self.health.set_loading()
        await self.grpc_server.start()

    async def serve(self, engine: Engine) -> None:
        """Start the engine and answer requests with it; health turns SERVING."""
        await engine.start()
        self.engine = engine
        self.attention.attach(engine)
        self.kserve.attach(engine)
        await self.health.set_serving()

    async def drain_and_stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new work, finish running work, stop."""
        await self.health.enter_graceful_shutdown()
        if self.engine is not None:
            drain_seconds = self.settings.drain_seconds
            try:
                await asyncio.wait_for(self.engine.stop(drain=True), drain_seconds)
            except TimeoutError:
                log.warning("requests still running after %.0f s; stopping them", drain_seconds)
                await self.engine.stop(drain=False)
        await self.grpc_server.stop(STOP_GRACE_SECONDS)


async def create_server(
    settings: ServerSettings, engine: Engine | None, address: str
) -> tuple[AttnserveServer, int]:
    """A started server on `address` and its bound port; serving `engine` if given (else call
    `serve(engine)` once loaded)."""
    server = AttnserveServer(settings, address)
    await server.start()
    if engine is not None:
        await server.serve(engine)
    return server, server.port


def _load_engine(settings: ServerSettings) -> Engine:
    from service.engine.engine import Engine  # keeps onnxruntime out of service.api's imports

    return Engine.load(settings.models, settings.engine)


def _log_models(engine: Engine) -> None:
    for info in engine.models():
        default = " [default]" if info.is_default else ""
        log.info(
            "serving %s v%s (%s, %s, %s, %s)%s",
            *(info.name, info.version, info.task, info.architecture, info.dtype, info.provider),
            default,
        )


async def _serve(settings: ServerSettings) -> int:
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)

    server, port = await create_server(settings, None, settings.address)
    log.info("listening on %s:%d; loading models from %s", settings.host, port, settings.models)
    loading = asyncio.ensure_future(asyncio.to_thread(_load_engine, settings))
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
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        log.error("bad setting: %s", exc)
        return 2
    return asyncio.run(_serve(settings))
