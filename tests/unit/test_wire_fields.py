"""Request messages are counted on the wire before parsing: every field and repeated element,
nested messages' and packed numbers' included, up to the limit; payloads cost nothing."""

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


@pytest.mark.parametrize("dimension", [1, 1 << 40])  # one byte and six bytes on the wire
def test_packed_numbers_count_one_each(dimension: int):
    """A shape is one packed field: model_name, the input, its name and datatype, then one
    field per dimension."""
    request = kserve.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="text", datatype="BYTES")
    tensor.shape.extend([dimension] * (MAX_MESSAGE_FIELDS - 4))
    check_field_count(request.SerializeToString(), DESCRIPTOR)
    tensor.shape.append(dimension)
    with pytest.raises(TooManyFields):
        check_field_count(request.SerializeToString(), DESCRIPTOR)


def _field(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    return bytes([number << 3 | wire_type]) + payload


@pytest.mark.parametrize(
    "flood",
    [
        _field(2, 2, b"\x00"),  # an empty packed int_contents: parsed as nothing, still walked
        _field(15, 3) + _field(15, 4),  # an empty group of an unknown field: parsers skip it
    ],
)
def test_fields_that_hold_nothing_still_count(flood: bytes):
    """A flood of them was walked for free (34 s for 10 MB, on the event loop), or hid the
    fields after it from the count."""
    contents = flood * (MAX_MESSAGE_FIELDS + 1)
    tensor = _field(1, 2, b"\x04text") + _field(5, 2, _varint(len(contents)) + contents)
    data = _field(5, 2, _varint(len(tensor)) + tensor)
    with pytest.raises(TooManyFields):
        check_field_count(data, DESCRIPTOR)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


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


@pytest.mark.parametrize("data", [b"\xff" * 20, b"\x0a\x05ab", b"\x0e\x00", b""])
def test_malformed_wire_data_is_left_to_the_parser(data: bytes):
    check_field_count(data, DESCRIPTOR)
