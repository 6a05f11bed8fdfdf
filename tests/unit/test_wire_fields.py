"""Request messages are counted on the wire before parsing: every field and repeated element,
nested messages' and packed numbers' included, exactly, up to the limit; payloads cost nothing."""

from __future__ import annotations

import pytest

from service._pb import grpc_service_pb2 as kserve
from service.api.wire_fields import MAX_MESSAGE_FIELDS, TooManyFields, check_field_count

DESCRIPTOR = kserve.ModelInferRequest.DESCRIPTOR


def _request(elements: int, shape: list[int] | None = None) -> kserve.ModelInferRequest:
    """model_name, one input (its message, name, datatype, shape, contents message) and
    `elements` bytes elements: 6 + elements fields with a one-dimension shape."""
    request = kserve.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=shape or [elements])
    tensor.contents.bytes_contents.extend([b""] * elements)
    return request


def test_a_message_at_the_limit_is_read_and_one_more_field_is_refused():
    check_field_count(_request(MAX_MESSAGE_FIELDS - 6).SerializeToString(), DESCRIPTOR)
    with pytest.raises(TooManyFields, match=f"more than {MAX_MESSAGE_FIELDS} fields"):
        check_field_count(_request(MAX_MESSAGE_FIELDS - 5).SerializeToString(), DESCRIPTOR)


def test_packed_numbers_count_one_each():
    dims = [1] * (MAX_MESSAGE_FIELDS - 6)  # a shape of that many dimensions, one field on the wire
    check_field_count(_request(1, shape=dims[:-1]).SerializeToString(), DESCRIPTOR)
    with pytest.raises(TooManyFields):
        check_field_count(
            _request(1, shape=[1 << 40] * MAX_MESSAGE_FIELDS).SerializeToString(), DESCRIPTOR
        )


def test_map_entries_and_nested_parameters_count():
    request = _request(1)
    for i in range(MAX_MESSAGE_FIELDS // 3):  # an entry: its message, key, value message, value
        request.parameters[f"p{i}"].int64_param = i
    with pytest.raises(TooManyFields):
        check_field_count(request.SerializeToString(), DESCRIPTOR)


def test_large_payloads_are_one_field_each():
    request = _request(0)
    request.raw_input_contents.extend([b"x" * (8 << 20), b"y" * (4 << 20)])
    check_field_count(request.SerializeToString(), DESCRIPTOR)


@pytest.mark.parametrize("data", [b"\xff" * 20, b"\x0a\x05ab", b"\x0b\x00", b""])
def test_malformed_wire_data_is_left_to_the_parser(data: bytes):
    check_field_count(data, DESCRIPTOR)
