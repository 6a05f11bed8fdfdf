"""JSON request bodies: values are counted before parsing, so a body of millions of tiny values
is refused without making a Python object of each."""

from __future__ import annotations

import json

import pytest

from service.api.rest.json_body import MAX_JSON_VALUES, json_values, parse_json
from service.errors import InvalidArgument


@pytest.mark.parametrize(
    "value",
    [
        {"text": 'Kelso played Morley, [in] {York}, "quoted" \\ and \\" too', "params": {}},
        {"inputs": [{"name": "text", "shape": [2], "data": ["a,b", "c]"]}], "id": "x"},
        [0, [1, 2, {"a": None, "b": [True, False, 1.5]}], "]]]\\", ""],
        "plain",
        17,
    ],
)
def test_the_count_bounds_the_values_and_ignores_what_strings_hold(value):
    """Exact for valid JSON (an empty container counts one more): commas, brackets and
    quotes inside strings are not values."""
    values, empty = _values(value)
    assert json_values(json.dumps(value).encode()) == values + empty


def _values(value) -> tuple[int, int]:
    """(values, empty containers) of a JSON value; an object's keys are values too."""
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        return 1, 0
    inner = [_values(item) for item in items]
    return 1 + sum(v for v, _ in inner), int(not items) + sum(e for _, e in inner)


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"0," * MAX_JSON_VALUES + b"0]",
        b"[" + b"{}," * MAX_JSON_VALUES + b"{}]",
        b"[" + b'"",' * MAX_JSON_VALUES + b'""]',
        b'{"text": "a", "x": [' + b"[]," * MAX_JSON_VALUES + b"[]]}",
    ],
)
def test_a_body_of_more_values_than_the_cap_is_refused_before_parsing(body: bytes):
    with pytest.raises(InvalidArgument, match=f"at most {MAX_JSON_VALUES} are read"):
        parse_json(body)


def test_long_strings_are_read_whatever_they_hold():
    text = ',[{"\\' * 200_000
    assert parse_json(json.dumps({"text": text}).encode()) == {"text": text}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"{not json", "not valid JSON"),
        (b'{"text": "\xff"}', "not valid JSON"),
        (b'{"x": ' + b"9" * 5000 + b"}", "not valid JSON"),  # Python's int digit limit
        ('{"text": "\u0122"}'.encode("utf-16"), "not UTF-8 JSON"),
        ('{"text": "\u0122"}'.encode("utf-16-le"), "not UTF-8 JSON"),
        ('{"text": "\u0122"}'.encode("utf-32"), "not UTF-8 JSON"),
    ],
)
def test_bodies_that_are_not_json_we_read_are_invalid_arguments(body: bytes, message: str):
    with pytest.raises(InvalidArgument, match=message):
        parse_json(body)


def test_an_integer_of_too_many_digits_is_named_without_pythons_advice():
    with pytest.raises(InvalidArgument) as refused:
        parse_json(b'{"max_new_tokens": ' + b"9" * 5000 + b"}")
    assert "an integer has more than 4300 digits" in str(refused.value)
    assert "sys." not in str(refused.value)
