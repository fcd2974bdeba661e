"""The companion API's request rules (rules.py): titles, labels,
retention, update masks, ListConversations' filters, expected versions.
Every refusal names its field."""

from __future__ import annotations

import uuid

import pytest

from agent_state import rules
from agent_state.errors import InvalidArgument, MessageNotFound
from agent_state.model import (
    ConversationDetails,
    ConversationInput,
    Moment,
    Retention,
    RetentionInput,
)

FINE = ConversationInput("title", {"user": "alice"}, RetentionInput(Moment(60, 0), 10))


def _refused(field: str, call: object) -> InvalidArgument:
    assert callable(call)
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert caught.value.field == field, caught.value
    return caught.value


def test_details_are_taken_as_given() -> None:
    details = rules.conversation_details(FINE)
    assert details == ConversationDetails("title", {"user": "alice"}, Retention(60_000_000, 10))
    unset = rules.conversation_details(ConversationInput("", {}, None))
    assert unset == ConversationDetails("", {}, None)
    zero = rules.conversation_details(ConversationInput("", {}, RetentionInput(None, 0)))
    assert zero.retention == Retention(0, 0)


@pytest.mark.parametrize(
    "title", ["", "x" * rules.MAX_TITLE_LENGTH, "\x00" * 10, "\U0001f600" * rules.MAX_TITLE_LENGTH]
)
def test_titles_up_to_the_limit_in_code_points(title: str) -> None:
    assert rules.conversation_details(ConversationInput(title, {}, None)).title == title


@pytest.mark.parametrize("prefix", ["", "conversation."])
def test_a_title_past_the_limit_is_refused(prefix: str) -> None:
    given = ConversationInput("\U0001f600" * (rules.MAX_TITLE_LENGTH + 1), {}, None)
    error = _refused(f"{prefix}title", lambda: rules.conversation_details(given, prefix))
    assert "1001 characters" in error.reason


@pytest.mark.parametrize("key", ["a", "z" * 63, "0-9_a.b/c", "team/x", "-", ".", "/", "_"])
def test_label_keys_allowed(key: str) -> None:
    assert rules.labels({key: "v"}, "labels") == {key: "v"}


@pytest.mark.parametrize("key", ["", "A", "z" * 64, "a b", "é", "a:b", "a\x00", "a*", "a\n"])
def test_label_keys_refused(key: str) -> None:
    error = _refused(f"labels[{key!r}]", lambda: rules.labels({key: "v"}, "labels"))
    assert "a-z, 0-9" in error.reason


def test_label_values_and_count_limits() -> None:
    assert rules.labels({"k": "\x00" * 256}, "labels") == {"k": "\x00" * 256}
    _refused("labels['k']", lambda: rules.labels({"k": "v" * 257}, "labels"))
    many = {f"k{i}": "" for i in range(rules.MAX_LABELS)}
    assert rules.labels(many, "labels") == many
    error = _refused("labels", lambda: rules.labels(many | {"one-more": ""}, "labels"))
    assert "65 labels" in error.reason


def test_a_long_bad_key_is_shortened_in_the_message() -> None:
    key = "K" * 10_000
    error = _refused(f"labels[{'K' * 64 + '...'!r}]", lambda: rules.labels({key: ""}, "labels"))
    assert len(str(error)) < 300


@pytest.mark.parametrize(
    ("moment", "micros"),
    [
        (Moment(0, 0), 0),
        (Moment(0, 1000), 1),
        (Moment(86_400, 999_999_000), 86_400_999_999),
        (Moment(315_576_000_000, 0), 315_576_000_000_000_000),
    ],
)
def test_durations_in_whole_microseconds(moment: Moment, micros: int) -> None:
    assert rules.duration(moment, "d") == micros


@pytest.mark.parametrize(
    ("moment", "reason"),
    [
        (Moment(-1, 0), "negative"),
        (Moment(0, -1000), "negative"),
        (Moment(1, 1), "whole number of microseconds"),
        (Moment(0, 1_000_000_000), "10,000 years"),
        (Moment(315_576_000_001, 0), "10,000 years"),
        (Moment(2**63 - 1, 0), "10,000 years"),
    ],
)
def test_durations_refused(moment: Moment, reason: str) -> None:
    given = ConversationInput("", {}, RetentionInput(moment, 0))
    error = _refused("retention.max_idle", lambda: rules.conversation_details(given))
    assert reason in error.reason


def test_negative_max_messages_is_refused() -> None:
    given = ConversationInput("", {}, RetentionInput(None, -1))
    _refused(
        "conversation.retention.max_messages",
        lambda: rules.conversation_details(given, "conversation."),
    )


def test_update_masks() -> None:
    update = rules.conversation_update(["labels", "labels"], FINE)
    assert update.fields == {"labels"}
    current = ConversationDetails("old", {"x": "y"}, Retention(1, 1))
    assert update.applied_to(current) == ConversationDetails(
        "old", {"user": "alice"}, Retention(1, 1)
    )
    everything = rules.conversation_update(["title", "labels", "retention"], FINE)
    assert everything.applied_to(current) == rules.conversation_details(FINE)
    reset = rules.conversation_update(["retention"], ConversationInput("", {}, None))
    assert reset.applied_to(current) == ConversationDetails("old", {"x": "y"}, None)


@pytest.mark.parametrize(
    ("paths", "field"),
    [
        ([], "update_mask"),
        (["name"], "update_mask.paths[0]"),
        (["title", "retention.max_idle"], "update_mask.paths[1]"),
        (["Title"], "update_mask.paths[0]"),
        (["version"], "update_mask.paths[0]"),
        (["title", ""], "update_mask.paths[1]"),
    ],
)
def test_bad_update_masks_are_refused(paths: list[str], field: str) -> None:
    _refused(field, lambda: rules.conversation_update(paths, FINE))


def test_only_fields_in_the_mask_are_checked() -> None:
    given = ConversationInput("x" * 5000, {"BAD": ""}, RetentionInput(None, -1))
    assert rules.conversation_update(["title"], FINE).fields == {"title"}
    _refused("conversation.title", lambda: rules.conversation_update(["title"], given))
    _refused("conversation.labels['BAD']", lambda: rules.conversation_update(["labels"], given))
    updated = rules.conversation_update(["labels"], ConversationInput("x" * 5000, {}, None))
    assert updated.details.labels == {}


@pytest.mark.parametrize("value", [-1, -(2**63)])
def test_negative_expected_versions_are_refused(value: int) -> None:
    _refused("expected_version", lambda: rules.expected_version(value))


def test_expected_versions() -> None:
    assert rules.expected_version(0) == 0
    assert rules.expected_version(2**63 - 1) == 2**63 - 1


@pytest.mark.parametrize(
    ("order_by", "newest_first"), [("", True), ("updated_at desc", True), ("updated_at", False)]
)
def test_orders(order_by: str, newest_first: bool) -> None:
    assert rules.conversation_filter({}, None, None, order_by).newest_first is newest_first


@pytest.mark.parametrize(
    "order_by",
    ["updated_at asc", "UPDATED_AT", "updated_at  desc", " updated_at", "created_at", "x" * 1000],
)
def test_other_orders_are_refused(order_by: str) -> None:
    _refused("order_by", lambda: rules.conversation_filter({}, None, None, order_by))


def test_time_bounds_keep_their_meaning_in_whole_microseconds() -> None:
    # updated_at (whole microseconds) > 10.5 us exactly when > 10 us, and
    # < 10.5 us exactly when < 11 us.
    chosen = rules.conversation_filter({}, Moment(0, 10_500), Moment(0, 10_500), "")
    assert (chosen.updated_after, chosen.updated_before) == (10, 11)
    exact = rules.conversation_filter({}, Moment(-1, 0), Moment(1, 0), "")
    assert (exact.updated_after, exact.updated_before) == (-1_000_000, 1_000_000)
    assert rules.MIN_TIME < -62_135_596_800_000_000
    assert rules.MAX_TIME > 253_402_300_799_999_999


@pytest.mark.parametrize(
    "moment",
    [
        Moment(0, -1),
        Moment(0, 1_000_000_000),
        Moment(-62_135_596_801, 0),
        Moment(253_402_300_800, 0),
        Moment(2**63 - 1, 0),
    ],
)
@pytest.mark.parametrize("field", ["updated_after", "updated_before"])
def test_invalid_timestamps_are_refused(moment: Moment, field: str) -> None:
    bounds = {"updated_after": None, "updated_before": None} | {field: moment}
    _refused(field, lambda: rules.conversation_filter({}, order_by="", **bounds))


def test_label_filters_follow_the_label_rules() -> None:
    assert rules.conversation_filter({"k": "v"}, None, None, "").labels == {"k": "v"}
    _refused("labels['K']", lambda: rules.conversation_filter({"K": "v"}, None, None, ""))


# --- reading and forking the ordering -----------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "room", "kept"),
    [
        ([], 10, 0),
        ([5, 4], 10, 2),
        # Under the room, never at it.
        ([5, 5], 10, 1),
        ([4, 5, 1], 10, 2),
        ([4, 4, 1], 10, 3),
        # The first always goes, however large.
        ([50, 1], 10, 1),
        ([50], -3, 1),
    ],
)
def test_fitting_keeps_the_leading_entries_that_fit(sizes: list[int], room: int, kept: int) -> None:
    assert rules.fitting(sizes, room) == kept


@pytest.mark.parametrize("count", [1, 5, rules.MAX_TAIL])
def test_tail_counts(count: int) -> None:
    assert rules.tail_count(count) == count


@pytest.mark.parametrize("count", [0, -1, rules.MAX_TAIL + 1, 2**31 - 1])
def test_tail_counts_out_of_range(count: int) -> None:
    error = _refused("count", lambda: rules.tail_count(count))
    assert str(count) in error.reason


def test_wanted_ids() -> None:
    one = uuid.uuid4()
    assert rules.wanted_ids([str(one), str(one).upper()]) == [one, one]
    _refused("message_ids", lambda: rules.wanted_ids([]))
    too_many = [str(one)] * (rules.MAX_MESSAGE_IDS + 1)
    _refused("message_ids", lambda: rules.wanted_ids(too_many))
    _refused("message_ids[1]", lambda: rules.wanted_ids([str(one), "nope", ""]))


def test_check_in_ordering_names_the_first_missing() -> None:
    conversation, here, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rules.check_in_ordering(conversation, [here, here], {here})
    with pytest.raises(MessageNotFound) as caught:
        rules.check_in_ordering(conversation, [here, gone, gone], {here})
    assert caught.value.field == "message_ids[1]"
    assert str(gone) in caught.value.reason


def test_fork_requests() -> None:
    source, up_to, new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    request = rules.fork_request(str(source).upper(), str(up_to), str(new), "t", {"k": "v"})
    assert request == rules.ForkRequest(
        source, up_to, new, ConversationDetails("t", {"k": "v"}, None)
    )
    unset = rules.fork_request(str(source), "", "", "", {})
    assert (unset.up_to, unset.new_conversation_id) == (None, None)
    cases: list[tuple[str, tuple[str, str, str, str, dict[str, str]]]] = [
        ("conversation_id", ("", "", "", "", {})),
        ("up_to_message_id", (str(source), "x", "", "", {})),
        ("new_conversation_id", (str(source), "", "x", "", {})),
        ("title", (str(source), "", "", "t" * (rules.MAX_TITLE_LENGTH + 1), {})),
        ("labels['A']", (str(source), "", "", "", {"A": ""})),
    ]
    for field, arguments in cases:
        _refused(field, lambda arguments=arguments: rules.fork_request(*arguments))
