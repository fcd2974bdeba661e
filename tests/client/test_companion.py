"""AsyncClient's methods of the companion API for conversations as a
whole, against the real server on SQLite and PostgreSQL (the reads and
versions: test_companion_reads_and_versions.py; state: test_state.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from agent_state_client import (
    AlreadyExists,
    AsyncClient,
    Conversation,
    ConversationNotFound,
    InvalidArgument,
    MessageInput,
    Retention,
    VersionConflict,
)


def new_id() -> str:
    return str(uuid.uuid4())


async def test_create_and_describe(client: AsyncClient) -> None:
    retention = Retention(max_idle=timedelta(days=30, microseconds=5), max_messages=500)
    created = await client.create_conversation(
        title="Trip to Lisbon 🇵🇹", labels={"user": "alice", "app": "travel"}, retention=retention
    )
    assert uuid.UUID(created.conversation_id).version == 7
    assert created.title == "Trip to Lisbon 🇵🇹"
    assert dict(created.labels) == {"user": "alice", "app": "travel"}
    assert created.retention == retention
    assert created.version == 1
    assert created.message_count == 0
    assert created.created_at == created.updated_at
    assert await client.describe_conversation(created.conversation_id) == created


async def test_create_with_an_id_and_twice(client: AsyncClient) -> None:
    conversation = new_id()
    created = await client.create_conversation(conversation)
    assert created.conversation_id == conversation
    assert created.retention is None
    assert created.title == ""
    with pytest.raises(AlreadyExists) as raised:
        await client.create_conversation(conversation, title="again")
    assert raised.value.field == "conversation_id"


async def test_a_repeated_key_replays_the_create(client: AsyncClient) -> None:
    conversation = new_id()
    first = await client.create_conversation(conversation, idempotency_key="create-once")
    again = await client.create_conversation(conversation, idempotency_key="create-once")
    assert again == first


async def test_update_each_field(client: AsyncClient) -> None:
    created = await client.create_conversation(
        title="before", labels={"a": "1", "b": "2"}, retention=Retention(max_messages=10)
    )
    conversation = created.conversation_id
    titled = await client.update_conversation(conversation, title="after")
    assert (titled.title, titled.version, dict(titled.labels)) == ("after", 2, {"a": "1", "b": "2"})
    assert titled.updated_at == created.updated_at
    labelled = await client.update_conversation(conversation, labels={"c": "3"})
    assert dict(labelled.labels) == {"c": "3"}
    assert labelled.retention == Retention(max_messages=10)
    defaulted = await client.update_conversation(conversation, retention=None, expected_version=3)
    assert defaulted.retention is None
    assert defaulted.version == 4
    both = await client.update_conversation(
        conversation, title="", retention=Retention(max_idle=timedelta(hours=1))
    )
    assert (both.title, both.retention) == ("", Retention(max_idle=timedelta(hours=1)))


async def test_a_stale_version_changes_nothing(client: AsyncClient) -> None:
    created = await client.create_conversation(title="v1")
    conversation = created.conversation_id
    await client.update_conversation(conversation, title="v2", expected_version=1)
    with pytest.raises(VersionConflict) as raised:
        await client.update_conversation(conversation, title="v3", expected_version=1)
    assert raised.value.current_version == 2
    assert raised.value.field == "expected_version"
    assert (await client.describe_conversation(conversation)).title == "v2"
    with pytest.raises(VersionConflict) as deleting:
        await client.delete_conversation(conversation, expected_version=1)
    assert deleting.value.current_version == 2


async def test_versions_count_every_change(client: AsyncClient) -> None:
    created = await client.create_conversation()
    conversation = created.conversation_id
    appended = await client.append(conversation, [MessageInput.user("a"), MessageInput.user("b")])
    await client.create_snapshot(conversation, appended.message_ids)
    await client.delete_range(conversation, from_message_id=appended.message_ids[1])
    described = await client.describe_conversation(conversation)
    assert described.version == 3
    assert described.message_count == 1
    assert described.updated_at == (await client.get_conversation(conversation)).updated_at


async def test_list_by_labels_and_order(client: AsyncClient) -> None:
    tag = {"suite": new_id()}
    made: list[Conversation] = []
    for index in range(5):
        made.append(await client.create_conversation(title=f"c{index}", labels=tag))
    # An append moves the conversation's updated_at, and so its place.
    await client.append(made[1].conversation_id, MessageInput.user("moved"))
    newest_first = [c.title async for c in client.conversations(labels=tag, page_size=2)]
    assert newest_first == ["c1", "c4", "c3", "c2", "c0"]
    oldest_first = client.conversations(labels=tag, oldest_first=True, page_size=2)
    assert [c.title async for c in oldest_first] == ["c0", "c2", "c3", "c4", "c1"]
    page = await client.list_conversations(labels=tag, page_size=3)
    assert [c.title for c in page.conversations] == ["c1", "c4", "c3"]
    assert page.next_page_token
    moved = await client.describe_conversation(made[1].conversation_id)
    between = client.conversations(
        labels=tag, updated_after=made[2].updated_at, updated_before=moved.updated_at
    )
    assert [c.title async for c in between] == ["c4", "c3"]
    other = {"suite": new_id()}
    assert [c async for c in client.conversations(labels=other)] == []


async def test_delete_erases_and_counts(client: AsyncClient) -> None:
    conversation = new_id()
    appended = await client.append(conversation, [MessageInput.user("a"), MessageInput.user("b")])
    await client.replace_range(conversation, from_message_id=appended.message_ids[0],
                               to_message_id=appended.message_ids[0])  # fmt: skip
    await client.create_snapshot(conversation, appended.message_ids)
    erased = await client.delete_conversation(conversation, expected_version=2)
    assert (erased.deleted_message_count, erased.deleted_snapshot_count) == (2, 1)
    assert erased.version == 0
    with pytest.raises(ConversationNotFound):
        await client.describe_conversation(conversation)
    with pytest.raises(ConversationNotFound):
        await client.delete_conversation(conversation)
    missing = await client.delete_conversation(conversation, allow_missing=True)
    assert (missing.deleted_message_count, missing.deleted_snapshot_count) == (0, 0)
    again = await client.append(conversation, MessageInput.user("new start"))
    assert again.metadata.message_count == 1


async def test_bad_values_name_their_field(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await client.create_conversation(title="x" * 1001)
    assert raised.value.field == "title"
    with pytest.raises(InvalidArgument) as label:
        await client.create_conversation(labels={"Upper": "no"})
    assert label.value.field == "labels['Upper']"
