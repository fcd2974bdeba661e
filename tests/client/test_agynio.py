"""AsyncClient's AgentStateService methods against the real server, on
SQLite and PostgreSQL: typed answers, auto-paging, the whole context,
ranges and snapshots."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from agent_state_client import (
    AsyncClient,
    ImageDetail,
    Message,
    MessageInput,
    Role,
    Text,
    ToolImage,
    ToolOutput,
    ToolText,
)

CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

EVERY_BODY = [
    MessageInput.user("hello"),
    MessageInput(Role.ASSISTANT, Text(""), kind="answer"),
    MessageInput.user("nul \x00 and unicode: żółw 🐢", kind="memory"),
    MessageInput.tool_output("search", "call-1", "found it", metadata={"b": "2", "a": "1"}),
    MessageInput.tool_output(
        "camera",
        "call-2",
        ToolImage(
            external_url="https://example.test/cat.png",
            mime_type="image/png",
            detail=ImageDetail.HIGH,
            width_px=640,
            height_px=480,
            sha256="ab" * 32,
        ),
        kind="tool_output",
    ),
    MessageInput(Role.TOOL, ToolOutput("", "", ToolText(""))),
]


def new_id() -> str:
    return str(uuid.uuid4())


def _same_content(stored: Message, sent: MessageInput) -> bool:
    return (stored.role, stored.kind, stored.body) == (sent.role, sent.kind, sent.body)


async def _texts(client: AsyncClient, conversation: str, count: int) -> list[Message]:
    inputs = [MessageInput.user(f"message {index}") for index in range(count)]
    return list((await client.append(conversation, inputs)).messages)


async def test_append_answers_the_stored_messages_whole(client: AsyncClient) -> None:
    conversation = new_id()
    before = datetime.now(UTC) - timedelta(minutes=5)
    result = await client.append(conversation, EVERY_BODY)
    assert result.metadata.conversation_id == conversation
    assert result.metadata.message_count == len(EVERY_BODY)
    assert len(result.messages) == len(EVERY_BODY)
    for stored, sent in zip(result.messages, EVERY_BODY, strict=True):
        assert _same_content(stored, sent)
        assert stored.conversation_id == conversation
        assert CANONICAL.match(stored.id)
        assert stored.created_at.tzinfo is UTC
        assert stored.created_at > before
    assert result.metadata.updated_at == result.messages[-1].created_at
    read = [message async for message in client.messages(conversation)]
    assert read == list(result.messages)
    assert read[0].text == "hello"
    assert read[3].text == "found it"
    assert read[4].text is None


async def test_one_message_alone_is_a_batch(client: AsyncClient) -> None:
    conversation = new_id()
    result = await client.append(conversation, MessageInput.assistant("alone"))
    assert [message.text for message in result.messages] == ["alone"]
    assert (await client.get_conversation(conversation)).message_count == 1


async def test_messages_pages_through_everything_with_filters(client: AsyncClient) -> None:
    conversation = new_id()
    inputs = [
        MessageInput.user("u1"),
        MessageInput.assistant("a1", kind="thought"),
        MessageInput.tool_output("t", "c", "t1"),
        MessageInput.user("u2", kind="thought"),
        MessageInput.assistant("a2"),
        MessageInput.user("u3"),
        MessageInput.assistant("a3", kind="summary"),
    ]
    await client.append(conversation, inputs)

    async def texts(**filters: object) -> list[str | None]:
        messages = client.messages(conversation, page_size=2, **filters)  # type: ignore[arg-type]
        return [message.text async for message in messages]

    assert await texts() == ["u1", "a1", "t1", "u2", "a2", "u3", "a3"]
    assert await texts(roles=[Role.USER]) == ["u1", "u2", "u3"]
    assert await texts(roles=[Role.TOOL, Role.ASSISTANT]) == ["a1", "t1", "a2", "a3"]
    assert await texts(kinds=["thought"]) == ["a1", "u2"]
    assert await texts(kinds=[""]) == ["u1", "t1", "a2", "u3"]
    assert await texts(roles=[Role.USER], kinds=["thought", "summary"]) == ["u2"]


async def test_list_messages_answers_one_page_and_its_token(client: AsyncClient) -> None:
    conversation = new_id()
    stored = await _texts(client, conversation, 3)
    first = await client.list_messages(conversation, page_size=2)
    assert first.messages == tuple(stored[:2])
    assert first.next_page_token
    assert first.metadata.message_count == 3
    last = await client.list_messages(conversation, page_size=2, page_token=first.next_page_token)
    assert last.messages == (stored[2],)
    assert last.next_page_token == ""


async def test_message_ids_in_order(client: AsyncClient) -> None:
    conversation = new_id()
    stored = await _texts(client, conversation, 5)
    ids = [message_id async for message_id in client.message_ids(conversation, page_size=2)]
    assert ids == [message.id for message in stored]
    page = await client.list_message_ids(conversation, page_size=3)
    assert page.message_ids == tuple(ids[:3])
    assert page.next_page_token


async def test_context_reads_a_long_ordering_whole(client: AsyncClient) -> None:
    conversation = new_id()
    stored = await _texts(client, conversation, 1000)
    stored += await _texts(client, conversation, 5)
    context = await client.context(conversation)
    assert context.message_ids == tuple(message.id for message in stored)
    assert context.metadata.message_count == 1005
    only_users = await client.context(conversation, roles=[Role.ASSISTANT])
    assert only_users.messages == ()


async def test_summarising_is_an_append_and_a_replace(client: AsyncClient) -> None:
    conversation = new_id()
    old = await _texts(client, conversation, 4)
    summary = await client.append(conversation, MessageInput.assistant("sum", kind="summary"))
    summary_id = summary.messages[0].id
    replaced = await client.replace_range(
        conversation,
        from_message_id=old[0].id,
        to_message_id=old[2].id,
        new_message_ids=[summary_id],
    )
    assert replaced.replaced_message_ids == tuple(message.id for message in old[:3])
    assert replaced.inserted_message_ids == (summary_id,)
    assert replaced.metadata.message_count == 2
    context = await client.context(conversation)
    assert context.message_ids == (summary_id, old[3].id)
    # Replaced messages are detached, not gone: a snapshot can still name them.
    snapshot = await client.create_snapshot(conversation, [old[0].id])
    assert [m.id async for m in client.snapshot_messages(snapshot.snapshot_id)] == [old[0].id]


async def test_insert_after_and_before_an_anchor(client: AsyncClient) -> None:
    conversation = new_id()
    first, second = await _texts(client, conversation, 2)
    extra = (await client.append(conversation, MessageInput.user("extra"))).messages[0]
    await client.replace_range(conversation, from_message_id=first.id, new_message_ids=[extra.id])
    assert (await client.context(conversation)).message_ids == (first.id, extra.id, second.id)
    await client.replace_range(conversation, to_message_id=first.id, new_message_ids=[second.id])
    assert (await client.context(conversation)).message_ids == (second.id, first.id, extra.id)


async def test_delete_range_modes(client: AsyncClient) -> None:
    conversation = new_id()
    stored = await _texts(client, conversation, 6)
    ids = [message.id for message in stored]
    middle = await client.delete_range(conversation, from_message_id=ids[2], to_message_id=ids[3])
    assert middle.deleted_message_ids == tuple(ids[2:4])
    head = await client.delete_range(conversation, to_message_id=ids[1])
    assert head.deleted_message_ids == tuple(ids[:2])
    tail = await client.delete_range(conversation, from_message_id=ids[5])
    assert tail.deleted_message_ids == (ids[5],)
    assert tail.metadata.message_count == 1
    assert (await client.context(conversation)).message_ids == (ids[4],)


async def test_snapshots_read_back_unchanged(client: AsyncClient) -> None:
    conversation = new_id()
    stored = await client.append(conversation, EVERY_BODY)
    ids = [message.id for message in stored.messages]
    named = [ids[3], ids[0], ids[3], ids[4]]
    updated_at = (await client.get_conversation(conversation)).updated_at
    snapshot = await client.create_snapshot(conversation, named)
    assert snapshot.conversation_id == conversation
    assert snapshot.created_at.tzinfo is UTC
    assert (await client.get_conversation(conversation)).updated_at == updated_at
    await client.delete_range(conversation, from_message_id=ids[0])
    read = [m async for m in client.snapshot_messages(snapshot.snapshot_id, page_size=1)]
    assert [message.id for message in read] == named
    by_id = {message.id: message for message in stored.messages}
    assert read == [by_id[message_id] for message_id in named]
    snapshot_ids = client.snapshot_message_ids(snapshot.snapshot_id, page_size=3)
    assert [message_id async for message_id in snapshot_ids] == named
    page = await client.list_snapshot_messages(snapshot.snapshot_id, page_size=2)
    assert [message.id for message in page.messages] == named[:2]
    id_page = await client.list_snapshot_message_ids(snapshot.snapshot_id, page_size=10)
    assert id_page.message_ids == tuple(named)
    assert id_page.next_page_token == ""


async def test_get_conversation(client: AsyncClient) -> None:
    conversation = new_id()
    stored = await _texts(client, conversation, 2)
    found = await client.get_conversation(conversation.upper())
    assert found.conversation_id == conversation
    assert found.message_count == 2
    assert found.updated_at == stored[-1].created_at
