"""The Open Inference Protocol's REST routes (KServe v2, as Triton serves them), answered by
the gRPC KServeServicer: health, metadata, model config, infer (JSON and Triton's binary-tensor
extension), and Triton's generate extension (`generate`, and `generate_stream` as server-sent
events, one per token chunk)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service._pb import grpc_service_pb2 as pb
from service.api import kserve_stream
from service.api.kserve import KServeServicer, unserved_message
from service.api.kserve_tensors import decode_raw_bytes
from service.api.rest import v2_json
from service.api.rest.calls import RestCall, RestError
from service.api.rest.handlers import (
    Handler,
    RequestLog,
    answers_errors,
    event_stream,
    message_json,
    read_body,
    read_json,
    while_connected,
)
from service.api.triton_parameters import StreamOptions

NOT_READY = 503
MODEL = "/v2/models/{name}"
MODEL_VERSION = "/v2/models/{name}/versions/{version}"
_GENERATE_KEYS = ("id", "parameters")  # every other key of a generate request is an input


def _model_of(request: Request) -> tuple[str, str]:
    return request.path_params["name"], request.path_params.get("version", "")


def _served_model_of(request: Request, kserve: KServeServicer) -> tuple[str, str]:
    """The path's model and version, found served (404 otherwise) before the body is read, as
    Triton answers an unknown model whatever its body holds."""
    name, version = _model_of(request)
    kserve.served_model(name, version)
    return name, version


def _generate_request(body: dict[str, Any], model: str, version: str) -> pb.ModelInferRequest:
    """Triton's generate extension: each key but `id` and `parameters` names an input and
    holds its text (or a list of texts)."""
    header = {key: body[key] for key in _GENERATE_KEYS if key in body}
    header["inputs"] = []
    for name, value in body.items():
        if name in _GENERATE_KEYS:
            continue
        data = value if isinstance(value, list) else [value]
        header["inputs"].append(
            {"name": name, "datatype": "BYTES", "shape": [len(data)], "data": data}
        )
    request, _ = v2_json.infer_request(header, b"", model, version)
    return request


def _generate_answer(response: pb.ModelInferResponse) -> dict[str, Any]:
    """Each output tensor under its name (a string for one element, else a list)."""
    answer: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        answer["id"] = response.id
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        texts = [element.decode("utf-8") for element in decode_raw_bytes(raw, tensor.name)]
        answer[tensor.name] = texts[0] if len(texts) == 1 else texts
    if response.parameters:
        answer["parameters"] = v2_json.parameters_to_json(response.parameters)
    return answer


def v2_routes(kserve: KServeServicer, body_limit: int, log_request: RequestLog) -> list[Route]:
    """The routes, answering with `kserve`; request bodies are bounded by `body_limit` bytes."""

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        answer = await kserve.ServerReady(pb.ServerReadyRequest(), RestCall())
        return JSONResponse({"ready": answer.ready}, status_code=200 if answer.ready else NOT_READY)

    async def server_metadata(request: Request) -> Response:
        answer = await kserve.ServerMetadata(pb.ServerMetadataRequest(), RestCall())
        return JSONResponse(message_json(answer))

    @answers_errors
    async def model_metadata(request: Request) -> Response:
        name, version = _model_of(request)
        message = pb.ModelMetadataRequest(name=name, version=version)
        return JSONResponse(message_json(await kserve.ModelMetadata(message, RestCall())))

    @answers_errors
    async def model_ready(request: Request) -> Response:
        name, version = _model_of(request)
        message = pb.ModelReadyRequest(name=name, version=version)
        answer = await kserve.ModelReady(message, RestCall())
        return JSONResponse({"ready": answer.ready}, status_code=200 if answer.ready else NOT_READY)

    @answers_errors
    async def model_config(request: Request) -> Response:
        name, version = _model_of(request)
        message = pb.ModelConfigRequest(name=name, version=version)
        return JSONResponse(message_json((await kserve.ModelConfig(message, RestCall())).config))

    @answers_errors
    async def infer(request: Request) -> Response:
        model = _served_model_of(request, kserve)
        body = await read_body(request, body_limit)
        header, binary = v2_json.split_body(body, request.headers.get(v2_json.HEADER_LENGTH))
        message, output_format = v2_json.infer_request(header, binary, *model)
        log_request(request, message)
        answer = await while_connected(request, kserve.ModelInfer(message, RestCall()))
        answer_header, answer_binary = v2_json.infer_response(answer, output_format)
        header_bytes = json.dumps(answer_header, ensure_ascii=False).encode("utf-8")
        if not answer_binary:
            return Response(header_bytes, media_type="application/json")
        return Response(
            header_bytes + answer_binary,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header_bytes))},
        )

    @answers_errors
    async def generate(request: Request) -> Response:
        model = _served_model_of(request, kserve)
        message = _generate_request(await read_json(request, body_limit), *model)
        log_request(request, message)
        answer = await while_connected(request, kserve.ModelInfer(message, RestCall()))
        return JSONResponse(_generate_answer(answer))

    async def generate_events(message: pb.ModelInferRequest) -> AsyncIterator[dict[str, Any]]:
        info, infer_input, generations = await kserve.prepare(message, RestCall())
        responses = kserve_stream.token_responses(
            kserve.engine, message, info, generations, infer_input.shape, StreamOptions(True)
        )
        async with aclosing(responses):
            async for response in responses:
                yield _generate_answer(response.infer_response)

    @answers_errors
    async def generate_stream(request: Request) -> Response:
        model = _served_model_of(request, kserve)
        message = _generate_request(await read_json(request, body_limit), *model)
        log_request(request, message)
        return await event_stream(request, generate_events(message))

    routes = [
        *_unserved_routes(),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
    ]
    for prefix in (MODEL, MODEL_VERSION):
        routes += [
            Route(prefix, model_metadata),
            Route(prefix + "/ready", model_ready),
            Route(prefix + "/config", model_config),
            Route(prefix + "/infer", infer, methods=["POST"]),
            Route(prefix + "/generate", generate, methods=["POST"]),
            Route(prefix + "/generate_stream", generate_stream, methods=["POST"]),
        ]
    return routes


# The Triton HTTP extensions behind the gRPC methods we answer UNIMPLEMENTED, by path: first in
# the route list, so that /v2/models/stats is not read as a model named "stats".
_UNSERVED_PATHS = {
    "ModelStatistics": ["/v2/models/stats", MODEL + "/stats", MODEL_VERSION + "/stats"],
    "RepositoryIndex": ["/v2/repository/index"],
    "RepositoryModelLoad": ["/v2/repository/models/{name}/load"],
    "RepositoryModelUnload": ["/v2/repository/models/{name}/unload"],
    "SystemSharedMemory": ["/v2/systemsharedmemory/{action:path}"],
    "CudaSharedMemory": ["/v2/cudasharedmemory/{action:path}"],
    "TraceSetting": ["/v2/trace/setting", MODEL + "/trace/setting"],
    "LogSettings": ["/v2/logging"],
}


def _unserved_routes() -> list[Route]:
    """501 with the gRPC port's message, where Triton serves an extension and we do not
    (tritonclient.http's load_model, get_inference_statistics, ...): they were 404s."""

    def answer(method: str) -> Handler:
        async def unimplemented(request: Request) -> Response:
            return RestError("UNIMPLEMENTED", unserved_message(method)).response()

        return unimplemented

    return [
        Route(path, answer(method), methods=["GET", "POST"])
        for method, paths in _UNSERVED_PATHS.items()
        for path in paths
    ]
