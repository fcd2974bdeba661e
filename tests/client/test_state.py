"""The client's scoped state (GetState, UpdateState) and
AppendMessagesWithState, against the real server on SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from agent_state_client import (
    AsyncClient,
    ConversationNotFound,
    InvalidArgument,
    MessageInput,
    StateUpdate,
    VersionConflict,
)


def new_id() -> str:
    return str(uuid.uuid4())


# --- GetState, UpdateState -------------------------------------------------------------


async def test_state_of_a_scope(client: AsyncClient) -> None:
    scope = f"app/client-tests-{new_id()}"
    empty = await client.get_state(scope)
    assert (empty.values, empty.version) == ({}, 0)
    big = 12345678901234567890
    first = await client.update_state(scope, set={"model": "small", "budget": big, "gone": 1})
    assert first.version == 1
    assert first.values == {"model": "small", "budget": big, "gone": 1}
    second = await client.update_state(
        scope, set={"note": None}, remove=["gone", "never-there"], expected_version=1
    )
    assert second.version == 2
    assert second.values == {"model": "small", "budget": big, "note": None}
    assert await client.get_state(scope) == second
    with pytest.raises(VersionConflict) as raised:
        await client.update_state(scope, set={"late": True}, expected_version=1)
    assert raised.value.current_version == 2
    assert (await client.get_state(scope)).values == second.values


async def test_state_refuses_what_it_cannot_keep(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument) as scope:
        await client.get_state("nowhere/at/all/really")
    assert scope.value.field == "scope"
    with pytest.raises(InvalidArgument):
        await client.update_state(f"app/{new_id()}", set={"k": 1}, remove=["k"])
    with pytest.raises(InvalidArgument):
        await client.update_state(f"app/{new_id()}", set="[1, 2]")
    with pytest.raises(ConversationNotFound):
        await client.update_state(f"conversation/{new_id()}", set={"k": 1})


async def test_a_conversation_scope_goes_with_its_conversation(client: AsyncClient) -> None:
    conversation = new_id()
    await client.append(conversation, MessageInput.user("x"))
    scope = f"conversation/{conversation}"
    await client.update_state(scope, set={"turn": 1})
    await client.delete_conversation(conversation)
    assert (await client.get_state(scope)).version == 0


# --- AppendMessagesWithState -----------------------------------------------------------


async def test_messages_and_state_land_together(client: AsyncClient) -> None:
    conversation = new_id()
    await client.append(conversation, MessageInput.user("hello"))
    user_scope = f"user/client-tests/{new_id()}"
    updates = [
        StateUpdate(f"conversation/{conversation}", {"turn": 1}),
        StateUpdate(user_scope, {"seen": True}),
    ]
    result = await client.append_with_state(
        conversation, [MessageInput.assistant("hi")], updates, expected_version=1
    )
    assert [message.text for message in result.messages] == ["hi"]
    assert result.metadata.message_count == 2
    assert dict(result.state_versions) == {f"conversation/{conversation}": 1, user_scope: 1}
    assert (await client.get_state(user_scope)).values == {"seen": True}


async def test_nothing_lands_when_one_part_fails(client: AsyncClient) -> None:
    conversation = new_id()
    await client.append(conversation, MessageInput.user("hello"))
    scope = f"app/{new_id()}"
    with pytest.raises(InvalidArgument):
        await client.append_with_state(
            conversation,
            [MessageInput.assistant("lost")],
            [StateUpdate(scope, {"k": 1}, ["k"])],
        )
    with pytest.raises(VersionConflict) as raised:
        await client.append_with_state(
            conversation,
            [MessageInput.assistant("lost")],
            [StateUpdate(scope, {"k": 1})],
            expected_version=5,
        )
    assert raised.value.current_version == 1
    assert (await client.get_conversation(conversation)).message_count == 1
    assert (await client.get_state(scope)).version == 0
