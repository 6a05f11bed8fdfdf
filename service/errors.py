"""Every error a request can meet, and the one table mapping each to its gRPC status code.

The engine and runtime raise these plain exceptions (they never import grpc); the transport
turns them into status codes through `GRPC_STATUS` alone.
"""

from __future__ import annotations

import grpc


class ServeError(Exception):
    """Base of every error whose message is safe and useful to show the client."""


class InvalidArgument(ServeError):
    """The request itself is wrong: empty or too long text, bad image, parameter out of range."""


class NotFound(ServeError):
    """The request names a model (or version) the server does not have."""


class ResourceExhausted(ServeError):
    """The bounded queue is full; the client should back off and retry."""


class DeadlineExceeded(ServeError):
    """The request's deadline passed before or while it ran."""


class Cancelled(ServeError):
    """The client went away; its rows were freed."""


class Unavailable(ServeError):
    """The server is loading or draining and takes no new work."""


class Unauthenticated(ServeError):
    """No credentials were sent where they are required."""


class PermissionDenied(ServeError):
    """Credentials were sent but are not accepted."""


GRPC_STATUS: dict[type[ServeError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Cancelled: grpc.StatusCode.CANCELLED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The status code for an error; anything not a ServeError is a server fault (INTERNAL)."""
    for error_type in type(error).__mro__:
        if error_type in GRPC_STATUS:
            return GRPC_STATUS[error_type]
    return grpc.StatusCode.INTERNAL
