"""`--otlp-endpoint`: a server span around every RPC but health checks, child of the caller's
W3C `traceparent` metadata (service.api.tracing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any

import grpc
from grpc_health.v1 import health

from service.api.interceptors.handlers import HandlerInterceptor, split_method, wrap_handler
from service.api.tracing import Tracing

UNTRACED_SERVICES = frozenset({health.SERVICE_NAME})


def _carrier(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's text metadata, where the propagator looks for `traceparent`."""
    metadata = context.invocation_metadata() or ()
    return {key: value for key, value in metadata if isinstance(value, str)}


def _traced_unary(
    tracing: Tracing, method: str, behavior: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with tracing.server_span(method, _carrier(context), **{"rpc.system": "grpc"}):
            return await behavior(request, context)

    return traced


def _traced_stream(
    tracing: Tracing, method: str, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with tracing.server_span(method, _carrier(context), **{"rpc.system": "grpc"}):
            async with aclosing(behavior(request, context)) as messages:
                async for message in messages:
                    yield message

    return traced


class TracingInterceptor(HandlerInterceptor):
    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if split_method(method)[0] in UNTRACED_SERVICES:
            return handler
        name = method.lstrip("/")
        trace_stream = partial(_traced_stream, self._tracing, name)
        return wrap_handler(
            handler,
            {
                "unary_unary": partial(_traced_unary, self._tracing, name),
                "unary_stream": trace_stream,
                "stream_stream": trace_stream,
            },
        )
