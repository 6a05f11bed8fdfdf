"""Rebuilding a gRPC method handler around a wrapped behaviour, for our server interceptors.

A grpc.aio server interceptor sees what an RPC receives and how it ends only by replacing the
handler's behaviour; the handler must then be rebuilt with the factory of its kind and its
(de)serializers. That rebuilding lives here, once, for every interceptor, and so does the
common prologue (`HandlerInterceptor`: resolve the handler, leave unknown methods alone).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

Behavior = Callable[..., Any]
Wrap = Callable[[Behavior], Behavior]

_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def handler_factory(request_streaming: bool, response_streaming: bool) -> Callable[..., Any]:
    """The grpc handler factory for a method of this streaming kind."""
    kind = ("stream" if request_streaming else "unary") + "_"
    kind += "stream" if response_streaming else "unary"
    return _FACTORIES[kind]


def split_method(path: str) -> tuple[str, str]:
    """A method path's full service name and method name: "/pkg.Service/Method" ->
    ("pkg.Service", "Method")."""
    service, _, method = path.lstrip("/").rpartition("/")
    return service, method


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    wraps: Mapping[str, Wrap],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour replaced by `wraps[kind](behaviour)`, where kind is the
    handler's ("unary_unary", "unary_stream", "stream_unary" or "stream_stream"), and its
    request deserializer by `request_deserializer` if given; `handler` itself if `wraps` has
    nothing for its kind."""
    for kind, wrap in wraps.items():
        behavior = getattr(handler, kind)
        if behavior is not None:
            if kind.endswith("_stream"):
                behavior = _as_generator(behavior)
            return _FACTORIES[kind](
                wrap(behavior),
                request_deserializer=request_deserializer or handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that rebuilds the handlers of served methods: subclasses say how in
    `wrap(handler, method)`, where `method` is the full path "/pkg.Service/Method"."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED
            return handler
        return self.wrap(handler, handler_call_details.method)


def _as_generator(behavior: Behavior) -> Behavior:
    """A streaming behaviour as an async generator. grpc also lets one write its responses with
    `context.write` and return a coroutine (grpc's own health Watch does); the interceptors
    iterate what a behaviour returns, and failed such a method with "'async for' requires an
    object with __aiter__ method, got coroutine"."""
    if inspect.isasyncgenfunction(behavior):
        return behavior

    async def responses(*args: Any) -> AsyncIterator[Any]:
        result = behavior(*args)
        if inspect.isawaitable(result):
            await result  # it writes its responses itself
            return
        async for response in result:
            yield response

    return responses
