"""grpc.health.v1 status of each served service, following the server's life: NOT_SERVING while
the models load, SERVING once the engine runs, NOT_SERVING for good once draining starts.

Kubernetes probes and load balancers read this, so a draining pod stops getting traffic before
it stops answering.
"""

from __future__ import annotations

from collections.abc import Iterable

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

OVERALL = ""  # the empty service name: the server as a whole

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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
