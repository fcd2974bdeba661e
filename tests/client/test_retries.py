"""A write whose answer is lost after the server committed it: the client
retries with the same idempotency key, and the server replays the first
answer instead of applying the write again. Against the real server, on
SQLite and PostgreSQL, through a proxy that drops the connection when the
answer starts coming back (lossy_proxy.py)."""

from __future__ import annotations

import uuid

import pytest

from agent_state_client import (
    NO_RETRY,
    AsyncClient,
    Client,
    MessageInput,
    RetryPolicy,
    Unavailable,
)

from .lossy_proxy import AnswerLosingProxy

RETRIES = RetryPolicy(attempts=4, initial_backoff=0.01)


def new_id() -> str:
    return str(uuid.uuid4())


async def test_a_retried_append_is_stored_once(
    proxy: AnswerLosingProxy, client: AsyncClient
) -> None:
    conversation = new_id()
    async with AsyncClient(proxy.address, retry=RETRIES) as through_proxy:
        first = await through_proxy.append(conversation, MessageInput.user("before"))
        proxy.lose_next_answer()
        batch = [MessageInput.user("once"), MessageInput.assistant("and only once")]
        result = await through_proxy.append(conversation, batch)
    assert proxy.lost.is_set()
    assert result.metadata.message_count == 3
    context = await client.context(conversation)
    assert context.message_ids == first.message_ids + result.message_ids
    assert [message.text for message in context.messages] == ["before", "once", "and only once"]


async def test_the_lost_answer_came_after_the_commit(
    proxy: AnswerLosingProxy, client: AsyncClient
) -> None:
    conversation = new_id()
    async with AsyncClient(proxy.address, retry=NO_RETRY) as through_proxy:
        await through_proxy.append(conversation, MessageInput.user("before"))
        proxy.lose_next_answer()
        with pytest.raises(Unavailable):
            await through_proxy.append(conversation, MessageInput.user("landed"))
    assert proxy.lost.is_set()
    context = await client.context(conversation)
    assert [message.text for message in context.messages] == ["before", "landed"]


async def test_a_retried_create_answers_the_conversation_it_made(
    proxy: AnswerLosingProxy, client: AsyncClient
) -> None:
    async with AsyncClient(proxy.address, retry=RETRIES) as through_proxy:
        proxy.lose_next_answer()
        created = await through_proxy.create_conversation(title="made once")
    assert proxy.lost.is_set()
    assert created.version == 1
    assert (await client.describe_conversation(created.conversation_id)).title == "made once"


async def test_a_retried_snapshot_is_recorded_once(
    proxy: AnswerLosingProxy, client: AsyncClient
) -> None:
    conversation = new_id()
    appended = await client.append(conversation, MessageInput.user("context"))
    async with AsyncClient(proxy.address, retry=RETRIES) as through_proxy:
        proxy.lose_next_answer()
        snapshot = await through_proxy.create_snapshot(conversation, appended.message_ids)
    assert proxy.lost.is_set()
    read = [m.id async for m in client.snapshot_messages(snapshot.snapshot_id)]
    assert read == list(appended.message_ids)
    erased = await client.delete_conversation(conversation)
    assert erased.deleted_snapshot_count == 1


def test_the_blocking_client_retries_the_same_way(
    proxy: AnswerLosingProxy, sync_client: Client
) -> None:
    conversation = new_id()
    with Client(proxy.address, retry=RETRIES) as through_proxy:
        proxy.lose_next_answer()
        result = through_proxy.append(conversation, MessageInput.user("once"))
    assert proxy.lost.is_set()
    assert sync_client.context(conversation).message_ids == result.message_ids
