"""The request parameters Triton's clients send about the protocol rather than generation.

Unmodified clients put these in every request's `parameters` map: perf_analyzer (through
Triton's C++ client) always sends `triton_enable_empty_final_response`, tritonclient sends
`sequence_id`/`sequence_start`/`sequence_end` and `priority` when set, the HTTP client
`binary_data_output`. Triton reserves the `triton_` prefix for itself. A server speaking the
protocol must accept them all; which of them attnserve honours, and how, is decided here
(docs/kserve.md, "Parameters"):

- `stream` (bool): on ModelStreamInfer, one response per token chunk, decoupled-style
  (service.api.kserve_stream); on ModelInfer it is refused, since a unary call has one answer.
- `triton_enable_empty_final_response` (bool): with `stream`, the flagged final response
  carries no output tensor.
- `sequence_id`, `sequence_start`, `sequence_end`: accepted and ignored; every attnserve
  request is independent (no stateful models).
- `priority`: accepted and ignored; the scheduler admits in arrival order.
- `binary_data_output`: the HTTP binary-tensor extension's, honoured by the HTTP transport.
- any other `triton_` name: accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service._pb import grpc_service_pb2 as pb
from service.errors import InvalidArgument

STREAM = "stream"
EMPTY_FINAL_RESPONSE = "triton_enable_empty_final_response"
FINAL_RESPONSE = "triton_final_response"  # set on each response of a stream, Triton's way
RESERVED_PREFIX = "triton_"
IGNORED = ("sequence_id", "sequence_start", "sequence_end", "priority", "binary_data_output")


def is_protocol_parameter(name: str) -> bool:
    """Whether `name` is one of the protocol's parameters (not a generation setting)."""
    return name == STREAM or name in IGNORED or name.startswith(RESERVED_PREFIX)


@dataclass(frozen=True)
class StreamOptions:
    """How a request wants its answer delivered."""

    stream: bool = False
    """One response per token chunk, then a final response flagged `triton_final_response`."""
    empty_final_response: bool = False
    """The flagged final response carries no output tensor."""


def _flag(parameters: Mapping[str, pb.InferParameter], name: str) -> bool:
    if name not in parameters:
        return False
    parameter = parameters[name]
    choice = parameter.WhichOneof("parameter_choice")
    if choice != "bool_param":
        raise InvalidArgument(f"parameter '{name}' must be sent as bool_param, got {choice}")
    return parameter.bool_param


def stream_options(parameters: Mapping[str, pb.InferParameter]) -> StreamOptions:
    """The request's delivery options; InvalidArgument if `stream` is not a bool."""
    return StreamOptions(
        stream=_flag(parameters, STREAM),
        empty_final_response=_flag(parameters, EMPTY_FINAL_RESPONSE),
    )


def check_unary(parameters: Mapping[str, pb.InferParameter]) -> None:
    """A unary call (ModelInfer) has one answer: `stream: true` is refused with what to do."""
    if stream_options(parameters).stream:
        raise InvalidArgument(
            f"parameter '{STREAM}' asks for one response per token: send the request on "
            "ModelStreamInfer (tritonclient: start_stream / async_stream_infer)"
        )
