"""Undecodable request messages (invalid UTF-8 in a string field, truncated or garbage bytes)
are the client's error: INVALID_ARGUMENT, not the UNKNOWN grpc answers when a deserializer raises.
So are messages with more fields than any request needs (service.api.wire_fields), refused
before parsing makes an object of each.

The handler's deserializer is wrapped so that a message that cannot be parsed becomes an
`Undecodable` marker instead of an exception, and the wrapped behaviour aborts on it before the
servicer sees anything. Streaming requests are checked message by message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor

from service.api.interceptors.handlers import HandlerInterceptor, wrap_handler
from service.api.wire_fields import TooManyFields, check_field_count


class Undecodable:
    """A request message that could not be parsed, and why."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def message(self) -> str:
        if isinstance(self.error, TooManyFields):
            return str(self.error)
        return f"the request message could not be decoded: {self.error}"


def _guarded_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    # a generated handler's deserializer is its request class's FromString (a classmethod
    # under protobuf's upb and C++ backends; under the pure-Python one nothing is counted)
    message_class = getattr(deserialize, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)

    def guarded(data: bytes) -> Any:
        if deserialize is None:
            return data
        try:
            if isinstance(descriptor, Descriptor):
                check_field_count(data, descriptor)
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, and anything a parser may raise
            return Undecodable(exc)

    return guarded


async def _refuse(context: grpc.aio.ServicerContext, request: Undecodable) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())


def _unary_request(behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await _refuse(context, request)
        return await behavior(request, context)

    return checked


def _unary_request_stream(behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await _refuse(context, request)
        async for response in behavior(request, context):
            yield response

    return checked


def _checked_requests(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    async def checked() -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await _refuse(context, request)
            yield request

    return checked()


def _request_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return behavior(_checked_requests(requests, context), context)

    return checked


class DecodeGuardInterceptor(HandlerInterceptor):
    """Answers INVALID_ARGUMENT for request messages that cannot be decoded."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return wrap_handler(
            handler,
            {
                "unary_unary": _unary_request,
                "unary_stream": _unary_request_stream,
                "stream_unary": _request_stream,
                "stream_stream": _request_stream,
            },
            _guarded_deserializer(handler.request_deserializer),
        )
