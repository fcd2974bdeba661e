from __future__ import annotations

import uuid

import pytest

from agent_state import rules
from agent_state.errors import InvalidArgument, MessageNotFound
from agent_state.model import MessageInput

LIMITS = rules.Limits()


def _text(role: int = 1, kind: str = "") -> MessageInput:
    return MessageInput(role=role, kind=kind, body=b"\n\x00", body_variant="text")


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ([_text()] * 1001, "messages"),
        ([_text(), _text(role=0)], "messages[1].role"),
        ([_text(role=4)], "messages[0].role"),
        ([_text(), _text(), _text(kind="x" * 257)], "messages[2].kind"),
        ([MessageInput(1, "", b"", None)], "messages[0].body"),
        (
            [_text(), MessageInput(3, "", b"\x12\x00", "tool_output", None)],
            "messages[1].body.tool_output",
        ),
    ],
)
def test_invalid_appends_name_the_field(messages: list[MessageInput], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        rules.validate_append(messages, LIMITS)
    assert caught.value.field == field


def test_valid_appends_pass() -> None:
    rules.validate_append([_text()] * 1000, LIMITS)
    rules.validate_append([_text(kind="ü" * 256)], LIMITS)  # code points, not bytes
    rules.validate_append([MessageInput(3, "", b"", "tool_output", "image")], LIMITS)


@pytest.mark.parametrize(
    ("requested", "expected"), [(0, 100), (-5, 100), (1, 1), (999, 999), (1000, 1000), (5000, 1000)]
)
def test_page_size(requested: int, expected: int) -> None:
    assert rules.page_size(requested, LIMITS) == expected


def test_role_filter() -> None:
    assert rules.role_filter([3, 1, 3]) == frozenset({1, 3})
    for bad in ([0], [1, 9]):
        with pytest.raises(InvalidArgument, match="roles"):
            rules.role_filter(bad)


def test_updated_at_strictly_increases() -> None:
    assert rules.next_updated_at(10, 50) == 50
    assert rules.next_updated_at(50, 50) == 51
    assert rules.next_updated_at(50, 20) == 51


C = str(uuid.uuid4())
A, B, D = (str(uuid.uuid4()) for _ in range(3))


@pytest.mark.parametrize(
    ("from_id", "to_id", "new_ids", "field"),
    [
        ("", "", [], "from_message_id"),
        ("bad", "", [A], "from_message_id"),
        (A, "bad", [], "to_message_id"),
        (A, "", [B, "nope"], "new_message_ids[1]"),
        (A, "", [], "new_message_ids"),
        ("", A, [], "new_message_ids"),
        (A, "", [B, A.upper()], "new_message_ids[1]"),
        ("", A, [A], "new_message_ids[0]"),
        (A, B, [D, D.upper()], "new_message_ids[1]"),
    ],
)
def test_invalid_replace_requests(from_id: str, to_id: str, new_ids: list[str], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        rules.parse_range(C, from_id, to_id, new_ids)
    assert caught.value.field == field


def test_replace_range_may_be_emptied_or_reordered() -> None:
    request = rules.parse_range(C, A, B, [])
    assert request.new_ids == ()
    request = rules.parse_range(C, A, B, [B, A])
    assert request.new_ids == (uuid.UUID(B), uuid.UUID(A))


def test_delete_needs_one_end() -> None:
    with pytest.raises(InvalidArgument):
        rules.parse_range(C, "", "", None)
    assert rules.parse_range(C, A, "", None).to_id is None


def test_range_checks_come_in_the_promised_order() -> None:
    a, b, d = uuid.UUID(A), uuid.UUID(B), uuid.UUID(D)
    request = rules.parse_range(C, A, B, [D])
    # (3) an end not in the ordering (detached counts as not in it)
    with pytest.raises(MessageNotFound) as caught:
        rules.check_range(request, {a: None, b: 5})
    assert caught.value.field == "from_message_id"
    with pytest.raises(MessageNotFound) as caught:
        rules.check_range(request, {a: 5})
    assert caught.value.field == "to_message_id"
    # (4) from after to, before (5) unknown inserted ids
    with pytest.raises(InvalidArgument) as invalid:
        rules.check_range(request, {a: 9, b: 5})
    assert invalid.value.field == "from_message_id"
    with pytest.raises(MessageNotFound) as caught:
        rules.check_range(request, {a: 1, b: 5})
    assert caught.value.field == "new_message_ids[0]"
    # a detached inserted id is fine
    ends = rules.check_range(request, {a: 1, b: 5, d: None})
    assert (ends.from_position, ends.to_position) == (1, 5)


@pytest.mark.parametrize(
    ("ends", "edges"),
    [
        # Only from_message_id: right after it, before its next neighbour.
        (rules.RangeEnds(5, None), (5, rules.Neighbour(5))),
        # Only to_message_id: right before it, after its previous neighbour.
        (rules.RangeEnds(None, 7), (rules.Neighbour(7), 7)),
        # Both: where the range was, between its outer neighbours.
        (rules.RangeEnds(5, 7), (rules.Neighbour(5), rules.Neighbour(7))),
    ],
)
def test_gap_edges(
    ends: rules.RangeEnds, edges: tuple[int | rules.Neighbour, int | rules.Neighbour]
) -> None:
    assert rules.gap_edges(ends) == edges
