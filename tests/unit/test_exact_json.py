"""exact_json: JSON objects read and written without changing a value.
Numbers keep their text, everything else is written canonically, and what
is not a JSON object (or not storable as UTF-8) is refused with a reason."""

from __future__ import annotations

import json

import pytest

from agent_state import exact_json
from agent_state.exact_json import JsonError


@pytest.mark.parametrize(
    "number",
    [
        "1",
        "1.0",
        "1e400",
        "1E+400",
        "-1e-400",
        "12345678901234567890123",
        "-12345678901234567890123",
        "0.1",
        "0.10",
        "-0",
        "-0.0",
        "2.5e-3",
        "123456789012345678901234567890.123456789012345678901234567890",
    ],
)
def test_numbers_read_back_exactly_as_sent(number: str) -> None:
    values = exact_json.parse_object(f'{{"n": {number}, "in": [{number}]}}')
    assert values["n"] == exact_json.number(number)
    assert exact_json.is_number(values["n"])
    assert exact_json.dump(values) == f'{{"in":[{number}],"n":{number}}}'


def test_an_integer_stays_an_integer_and_null_stays() -> None:
    text = exact_json.dump(
        exact_json.parse_object('{"big": 12345678901234567890123, "none": null}')
    )
    assert text == '{"big":12345678901234567890123,"none":null}'
    # A float-based reader would have turned it into 1.2345678901234568e+22.
    assert json.loads(text)["big"] == 12345678901234567890123


@pytest.mark.parametrize(
    ("sent", "canonical"),
    [
        ("{}", "{}"),
        (' \n{ "b" : 1 ,\t"a" : 2 } \n', '{"a":2,"b":1}'),
        (
            '{"z": {"y": [], "x": {}}, "a": [true, false, null]}',
            '{"a":[true,false,null],"z":{"x":{},"y":[]}}',
        ),
        # Only the escapes JSON requires; any other character as itself.
        ('{"s": "\\u00e9\\u2028\\/\\ud83d\\ude00"}', '{"s":"\u00e9\u2028/\U0001f600"}'),
        ('{"s": "\\u0000\\n\\"\\\\\\u001f"}', '{"s":"\\u0000\\n\\"\\\\\\u001f"}'),
        # Keys in code point order: "B" (U+0042) before "a", astral last.
        (
            '{"\U0001f600": 1, "a": 2, "B": 3, "\u00e9": 4}',
            '{"B":3,"a":2,"\u00e9":4,"\U0001f600":1}',
        ),
        ('{"": ""}', '{"":""}'),
    ],
)
def test_canonical_text(sent: str, canonical: str) -> None:
    values = exact_json.parse_object(sent)
    assert exact_json.dump(values) == canonical
    assert exact_json.load_object(canonical) == values
    assert exact_json.dump(exact_json.parse_object(canonical)) == canonical


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        ("", "is not valid JSON"),
        ("{", "is not valid JSON"),
        ("{} {}", "is not valid JSON"),
        ("{'a': 1}", "is not valid JSON"),
        ('{"a": 01}', "is not valid JSON"),
        ('{"a": .5}', "is not valid JSON"),
        ('{"a": "\x01"}', "is not valid JSON"),
        ('{"a": undefined}', "is not valid JSON"),
        ("\ufeff{}", "is not valid JSON"),
        ("[]", "must be a JSON object, not an array"),
        ("1", "must be a JSON object, not a number"),
        ('"x"', "must be a JSON object, not a string"),
        ("true", "must be a JSON object, not a boolean"),
        ("null", "must be a JSON object, not null"),
        ('{"a": NaN}', "holds NaN"),
        ('{"a": -Infinity}', "holds -Infinity"),
        ('{"a": 1, "a": 1}', 'repeats the key "a"'),
        ('{"a": {"b": 1, "b": 2}}', 'repeats the key "b"'),
        ('{"a": "\\ud800"}', "lone surrogate"),
        ('{"\\udfff": 1}', "lone surrogate"),
        ('{"a": ["\\ude00\\ud83d"]}', "lone surrogate"),
    ],
)
def test_refused(sent: str, reason: str) -> None:
    with pytest.raises(JsonError) as caught:
        exact_json.parse_object(sent)
    assert reason in str(caught.value)


def test_a_string_like_a_number_stays_a_string() -> None:
    values = exact_json.parse_object('{"s": "1e400", "n": 1e400}')
    assert not exact_json.is_number(values["s"])
    assert exact_json.dump(values) == '{"n":1e400,"s":"1e400"}'


def test_values_built_in_python_dump_canonically() -> None:
    built: dict[str, exact_json.Value] = {
        "z": [exact_json.number("-0.0"), None, True, "\n"],
        "a": {"k": exact_json.number("7")},
    }
    assert exact_json.dump(built) == '{"a":{"k":7},"z":[-0.0,null,true,"\\n"]}'
    assert exact_json.dump_utf8({"é": "\U0001f600"}) == '{"é":"\U0001f600"}'.encode()


def test_a_large_state_is_read_and_written_in_c() -> None:
    """1 MiB of state, 70,000 numbers, round-trips exactly (and fast: the
    standard library's C code does the work)."""
    sent = "{" + ",".join(f'"k{n}": {n}.50' for n in range(70_000)) + "}"
    text = exact_json.dump_utf8(exact_json.parse_object(sent))
    assert exact_json.dump_utf8(exact_json.load_object(text.decode())) == text
    assert text.count(b".50,") == 69_999


def test_nesting_up_to_the_limit() -> None:
    depth = exact_json.MAX_DEPTH
    # The outer object counts: depth - 1 arrays inside it.
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    assert exact_json.dump(exact_json.parse_object(f'{{"a":{inner}}}')) == f'{{"a":{inner}}}'


@pytest.mark.parametrize("depth", [exact_json.MAX_DEPTH + 1, 2000, 100_000])
def test_nesting_past_the_limit_is_refused(depth: int) -> None:
    text = '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    with pytest.raises(JsonError) as caught:
        exact_json.parse_object(text)
    assert "deeper than 100" in str(caught.value)
