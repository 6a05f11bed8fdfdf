"""`--otlp-endpoint` on the HTTP port: a server span around every request but health checks,
child of the caller's W3C `traceparent` header (service.api.tracing). An ASGI middleware, so
that the span lasts until a streamed response's last event is sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.rest.auth import HEALTH_PATHS

if TYPE_CHECKING:
    from service.api.tracing import Tracing  # loaded only with --otlp-endpoint


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(HEALTH_PATHS):
            await self.app(scope, receive, send)
            return
        name = f"{scope['method']} {scope['path']}"
        carrier = dict(Headers(scope=scope).items())
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with self.tracing.server_span(name, carrier, **attributes) as span:

            async def send_recording_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, send_recording_status)
