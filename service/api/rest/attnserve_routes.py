"""Our own API as JSON over HTTP, answered by the gRPC AttentionService servicer.

Bodies are the proto3 JSON mapping of attnserve.proto's messages (field names as in the proto,
bytes as base64), as grpc-gateway and `grpcurl -d` write them: `POST /v1/summarize` takes a
SummarizeRequest and answers a GenerateResponse; `/v1/summarize/stream` answers server-sent
events, one GenerateChunk each; the same for `/v1/caption`; `GET /v1/models` lists models.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service.api.rest.calls import RestCall, RestError
from service.api.rest.handlers import (
    Handler,
    RequestLog,
    answers_errors,
    event_stream,
    message_json,
    read_json,
    while_connected,
)
from service.api.servicer import AttentionServicer


def attnserve_routes(
    attention: AttentionServicer, body_limit: int, log_request: RequestLog
) -> list[Route]:
    """The routes, answering with `attention`; bodies are bounded by `body_limit` bytes, and
    each request message goes to `log_request`."""

    async def parse(request: Request, message_type: type[Message]) -> Message:
        body = await read_json(request, body_limit)
        _check_base64(body, message_type)
        try:
            message = json_format.ParseDict(body, message_type())
        except json_format.ParseError as error:
            raise RestError("INVALID_ARGUMENT", str(error)) from None
        log_request(request, message)
        return message

    def unary(method: Callable[..., Awaitable[Message]], message_type: type[Message]) -> Handler:
        @answers_errors
        async def handle(request: Request) -> Response:
            message = await parse(request, message_type)
            answer = await while_connected(request, method(message, RestCall()))
            return JSONResponse(message_json(answer))

        return handle

    def stream(
        method: Callable[..., AsyncIterator[Message]], message_type: type[Message]
    ) -> Handler:
        async def chunks(message: Message) -> AsyncIterator[dict[str, Any]]:
            async with aclosing(method(message, RestCall())) as answers:
                async for chunk in answers:
                    yield message_json(chunk, defaults=False)  # a delta: only what is set

        @answers_errors
        async def handle(request: Request) -> Response:
            return await event_stream(request, chunks(await parse(request, message_type)))

        return handle

    @answers_errors
    async def list_models(request: Request) -> Response:
        message = pb.ListModelsRequest(task=request.query_params.get("task", ""))
        return JSONResponse(message_json(await attention.ListModels(message, RestCall())))

    return [
        Route("/v1/models", list_models),
        Route("/v1/summarize", unary(attention.Summarize, pb.SummarizeRequest), methods=["POST"]),
        Route(
            "/v1/summarize/stream",
            stream(attention.SummarizeStream, pb.SummarizeRequest),
            methods=["POST"],
        ),
        Route("/v1/caption", unary(attention.Caption, pb.CaptionRequest), methods=["POST"]),
        Route(
            "/v1/caption/stream",
            stream(attention.CaptionStream, pb.CaptionRequest),
            methods=["POST"],
        ),
    ]


_BASE64 = re.compile(r"[A-Za-z0-9+/_\s-]*(=\s*){0,2}")  # line breaks allowed (base64 without -w0)


def _check_base64(body: dict[str, Any], message_type: type[Message]) -> None:
    """Bytes fields (an image) must be base64: protobuf's JSON parser skips characters outside
    the alphabet, so `"image": "!!!"` was read as no image at all ("image is empty")."""
    for field in message_type.DESCRIPTOR.fields:
        value = body.get(field.name, body.get(field.json_name))
        text = value.strip() if isinstance(value, str) else ""
        if field.type == field.TYPE_BYTES and text and not _BASE64.fullmatch(text):
            raise RestError(
                "INVALID_ARGUMENT",
                f"{field.name} is not base64 (standard or URL-safe alphabet, as the proto3 JSON "
                "mapping writes bytes)",
            )
