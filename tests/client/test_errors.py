"""Failures from the real server, as exceptions named after their
condition, each keeping the status code, the text, the field at fault and
the request id the server logged."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest

from agent_state_client import (
    NO_RETRY,
    AgentStateError,
    AsyncClient,
    ConversationNotFound,
    FailedPrecondition,
    InvalidArgument,
    MessageInput,
    MessageNotFound,
    NotFound,
    PermissionDenied,
    RetryPolicy,
    SnapshotNotFound,
    Unauthenticated,
    Unavailable,
)
from tests.support.server import ServerProcess, free_port


def new_id() -> str:
    return str(uuid.uuid4())


async def test_an_unknown_conversation(client: AsyncClient) -> None:
    missing = new_id()
    with pytest.raises(ConversationNotFound) as raised:
        await client.get_conversation(missing)
    error = raised.value
    assert isinstance(error, NotFound)
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.field == "conversation_id"
    assert missing in error.reason
    assert error.details == f"{error.field}: {error.reason}"
    with pytest.raises(ConversationNotFound):
        [message async for message in client.messages(missing)]


async def test_an_unknown_message_names_its_field(client: AsyncClient) -> None:
    conversation = new_id()
    appended = await client.append(conversation, MessageInput.user("only"))
    with pytest.raises(MessageNotFound) as anchor:
        await client.replace_range(
            conversation, from_message_id=new_id(), new_message_ids=appended.message_ids
        )
    assert anchor.value.field == "from_message_id"
    with pytest.raises(MessageNotFound) as listed:
        await client.create_snapshot(conversation, [appended.message_ids[0], new_id()])
    assert listed.value.field == "message_ids[1]"


async def test_an_unknown_snapshot(client: AsyncClient) -> None:
    with pytest.raises(SnapshotNotFound) as raised:
        await client.list_snapshot_messages(new_id())
    assert raised.value.field == "snapshot_id"


async def test_invalid_arguments_name_the_field(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument) as malformed:
        await client.get_conversation("not-a-uuid")
    assert malformed.value.field == "conversation_id"
    with pytest.raises(InvalidArgument) as empty:
        await client.append(new_id(), [])
    assert empty.value.field == "messages"
    with pytest.raises(InvalidArgument) as kind:
        await client.append(
            new_id(), [MessageInput.user("ok"), MessageInput.user("x", kind="k" * 300)]
        )
    assert kind.value.field == "messages[1].kind"


async def test_a_key_reused_for_another_request(client: AsyncClient) -> None:
    conversation = new_id()
    await client.append(conversation, MessageInput.user("a"), idempotency_key="reused-key")
    with pytest.raises(FailedPrecondition) as raised:
        await client.append(conversation, MessageInput.user("b"), idempotency_key="reused-key")
    assert raised.value.field == "idempotency-key"


async def test_errors_carry_the_request_id(client: AsyncClient) -> None:
    with pytest.raises(ConversationNotFound) as chosen:
        await client.with_options(request_id="quote-me-42").get_conversation(new_id())
    assert chosen.value.request_id == "quote-me-42"
    assert "quote-me-42" in str(chosen.value)
    with pytest.raises(ConversationNotFound) as made:
        await client.get_conversation(new_id())
    assert made.value.request_id
    assert made.value.request_id != "quote-me-42"
    assert ("x-request-id", made.value.request_id) in made.value.trailing_metadata


async def test_nothing_listening_is_unavailable() -> None:
    retry = RetryPolicy(attempts=2, initial_backoff=0.0)
    async with AsyncClient(f"127.0.0.1:{free_port()}", retry=retry, timeout=5) as client:
        with pytest.raises(Unavailable) as raised:
            await client.get_conversation(new_id())
    assert isinstance(raised.value, AgentStateError)
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE


RW_TOKEN = "rw-token-for-the-client-tests"
RO_TOKEN = "ro-token-for-the-client-tests"


async def test_tokens(serve: Callable[..., ServerProcess]) -> None:
    server = serve(env={"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN},ro:{RO_TOKEN}"})
    conversation = new_id()
    async with AsyncClient(server.address, retry=NO_RETRY) as anonymous:
        with pytest.raises(Unauthenticated) as missing:
            await anonymous.get_conversation(conversation)
        assert missing.value.field == "authorization"
    async with AsyncClient(server.address, token="not-a-known-token-at-all") as stranger:
        with pytest.raises(Unauthenticated):
            await stranger.get_conversation(conversation)
    async with AsyncClient(server.address, token=RO_TOKEN) as reader:
        with pytest.raises(PermissionDenied):
            await reader.append(conversation, MessageInput.user("no"))
        with pytest.raises(PermissionDenied):
            await reader.create_conversation()
        with pytest.raises(ConversationNotFound):
            await reader.get_conversation(conversation)
    async with AsyncClient(server.address, token=RW_TOKEN) as writer:
        await writer.append(conversation, MessageInput.user("yes"))
    async with AsyncClient(server.address, token=RO_TOKEN) as reader:
        assert (await reader.get_conversation(conversation)).message_count == 1
    assert RW_TOKEN not in server.output()
