"""Decoupled-style token streaming on ModelStreamInfer: one response per token chunk.

Triton's decoupled models (how its TRT-LLM and vLLM backends stream) answer one request with
several responses and mark the last with the `triton_final_response` parameter; clients
(tritonclient's `start_stream`/`async_stream_infer`, perf_analyzer, gateways) read that shape.
A request asks for it with the `stream: true` parameter (service.api.triton_parameters). Each
response carries the request's `id` (responses of concurrent requests interleave on a stream)
and a `text` tensor with the new text; the final response also carries the counts our API
reports (`finish_reason`, `input_tokens`, `output_tokens`, and `truncated` when the input was
cut), and no tensor at all when the
request set `triton_enable_empty_final_response`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING

from service._pb import grpc_service_pb2 as pb
from service.api import kserve_tensors as tensors
from service.api.triton_parameters import FINAL_RESPONSE, StreamOptions
from service.engine.types import GenerationRequest, GenerationResult, TokenDelta
from service.errors import InvalidArgument

if TYPE_CHECKING:
    from service.engine.engine import Engine, ModelInfo


def _response(
    request: pb.ModelInferRequest, info: ModelInfo, text: str | None, shape: list[int]
) -> pb.ModelInferResponse:
    """A response of the stream: with the `text` tensor holding `text`, or none if None."""
    response = pb.ModelInferResponse(
        model_name=info.name, model_version=info.version, id=request.id
    )
    if text is not None:
        output, raw = tensors.text_output([text], shape)
        response.outputs.append(output)
        response.raw_output_contents.append(raw)
    return response


def final_flag(response: pb.ModelInferResponse, final: bool) -> pb.ModelInferResponse:
    """Mark `response` as the last (or not the last) of its request, as Triton does."""
    response.parameters[FINAL_RESPONSE].bool_param = final
    return response


def _final(
    request: pb.ModelInferRequest,
    info: ModelInfo,
    result: GenerationResult,
    shape: list[int],
    options: StreamOptions,
) -> pb.ModelInferResponse:
    response = _response(request, info, None if options.empty_final_response else "", shape)
    response.parameters["finish_reason"].string_param = result.finish_reason
    response.parameters["input_tokens"].int64_param = result.input_tokens
    response.parameters["output_tokens"].int64_param = result.output_tokens
    if result.truncated:  # as the unary answer says it (service.api.kserve)
        response.parameters[tensors.TRUNCATED_PARAMETER].bool_param = True
    return final_flag(response, True)


async def token_responses(
    engine: Engine,
    request: pb.ModelInferRequest,
    info: ModelInfo,
    generations: list[GenerationRequest],
    shape: list[int],
    options: StreamOptions,
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """The responses of one `stream: true` request: a response per non-empty text delta, then
    the final one. A consumer that stops early cancels the generation (its rows are freed)."""
    if len(generations) != 1:
        raise InvalidArgument(
            f"parameter 'stream' needs an input of one element (shape [1] or [1,1]), got "
            f"{len(generations)}: send one request per text or image"
        )
    async with aclosing(engine.generate(generations[0])) as outputs:
        async for output in outputs:
            if isinstance(output, TokenDelta):
                if output.text:  # a partial character waits for the rest of its bytes
                    response = final_flag(_response(request, info, output.text, shape), False)
                    yield pb.ModelStreamInferResponse(infer_response=response)
            else:
                response = _final(request, info, output, shape, options)
                yield pb.ModelStreamInferResponse(infer_response=response)
