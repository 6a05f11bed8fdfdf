"""One HTTP request, seen by our gRPC servicers as their call context; its failure as HTTP.

The REST routes answer through the very servicers the gRPC server uses (AttentionServicer,
KServeServicer), so both transports validate, resolve models and word their errors in one
place. A servicer (with service.api.status) asks its context for the time left before the
caller's deadline, whether the call already ended, and to abort with a status. `RestCall`
answers them for an HTTP request: `abort` raises `RestError`, which the app answers with the
HTTP status mirroring the gRPC code (the canonical names of service.errors).
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from starlette.responses import JSONResponse

# Canonical status name (service.errors, grpc.StatusCode) -> HTTP status.
HTTP_STATUS = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,  # the client closed the request (nginx's convention)
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# Scope key: the status a token stream ended with after its 200 went out (an `error` event), for
# the metrics middleware, which counts the request under it instead of OK.
STREAM_STATUS = "attnserve.stream_status"


class RestError(Exception):
    """A request that fails with the status `status` (a canonical name) and a client message."""

    def __init__(self, status: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(status, 500)

    def response(self) -> JSONResponse:
        """`{"error": message}`: the Open Inference Protocol's error body, which
        tritonclient.http raises as its exception's message."""
        return JSONResponse({"error": self.message}, status_code=self.http_status)


class RestCall:
    """The part of grpc.aio.ServicerContext our servicers use, for one HTTP request."""

    def time_remaining(self) -> float | None:
        """HTTP carries no deadline: the protocol's `timeout` parameter bounds a request."""
        return None

    def done(self) -> bool:
        """Whether the call already ended: an HTTP request still has its answer to get."""
        return False

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise RestError(code.name, details)
