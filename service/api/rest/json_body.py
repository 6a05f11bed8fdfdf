"""JSON request bodies, parsed with bounded work.

A body as large as the message limit (about 21 MB) may hold millions of tiny values
(`[0,0,...]`, `[{},{},...]`): json.loads makes a Python object of each, on the event loop and
holding the GIL, for up to seconds, and every stream and health check waits. No request of ours
needs more than a few hundred values, so the values are counted first, with byte scans that
cost tens of milliseconds on the largest body, and a body with more is refused before parsing.
Real requests' bulk is long strings (texts, base64 images), which parse fast.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from service.errors import InvalidArgument

MAX_JSON_VALUES = 10_000
_VALUE_BEFORE = (b"[", b"{", b",", b":")  # outside strings, each comes before a value
_UTF8 = ("utf-8", "utf-8-sig")


def json_values(body: bytes) -> int:
    """The JSON values in `body`, object keys included, if it is valid JSON (an empty
    container counts one more): one, plus a value after each opening bracket, comma and colon
    outside strings. Every string is a value, so a body with too many strings is counted no
    further."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body
    strings = unescaped.count(b'"') // 2
    if strings > MAX_JSON_VALUES:
        return strings
    outside = unescaped.split(b'"')[0::2]
    return 1 + sum(sum(part.count(mark) for mark in _VALUE_BEFORE) for part in outside)


def parse_json(body: bytes) -> Any:
    """The JSON value of `body`; InvalidArgument when it is not UTF-8 JSON, holds more than
    MAX_JSON_VALUES values or nests deeper than Python's recursion limit."""
    if json.detect_encoding(body) not in _UTF8:
        # UTF-16/32 (which json.loads reads too) hide quotes in other bytes from the count
        raise InvalidArgument("the request body is not UTF-8 JSON (RFC 8259)")
    values = json_values(body)
    if values > MAX_JSON_VALUES:
        raise InvalidArgument(
            f"the request body holds about {values} JSON values; at most {MAX_JSON_VALUES} are read"
        )
    try:
        return json.loads(body)
    except ValueError as error:  # not JSON, not UTF-8, an integer of over 4,300 digits
        reason = str(error)
        if "sys.set_int_max_str_digits" in reason:  # Python's advice means nothing to a client
            reason = f"an integer has more than {sys.get_int_max_str_digits()} digits"
        raise InvalidArgument(f"the request body is not valid JSON: {reason}") from None
    except RecursionError:
        raise InvalidArgument("the request body's JSON is nested too deeply") from None
