"""The client's companion reads (TailConversationMessages, GetMessages,
ForkConversation, ListConversationSnapshots) and versions on
AgentStateService (the `x-conversation-version` trailer on every answer,
`if-version` on its writes), against the real server on SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from agent_state_client import (
    AlreadyExists,
    AsyncClient,
    ConversationNotFound,
    InvalidArgument,
    MessageInput,
    MessageNotFound,
    Role,
    VersionConflict,
)


def new_id() -> str:
    return str(uuid.uuid4())


def _turns() -> list[MessageInput]:
    return [
        MessageInput.user("u1"),
        MessageInput.assistant("a1", kind="thought"),
        MessageInput.tool_output("search", "call-1", "t1"),
        MessageInput.user("u2"),
        MessageInput.assistant("a2"),
    ]


# --- TailConversationMessages -------------------------------------------------


async def test_tail_answers_the_last_messages_oldest_first(client: AsyncClient) -> None:
    conversation = new_id()
    appended = await client.append(conversation, _turns())
    tail = await client.tail(conversation, 3)
    assert tail.messages == appended.messages[2:]
    assert not tail.truncated
    assert tail.metadata.message_count == 5
    users = await client.tail(conversation, 10, roles=[Role.USER])
    assert [message.text for message in users.messages] == ["u1", "u2"]
    thoughts = await client.tail(conversation, 1, kinds=["thought"])
    assert [message.text for message in thoughts.messages] == ["a1"]


async def test_tail_refuses_what_it_cannot_answer(client: AsyncClient) -> None:
    conversation = new_id()
    await client.append(conversation, MessageInput.user("x"))
    for count in (0, 1001):
        with pytest.raises(InvalidArgument) as raised:
            await client.tail(conversation, count)
        assert raised.value.field == "count"
    with pytest.raises(ConversationNotFound):
        await client.tail(new_id(), 1)


# --- GetMessages ----------------------------------------------------------------


async def test_get_messages_in_the_order_asked(client: AsyncClient) -> None:
    conversation = new_id()
    stored = (await client.append(conversation, _turns())).messages
    asked = [stored[3].id, stored[0].id, stored[3].id]
    found = await client.get_messages(conversation, asked)
    assert found.messages == (stored[3], stored[0], stored[3])


async def test_get_messages_names_an_id_not_in_the_ordering(client: AsyncClient) -> None:
    conversation = new_id()
    stored = (await client.append(conversation, _turns())).messages
    await client.replace_range(
        conversation, from_message_id=stored[1].id, to_message_id=stored[1].id
    )
    with pytest.raises(MessageNotFound) as detached:
        await client.get_messages(conversation, [stored[0].id, stored[1].id])
    assert detached.value.field == "message_ids[1]"
    with pytest.raises(MessageNotFound) as unknown:
        await client.get_messages(conversation, [new_id()])
    assert unknown.value.field == "message_ids[0]"


# --- ForkConversation -------------------------------------------------------------


async def test_fork_copies_the_ordering_up_to_a_message(client: AsyncClient) -> None:
    source = new_id()
    stored = (await client.append(source, _turns())).messages
    fork = await client.fork_conversation(
        source, up_to_message_id=stored[2].id, title="what if", labels={"from": "fork"}
    )
    new = fork.conversation
    assert uuid.UUID(new.conversation_id).version == 7
    assert (new.title, dict(new.labels), new.version, new.message_count) == (
        "what if",
        {"from": "fork"},
        1,
        3,
    )
    assert len(fork.message_ids) == 3
    assert not set(fork.message_ids) & {message.id for message in stored}
    copied = await client.context(new.conversation_id)
    assert copied.message_ids == fork.message_ids
    for copy, original in zip(copied.messages, stored[:3], strict=True):
        assert (copy.role, copy.kind, copy.body, copy.created_at) == (
            original.role,
            original.kind,
            original.body,
            original.created_at,
        )
        assert copy.conversation_id == new.conversation_id
    assert (await client.get_conversation(source)).message_count == 5


async def test_fork_of_everything_under_a_chosen_id(client: AsyncClient) -> None:
    source, target = new_id(), new_id()
    stored = (await client.append(source, _turns())).messages
    fork = await client.fork_conversation(source, new_conversation_id=target, idempotency_key="f1")
    assert fork.conversation.conversation_id == target
    assert len(fork.message_ids) == len(stored)
    again = await client.fork_conversation(source, new_conversation_id=target, idempotency_key="f1")
    assert again == fork
    with pytest.raises(AlreadyExists):
        await client.fork_conversation(source, new_conversation_id=target)
    with pytest.raises(MessageNotFound):
        await client.fork_conversation(source, up_to_message_id=new_id())
    with pytest.raises(ConversationNotFound):
        await client.fork_conversation(new_id())


# --- ListConversationSnapshots -------------------------------------------------------


async def test_snapshots_of_a_conversation_oldest_first(client: AsyncClient) -> None:
    conversation = new_id()
    ids = (await client.append(conversation, _turns())).message_ids
    made = [await client.create_snapshot(conversation, ids[:count]) for count in (1, 3, 5)]
    listed = [info async for info in client.snapshots(conversation, page_size=2)]
    assert [info.snapshot_id for info in listed] == [s.snapshot_id for s in made]
    assert [info.item_count for info in listed] == [1, 3, 5]
    assert [info.created_at for info in listed] == [s.created_at for s in made]
    page = await client.list_snapshots(conversation, page_size=2)
    assert len(page.snapshots) == 2
    assert page.next_page_token
    with pytest.raises(ConversationNotFound):
        await client.list_snapshots(new_id())


# --- versions on AgentStateService ---------------------------------------------------------


async def test_every_answer_names_the_version(client: AsyncClient) -> None:
    conversation = new_id()
    first = await client.append(conversation, _turns())
    assert first.version == 1
    second = await client.append(conversation, MessageInput.user("more"))
    assert second.version == 2
    assert (await client.get_conversation(conversation)).version == 2
    assert (await client.list_messages(conversation)).version == 2
    assert (await client.list_message_ids(conversation)).version == 2
    assert (await client.context(conversation)).version == 2
    snapshot = await client.create_snapshot(conversation, first.message_ids)
    assert snapshot.version == 2
    replaced = await client.replace_range(
        conversation, from_message_id=first.message_ids[0], to_message_id=first.message_ids[1]
    )
    assert replaced.version == 3
    deleted = await client.delete_range(conversation, from_message_id=second.message_ids[0])
    assert deleted.version == 4
    assert (await client.describe_conversation(conversation)).version == 4


async def test_conditional_writes_of_agent_state_service(client: AsyncClient) -> None:
    conversation = new_id()
    created = await client.append(conversation, MessageInput.user("new"), expected_version=0)
    assert created.version == 1
    with pytest.raises(VersionConflict) as exists:
        await client.append(conversation, MessageInput.user("again"), expected_version=0)
    assert exists.value.current_version == 1
    summary = await client.append(
        conversation, MessageInput.assistant("sum", kind="summary"), expected_version=1
    )
    with pytest.raises(VersionConflict) as stale:
        await client.replace_range(
            conversation,
            from_message_id=created.message_ids[0],
            to_message_id=created.message_ids[0],
            new_message_ids=summary.message_ids,
            expected_version=1,
        )
    assert stale.value.current_version == 2
    assert (await client.get_conversation(conversation)).message_count == 2
    await client.replace_range(
        conversation,
        from_message_id=created.message_ids[0],
        to_message_id=created.message_ids[0],
        new_message_ids=summary.message_ids,
        expected_version=2,
    )
    assert (await client.context(conversation)).message_ids == summary.message_ids


async def test_a_failure_after_reading_the_conversation_names_its_version(
    client: AsyncClient,
) -> None:
    conversation = new_id()
    await client.append(conversation, MessageInput.user("x"))
    with pytest.raises(MessageNotFound) as raised:
        await client.delete_range(conversation, from_message_id=new_id())
    assert raised.value.version == 1
