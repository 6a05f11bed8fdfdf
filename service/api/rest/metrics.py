"""attnserve_requests_total and attnserve_request_duration_seconds for the HTTP port, as the
gRPC port's metrics interceptor records them: operators see both transports in one series.

The method label is the route's method and path template (`POST /v2/models/{name}/infer`), a
fixed set; a path no route serves counts as "other", so no caller can add series. The code
label is the gRPC status name the HTTP status stands for (service.api.rest.calls). Health
checks are not counted, as on gRPC. A pure ASGI middleware, not Starlette's BaseHTTPMiddleware:
the route runs in the same task, so the servicer's model label reaches the measured call.
"""

from __future__ import annotations

import asyncio

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.interceptors.metrics import OTHER_METHOD, MeasuredCall
from service.api.rest.auth import HEALTH_PATHS
from service.api.rest.calls import HTTP_STATUS, STREAM_STATUS
from service.metrics import ServerMetrics

# HTTP status -> the gRPC status name counted. INTERNAL and UNKNOWN both answer 500: 500 counts
# as INTERNAL. Statuses Starlette or uvicorn answer on their own get their nearest gRPC name.
STATUS_NAME = {
    **{http: name for name, http in reversed(HTTP_STATUS.items())},
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
}


def status_name(http_status: int) -> str:
    """The gRPC status name counted for an HTTP status."""
    if http_status in STATUS_NAME:
        return STATUS_NAME[http_status]
    if 200 <= http_status < 300:
        return "OK"
    return "INVALID_ARGUMENT" if http_status < 500 else "INTERNAL"


class MetricsMiddleware:
    """Measures every HTTP request but health checks, from its start to its last body byte (a
    token stream is measured to its end)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _method(self, scope: Scope) -> str:
        for route in self.routes:
            if route.matches(scope)[0] is Match.FULL:
                return f"{scope['method']} {getattr(route, 'path', OTHER_METHOD)}"
        return OTHER_METHOD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(HEALTH_PATHS):
            await self.app(scope, receive, send)
            return
        call = MeasuredCall(self.metrics, self._method(scope))
        code = "INTERNAL"  # no response started: the app failed before answering
        started = finished = False

        async def measured_send(message: Message) -> None:
            nonlocal code, started, finished
            if message["type"] == "http.response.start":
                code, started = status_name(message["status"]), True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # counted before the last bytes leave: a client that has its answer sees it;
                # a stream that ended on an error event, under that error's status
                call.finish(scope.get(STREAM_STATUS, code))
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, measured_send)
        except (asyncio.CancelledError, OSError):
            code = "CANCELLED"  # the client went away
            raise
        finally:
            if not finished:
                # an answer begun but never ended: the client went away mid-stream (Starlette
                # stops the stream and returns)
                call.finish("CANCELLED" if started else code)
