"""Proto messages <-> engine types. Pure data mapping: no validation beyond field presence,
no grpc context, so the KServe servicer can reuse the parameter mapping."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service.engine.types import (
    Attribution,
    GenerationParams,
    GenerationRequest,
    GenerationResult,
    SourceSpan,
    TokenDelta,
)
from service.runtime.tasks import Task

if TYPE_CHECKING:
    from service.engine.served_model import (
        ModelInfo,  # type only: service.api never loads the runtime
    )


_PARAM_NAMES = tuple(f.name for f in fields(GenerationParams))


def params_from_proto(message: pb.GenerationParams) -> GenerationParams:
    """Set proto3 optional fields become values; unset ones stay None (the model's default)."""
    return GenerationParams(
        **{name: getattr(message, name) for name in _PARAM_NAMES if message.HasField(name)}
    )


def summarize_request(message: pb.SummarizeRequest, deadline: float | None) -> GenerationRequest:
    return GenerationRequest(
        model=message.model,
        task=Task.SUMMARIZATION,
        text=message.text,
        params=params_from_proto(message.params),
        version=message.version,
        deadline=deadline,
    )


def caption_request(message: pb.CaptionRequest, deadline: float | None) -> GenerationRequest:
    return GenerationRequest(
        model=message.model,
        task=Task.CAPTIONING,
        image=message.image,
        prompt=message.prompt,
        params=params_from_proto(message.params),
        version=message.version,
        deadline=deadline,
    )


def _result_summary(result: GenerationResult) -> dict[str, Any]:
    """The fields a unary response and a stream's last chunk share."""
    return {
        "model": result.model,
        "model_version": result.model_version,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "finish_reason": result.finish_reason,
        "truncated": result.truncated,
    }


def _span_to_proto(span: SourceSpan) -> pb.SourceSpan:
    return pb.SourceSpan(start=span.start, end=span.end, text=span.text, weight=span.weight)


def attribution_to_proto(attribution: Attribution | None) -> pb.Attribution | None:
    if attribution is None:
        return None
    return pb.Attribution(
        reduction=attribution.reduction,
        grid_rows=attribution.grid_rows,
        grid_cols=attribution.grid_cols,
        source_tokens=[_span_to_proto(span) for span in attribution.source_tokens],
        tokens=[
            pb.TokenAttribution(
                token_id=token.token_id,
                token_text=token.token_text,
                top_spans=[_span_to_proto(span) for span in token.top_spans],
                weights=token.weights,
            )
            for token in attribution.tokens
        ],
    )


def response_from_result(result: GenerationResult) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        text=result.text,
        token_ids=result.token_ids,
        attribution=attribution_to_proto(result.attribution),
        **_result_summary(result),
    )


def chunk_from_delta(delta: TokenDelta) -> pb.GenerateChunk:
    return pb.GenerateChunk(
        text_delta=delta.text,
        token_ids=delta.token_ids,
        attribution=attribution_to_proto(delta.attribution),
    )


def final_chunk(result: GenerationResult) -> pb.GenerateChunk:
    """The stream's last chunk: no new text (the deltas carried it all), the final fields."""
    return pb.GenerateChunk(**_result_summary(result))


def model_info_to_proto(info: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=info.name,
        version=info.version,
        task=info.task,
        architecture=info.architecture,
        dtype=info.dtype,
        provider=info.provider,
        is_default=info.is_default,
        max_input_tokens=info.max_input_tokens,
    )
