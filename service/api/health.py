"""grpc.health.v1 status of each served service, following the server's life: NOT_SERVING while
the models load, SERVING once the engine runs, NOT_SERVING for good once draining starts, and
NOT_SERVING while the engine's step thread is stuck (a step running past --stall-seconds, or the
thread dead), so that liveness probes restart a hung server that still answers health checks.

Kubernetes probes and load balancers read this, so a draining pod stops getting traffic before
it stops answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Protocol

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

OVERALL = ""  # the empty service name: the server as a whole

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Stepping(Protocol):
    """What the step watch needs of the engine (service.engine.engine.Engine)."""

    def stalled_seconds(self, now: float) -> float: ...


class HealthState:
    """The health servicer plus the names it reports on (the overall server and each service)."""

    def __init__(self, service_names: Iterable[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self.service_names = (OVERALL, *service_names)

    def add_to_server(self, server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def set_loading(self) -> None:
        await self._set_all(_NOT_SERVING)

    async def set_serving(self) -> None:
        await self._set_all(_SERVING)

    async def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING from now on, whatever is set later."""
        await self.servicer.enter_graceful_shutdown()

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in self.service_names:
            await self.servicer.set(name, status)

    async def watch_steps(
        self, engine: Stepping, stall_seconds: float, interval_s: float = 1.0
    ) -> None:
        """NOT_SERVING while `engine`'s steps are stuck for `stall_seconds` or more, SERVING
        again once they move, until cancelled (after a drain began, nothing set here counts)."""
        stalled = False
        while True:
            await asyncio.sleep(interval_s)
            seconds = engine.stalled_seconds(time.monotonic())
            if seconds >= stall_seconds and not stalled:
                log.error(
                    "the decode step has not finished for %.0f s (--stall-seconds %.0f): health "
                    "is NOT_SERVING until steps move again; liveness probes restart the server",
                    seconds,
                    stall_seconds,
                )
                await self._set_all(_NOT_SERVING)
            elif seconds < stall_seconds and stalled:
                log.warning("decode steps move again: health is SERVING")
                await self._set_all(_SERVING)
            stalled = seconds >= stall_seconds
