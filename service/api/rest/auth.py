"""The bearer-token check of the gRPC port, on the HTTP port: the same tokens file, the same
answers (401 without a bearer token, 403 for one not accepted), health left open as on gRPC.

An ASGI middleware rather than a check in each route, so that no route (and no unknown path: it
gets 401, not 404) can be reached without a token.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.interceptors.auth import AUTHORIZATION, BearerTokenInterceptor
from service.api.rest.calls import RestError

HEALTH_PATHS = "/v2/health/"


class BearerTokenMiddleware:
    """Lets a request through only with an accepted `Authorization: Bearer` header, except to
    paths starting with one of `open_prefixes`."""

    def __init__(
        self, app: ASGIApp, check: BearerTokenInterceptor, open_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.check = check
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.open_prefixes):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        metadata = [(AUTHORIZATION, value) for value in headers.getlist(AUTHORIZATION)]
        refusal = self.check.refusal(metadata)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        response = RestError(refusal.status, str(refusal)).response()
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
