"""The companion API's state rules (rules.py): scopes, one scope's change
(set_json, remove_keys, the 1 MiB limit) and AppendMessagesWithState's
state_updates. Every refusal names its field."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import pytest

from agent_state import rules
from agent_state.errors import InvalidArgument
from agent_state.exact_json import Value, number
from agent_state.model import Scope, StateUpdateInput

CONVERSATION = UUID("0191c6a4-5d2e-7c3a-9f00-2b1e4c6d8a10")


def _refused(field: str, call: Callable[[], object]) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert caught.value.field == field, caught.value
    return caught.value


@pytest.mark.parametrize(
    ("sent", "scope"),
    [
        ("app/chat", Scope("app/chat")),
        ("app/\U0001f600 x.y:z", Scope("app/\U0001f600 x.y:z")),
        ("user/chat/alice", Scope("user/chat/alice")),
        ("app/" + "a" * 256, Scope("app/" + "a" * 256)),
        (f"conversation/{CONVERSATION}", Scope(f"conversation/{CONVERSATION}", CONVERSATION)),
        # Any spelling of the id; the key uses the canonical one.
        (
            f"conversation/{str(CONVERSATION).upper()}",
            Scope(f"conversation/{CONVERSATION}", CONVERSATION),
        ),
        (
            f"conversation/urn:uuid:{CONVERSATION}",
            Scope(f"conversation/{CONVERSATION}", CONVERSATION),
        ),
        (f"conversation/{CONVERSATION.hex}", Scope(f"conversation/{CONVERSATION}", CONVERSATION)),
    ],
)
def test_scopes(sent: str, scope: Scope) -> None:
    assert rules.scope(sent, "scope") == scope


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "app",
        "app/",
        "/app/x",
        "app/x/",
        "app/x/y",
        "user/chat",
        "user//alice",
        "user/chat/alice/x",
        "App/x",
        "team/x",
        "conversation/",
        "conversation/not-a-uuid",
        f"conversation/{CONVERSATION}/x",
        f"conversation/ {CONVERSATION}",
        "app/" + "a" * 257,
        "user/chat/" + "\U0001f600" * 257,
        "app/\x00",
        "user/a\x00b/c",
    ],
)
def test_malformed_scopes_are_refused_naming_the_field(sent: str) -> None:
    _refused("state_updates[3].scope", lambda: rules.scope(sent, "state_updates[3].scope"))


def _change(
    set_json: str = "", remove_keys: tuple[str, ...] = (), scope: str = "app/x"
) -> rules.StateChange:
    return rules.state_change(StateUpdateInput(scope, set_json, list(remove_keys)))


def test_a_change_sets_and_removes_keys() -> None:
    change = _change('{"a": 1, "n": null, "o": {"x": [1.0]}}', ("gone", "absent"))
    current: dict[str, Value] = {"a": number("0"), "gone": "x", "kept": True}
    assert change.applied_to(current) == {
        "a": number("1"),
        "n": None,
        "o": {"x": [number("1.0")]},
        "kept": True,
    }
    # null is a value like any other: the key stays, set to null.
    assert "n" in change.applied_to({})


def test_an_empty_change_keeps_everything() -> None:
    change = _change()
    assert change.values == {}
    assert change.remove == frozenset()
    assert change.applied_to({"a": None}) == {"a": None}


@pytest.mark.parametrize(
    "set_json",
    ["[]", "1", "null", " ", '{"a": 1, "a": 2}', '{"a": NaN}', '{"a": "\\udc00"}', "{", '"{}"'],
)
def test_set_json_must_be_a_json_object(set_json: str) -> None:
    _refused("set_json", lambda: _change(set_json))


def test_a_key_both_set_and_removed_is_refused() -> None:
    error = _refused("remove_keys[1]", lambda: _change('{"a": 1, "b": 2}', ("z", "b")))
    assert "'b'" in error.reason


def test_set_json_past_1_mib_is_refused() -> None:
    # {"a":"..."}: 8 bytes around the string.
    fits = '{"a": "' + "x" * (rules.MAX_STATE_BYTES - 8) + '"}'
    assert len(rules.state_text(_change(fits).values, "set_json")) == rules.MAX_STATE_BYTES
    over = '{"a": "' + "x" * (rules.MAX_STATE_BYTES - 7) + '"}'
    error = _refused("set_json", lambda: _change(over))
    assert "at most 1048576" in error.reason
    # Counted as stored: whitespace sent does not count, escapes as written.
    assert _change('{"a":' + " " * rules.MAX_STATE_BYTES + "1}").values == {"a": number("1")}


def test_state_text_refuses_a_merged_state_past_1_mib() -> None:
    half = "x" * (rules.MAX_STATE_BYTES // 2)
    merged = _change(f'{{"b": "{half}"}}').applied_to({"a": half})
    _refused(
        "state_updates[0].set_json", lambda: rules.state_text(merged, "state_updates[0].set_json")
    )


def test_errors_name_fields_under_the_prefix() -> None:
    given = StateUpdateInput("app/x", "[]", [])
    _refused("state_updates[2].set_json", lambda: rules.state_change(given, "state_updates[2]."))
    assert rules.state_change(StateUpdateInput("app/x", "", []), "p.").prefix == "p."


def test_state_updates_name_each_scope_once() -> None:
    updates = [
        StateUpdateInput(f"conversation/{CONVERSATION}", '{"a": 1}', []),
        StateUpdateInput("user/chat/alice", "", ["b"]),
    ]
    changes = rules.state_updates(updates)
    assert [change.sent for change in changes] == [update.scope for update in updates]
    assert [change.prefix for change in changes] == ["state_updates[0].", "state_updates[1]."]
    again = [*updates, StateUpdateInput(f"conversation/{str(CONVERSATION).upper()}", "", [])]
    error = _refused("state_updates[2].scope", lambda: rules.state_updates(again))
    assert "state_updates[0]" in error.reason


def test_state_updates_are_bounded() -> None:
    many = [StateUpdateInput(f"app/{i}", "", []) for i in range(rules.MAX_STATE_UPDATES)]
    assert len(rules.state_updates(many)) == rules.MAX_STATE_UPDATES
    _refused(
        "state_updates", lambda: rules.state_updates([*many, StateUpdateInput("app/x", "", [])])
    )
    assert rules.state_updates([]) == []
