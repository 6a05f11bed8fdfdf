"""KServe v2 tensors and parameters <-> engine requests, as pure functions of the messages.

A model speaks in BYTES tensors: summarizers take `text` (UTF-8), captioners take `image`
(encoded image files); both answer `text`. An input of shape [N] or [N, 1] is N independent
requests, answered by an output of the same shape. Generation settings travel in the request's
`parameters` map under GenerationParams' names; a captioner also takes `prompt` (a string
parameter, the text every caption of the call continues from). Every mistake raises
InvalidArgument with a message in the protocol's (Triton's) wording, so clients' error handling
carries over.
"""

from __future__ import annotations

import math
import time
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from service._pb import grpc_service_pb2 as pb
from service.api.triton_parameters import is_protocol_parameter
from service.engine.types import GenerationParams, GenerationRequest
from service.errors import InvalidArgument
from service.runtime.tasks import Task

BYTES = "BYTES"
OUTPUT_NAME = "text"
INPUT_NAME_BY_TASK = {Task.SUMMARIZATION: "text", Task.CAPTIONING: "image"}
TRUNCATED_PARAMETER = "truncated"  # response: an input was cut to the model's limit (truncate)
TIMEOUT_PARAMETER = "timeout"  # the protocol's own request timeout, in microseconds
PROMPT_PARAMETER = "prompt"  # captioning: GenerationRequest.prompt, for every element
_LENGTH_PREFIX = 4  # BYTES raw format: each element is a little-endian uint32 length + data

# Which InferParameter choices each GenerationParams type accepts (ints widen to floats).
_CHOICES_BY_TYPE: dict[type, tuple[str, ...]] = {
    bool: ("bool_param",),
    int: ("int64_param", "uint64_param"),
    float: ("double_param", "int64_param", "uint64_param"),
    str: ("string_param",),
}
# Attribution has no place in the text output tensor: it is served by the attnserve API only.
_NOT_ON_KSERVE = ("explain", "explain_top_k", "explain_full")
_GENERATION_PARAM_TYPES: dict[str, type] = {
    name: next(t for t in typing.get_args(hint) if t is not type(None))
    for name, hint in typing.get_type_hints(GenerationParams).items()
    if name not in _NOT_ON_KSERVE
}
_PARAMETER_TYPES = {**_GENERATION_PARAM_TYPES, TIMEOUT_PARAMETER: int, PROMPT_PARAMETER: str}


@dataclass
class InferInput:
    """The elements of a request's one input tensor, in order, and the shape to answer with."""

    name: str
    elements: list[bytes]
    shape: list[int]


def decode_raw_bytes(raw: bytes, input_name: str, max_elements: int | None = None) -> list[bytes]:
    """Split a BYTES tensor's raw contents (length-prefixed elements) into its elements; more
    than `max_elements` are refused without reading the rest."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if max_elements is not None and len(elements) == max_elements:
            raise InvalidArgument(
                f"raw contents of inference input '{input_name}' hold more than {max_elements} "
                "elements, the most one call may send (--max-batch-elements)"
            )
        if offset + _LENGTH_PREFIX > len(raw):
            raise InvalidArgument(
                f"raw contents of inference input '{input_name}' end inside the length prefix "
                f"of element {len(elements)}"
            )
        length = int.from_bytes(raw[offset : offset + _LENGTH_PREFIX], "little")
        offset += _LENGTH_PREFIX
        if offset + length > len(raw):
            raise InvalidArgument(
                f"raw contents of inference input '{input_name}' are cut short: element "
                f"{len(elements)} declares {length} bytes, {len(raw) - offset} remain"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def encode_raw_bytes(elements: Iterable[bytes]) -> bytes:
    """The BYTES raw format of `elements`: what tritonclient's deserialize_bytes_tensor reads."""
    return b"".join(len(e).to_bytes(_LENGTH_PREFIX, "little") + e for e in elements)


def _shape_text(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def read_input(
    request: pb.ModelInferRequest, model: str, input_name: str, max_elements: int
) -> InferInput:
    """The single BYTES input `input_name` of `request`, from `contents` or raw contents; more
    than `max_elements` elements are refused before any is read."""
    for tensor in request.inputs:
        if tensor.name != input_name:
            raise InvalidArgument(f"unexpected inference input '{tensor.name}' for model '{model}'")
    if len(request.inputs) != 1:
        raise InvalidArgument(
            f"expected 1 inputs but got {len(request.inputs)} inputs for model '{model}'"
        )
    tensor = request.inputs[0]
    if tensor.datatype != BYTES:
        raise InvalidArgument(
            f"unexpected datatype {tensor.datatype or '(none)'} for inference input "
            f"'{input_name}', expecting {BYTES}"
        )
    shape = list(tensor.shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] < 1:
        raise InvalidArgument(
            f"unexpected shape {_shape_text(shape)} for inference input '{input_name}' of model "
            f"'{model}', expecting [-1] or [-1,1] with at least one element"
        )
    if math.prod(shape) > max_elements:
        raise InvalidArgument(
            f"inference input '{input_name}' has {math.prod(shape)} elements; one call may send "
            f"at most {max_elements} (--max-batch-elements)"
        )
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidArgument(
                f"expected 1 raw_input_contents (one per input) but got "
                f"{len(request.raw_input_contents)} for model '{model}'"
            )
        if tensor.contents.ListFields():
            raise InvalidArgument(
                f"contents field must not be specified when using raw_input_contents for "
                f"'{input_name}' for model '{model}'"
            )
        elements = decode_raw_bytes(request.raw_input_contents[0], input_name, max_elements)
    else:
        if len(tensor.contents.bytes_contents) > max_elements:
            raise InvalidArgument(
                f"inference input '{input_name}' holds {len(tensor.contents.bytes_contents)} "
                f"elements; one call may send at most {max_elements} (--max-batch-elements)"
            )
        elements = list(tensor.contents.bytes_contents)
    if len(elements) != math.prod(shape):
        raise InvalidArgument(
            f"inference input '{input_name}' holds {len(elements)} elements, its shape "
            f"{_shape_text(shape)} needs {math.prod(shape)}"
        )
    return InferInput(input_name, elements, shape)


def check_requested_outputs(request: pb.ModelInferRequest, model: str) -> None:
    """Only `text` can be asked for; asking for nothing means every output."""
    for output in request.outputs:
        if output.name != OUTPUT_NAME:
            raise InvalidArgument(
                f"unexpected inference output '{output.name}' for model '{model}'"
            )


def _parameter_value(
    name: str, parameter: pb.InferParameter, model: str
) -> bool | int | float | str:
    """The parameter's value as the Python type its name stands for."""
    if name in _NOT_ON_KSERVE:
        raise InvalidArgument(
            f"parameter '{name}': per-token attribution is served by the attnserve API "
            "(attnserve.v1.AttentionService, GenerationParams.explain), not over KServe v2"
        )
    if name not in _PARAMETER_TYPES:
        raise InvalidArgument(
            f"unexpected inference parameter '{name}' for model '{model}', "
            f"expecting one of: {', '.join(n for n in _PARAMETER_TYPES if n != PROMPT_PARAMETER)}"
            f" (and {PROMPT_PARAMETER} for captioning models)"
        )
    value_type = _PARAMETER_TYPES[name]
    choice = parameter.WhichOneof("parameter_choice")
    if choice not in _CHOICES_BY_TYPE[value_type]:
        raise InvalidArgument(
            f"parameter '{name}' must be sent as {' or '.join(_CHOICES_BY_TYPE[value_type])}, "
            f"got {choice or 'no value'}"
        )
    return value_type(getattr(parameter, choice))


def generation_options(
    parameters: Mapping[str, pb.InferParameter], model: str
) -> tuple[GenerationParams, float | None]:
    """GenerationParams from the request's parameters, and its `timeout` in seconds (or None)."""
    values = {
        name: _parameter_value(name, p, model)
        for name, p in parameters.items()
        if not is_protocol_parameter(name)  # Triton's own: see service.api.triton_parameters
    }
    timeout_us = values.pop(TIMEOUT_PARAMETER, None)
    values.pop(PROMPT_PARAMETER, None)  # an input, not a setting: see prompt_parameter
    if timeout_us is not None and timeout_us <= 0:
        raise InvalidArgument(f"parameter 'timeout' must be > 0 microseconds, got {timeout_us}")
    return GenerationParams(**values), None if timeout_us is None else timeout_us / 1e6


def prompt_parameter(parameters: Mapping[str, pb.InferParameter], model: str) -> str | None:
    """The request's `prompt` (a string_param), or None."""
    if PROMPT_PARAMETER not in parameters:
        return None
    value = _parameter_value(PROMPT_PARAMETER, parameters[PROMPT_PARAMETER], model)
    assert isinstance(value, str)
    return value


def earliest_deadline(*remaining_s: float | None) -> float | None:
    """The time.monotonic() deadline of the shortest of the given time budgets (None = none)."""
    budgets = [r for r in remaining_s if r is not None]
    return time.monotonic() + min(budgets) if budgets else None


def generation_requests(
    infer_input: InferInput,
    model: str,
    version: str,
    task: str,
    params: GenerationParams,
    deadline: float | None,
    max_text_bytes: int,
    prompt: str | None = None,
) -> list[GenerationRequest]:
    """One engine request per element: text decoded as UTF-8, images passed as they came; a
    text element over `max_text_bytes` is refused before it is decoded."""
    requests = []
    for index, element in enumerate(infer_input.elements):
        payload: dict[str, str | bytes] = {}
        if task == Task.SUMMARIZATION:
            if len(element) > max_text_bytes:
                raise InvalidArgument(
                    f"element {index} of inference input '{infer_input.name}' is {len(element)} "
                    f"bytes; this server accepts at most {max_text_bytes} bytes per text "
                    "(--max-input-bytes)"
                )
            try:
                payload["text"] = element.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidArgument(
                    f"element {index} of inference input '{infer_input.name}' is not valid "
                    f"UTF-8 ({error.reason} at byte {error.start})"
                ) from None
        else:
            payload["image"] = element
        requests.append(
            GenerationRequest(
                model=model,
                task=task,
                version=version,
                params=params,
                deadline=deadline,
                prompt=prompt,
                **payload,
            )
        )
    return requests


def text_output(
    texts: Iterable[str], shape: list[int]
) -> tuple[pb.ModelInferResponse.InferOutputTensor, bytes]:
    """The `text` output tensor and its raw contents (Triton answers in raw form)."""
    tensor = pb.ModelInferResponse.InferOutputTensor(name=OUTPUT_NAME, datatype=BYTES, shape=shape)
    return tensor, encode_raw_bytes(t.encode("utf-8") for t in texts)
