"""Hypothesis strategies for random and malformed requests to both APIs.

Each strategy draws a whole call: which RPC, and a request mixing valid values with random
bytes as images (and PNGs with malformed chunks), empty and huge texts (at and past the fuzzed
server's --max-input-bytes, and texts without a printable character; the same as caption
prompts), extreme and contradictory
parameters (NaN, infinities, values at the proto types' limits, beams with sampling, min above
max, truncation), unknown models, too many KServe elements, and wire-level garbage.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from hypothesis import strategies as st
from PIL import Image

from service._pb import grpc_service_pb2 as kserve_pb
from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service.api.kserve_tensors import encode_raw_bytes
from tests.integration.models import CAPTIONER, SUMMARIZER

UINT32_MAX, UINT64_MAX, INT64_MAX = 2**32 - 1, 2**64 - 1, 2**63 - 1
IMAGE_SIDE_MAX = 120  # beyond the fuzzed server's pixel cap for the largest draws
MAX_INPUT_BYTES = 4096  # the fuzzed server's --max-input-bytes
MAX_BATCH_ELEMENTS = 4  # the fuzzed server's --max-batch-elements


def mostly(usual: st.SearchStrategy, unusual: st.SearchStrategy) -> st.SearchStrategy:
    """`usual` four times in five, so most requests get past the first check and reach the
    deeper ones; shrinking goes towards `usual`."""
    return st.integers(0, 4).flatmap(lambda n: usual if n < 4 else unusual)


def models(own: str, other: str) -> st.SearchStrategy[str]:
    """Mostly the task's default ("") or its own model; else the other task's, or any name."""
    return mostly(st.sampled_from(["", own]), st.one_of(st.just(other), st.text(max_size=30)))


versions = mostly(st.just(""), st.sampled_from(["1", "2", "0", "latest"]) | st.text(max_size=5))
uint32s = mostly(st.integers(0, 12), st.integers(0, UINT32_MAX))
doubles = mostly(
    st.floats(0.05, 3.0),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, -1.0, 5e-324, 1e-300, 1e300, 3.5e38, 1e4, 1e-4, -10.0, 10.0]),
    ),
)
texts = mostly(
    st.one_of(
        st.text(min_size=1, max_size=300),
        st.lists(st.sampled_from(["w1", "w2", "w3", "the", "cat"]), min_size=1).map(" ".join),
    ),
    st.one_of(
        st.just(""),
        st.text(alphabet=" \t\n\r\u00a0\u3000", max_size=20),  # nothing but whitespace
        st.integers(1, 5000).map(lambda n: " ".join(f"w{i}" for i in range(n))),  # past the limit
        st.text(min_size=1, max_size=20).map(lambda t: t * 5000),  # large and repetitive
        st.integers(MAX_INPUT_BYTES - 3, MAX_INPUT_BYTES + 3).map(lambda n: "w" * n),  # at cap
        st.text(alphabet="\x00\x01\x7f\u200b", min_size=1, max_size=50),  # nothing printable
    ),
)


@st.composite
def encoded_images(draw: st.DrawFn) -> bytes:
    """A real image file of random size, mode and format (some outside the accepted formats)."""
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I", "F", "CMYK"]))
    size = (draw(st.integers(1, IMAGE_SIDE_MAX)), draw(st.integers(1, IMAGE_SIDE_MAX)))
    image = Image.new(mode, size)
    image_format = draw(st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=image_format)
    except (OSError, ValueError, KeyError):  # the format cannot store this mode
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format=image_format)
    return buffer.getvalue()


@st.composite
def damaged(draw: st.DrawFn, files: st.SearchStrategy[bytes]) -> bytes:
    """A real image file cut short or with some bytes overwritten."""
    data = bytearray(draw(files))
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def png_with_bad_chunk(draw: st.DrawFn) -> bytes:
    """A valid PNG with a chunk (correct CRC) whose contents break it: a short header, a short
    gamma, text or colour-profile chunks that inflate to megabytes, or random bytes."""
    chunk_type = draw(st.sampled_from([b"IHDR", b"gAMA", b"zTXt", b"iCCP", b"tEXt", b"PLTE"]))
    data = draw(
        st.one_of(
            st.binary(max_size=16),
            st.just(b"k\x00\x00" + zlib.compress(b"a" * (4 << 20))),
        )
    )
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    chunk = struct.pack(">I", len(data)) + chunk_type + data
    chunk += struct.pack(">I", zlib.crc32(chunk_type + data))
    at = draw(st.sampled_from([8, 33]))  # before or after the real header
    return png.getvalue()[:at] + chunk + png.getvalue()[at:]


images = mostly(
    encoded_images(),
    st.one_of(st.binary(max_size=4096), damaged(encoded_images()), png_with_bad_chunk()),
)


@st.composite
def generation_params(draw: st.DrawFn) -> pb.GenerationParams:
    """Every field independently unset or set to anything its proto type holds."""
    values = {
        "max_new_tokens": uint32s,
        "min_new_tokens": uint32s,
        "num_beams": uint32s,
        "do_sample": st.booleans(),
        "temperature": doubles,
        "top_k": uint32s,
        "top_p": doubles,
        "repetition_penalty": doubles,
        "no_repeat_ngram_size": uint32s,
        "length_penalty": doubles,
        "seed": st.integers(0, UINT64_MAX),
        "truncate": uint32s,
    }
    chosen = {
        name: draw(values_of)
        for name, values_of in values.items()
        if draw(st.integers(0, 3)) == 0  # a quarter of the fields set: combinations stay valid
    }
    return pb.GenerationParams(**chosen)


@dataclass
class AttentionCall:
    method: str  # an AttentionService RPC
    request: pb.SummarizeRequest | pb.CaptionRequest | pb.ListModelsRequest


@st.composite
def attention_calls(draw: st.DrawFn) -> AttentionCall:
    method = draw(
        st.sampled_from(["Summarize", "SummarizeStream", "Caption", "CaptionStream", "ListModels"])
    )
    if method == "ListModels":
        task = draw(st.one_of(st.sampled_from(["", "summarization", "captioning"]), st.text()))
        return AttentionCall(method, pb.ListModelsRequest(task=task))
    fields = {"params": draw(generation_params()), "version": draw(versions)}
    if method.startswith("Summarize"):
        model = draw(models(SUMMARIZER, CAPTIONER))
        return AttentionCall(method, pb.SummarizeRequest(model=model, text=draw(texts), **fields))
    model = draw(models(CAPTIONER, SUMMARIZER))
    prompt = draw(mostly(st.just(""), texts))
    request = pb.CaptionRequest(model=model, image=draw(images), prompt=prompt, **fields)
    return AttentionCall(method, request)


def _infer_parameter(field_name: str, value: bool | int | float) -> kserve_pb.InferParameter:
    """A GenerationParams value as the InferParameter choice tritonclient would send."""
    if isinstance(value, bool):
        return kserve_pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        choice = "int64_param" if value <= INT64_MAX else "uint64_param"
        return kserve_pb.InferParameter(**{choice: value})
    return kserve_pb.InferParameter(double_param=value)


_any_parameter = st.one_of(
    st.builds(kserve_pb.InferParameter, bool_param=st.booleans()),
    st.builds(kserve_pb.InferParameter, int64_param=st.integers(-(2**63), INT64_MAX)),
    st.builds(kserve_pb.InferParameter, uint64_param=st.integers(0, UINT64_MAX)),
    st.builds(kserve_pb.InferParameter, double_param=doubles),
    st.builds(kserve_pb.InferParameter, string_param=st.text(max_size=10)),
)
_input_names = st.sampled_from(["text", "image", ""]) | st.text(max_size=8)


def _set_model_name(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    request.model_name = draw(st.text(max_size=20))


def _set_model_version(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    request.model_version = draw(st.text(max_size=5))


def _rename_input(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    request.inputs[0].name = draw(_input_names)


def _set_datatype(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    request.inputs[0].datatype = draw(st.sampled_from(["FP32", "INT64", ""]) | st.text(max_size=6))


def _set_shape(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    dims = st.integers(-2, 6) | st.integers(-(2**63), INT64_MAX)
    request.inputs[0].ClearField("shape")
    request.inputs[0].shape.extend(draw(st.lists(dims, max_size=3)))


def _add_input(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    request.inputs.add(name=draw(_input_names), datatype="BYTES", shape=[1])


def _damage_raw_contents(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    """Cut the raw contents short (a length prefix that lies), add a second, or send both forms."""
    if request.raw_input_contents and draw(st.booleans()):
        raw = request.raw_input_contents[0]
        request.raw_input_contents[0] = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif draw(st.booleans()):
        request.raw_input_contents.append(draw(st.binary(max_size=64)))
    else:
        request.inputs[0].contents.bytes_contents.append(draw(st.binary(max_size=64)))


def _add_parameter(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    names = st.sampled_from([*pb.GenerationParams.DESCRIPTOR.fields_by_name, "timeout", "prompt"])
    name = draw(names | st.text(max_size=12))
    request.parameters[name].CopyFrom(draw(_any_parameter))


def _request_output(draw: st.DrawFn, request: kserve_pb.ModelInferRequest) -> None:
    request.outputs.add(name=draw(st.sampled_from(["text", "image"]) | st.text(max_size=6)))


MUTATIONS = (
    _set_model_name,
    _set_model_version,
    _rename_input,
    _set_datatype,
    _set_shape,
    _add_input,
    _damage_raw_contents,
    _add_parameter,
    _request_output,
)


@st.composite
def infer_requests(draw: st.DrawFn) -> kserve_pb.ModelInferRequest:
    """A well-formed ModelInferRequest for one of the models (1-3 elements, in `contents` or
    raw, with generation parameters), then up to three random mutations of it."""
    model = draw(st.sampled_from([SUMMARIZER, CAPTIONER]))
    input_name = "text" if model == SUMMARIZER else "image"
    values = texts.map(str.encode) if model == SUMMARIZER else images
    elements = draw(st.lists(values, min_size=1, max_size=3))
    if draw(st.integers(0, 19)) == 0:  # past --max-batch-elements
        elements = elements * (MAX_BATCH_ELEMENTS + 1)
    shape = [len(elements), 1] if draw(st.booleans()) else [len(elements)]
    request = kserve_pb.ModelInferRequest(model_name=model, id=draw(st.text(max_size=8)))
    tensor = request.inputs.add(name=input_name, datatype="BYTES", shape=shape)
    if draw(st.booleans()):
        request.raw_input_contents.append(encode_raw_bytes(elements))
    else:
        tensor.contents.bytes_contents.extend(elements)
    for field, value in draw(generation_params()).ListFields():
        request.parameters[field.name].CopyFrom(_infer_parameter(field.name, value))
    mutations = st.one_of(st.just([]), st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3))
    for mutate in draw(mutations):
        mutate(draw, request)
    return request


infer_batches = st.lists(infer_requests(), min_size=1, max_size=3)
"""One request (sent as ModelInfer) or several (sent in one ModelStreamInfer)."""


SERVED_METHODS = (
    "/attnserve.v1.AttentionService/Summarize",
    "/attnserve.v1.AttentionService/SummarizeStream",
    "/attnserve.v1.AttentionService/Caption",
    "/attnserve.v1.AttentionService/ListModels",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelStreamInfer",
    "/inference.GRPCInferenceService/ModelMetadata",
)


@st.composite
def garbage_on_the_wire(draw: st.DrawFn) -> tuple[str, bytes]:
    """A served method and bytes for its request message: random, or a valid request with
    some bytes overwritten or cut (invalid UTF-8 in strings, lengths that lie)."""
    method = draw(st.sampled_from(SERVED_METHODS))
    valid = pb.SummarizeRequest(text="w1 w2 w3", params=pb.GenerationParams(max_new_tokens=2))
    if method.startswith("/inference"):
        valid = kserve_pb.ModelInferRequest(model_name=SUMMARIZER, id="x")
        valid.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
            b"w1 w2"
        )
    data = bytearray(valid.SerializeToString())
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return method, draw(st.binary(max_size=512))
    if choice == 1:
        return method, bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return method, bytes(data)
