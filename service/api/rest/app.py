"""The Starlette application of the HTTP port: the v2 and attnserve routes behind the token
check, both answered by the gRPC server's own servicers (and so by its engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.api.interceptors.auth import token_interceptor
from service.api.kserve import KServeServicer
from service.api.rest.attnserve_routes import attnserve_routes
from service.api.rest.auth import HEALTH_PATHS, BearerTokenMiddleware
from service.api.rest.handlers import request_log
from service.api.rest.metrics import MetricsMiddleware
from service.api.rest.tracing import TracingMiddleware
from service.api.rest.v2_routes import v2_routes
from service.api.servicer import AttentionServicer
from service.config import ServerSettings
from service.metrics import ServerMetrics

if TYPE_CHECKING:
    from service.api.tracing import Tracing  # loaded only with --otlp-endpoint


def build_app(
    settings: ServerSettings,
    attention: AttentionServicer,
    kserve: KServeServicer,
    metrics: ServerMetrics,
    tracing: Tracing | None = None,
) -> Starlette:
    body_limit = settings.receive_limit_bytes  # the gRPC port's message limit
    log_request = request_log(settings.log_requests)
    routes = [
        *v2_routes(kserve, body_limit, log_request),
        *attnserve_routes(attention, body_limit, log_request),
    ]
    # outermost first: a refused request is traced and counted too
    middleware = [Middleware(MetricsMiddleware, metrics=metrics, routes=routes)]
    if tracing is not None:
        middleware.append(Middleware(TracingMiddleware, tracing=tracing))
    check = token_interceptor(settings.security)
    if check is not None:
        open_prefixes = (HEALTH_PATHS,) if settings.security.auth_open_health else ()
        middleware.append(
            Middleware(BearerTokenMiddleware, check=check, open_prefixes=open_prefixes)
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
    )


async def _http_error(request: Request, error: HTTPException) -> Response:
    """Starlette's own refusals (no such route 404, wrong method 405) in the protocol's
    `{"error": ...}` form, like every other failure."""
    return JSONResponse(
        {"error": error.detail}, status_code=error.status_code, headers=error.headers
    )
