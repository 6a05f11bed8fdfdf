"""Counting a protobuf message's fields on the wire, before it is parsed.

A message within the size limit can hold millions of tiny fields: a ModelInferRequest of 21 MB
holds ten million empty `bytes_contents` (two bytes each on the wire). Parsing makes an object
of each, about twenty times the message's size (a 20 MB message took the server from 147 to
556 MiB, four at once to 1 GiB), on the event loop, before any element limit of ours can look.
No request of ours needs more than a few thousand fields, so the fields are counted first,
walking the wire format with the message's descriptor: a walk that stops at the limit, and
skips every string and bytes payload in one step, so a large image costs nothing to count.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

MAX_MESSAGE_FIELDS = 10_000

_VARINT, _FIXED64, _LENGTH_DELIMITED, _GROUP_START, _GROUP_END, _FIXED32 = 0, 1, 2, 3, 4, 5
_FIXED32_TYPES = {
    FieldDescriptor.TYPE_FLOAT,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}
_FIXED64_TYPES = {
    FieldDescriptor.TYPE_DOUBLE,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_SINGLE_TYPES = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES}
_VARINT_CONTINUES = bytes(range(128, 256))  # a varint's bytes but its last


class TooManyFields(Exception):
    """The message holds more than MAX_MESSAGE_FIELDS fields and repeated elements."""


def check_field_count(data: bytes, descriptor: Descriptor) -> None:
    """Raise TooManyFields if `data` (a serialized `descriptor` message) holds more than
    MAX_MESSAGE_FIELDS fields, nested messages' and packed elements included. Malformed wire
    data is left to the parser, which refuses it."""
    try:
        _walk(memoryview(data), descriptor, [MAX_MESSAGE_FIELDS])
    except (IndexError, ValueError):
        return


def _walk(view: memoryview, descriptor: Descriptor, budget: list[int]) -> None:
    position, end = 0, len(view)
    fields = descriptor.fields_by_number
    while position < end:
        key, position = _varint(view, position)
        number, wire_type = key >> 3, key & 7
        elements = 1
        if wire_type == _VARINT:
            _, position = _varint(view, position)
        elif wire_type == _FIXED64:
            position += 8
        elif wire_type == _FIXED32:
            position += 4
        elif wire_type in (_GROUP_START, _GROUP_END):
            pass  # a tag alone (parsers keep an unknown group's fields: they are walked on)
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _varint(view, position)
            payload = view[position : position + length]
            position += length
            field = fields.get(number)
            if field is not None and field.message_type is not None:
                _spend(budget, 1)
                _walk(payload, field.message_type, budget)
                continue
            elements = _packed_elements(payload, field)
        else:
            return  # wire types 6 and 7 do not exist: the parser refuses the message
        _spend(budget, max(elements, 1))  # an empty packed field is still a field to walk


def _packed_elements(payload: memoryview, field: FieldDescriptor | None) -> int:
    """How many values a length-delimited payload holds: one string or bytes (or an unknown
    field), else the elements of a packed repeated number field."""
    if field is None or field.type in _SINGLE_TYPES:
        return 1
    if field.type in _FIXED32_TYPES:
        return len(payload) // 4
    if field.type in _FIXED64_TYPES:
        return len(payload) // 8
    return len(bytes(payload).translate(None, _VARINT_CONTINUES))


def _spend(budget: list[int], elements: int) -> None:
    budget[0] -= elements
    if budget[0] < 0:
        raise TooManyFields(
            f"the request message holds more than {MAX_MESSAGE_FIELDS} fields and repeated "
            "elements; at most that many are read (a text or an image is one BYTES element)"
        )


def _varint(view: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = view[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
