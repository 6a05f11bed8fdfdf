"""Every error a request can meet, each with the canonical status it stands for.

The engine and runtime raise these plain exceptions; `status` names the canonical status code
(the names gRPC uses), and the transports alone turn that name into their own code
(service.api.status for gRPC). Nothing here imports a transport.
"""

from __future__ import annotations


class ServeError(Exception):
    """Base of every error whose message is safe and useful to show the client."""

    status = "UNKNOWN"  # each subclass names its own


class InvalidArgument(ServeError):
    """The request itself is wrong: empty or too long text, bad image, parameter out of range."""

    status = "INVALID_ARGUMENT"


class NotFound(ServeError):
    """The request names a model (or version) the server does not have."""

    status = "NOT_FOUND"


class ResourceExhausted(ServeError):
    """The bounded queue is full; the client should back off and retry."""

    status = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ServeError):
    """The request's deadline passed before or while it ran."""

    status = "DEADLINE_EXCEEDED"


class Cancelled(ServeError):
    """The client went away; its rows were freed."""

    status = "CANCELLED"


class Unavailable(ServeError):
    """The server is loading or draining and takes no new work."""

    status = "UNAVAILABLE"


class Unauthenticated(ServeError):
    """No credentials were sent where they are required."""

    status = "UNAUTHENTICATED"


class PermissionDenied(ServeError):
    """Credentials were sent but are not accepted."""

    status = "PERMISSION_DENIED"


INTERNAL = "INTERNAL"


def status_name(error: BaseException) -> str:
    """The canonical status of an error; anything not a ServeError is a server fault."""
    return error.status if isinstance(error, ServeError) else INTERNAL
