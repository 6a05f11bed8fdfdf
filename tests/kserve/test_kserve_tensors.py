"""KServe v2 tensor and parameter conversion, checked against tritonclient's own encoders."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from service._pb import grpc_service_pb2 as pb
from service.api import kserve_tensors as kt
from service.engine.types import GenerationParams
from service.errors import InvalidArgument

MODEL = "demo-summarizer"
MAX_ELEMENTS = 64
TEXTS = ["first text", "zweiter Text: äöü", ""]


def _raw(elements: list[bytes]) -> bytes:
    """What tritonclient sends for a BYTES tensor (InferInput.set_data_from_numpy)."""
    return serialize_byte_tensor(np.array(elements, dtype=np.object_)).item()


def _request(
    shape: list[int],
    elements: list[bytes],
    *,
    name: str = "text",
    datatype: str = "BYTES",
    raw: bool = True,
) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    request = pb.ModelInferRequest(model_name=MODEL, inputs=[tensor])
    if raw:
        request.raw_input_contents.append(_raw(elements))
    else:
        request.inputs[0].contents.bytes_contents.extend(elements)
    return request


def _parameters(**values: bool | int | float | str) -> dict[str, pb.InferParameter]:
    choice = {bool: "bool_param", int: "int64_param", float: "double_param", str: "string_param"}
    return {name: pb.InferParameter(**{choice[type(v)]: v}) for name, v in values.items()}


def test_raw_bytes_decode_what_tritonclient_serializes():
    elements = [t.encode() for t in TEXTS]
    assert kt.decode_raw_bytes(_raw(elements), "text") == elements


def test_raw_bytes_encode_what_tritonclient_deserializes():
    encoded = kt.encode_raw_bytes(t.encode() for t in TEXTS)
    assert [e.decode() for e in deserialize_bytes_tensor(encoded)] == TEXTS


@pytest.mark.parametrize("cut", [16, 2])  # 2 bytes left: in a length prefix; 16: in an element
def test_truncated_raw_bytes_are_invalid(cut: int):
    raw = _raw([b"hello", b"world"])
    with pytest.raises(InvalidArgument, match="raw contents of inference input 'text'"):
        kt.decode_raw_bytes(raw[: len(raw) - cut], "text")


@pytest.mark.parametrize("shape", [[3], [3, 1]])
def test_input_of_shape_n_or_n_by_1_holds_n_elements(shape: list[int]):
    elements = [t.encode() for t in TEXTS]
    infer_input = kt.read_input(_request(shape, elements), MODEL, "text", MAX_ELEMENTS)
    assert (infer_input.elements, infer_input.shape) == (elements, shape)


def test_input_may_come_in_bytes_contents():
    infer_input = kt.read_input(_request([2], [b"a", b"b"], raw=False), MODEL, "text", MAX_ELEMENTS)
    assert infer_input.elements == [b"a", b"b"]


def test_wrong_input_name_is_named_in_the_error():
    with pytest.raises(InvalidArgument, match="unexpected inference input 'foo' for model"):
        kt.read_input(_request([1], [b"x"], name="foo"), MODEL, "text", MAX_ELEMENTS)


def test_wrong_datatype_is_named_in_the_error():
    with pytest.raises(
        InvalidArgument,
        match="unexpected datatype INT32 for inference input 'text', expecting BYTES",
    ):
        kt.read_input(_request([1], [b"x"], datatype="INT32"), MODEL, "text", MAX_ELEMENTS)


@pytest.mark.parametrize("shape", [[1, 2], [0], [1, 1, 1], []])
def test_shapes_other_than_n_or_n_by_1_are_invalid(shape: list[int]):
    with pytest.raises(InvalidArgument, match="unexpected shape"):
        kt.read_input(_request(shape, [b"x"]), MODEL, "text", MAX_ELEMENTS)


def test_element_count_must_match_the_shape():
    with pytest.raises(InvalidArgument, match="holds 1 elements, its shape \\[2\\] needs 2"):
        kt.read_input(_request([2], [b"x"]), MODEL, "text", MAX_ELEMENTS)


def test_missing_input_is_invalid():
    with pytest.raises(InvalidArgument, match="expected 1 inputs but got 0 inputs"):
        kt.read_input(pb.ModelInferRequest(model_name=MODEL), MODEL, "text", MAX_ELEMENTS)


def test_contents_and_raw_contents_together_are_invalid():
    request = _request([1], [b"x"])
    request.inputs[0].contents.bytes_contents.append(b"x")
    with pytest.raises(InvalidArgument, match="contents field must not be specified"):
        kt.read_input(request, MODEL, "text", MAX_ELEMENTS)


def test_requesting_an_unknown_output_is_invalid():
    request = _request([1], [b"x"])
    request.outputs.add(name="logits")
    with pytest.raises(InvalidArgument, match="unexpected inference output 'logits'"):
        kt.check_requested_outputs(request, MODEL)


def test_parameters_map_to_generation_params_by_name():
    params, timeout = kt.generation_options(
        _parameters(max_new_tokens=7, do_sample=True, temperature=0.5, top_p=1), MODEL
    )
    assert params == GenerationParams(max_new_tokens=7, do_sample=True, temperature=0.5, top_p=1.0)
    assert isinstance(params.top_p, float)
    assert timeout is None


def test_timeout_parameter_is_microseconds():
    _, timeout = kt.generation_options(_parameters(timeout=250_000), MODEL)
    assert timeout == pytest.approx(0.25)


def test_unknown_parameter_is_invalid_and_lists_the_accepted_ones():
    with pytest.raises(
        InvalidArgument, match="unexpected inference parameter 'beams'.*num_beams.*timeout"
    ):
        kt.generation_options(_parameters(beams=4), MODEL)


@pytest.mark.parametrize(
    ("name", "value"), [("num_beams", 2.0), ("do_sample", 1), ("temperature", "hot")]
)
def test_parameter_of_the_wrong_type_is_invalid(name: str, value: object):
    with pytest.raises(InvalidArgument, match=f"parameter '{name}' must be sent as"):
        kt.generation_options(_parameters(**{name: value}), MODEL)


def test_texts_become_one_request_each():
    infer_input = kt.InferInput("text", [t.encode() for t in TEXTS], [3])
    requests = kt.generation_requests(
        infer_input, MODEL, "1", "summarization", GenerationParams(num_beams=2), None, 1 << 20
    )
    assert [r.text for r in requests] == TEXTS
    assert {(r.model, r.version, r.task, r.params.num_beams) for r in requests} == {
        (MODEL, "1", "summarization", 2)
    }


def test_images_pass_through_as_bytes():
    infer_input = kt.InferInput("image", [b"\x89PNG..."], [1])
    (request,) = kt.generation_requests(
        infer_input, "demo-captioner", "1", "captioning", GenerationParams(), None, 1 << 20
    )
    assert (request.image, request.text) == (b"\x89PNG...", None)


def test_text_that_is_not_utf8_is_invalid():
    infer_input = kt.InferInput("text", [b"ok", b"\xff\xfe"], [2])
    with pytest.raises(InvalidArgument, match="element 1 of inference input 'text'.*UTF-8"):
        kt.generation_requests(
            infer_input, MODEL, "1", "summarization", GenerationParams(), None, 1 << 20
        )


def test_elements_over_the_call_cap_are_refused_before_reading_them():
    many = [b"x"] * (MAX_ELEMENTS + 1)
    for raw in (True, False):
        request = _request([len(many)], many, raw=raw)
        with pytest.raises(InvalidArgument, match="at most 64 .--max-batch-elements"):
            kt.read_input(request, MODEL, "text", MAX_ELEMENTS)
    with pytest.raises(InvalidArgument, match="more than 64 elements"):
        kt.decode_raw_bytes(_raw(many), "text", MAX_ELEMENTS)


def test_a_text_element_over_the_byte_cap_is_refused_before_decoding():
    infer_input = kt.InferInput("text", [b"ok", b"\xff" * 11], [2])
    with pytest.raises(InvalidArgument, match="element 1 .* 11 bytes; .* at most 10 bytes"):
        kt.generation_requests(
            infer_input, MODEL, "1", "summarization", GenerationParams(), None, 10
        )


def test_text_output_has_the_input_shape_and_raw_contents():
    tensor, raw = kt.text_output(["a", "b"], [2, 1])
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("text", "BYTES", [2, 1])
    assert list(deserialize_bytes_tensor(raw)) == [b"a", b"b"]


def test_earliest_deadline_takes_the_shortest_budget():
    assert kt.earliest_deadline(None, None) is None
    only = kt.earliest_deadline(None, 5.0)
    both = kt.earliest_deadline(10.0, 5.0)
    assert only is not None and both is not None and abs(both - only) < 1.0
