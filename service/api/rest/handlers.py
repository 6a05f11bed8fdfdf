"""What every REST route shares: reading a bounded body, answering failures with their HTTP
status, and framing a stream of events as server-sent events."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from functools import wraps
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from service.api.interceptors.request_log import describe_message
from service.api.interceptors.request_log import log as request_logger  # one log, both ports
from service.api.rest.calls import STREAM_STATUS, RestError
from service.api.rest.json_body import parse_json
from service.api.status import client_message
from service.errors import Cancelled, status_name

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")
PAYLOAD_TOO_LARGE = 413
REQUEST_TIMEOUT = 408
UNSUPPORTED_MEDIA_TYPE = 415
# Content-Encoding -> zlib's wbits for it: what tritonclient.http's request_compression_algorithm
# sends (gzip.compress, zlib.compress), as Triton accepts
DECODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# A body must keep coming (a chunk at least every BODY_IDLE_S) and be all there within
# BODY_TOTAL_S: uvicorn has no such limit, so a client announcing more bytes than it sent held
# its connection open for good. The total allows a 21 MB body at about 0.6 Mbit/s.
BODY_IDLE_S = 30.0
BODY_TOTAL_S = 300.0


def as_rest_error(error: Exception) -> RestError:
    """The RestError an exception stands for (a server fault: INTERNAL, logged, no details)."""
    if isinstance(error, RestError):
        return error
    return RestError(status_name(error), client_message(error))


def answers_errors(handler: Handler) -> Handler:
    """`handler`, with every failure answered as `{"error": ...}` and its HTTP status."""

    @wraps(handler)
    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as error:
            return as_rest_error(error).response()

    return handle


RequestLog = Callable[[Request, Message], None]


def request_log(enabled: bool) -> RequestLog:
    """`--log-requests` on the HTTP port: each generation request's message, described as the
    gRPC port's request log describes it (texts clipped, bytes by size); nothing when off."""

    def log_request(request: Request, message: Message) -> None:
        if enabled:
            client = request.client
            peer = f"{client.host}:{client.port}" if client else "unknown"
            request_logger.info(
                "%s %s from %s: %s",
                *(request.method, request.url.path, peer, describe_message(message)),
            )

    return log_request


def _too_large(limit_bytes: int, what: str = "the request body") -> RestError:
    return RestError(
        "RESOURCE_EXHAUSTED",
        f"{what} is larger than the {limit_bytes} bytes accepted",
        PAYLOAD_TOO_LARGE,
    )


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The request body, decompressed where its Content-Encoding is gzip or deflate; 413 beyond
    `limit_bytes` (the gRPC message limit) sent or decompressed, read no further; 415 for
    another encoding; 408 when it pauses for BODY_IDLE_S or takes more than BODY_TOTAL_S."""
    encoding = request.headers.get("content-encoding", "").strip().lower() or "identity"
    if encoding not in DECODINGS and encoding != "identity":
        raise RestError(
            "INVALID_ARGUMENT",
            f"Content-Encoding {encoding!r} is not supported (gzip, deflate or none)",
            UNSUPPORTED_MEDIA_TYPE,
        )
    body = await _read_raw_body(request, limit_bytes)
    if encoding == "identity":
        return body
    # off the event loop: inflating up to the limit takes a while
    return await asyncio.to_thread(_decompressed, body, encoding, limit_bytes)


def _decompressed(body: bytes, encoding: str, limit_bytes: int) -> bytes:
    """`body` inflated, at most `limit_bytes` of it (a small body can inflate to gigabytes)."""
    inflater = zlib.decompressobj(DECODINGS[encoding])
    try:
        data = inflater.decompress(body, limit_bytes + 1)
    except zlib.error as error:
        raise _not_valid(encoding, str(error)) from None
    if len(data) > limit_bytes:
        raise _too_large(limit_bytes, f"the request body decompressed ({encoding})")
    if not inflater.eof:
        raise _not_valid(encoding, "it is cut short")
    if inflater.unused_data:
        raise _not_valid(encoding, "bytes follow its end")
    return data


def _not_valid(encoding: str, why: str) -> RestError:
    return RestError("INVALID_ARGUMENT", f"the request body is not valid {encoding}: {why}")


async def _read_raw_body(request: Request, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = _too_large(limit_bytes)
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise too_large
    chunks = []
    size = 0
    loop = asyncio.get_running_loop()
    last = loop.time() + BODY_TOTAL_S
    try:
        async with asyncio.timeout(min(loop.time() + BODY_IDLE_S, last)) as timer:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit_bytes:
                    raise too_large
                chunks.append(chunk)
                timer.reschedule(min(loop.time() + BODY_IDLE_S, last))
    except ClientDisconnect:
        raise Cancelled("the client went away while sending its request") from None
    except TimeoutError:
        raise RestError(
            "DEADLINE_EXCEEDED",
            f"the request body stopped coming ({size} bytes came; a body must not pause for "
            f"{BODY_IDLE_S:.0f} s nor take more than {BODY_TOTAL_S:.0f} s)",
            REQUEST_TIMEOUT,
        ) from None
    return b"".join(chunks)


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, unless the client disconnects first: then `work` is cancelled (its
    request leaves the engine and frees its rows, as a gRPC call the client cancels does) and
    Cancelled raised. Until an answer's first byte is sent nothing else notices a client that
    left: a unary request, or a beam-search stream whose one event comes at the end, ran to its
    end for nobody."""
    answer = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()
            await asyncio.wait((answer,))
    if answer.cancelled() and gone.done() and not gone.cancelled():
        raise Cancelled("the client went away before its answer")
    return answer.result()


async def _disconnect(request: Request) -> None:
    """Returns when the client disconnects (the body is read by then: what comes next is the
    disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_json(request: Request, limit_bytes: int) -> dict[str, Any]:
    value = parse_json(await read_body(request, limit_bytes) or b"{}")
    if not isinstance(value, dict):
        raise RestError("INVALID_ARGUMENT", "the request body must be a JSON object")
    return value


def message_json(message: Message, defaults: bool = True) -> dict[str, Any]:
    """A message in the proto3 JSON mapping, with proto field names and plain numbers; fields
    at their default value (empty, zero) too unless `defaults` is False."""
    return json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=defaults,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )


def _event(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data, ensure_ascii=False) + "\n\n").encode("utf-8")


async def event_stream(request: Request, events: AsyncIterator[dict[str, Any]]) -> Response:
    """Server-sent events, one per item of `events`. A failure before the first event is an
    ordinary error response with its status; one after it, an `error` event that ends the
    stream (the status line is already sent), its status left in the request's scope for the
    metrics."""
    try:
        first = await while_connected(request, anext(events))
    except StopAsyncIteration:
        first = None
    except Exception as error:
        await events.aclose()
        return as_rest_error(error).response()

    async def frames() -> AsyncIterator[bytes]:
        async with aclosing(events):
            if first is None:
                return
            yield _event(first)
            try:
                async for item in events:
                    # a turn of the loop between writes: once a write finds the client gone,
                    # uvicorn hears of it (connection_lost) before the next, which it then drops;
                    # events of several steps written in one turn went on writing to a dead
                    # socket, and asyncio logged "socket.send() raised exception" for each
                    await asyncio.sleep(0)
                    yield _event(item)
            except Exception as error:
                failure = as_rest_error(error)
                request.scope[STREAM_STATUS] = failure.status
                yield _event({"error": failure.message, "status": failure.status}, "error")

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
