"""`--log-requests`: log what each generation request asked for, for debugging only.

Requests carry users' texts and images, so nothing else in the server logs them; this
interceptor is installed only when the operator asks. Texts are clipped, bytes (images) are
logged by size alone, and health and reflection calls are not logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from service.api import kserve, servicer
from service.api.interceptors.handlers import HandlerInterceptor, split_method, wrap_handler

log = logging.getLogger(__name__)

LOGGED_SERVICES = frozenset({servicer.SERVICE_NAME, kserve.SERVICE_NAME})
TEXT_CLIP = 200  # characters of each string field that reach the log


def _describe_value(field: FieldDescriptor, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return "{" + describe_message(value) + "}"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"<{len(value)} bytes>"
    if field.type == FieldDescriptor.TYPE_STRING and len(value) > TEXT_CLIP:
        return repr(value[:TEXT_CLIP]) + f"...<{len(value)} chars>"
    return repr(value)


def describe_message(message: Message) -> str:
    """One line naming every set field; strings clipped, bytes as their length."""
    parts = []
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            items = (f"{k!r}: {_describe_value(value_field, v)}" for k, v in value.items())
            parts.append(f"{field.name}={{{', '.join(items)}}}")
        elif field.is_repeated:
            parts.append(f"{field.name}=[{', '.join(_describe_value(field, v) for v in value)}]")
        else:
            parts.append(f"{field.name}={_describe_value(field, value)}")
    return " ".join(parts)


def _log_request(method: str, context: grpc.aio.ServicerContext, request: Message) -> None:
    log.info("%s from %s: %s", method, context.peer(), describe_message(request))


def _logged_unary_unary(method: str, behavior: Callable[..., Awaitable[Any]]):
    async def logged(request: Message, context: grpc.aio.ServicerContext) -> Any:
        _log_request(method, context, request)
        return await behavior(request, context)

    return logged


def _logged_unary_stream(method: str, behavior: Callable[..., AsyncIterator[Any]]):
    async def logged(request: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _log_request(method, context, request)
        async with aclosing(behavior(request, context)) as responses:
            async for response in responses:
                yield response

    return logged


def _logged_stream_stream(method: str, behavior: Callable[..., AsyncIterator[Any]]):
    async def logged_requests(
        requests: AsyncIterator[Message], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Message]:
        async for request in requests:
            _log_request(method, context, request)
            yield request

    async def logged(
        requests: AsyncIterator[Message], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async with aclosing(behavior(logged_requests(requests, context), context)) as responses:
            async for response in responses:
                yield response

    return logged


class RequestLogInterceptor(HandlerInterceptor):
    """Logs each request message of AttentionService and the KServe API at INFO."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if split_method(method)[0] not in LOGGED_SERVICES:
            return handler
        return wrap_handler(
            handler,
            {
                "unary_unary": partial(_logged_unary_unary, method),
                "unary_stream": partial(_logged_unary_stream, method),
                "stream_stream": partial(_logged_stream_stream, method),
            },
        )


def request_log_interceptor(enabled: bool) -> RequestLogInterceptor | None:
    """The request logger when `--log-requests` is on; None (nothing logged) otherwise."""
    return RequestLogInterceptor() if enabled else None
