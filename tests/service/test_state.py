"""Scoped state and AppendMessagesWithState in process, over every
backend: GetState and UpdateState (exact JSON, null kept, versions,
expected_version, the 1 MiB limit, no lost update under concurrency), the
state of a conversation's scope, and an append with state that lands
whole or not at all: a state change that fails, a version mismatch or a
storage failure half-way leave no message and no state behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from uuid import UUID, uuid4

import pytest

from agent_state import rules
from agent_state.companion import AppendedWithState, Replayed, ScopeState
from agent_state.errors import (
    ConversationNotFound,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StorageUnavailable,
    VersionMismatch,
)
from agent_state.idempotency import Idempotency
from agent_state.model import MessageInput, StateUpdateInput
from agent_state.storage import transactions
from agent_state.storage.base import Store

from .._gen_helpers import text_body
from .test_companion import PLAIN, Services, applied, fresh_key, services


def update(scope: str, set_json: str = "", *remove_keys: str) -> StateUpdateInput:
    return StateUpdateInput(scope, set_json, list(remove_keys))


def app() -> str:
    return f"app/{uuid4()}"


def messages(*texts: str) -> list[MessageInput]:
    return [
        MessageInput(role=1, kind="note", body=text_body(text), body_variant="text")
        for text in texts
    ]


async def listed(s: Services, conversation_id: UUID | str) -> list[bytes]:
    """The bodies of the conversation's ordering (the codec frames an entry
    as the message id's 16 bytes, then the body)."""
    page = await s.conversations.list_messages(str(conversation_id), [], [], 1000, "")
    return [entry[16:] for entry in page.entries]


# --- GetState and UpdateState -------------------------------------------------------


async def test_an_unknown_scope_is_empty_at_version_0(store: Store) -> None:
    s = services(store)
    for scope in (app(), f"user/chat/{uuid4()}", f"conversation/{uuid4()}"):
        assert await s.companion.get_state(scope) == ScopeState("{}", 0)


async def test_update_sets_and_removes_keys_exactly(store: Store) -> None:
    s = services(store)
    scope = app()
    sent = '{"int": 12345678901234567890123, "one": 1.0, "huge": 1e400, "tenth": 0.1, "n": null}'
    first = await s.companion.update_state(update(scope, sent), 0)
    text = '{"huge":1e400,"int":12345678901234567890123,"n":null,"one":1.0,"tenth":0.1}'
    assert first == ScopeState(text, 1)
    second = await s.companion.update_state(
        update(scope, '{"a": {"nested": [true, "\\u0000"]}, "n": 2}', "huge", "absent"), 0
    )
    assert second == ScopeState(
        '{"a":{"nested":[true,"\\u0000"]},"int":12345678901234567890123,"n":2,'
        '"one":1.0,"tenth":0.1}',
        2,
    )
    assert await s.companion.get_state(scope) == second
    # An empty update lands too: the version counts updates.
    assert await s.companion.update_state(update(scope), 0) == ScopeState(second.values_json, 3)
    # Any JSON reader sees the integer as an integer.
    assert json.loads(second.values_json)["int"] == 12345678901234567890123


async def test_expected_version_makes_an_update_conditional(store: Store) -> None:
    s = services(store)
    scope = app()
    with pytest.raises(VersionMismatch) as caught:
        await s.companion.update_state(update(scope, '{"a": 1}'), 1)
    assert (caught.value.field, caught.value.current) == ("expected_version", 0)
    assert "the scope is at version 0, not 1" in str(caught.value)
    assert await s.companion.get_state(scope) == ScopeState("{}", 0)
    await s.companion.update_state(update(scope, '{"a": 1}'), 0)
    assert (await s.companion.update_state(update(scope, '{"a": 2}'), 1)).version == 2
    with pytest.raises(VersionMismatch) as caught:
        await s.companion.update_state(update(scope, '{"a": 3}'), 1)
    assert caught.value.current == 2
    assert await s.companion.get_state(scope) == ScopeState('{"a":2}', 2)


async def test_request_mistakes_come_before_anything_else(store: Store) -> None:
    s = services(store)
    absent = f"conversation/{uuid4()}"
    for given, expected, field in [
        (update("app/a/b"), 0, "scope"),
        (update(absent, "[1]"), 0, "set_json"),
        (update(absent, '{"a": 1}', "a"), 0, "remove_keys[0]"),
        (update(absent, '{"a": 1}'), -1, "expected_version"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            await s.companion.update_state(given, expected)
        assert caught.value.field == field
    with pytest.raises(InvalidArgument) as caught:
        await s.companion.get_state("conversation/x")
    assert caught.value.field == "scope"


async def test_an_update_replays_under_its_key(store: Store) -> None:
    s = services(store)
    scope = app()
    keyed = fresh_key(b"set a")
    first = await s.companion.update_state(update(scope, '{"a": 1}'), 0, keyed)
    assert first == ScopeState('{"a":1}', 1)
    assert await s.companion.get_state(scope) == first
    await s.companion.update_state(update(scope, '{"b": 2}'), 0)
    # The first answer, whatever the state is now; applied once.
    assert await s.companion.update_state(update(scope, '{"a": 1}'), 0, keyed) == first
    assert await s.companion.get_state(scope) == ScopeState('{"a":1,"b":2}', 2)
    with pytest.raises(FailedPrecondition) as caught:
        await s.companion.update_state(update(scope, '{"a": 5}'), 0, Idempotency(keyed.key, b"x"))
    assert caught.value.field == "idempotency-key"
    # The key is the scope's: the same key on another scope is another call.
    other = app()
    assert await s.companion.update_state(update(other, "{}"), 0, keyed) == ScopeState("{}", 1)
    # Concurrent duplicates apply once.
    raced, racing = app(), fresh_key(b"set r")
    outcomes = await asyncio.gather(
        *(s.companion.update_state(update(raced, '{"r": 1}'), 0, racing) for _ in range(4))
    )
    assert outcomes == [ScopeState('{"r":1}', 1)] * 4
    assert await s.companion.get_state(raced) == ScopeState('{"r":1}', 1)


async def test_the_key_of_a_conversations_scope_goes_with_the_conversation(
    store: Store,
) -> None:
    s = services(store)
    conversation = str(uuid4())
    await s.append(conversation)
    scope = f"conversation/{conversation}"
    keyed = fresh_key(b"set a")
    assert await s.companion.update_state(update(scope, '{"a": 1}'), 0, keyed) == ScopeState(
        '{"a":1}', 1
    )
    await s.companion.delete_conversation(conversation, 0, False)
    await s.append(conversation)
    # Erased with the conversation (its answer showed the state): applied anew.
    await s.companion.update_state(update(scope, '{"b": 2}'), 0)
    assert await s.companion.update_state(update(scope, '{"a": 1}'), 0, keyed) == ScopeState(
        '{"a":1,"b":2}', 2
    )


async def test_a_conversations_scope_needs_the_conversation_and_goes_with_it(
    store: Store,
) -> None:
    s = services(store)
    conversation_id = uuid4()
    scope = f"conversation/{conversation_id}"
    with pytest.raises(NotFound) as caught:
        await s.companion.update_state(update(scope, '{"a": 1}'), 0)
    assert caught.value.field == "scope"
    # Not the conversation a call names: no ConversationNotFound.
    assert not isinstance(caught.value, ConversationNotFound)
    await s.companion.create_conversation(str(conversation_id), PLAIN)
    # Any spelling of the id names the same scope.
    await s.companion.update_state(update(f"conversation/{conversation_id.hex}", '{"a": 1}'), 0)
    assert await s.companion.get_state(scope) == ScopeState('{"a":1}', 1)
    await s.companion.delete_conversation(str(conversation_id), 0, allow_missing=False)
    assert await s.companion.get_state(scope) == ScopeState("{}", 0)


async def test_state_past_1_mib_is_refused_and_changes_nothing(store: Store) -> None:
    s = services(store)
    scope = app()
    half = "x" * (rules.MAX_STATE_BYTES // 2)
    await s.companion.update_state(update(scope, json.dumps({"a": half})), 0)
    with pytest.raises(InvalidArgument) as caught:
        await s.companion.update_state(update(scope, json.dumps({"b": half})), 0)
    assert caught.value.field == "set_json"
    assert (await s.companion.get_state(scope)).version == 1
    # Replacing the key keeps it under the limit.
    assert (await s.companion.update_state(update(scope, json.dumps({"a": half})), 0)).version == 2


async def test_concurrent_updates_of_one_scope_all_land(store: Store) -> None:
    s = services(store)
    scope = app()
    results = await asyncio.gather(
        *(s.companion.update_state(update(scope, f'{{"k{i}": {i}}}'), 0) for i in range(12))
    )
    assert sorted(result.version for result in results) == list(range(1, 13))
    final = await s.companion.get_state(scope)
    assert final.version == 12
    assert json.loads(final.values_json) == {f"k{i}": i for i in range(12)}


async def test_two_conditional_updates_of_one_version_one_lands(store: Store) -> None:
    s = services(store)
    scope = app()
    await s.companion.update_state(update(scope, '{"n": 0}'), 0)
    outcomes = await asyncio.gather(
        *(s.companion.update_state(update(scope, f'{{"n": {i}}}'), 1) for i in (1, 2)),
        return_exceptions=True,
    )
    assert sorted(type(outcome).__name__ for outcome in outcomes) == [
        "ScopeState",
        "VersionMismatch",
    ]
    assert (await s.companion.get_state(scope)).version == 2


# --- AppendMessagesWithState ---------------------------------------------------------


async def append_with_state(
    s: Services,
    conversation: str,
    texts: Sequence[str],
    updates: Sequence[StateUpdateInput],
    expected_version: int = 0,
    key: Idempotency | None = None,
) -> AppendedWithState | Replayed:
    return await s.companion.append_with_state(
        conversation, messages(*texts), updates, expected_version, key
    )


async def test_append_with_state_creates_appends_and_updates(store: Store) -> None:
    s = services(store)
    conversation_id = uuid4()
    own = f"conversation/{str(conversation_id).upper()}"
    user = f"user/chat/{uuid4()}"
    result = applied(
        await append_with_state(
            s,
            str(conversation_id),
            ["a", "b"],
            [update(own, '{"turn": 1}'), update(user, '{"name": "al\\u0000"}')],
        )
    )
    assert result.appended.state.message_count == 2
    assert result.appended.state.version == 1
    # Keyed by the scopes as sent.
    assert result.state_versions == {own: 1, user: 1}
    assert await listed(s, conversation_id) == [text_body("a"), text_body("b")]
    assert await s.companion.get_state(own) == ScopeState('{"turn":1}', 1)
    again = applied(
        await append_with_state(s, str(conversation_id), ["c"], [update(own, "", "turn")], 1)
    )
    assert (again.appended.state.version, again.state_versions) == (2, {own: 2})
    assert await s.companion.get_state(own) == ScopeState("{}", 2)
    # No state updates: an append like any other.
    plain = applied(await append_with_state(s, str(conversation_id), ["d"], []))
    assert (plain.appended.state.message_count, plain.state_versions) == (4, {})


async def test_append_with_state_checks_the_request_first(store: Store) -> None:
    s = services(store)
    absent = str(uuid4())
    cases: list[tuple[Sequence[str], Sequence[StateUpdateInput], int, str]] = [
        ([], [], 0, "messages"),
        (["a"], [update("nope")], 0, "state_updates[0].scope"),
        (["a"], [update(app()), update(app(), "[]")], 0, "state_updates[1].set_json"),
        (["a"], [update(f"conversation/{uuid4()}", "{", "k")], 0, "state_updates[0].set_json"),
        (["a"], [update(app(), '{"k": 1}', "k")], 0, "state_updates[0].remove_keys[0]"),
        (["a"], [], -3, "expected_version"),
    ]
    for texts, updates, expected, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            await append_with_state(s, absent, texts, updates, expected)
        assert caught.value.field == field
    with pytest.raises(InvalidArgument) as caught:
        await append_with_state(s, "not-a-uuid", ["a"], [])
    assert caught.value.field == "conversation_id"
    with pytest.raises(ConversationNotFound):
        await s.conversations.get_conversation(absent)


async def nothing_landed(
    s: Services, conversation_id: str, version: int, scopes: list[str]
) -> None:
    """The conversation is as it was (absent: version 0), and so are the
    scopes (never updated)."""
    if version:
        state = await s.conversations.get_conversation(conversation_id)
        assert (state.version, state.message_count) == (version, 1)
    else:
        with pytest.raises(ConversationNotFound):
            await s.conversations.get_conversation(conversation_id)
    for scope in scopes:
        assert (await s.companion.get_state(scope)).version == 0


@pytest.mark.parametrize("exists", [False, True])
async def test_nothing_lands_when_a_state_change_fails(store: Store, exists: bool) -> None:
    s = services(store)
    conversation_id = str(uuid4())
    if exists:
        await s.conversations.append(conversation_id, messages("first"))
    version = 1 if exists else 0
    full, fine = app(), app()
    half = json.dumps({"a": "x" * (rules.MAX_STATE_BYTES // 2)})
    await s.companion.update_state(update(full, half), 0)
    # Past 1 MiB only with what is stored: found inside the transaction.
    with pytest.raises(InvalidArgument) as caught:
        await append_with_state(
            s,
            conversation_id,
            ["lost"],
            [update(fine, '{"b": 1}'), update(full, json.dumps({"b": "y" * 600_000}))],
        )
    assert caught.value.field == "state_updates[1].set_json"
    await nothing_landed(s, conversation_id, version, [fine])
    assert (await s.companion.get_state(full)).version == 1
    # The conversation of a scope is absent: NOT_FOUND, nothing lands.
    missing = f"conversation/{uuid4()}"
    with pytest.raises(NotFound) as not_found:
        await append_with_state(
            s, conversation_id, ["lost"], [update(fine, '{"b": 1}'), update(missing, "{}")]
        )
    assert not_found.value.field == "state_updates[1].scope"
    await nothing_landed(s, conversation_id, version, [fine, missing])


async def test_nothing_lands_on_a_version_mismatch(store: Store) -> None:
    s = services(store)
    conversation_id = str(uuid4())
    scope = app()
    # Absent: at version 0.
    with pytest.raises(VersionMismatch) as caught:
        await append_with_state(s, conversation_id, ["lost"], [update(scope, '{"a": 1}')], 1)
    assert caught.value.current == 0
    await nothing_landed(s, conversation_id, 0, [scope])
    await s.conversations.append(conversation_id, messages("first"))
    with pytest.raises(VersionMismatch) as caught:
        await append_with_state(s, conversation_id, ["lost"], [update(scope, '{"a": 1}')], 2)
    assert (caught.value.field, caught.value.current) == ("expected_version", 1)
    await nothing_landed(s, conversation_id, 1, [scope])
    landed = applied(
        await append_with_state(s, conversation_id, ["kept"], [update(scope, '{"a": 1}')], 1)
    )
    assert (landed.appended.state.version, landed.state_versions) == (2, {scope: 1})


async def test_nothing_lands_when_storage_fails_half_way(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The messages are written, then writing the states fails: the
    transaction rolls back whole."""
    s = services(store)
    existing, created = str(uuid4()), str(uuid4())
    await s.conversations.append(existing, messages("first"))
    scope = app()

    async def failing(*_: object) -> None:
        raise StorageUnavailable()

    monkeypatch.setattr(transactions.StateWrite, "save_states", failing)
    for conversation_id, version in ((existing, 1), (created, 0)):
        with pytest.raises(StorageUnavailable):
            await append_with_state(s, conversation_id, ["lost"], [update(scope, '{"a": 1}')])
        await nothing_landed(s, conversation_id, version, [scope])
    monkeypatch.undo()
    assert applied(await append_with_state(s, existing, ["kept"], [update(scope)])).state_versions


async def test_append_with_state_replays_for_its_idempotency_key(store: Store) -> None:
    s = services(store)
    conversation_id = str(uuid4())
    scope = app()
    key = Idempotency("retry-1", b"fingerprint")
    first = applied(
        await append_with_state(s, conversation_id, ["a"], [update(scope, '{"a": 1}')], key=key)
    )
    again = await append_with_state(s, conversation_id, ["a"], [update(scope, '{"a": 1}')], key=key)
    assert isinstance(again, Replayed)
    assert s.codec.appends[again.response] == first
    assert again.version == 1
    assert await listed(s, conversation_id) == [text_body("a")]
    assert await s.companion.get_state(scope) == ScopeState('{"a":1}', 1)
    with pytest.raises(FailedPrecondition, match="idempotency-key"):
        await append_with_state(
            s, conversation_id, ["b"], [], key=Idempotency("retry-1", b"another request")
        )


async def test_concurrent_appends_with_state_of_one_scope_all_land(store: Store) -> None:
    s = services(store)
    scope = app()
    conversations = [str(uuid4()) for _ in range(6)]
    results = await asyncio.gather(
        *(
            append_with_state(s, cid, [str(i)], [update(scope, f'{{"k{i}": {i}}}')])
            for i, cid in enumerate(conversations)
        )
    )
    versions = sorted(applied(result).state_versions[scope] for result in results)
    assert versions == list(range(1, 7))
    assert json.loads((await s.companion.get_state(scope)).values_json) == {
        f"k{i}": i for i in range(6)
    }


CROSSED_ROUNDS = 20


async def test_appends_with_state_in_crossed_orders_never_deadlock(store: Store) -> None:
    """Pairs of appends with state at once, each writing its own
    conversation and the other's scope (conversation/{the other}), and two
    app scopes named in reversed orders: every one lands. PostgreSQL once
    aborted one of most pairs as a deadlock, when a writer locked its
    conversation FOR UPDATE, which waits for (and blocks) the FOR KEY SHARE
    that holds the other's conversation for its scope."""
    s = services(store)
    a, b = str(uuid4()), str(uuid4())
    first, second = app(), app()
    for conversation in (a, b):
        await append_with_state(s, conversation, ["created"], [])
    for round_ in range(CROSSED_ROUNDS):
        value = f'{{"round": {round_}}}'
        await asyncio.gather(
            append_with_state(
                s,
                a,
                [f"a{round_}"],
                [update(f"conversation/{b}", value), update(first, value), update(second, value)],
            ),
            append_with_state(
                s,
                b,
                [f"b{round_}"],
                [update(second, value), update(first, value), update(f"conversation/{a}", value)],
            ),
        )
    last = json.dumps({"round": CROSSED_ROUNDS - 1}, separators=(",", ":"))
    for scope, version in ((first, 2), (second, 2), (f"conversation/{a}", 1)):
        assert await s.companion.get_state(scope) == ScopeState(last, version * CROSSED_ROUNDS)
    for conversation, name in ((a, "a"), (b, "b")):
        expected = ["created"] + [f"{name}{round_}" for round_ in range(CROSSED_ROUNDS)]
        assert await listed(s, conversation) == [text_body(text) for text in expected]
