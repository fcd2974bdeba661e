"""JSON objects read and written without changing a value: the scoped
state of the companion API. Pure functions, table-tested in tests/unit.

Numbers keep the text they were sent with (`1`, `1.0`, `1e400`,
`12345678901234567890123`, `-0` all read back exactly so: an integer stays
an integer and no number passes through a float). Everything else is
written canonically: no whitespace, object keys in code point order,
strings with only the escapes JSON requires. So two objects with the same
members have the same text, and its UTF-8 length is the state's size.

Refused, as JsonError carrying the reason: text that is not JSON,
non-finite constants (NaN, Infinity), a key repeated in one object, a
string holding an escaped lone surrogate (not Unicode, so not storable as
UTF-8), and nesting deeper than MAX_DEPTH.

Both directions run in the standard library's C code, so a state of
1 MiB costs milliseconds: a number is parsed into the string of its text
between two marks, lone surrogates (`number`), which the encoder writes as
they are and which no accepted string holds; replacing `"<mark>` and
`<end>"` by nothing then leaves the number's text.
"""

from __future__ import annotations

import json
import re

MAX_DEPTH = 100
"""Objects and arrays nested in one another, the outermost counted."""

_MARK, _END = "\ud800", "\udfff"
# A C function, called for every number parsed.
_NUMBER = (_MARK + "{}" + _END).format
# Where a lone surrogate may come from: an escape of one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

Value = None | bool | str | list["Value"] | dict[str, "Value"]
"""A JSON value as parsed here; a number is a str (see `number`)."""


def number(text: str) -> str:
    """The value standing for the JSON number `text`."""
    return _NUMBER(text)


def is_number(value: Value) -> bool:
    return isinstance(value, str) and value.startswith(_MARK)


class JsonError(ValueError):
    """Text refused as a JSON value; the message says why."""


def parse_object(text: str) -> dict[str, Value]:
    """The JSON object `text` holds; raises JsonError (see the module)."""
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise JsonError(
            f"is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise JsonError(_TOO_DEEP) from None
    if not isinstance(value, dict):
        raise JsonError(f"must be a JSON object, not {_kind(value)}")
    if _SURROGATE_ESCAPE.search(text):
        # Read plainly (no number is marked), a string holding a lone
        # surrogate does not encode.
        _utf8(json.dumps(json.loads(text), ensure_ascii=False))
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(value)
    return value


def load_object(text: str) -> dict[str, Value]:
    """The object in text `dump` wrote (stored state), without the checks
    parse_object makes of what a client sent."""
    value = _DECODER.decode(text)
    assert isinstance(value, dict)
    return value


def dump(value: Value) -> str:
    """`value` (parsed or loaded here, or made of such values) as canonical
    JSON text (see the module)."""
    # Only the escapes JSON requires: `"`, `\` and the control characters.
    encoded = json.dumps(
        value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), check_circular=False
    )
    return encoded.replace('"' + _MARK, "").replace(_END + '"', "")


def dump_utf8(value: Value) -> bytes:
    """`dump(value)` as UTF-8."""
    return _utf8(dump(value))


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonError(
            "holds a lone surrogate escape (\\ud800 to \\udfff without its pair),"
            " which is not Unicode text"
        ) from None


def _check_depth(value: dict[str, Value]) -> None:
    pending: list[tuple[dict[str, Value] | list[Value], int]] = [(value, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise JsonError(_TOO_DEEP)
        for child in container.values() if isinstance(container, dict) else container:
            if isinstance(child, dict | list):
                pending.append((child, depth + 1))


def _object(pairs: list[tuple[str, Value]]) -> dict[str, Value]:
    members = dict(pairs)
    if len(members) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonError(f"repeats the key {json.dumps(key)[:80]} in one object")
            seen.add(key)
    return members


def _constant(name: str) -> Value:
    raise JsonError(f"holds {name}, which is not a JSON number")


def _kind(value: Value) -> str:
    if is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "an array"


_TOO_DEEP = f"nests objects and arrays deeper than {MAX_DEPTH} levels"
_DECODER = json.JSONDecoder(
    object_pairs_hook=_object,
    parse_int=_NUMBER,
    parse_float=_NUMBER,
    parse_constant=_constant,
)
