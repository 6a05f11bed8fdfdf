"""Optional bearer-token check on every RPC, as a grpc.aio server interceptor.

A client sends `authorization: Bearer <token>` metadata. No bearer token is UNAUTHENTICATED, a
token not in the tokens file is PERMISSION_DENIED (codes from service.errors' table). Health and
reflection may stay open, so that probes and `grpcurl list` need no secret. Tokens are compared
as SHA-256 digests with `hmac.compare_digest` against every accepted token, so the time taken
says nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from service.api.interceptors.handlers import handler_factory, split_method
from service.api.status import abort_with
from service.config import SecuritySettings, SettingsError
from service.errors import PermissionDenied, ServeError, Unauthenticated

AUTHORIZATION = "authorization"
BEARER = "bearer "  # the scheme is case-insensitive (RFC 7235)


def load_tokens(path: Path) -> list[str]:
    """The tokens in `path`: one a line; blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read auth_tokens_file {str(path)!r}: {exc}") from exc
    tokens = [line.strip() for line in lines]
    tokens = [token for token in tokens if token and not token.startswith("#")]
    if not tokens:
        raise SettingsError(f"auth_tokens_file {str(path)!r} holds no tokens")
    return tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the first `authorization: Bearer ...` entry, None if there is none."""
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str):
            if value[: len(BEARER)].lower() == BEARER:
                return value[len(BEARER) :].strip() or None
            return None
    return None


def _refusing_handler(
    handler: grpc.RpcMethodHandler | None, error: ServeError
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers `error` without reading the request
    (unary for an unknown method, so an unauthenticated caller cannot probe which exist)."""

    async def refuse(request_or_iterator: object, context: grpc.aio.ServicerContext) -> None:
        await abort_with(context, error)

    async def refuse_stream(
        request_or_iterator: object, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        await abort_with(context, error)
        yield  # never reached: makes this an async generator, as streaming handlers are

    if handler is None:
        return handler_factory(False, False)(refuse)
    factory = handler_factory(handler.request_streaming, handler.response_streaming)
    return factory(refuse_stream if handler.response_streaming else refuse)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Lets an RPC through only with an accepted bearer token, except to `open_services`."""

    def __init__(self, tokens: Iterable[str], open_services: Iterable[str] = ()) -> None:
        self._digests = [_digest(token) for token in tokens]
        if not self._digests:
            raise ValueError("a token check needs at least one token")
        self._open_services = frozenset(open_services)

    def refusal(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> ServeError | None:
        """Why a call with this metadata is refused; None if its token is accepted."""
        token = _bearer_token(metadata)
        if token is None:
            return Unauthenticated(
                "this server needs a bearer token: send 'authorization: Bearer <token>' "
                "(gRPC metadata or HTTP header)"
            )
        presented = _digest(token)
        accepted = False
        for digest in self._digests:  # no early exit: every call compares against all tokens
            accepted |= hmac.compare_digest(digest, presented)
        return None if accepted else PermissionDenied("the bearer token is not accepted")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        service, _ = split_method(handler_call_details.method)
        if service in self._open_services:
            return await continuation(handler_call_details)
        error = self.refusal(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        return handler if error is None else _refusing_handler(handler, error)


def token_interceptor(security: SecuritySettings) -> BearerTokenInterceptor | None:
    """The token check `security` asks for; None when no tokens file is set."""
    if security.auth_tokens_file is None:
        return None
    open_services = []
    if security.auth_open_health:
        open_services.append(health.SERVICE_NAME)
    if security.auth_open_reflection:
        open_services.append(reflection.SERVICE_NAME)
    return BearerTokenInterceptor(load_tokens(security.auth_tokens_file), open_services)
