"""Counts every RPC by method and final status code, and times it, for ServerMetrics.

A grpc.aio interceptor only sees the final status by wrapping the method handler itself: the
code comes from the servicer context after a normal return or an abort, from the cancellation
when the client went away or its deadline passed, and is UNKNOWN for an unhandled exception (what
grpc then answers). The model labels come from the servicer, which calls `label_rpc_model` once
it knows which model answers; until then (or for RPCs not about one model) they stay empty.
Health checks are not counted: kubelet probes would drown the traffic. The method label takes
its value from a fixed set (the methods the server serves, else "other"), so that no caller,
authenticated or not, can add series by calling made-up method names.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
from grpc_health.v1 import health

from service.api.interceptors.handlers import HandlerInterceptor, split_method, wrap_handler
from service.metrics import ServerMetrics

UNMEASURED_SERVICES = frozenset({health.SERVICE_NAME})
OTHER_METHOD = "other"  # the method label of every call to a method the server does not serve


@dataclass
class _RpcModel:
    """The model labels of the RPC running in the current task."""

    model: str = ""
    version: str = ""


# Each RPC runs in its own asyncio task, hence its own context: the value never leaks between RPCs.
_current_rpc_model: ContextVar[_RpcModel | None] = ContextVar("attnserve_rpc_model", default=None)


def label_rpc_model(model: str, version: str) -> None:
    """Label the current RPC's metrics with the model that answers it (no-op outside an RPC)."""
    labels = _current_rpc_model.get()
    if labels is not None:
        labels.model, labels.version = model, version


def drop_frame_locals(error: BaseException) -> None:
    """Clear the local variables of the finished frames in `error`'s tracebacks (its context and
    cause included). grpc keeps an RPC's last error after the RPC ends (until another RPC
    replaces it), and its frames would keep their requests alive: a refused 20 MiB text kept
    40 MiB resident. The tracebacks stay printable."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status code the client receives for an RPC that returned or raised `error`."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    if error is None or isinstance(error, grpc.aio.AbortError):
        code = context.code()
        if code is not None:
            return code
        return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.UNKNOWN


class MeasuredCall:
    """One call being measured (an RPC, or a request on the HTTP port): started now, recorded
    once when it ends. The servicer labels it with its model through label_rpc_model."""

    def __init__(self, metrics: ServerMetrics, method: str) -> None:
        self._metrics = metrics
        self._method = method
        self._labels = _RpcModel()
        _current_rpc_model.set(self._labels)
        self._started = time.perf_counter()

    def finish(self, code: str) -> None:
        """The call ended with the status code named `code` (e.g. "OK")."""
        self._metrics.request_finished(
            self._labels.model,
            self._labels.version,
            self._method,
            code,
            time.perf_counter() - self._started,
        )


def _measure_unary(
    metrics: ServerMetrics, method: str, behavior: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
        rpc = MeasuredCall(metrics, method)
        try:
            response = await behavior(request, context)
        except BaseException as error:
            rpc.finish(_final_code(context, error).name)
            del request  # grpc keeps the error: its traceback must not pin the request
            drop_frame_locals(error)
            raise
        rpc.finish(_final_code(context, None).name)
        return response

    return measured


def _measure_stream(
    metrics: ServerMetrics, method: str, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def measured(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        rpc = MeasuredCall(metrics, method)
        try:
            # aclosing: if grpc stops this stream early, the servicer's stream is closed at once
            # (freeing its engine rows), not whenever it is garbage-collected.
            async with aclosing(behavior(request, context)) as messages:
                async for message in messages:
                    yield message
        except BaseException as error:
            rpc.finish(_final_code(context, error).name)
            del request  # as for unary RPCs
            drop_frame_locals(error)
            raise
        rpc.finish(_final_code(context, None).name)

    return measured


class MetricsInterceptor(HandlerInterceptor):
    """Records attnserve_requests_total and attnserve_request_duration_seconds for the RPCs of
    every service but health (unary, server-streaming, and bidirectional like KServe's
    ModelStreamInfer)."""

    def __init__(self, metrics: ServerMetrics, served_methods: frozenset[str]) -> None:
        """`served_methods`: the method names (e.g. "Summarize") that get their own label."""
        self._metrics = metrics
        self._served_methods = served_methods

    def wrap(self, handler: grpc.RpcMethodHandler, path: str) -> grpc.RpcMethodHandler:
        service, method = split_method(path)
        if service in UNMEASURED_SERVICES:
            return handler
        if method not in self._served_methods:
            method = OTHER_METHOD
        measure_stream = partial(_measure_stream, self._metrics, method)
        return wrap_handler(
            handler,
            {
                "unary_unary": partial(_measure_unary, self._metrics, method),
                "unary_stream": measure_stream,
                "stream_stream": measure_stream,  # the request iterator passes through as is
            },
        )
