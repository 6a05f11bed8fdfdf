"""The Open Inference Protocol's REST bodies <-> its gRPC messages, as pure functions.

An HTTP inference request becomes the ModelInferRequest a gRPC client would have sent, so the
KServe servicer checks and answers both alike. The JSON form and Triton's binary-tensor
extension are both read: with the `Inference-Header-Content-Length` header, the body is that
many bytes of JSON followed by each binary input's bytes (`binary_data_size` in its
parameters), in the raw format gRPC's `raw_input_contents` uses. An output goes back as binary
when its `binary_data` parameter, or else the request's `binary_data_output`, says so
(tritonclient.http's default), and as a JSON `data` list otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service._pb import grpc_service_pb2 as pb
from service.api.kserve_tensors import BYTES, decode_raw_bytes
from service.api.rest.json_body import parse_json
from service.errors import InvalidArgument

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"
BINARY_OUTPUT = "binary_data_output"
BINARY = "binary_data"
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
MAX_DATA_DEPTH = 32  # nesting of an input's `data` lists (one level per dimension)


@dataclass
class OutputFormat:
    """Which outputs the client wants as binary data (by name), and the default for the rest."""

    binary_default: bool = False
    binary_by_name: dict[str, bool] = field(default_factory=dict)

    def binary(self, name: str) -> bool:
        return self.binary_by_name.get(name, self.binary_default)


def parameter(name: str, value: Any) -> pb.InferParameter:
    """A JSON parameter value as the InferParameter a gRPC client sends for it."""
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _UINT64_MAX:
            raise InvalidArgument(f"parameter '{name}' ({value}) is outside int64 and uint64")
        if value > _INT64_MAX:
            return pb.InferParameter(uint64_param=value)
        return pb.InferParameter(int64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    if isinstance(value, str):
        _utf8(value, f"parameter '{name}'")
        return pb.InferParameter(string_param=value)
    raise InvalidArgument(f"parameter '{name}' must be a boolean, a number or a string")


def parameters_to_json(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {name: getattr(p, p.WhichOneof("parameter_choice")) for name, p in parameters.items()}


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def _flatten(data: Any, input_name: str, depth: int = 0) -> list[Any]:
    """The elements of a (possibly nested, row-major) JSON `data` list."""
    if not isinstance(data, list):
        return [data]
    if depth == MAX_DATA_DEPTH:
        raise InvalidArgument(
            f"the data of input '{input_name}' is nested more than {MAX_DATA_DEPTH} lists deep"
        )
    return [element for item in data for element in _flatten(item, input_name, depth + 1)]


def _present(header: dict[str, Any], key: str, absent: Any) -> Any:
    """`header[key]`, or `absent` when it is missing or null (some clients send null for what
    they leave out)."""
    value = header.get(key)
    return absent if value is None else value


def _is_int64(value: Any) -> bool:
    return type(value) is int and _INT64_MIN <= value <= _INT64_MAX  # not bool, which is an int


def _bytes_element(element: Any, input_name: str) -> bytes:
    if not isinstance(element, str):
        raise InvalidArgument(f"the data of BYTES input '{input_name}' must be strings")
    return _utf8(element, f"an element of BYTES input '{input_name}'")


def _utf8(text: str, what: str) -> bytes:
    """JSON strings may hold lone surrogates ("\\ud800"), which no UTF-8 string holds: the
    client's mistake, not a server fault."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} is not valid UTF-8 (it holds a lone surrogate)") from None


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header of a request body and the binary data after it."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidArgument(
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
            ) from None
        if not 0 <= length <= len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length {length} is outside the body's {len(body)} bytes"
            )
        json_part, binary = body[:length], body[length:]
    return _object(parse_json(json_part), "the request body"), binary


def _add_input(request: pb.ModelInferRequest, tensor: dict[str, Any], binary: memoryview) -> int:
    """Add one input tensor to `request`; the number of binary bytes it took."""
    name = tensor.get("name")
    if not isinstance(name, str):
        raise InvalidArgument("every input needs a 'name' string")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_is_int64(d) for d in shape):
        raise InvalidArgument(f"input '{name}' needs a 'shape' list of int64 integers")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidArgument(f"input '{name}' needs a 'datatype' string")
    added = request.inputs.add(name=name, datatype=datatype, shape=shape)
    tensor_parameters = _object(tensor.get("parameters", {}), f"the parameters of input '{name}'")
    size = tensor_parameters.get(BINARY_SIZE)
    if size is not None:
        if not isinstance(size, int) or not 0 <= size <= len(binary):
            raise InvalidArgument(
                f"input '{name}': {BINARY_SIZE} {size!r} does not fit the {len(binary)} bytes "
                "of binary data left in the body"
            )
        request.raw_input_contents.append(bytes(binary[:size]))
        return size
    if "data" not in tensor:
        raise InvalidArgument(f"input '{name}' has neither 'data' nor '{BINARY_SIZE}'")
    if datatype == BYTES:  # other datatypes are refused by the servicer, naming the datatype
        elements = [_bytes_element(e, name) for e in _flatten(tensor["data"], name)]
        added.contents.bytes_contents.extend(elements)
    return 0


def infer_request(
    header: dict[str, Any], binary: bytes, model: str, version: str
) -> tuple[pb.ModelInferRequest, OutputFormat]:
    """The gRPC form of a REST inference request, and how its outputs are to be sent."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("'id' must be a string")
    request.id = request_id
    parameters = _object(_present(header, "parameters", {}), "'parameters'")
    for name, value in parameters.items():
        request.parameters[name].CopyFrom(parameter(name, value))
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("the request needs an 'inputs' list")
    remaining = memoryview(binary)
    for tensor in inputs:
        taken = _add_input(request, _object(tensor, "each input"), remaining)
        remaining = remaining[taken:]
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidArgument("either every input is binary data or none is")
    if len(remaining):
        raise InvalidArgument(f"{len(remaining)} bytes of binary data belong to no input")
    output_format = OutputFormat(binary_default=parameters.get(BINARY_OUTPUT) is True)
    outputs = _present(header, "outputs", [])
    if not isinstance(outputs, list):
        raise InvalidArgument("'outputs' must be a list")
    for tensor in outputs:
        name = _object(tensor, "each output").get("name")
        if not isinstance(name, str):
            raise InvalidArgument("every output needs a 'name' string")
        request.outputs.add(name=name)
        wants = _object(tensor.get("parameters", {}), f"the parameters of output '{name}'")
        if BINARY in wants:
            output_format.binary_by_name[name] = wants[BINARY] is True
    return request, output_format


def infer_response(
    response: pb.ModelInferResponse, output_format: OutputFormat
) -> tuple[dict[str, Any], bytes]:
    """The JSON header of an inference answer and the binary outputs to send after it."""
    outputs = []
    binary_parts = []
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        output: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if output_format.binary(tensor.name):
            output["parameters"] = {BINARY_SIZE: len(raw)}
            binary_parts.append(raw)
        else:  # our outputs are BYTES holding UTF-8 text
            elements = decode_raw_bytes(raw, tensor.name)
            output["data"] = [element.decode("utf-8") for element in elements]
        outputs.append(output)
    header: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id:
        header["id"] = response.id
    if response.parameters:
        header["parameters"] = parameters_to_json(response.parameters)
    return header, b"".join(binary_parts)
