"""Content round-trips exactly: append response, list, snapshot all return what was sent."""

from __future__ import annotations

import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import (
    ASSISTANT,
    TOOL,
    USER,
    content,
    input_content,
    new_id,
    tool_image_message,
    tool_text_message,
)
from tests.support import calls
from tests.support.calls import Stub, text_message

TEXTS = {
    "empty": "",
    "ascii": "hello, world",
    "nul inside": "a\x00b",
    "only nul": "\x00",
    "nul edges": "\x00abc\x00",
    "emoji zwj": "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f389",
    "combining (not NFC)": "e\u0301 vs \u00e9",
    "rtl": "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
    "cjk": "\u4f60\u597d\uff0c\u4e16\u754c",
    "controls": "line1\r\nline2\n\ttab\x1b[0m\x7f",
    "bom and specials": "\ufeff\ufffc\ufffd\u200b",
    "max code point": "\U0010ffff\U000e0001",
    "trailing spaces": "  padded  \n\n",
    "json-like": '{"a": [1, 2], "b": null}\\u0000',
    "sql-like": "'; DROP TABLE messages; --",
    "long": "\u00e9\U0001f600x" * 50_000,
}

KINDS = {
    "empty": "",
    "plain": "system",
    "nul": "sum\x00mary",
    "emoji": "\U0001f9e0 memory",
    "spaces": " padded ",
    "case": "Summary",
}


def _round_trip(stub: Stub, inputs: list[pb.AppendMessageInput]) -> None:
    cid = new_id()
    response = calls.append(stub, cid, inputs)
    expected = [input_content(i) for i in inputs]
    assert [content(m) for m in response.appended] == expected
    listed = calls.list_all(stub, cid)
    assert [content(m) for m in listed] == expected
    assert listed == list(response.appended)
    for sent, got in zip(inputs, listed, strict=True):
        assert got.body == sent.body
        assert got.body.WhichOneof("body") == sent.body.WhichOneof("body")
        if sent.body.HasField("tool_output"):
            assert got.body.tool_output.WhichOneof("output") == sent.body.tool_output.WhichOneof(
                "output"
            )
    snap = calls.snapshot(stub, cid, [m.id for m in listed])
    snapped = calls.snapshot_messages(stub, snap.snapshot_id)
    assert snapped == listed


@pytest.mark.parametrize("name", list(TEXTS))
def test_text_round_trips(stub: Stub, name: str) -> None:
    text = TEXTS[name]
    _round_trip(stub, [text_message(text, USER), text_message(text, ASSISTANT, "k")])


@pytest.mark.parametrize("name", list(KINDS))
def test_kind_round_trips(stub: Stub, name: str) -> None:
    _round_trip(stub, [text_message("x", USER, KINDS[name])])


def test_kinds_are_not_normalised_or_merged(stub: Stub) -> None:
    kinds = ["a", "A", "a ", " a", "a\x00", "e\u0301", "\u00e9", ""]
    _round_trip(stub, [text_message(k, USER, k) for k in kinds])


def test_tool_text_output_round_trips(stub: Stub) -> None:
    metadata = {
        "": "",
        "empty value": "",
        "k\x00ey": "va\x00lue",
        "\U0001f511": "\u2713",
        "json": '{"nested": true}',
    }
    metadata.update({f"key{i:03}": f"value {i}" for i in range(200)})
    _round_trip(
        stub,
        [
            tool_text_message("result\x00text \U0001f4c4", metadata=metadata),
            tool_text_message("", tool_name="", tool_call_id="", kind=""),
            tool_text_message("no metadata", tool_name="\u5de5\u5177", tool_call_id="c\x00id"),
            tool_text_message("as assistant", msg_role=ASSISTANT),
            tool_text_message("as user", msg_role=USER),
        ],
    )


@pytest.mark.parametrize(
    "detail",
    [pb.IMAGE_DETAIL_UNSPECIFIED, pb.IMAGE_DETAIL_AUTO, pb.IMAGE_DETAIL_LOW, pb.IMAGE_DETAIL_HIGH],
)
def test_tool_image_output_round_trips(stub: Stub, detail: pb.ImageDetail) -> None:
    image = pb.ToolImageOutput(
        external_url="https://example.com/images/\u00e9t\u00e9.png?x=1&y=%20",
        mime_type="image/png",
        detail=detail,
        width_px=1920,
        height_px=1080,
        sha256="0123456789abcdef" * 4,
    )
    _round_trip(stub, [tool_image_message(image, metadata={"source": "camera", "n": "1"})])


def test_tool_image_output_edge_values_round_trip(stub: Stub) -> None:
    images = [
        pb.ToolImageOutput(),  # set, with every field at its default
        pb.ToolImageOutput(width_px=-1, height_px=-(2**31)),
        pb.ToolImageOutput(width_px=2**31 - 1, height_px=2**31 - 1, external_url="x\x00y"),
        pb.ToolImageOutput(mime_type="", sha256="", detail=pb.IMAGE_DETAIL_LOW),
    ]
    _round_trip(stub, [tool_image_message(i, tool_name="", tool_call_id="") for i in images])


def test_unknown_image_detail_value_round_trips(stub: Stub) -> None:
    image = pb.ToolImageOutput(external_url="https://example.com/a.png")
    image.detail = 42  # type: ignore[assignment]
    _round_trip(stub, [tool_image_message(image)])


def test_mixed_batch_round_trips(stub: Stub) -> None:
    _round_trip(
        stub,
        [
            text_message("", USER, ""),
            tool_text_message("t", metadata={"a": "b"}),
            text_message("\x00", ASSISTANT, "\x00"),
            tool_image_message(pb.ToolImageOutput(detail=pb.IMAGE_DETAIL_AUTO), msg_role=TOOL),
            text_message("last", TOOL, "tool"),
        ],
    )
