"""What the client sends and how it retries, seen from a scripted
in-process server (fake_server.py): idempotency keys kept across retries,
request ids, tokens, if-version and expected_version, the version trailer,
trace context, paging guards. The same behaviour against the real server
is in the other test files."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.sdk.trace import TracerProvider

from agent_state_client import (
    NO_RETRY,
    AsyncClient,
    Client,
    ContextChanged,
    DeadlineExceeded,
    InvalidArgument,
    MessageInput,
    PagingError,
    RetryPolicy,
    Unavailable,
    UnknownBody,
    VersionConflict,
)
from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb

from .fake_server import Fail, FakeServer, Outcome, fake_server, methods

AGYNIO = "/agynio.api.agent_state.v1.AgentStateService/"
COMPANION = "/agentstate.v1.ConversationsService/"
QUICK_RETRIES = RetryPolicy(attempts=3, initial_backoff=0.0)
UNAVAILABLE = Fail(grpc.StatusCode.UNAVAILABLE, "the database is unavailable, retry later")
SLOW = Fail(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")


@asynccontextmanager
async def talking_to(
    *outcomes: Outcome, **settings: Any
) -> AsyncIterator[tuple[FakeServer, AsyncClient]]:
    """A fake server answering `outcomes`, and a client of it."""
    async with fake_server(*outcomes) as fake, AsyncClient(fake.address, **settings) as client:
        yield fake, client


def _metadata(updated: int = 1) -> pb.ConversationMetadata:
    return pb.ConversationMetadata(
        conversation_id="c", message_count=1, updated_at=Timestamp(seconds=updated)
    )


def _appended() -> pb.AppendConversationMessagesResponse:
    return pb.AppendConversationMessagesResponse(metadata=_metadata())


def _got() -> pb.GetConversationResponse:
    return pb.GetConversationResponse(metadata=_metadata())


def _sent(fake: FakeServer, key: str) -> list[str | None]:
    """Metadata `key` as each call sent it."""
    return [call.metadata.get(key) for call in fake.received]


async def test_a_retried_write_keeps_its_idempotency_key_and_request_id() -> None:
    async with talking_to(UNAVAILABLE, SLOW, _appended(), retry=QUICK_RETRIES) as (fake, client):
        await client.append("c", MessageInput.user("hi"))
    assert methods(fake) == [AGYNIO + "AppendConversationMessages"] * 3
    keys = _sent(fake, "idempotency-key")
    assert keys[0] is not None
    assert uuid.UUID(keys[0]).version == 4
    assert keys == [keys[0]] * 3
    request_ids = _sent(fake, "x-request-id")
    assert request_ids[0]
    assert request_ids == [request_ids[0]] * 3


async def test_each_write_has_its_own_key_unless_one_is_given() -> None:
    async with talking_to(_appended()) as (fake, client):
        await client.append("c", MessageInput.user("one"))
        await client.append("c", MessageInput.user("two"))
        await client.append("c", MessageInput.user("three"), idempotency_key="mine-1")
    first, second, given = _sent(fake, "idempotency-key")
    assert first != second
    assert given == "mine-1"


async def test_retries_stop_after_the_attempts_allowed() -> None:
    settings = {"retry": QUICK_RETRIES, "request_id": "req-7"}
    async with talking_to(UNAVAILABLE, **settings) as (fake, client):
        with pytest.raises(Unavailable) as raised:
            await client.get_conversation("c")
    assert len(fake.received) == 3
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert raised.value.request_id == "req-7"
    assert "req-7" in str(raised.value)


async def test_deadline_exceeded_is_retried_and_then_raised() -> None:
    async with talking_to(SLOW, retry=QUICK_RETRIES) as (fake, client):
        with pytest.raises(DeadlineExceeded):
            await client.get_conversation("c")
    assert len(fake.received) == 3


async def test_no_retry_makes_one_attempt() -> None:
    async with talking_to(UNAVAILABLE, retry=NO_RETRY) as (fake, client):
        with pytest.raises(Unavailable):
            await client.get_conversation("c")
    assert len(fake.received) == 1


async def test_client_mistakes_are_not_retried_and_name_the_field() -> None:
    invalid = Fail(grpc.StatusCode.INVALID_ARGUMENT, "messages[3].body: must have text set")
    async with talking_to(invalid, retry=QUICK_RETRIES) as (fake, client):
        with pytest.raises(InvalidArgument) as raised:
            await client.append("c", MessageInput.user("hi"))
    assert len(fake.received) == 1
    assert raised.value.field == "messages[3].body"
    assert raised.value.reason == "must have text set"


async def test_reads_carry_neither_key_nor_if_version() -> None:
    async with talking_to(_got()) as (fake, client):
        await client.get_conversation("c")
    assert "idempotency-key" not in fake.received[0].metadata
    assert "if-version" not in fake.received[0].metadata


async def test_agynio_writes_send_expected_version_as_if_version() -> None:
    async with talking_to(_appended()) as (fake, client):
        await client.append("c", MessageInput.user("new"), expected_version=0)
        fake.script(pb.ReplaceConversationMessagesRangeResponse(metadata=_metadata()))
        await client.replace_range("c", from_message_id="a", expected_version=4)
        fake.script(pb.DeleteConversationMessagesRangeResponse(metadata=_metadata()))
        await client.delete_range("c", to_message_id="a", expected_version=5)
        fake.script(pb.CreateSnapshotResponse())
        await client.create_snapshot("c", ["a"], expected_version=6)
        await client.create_snapshot("c", ["a"])
        with pytest.raises(ValueError, match="expected_version"):
            await client.append("c", MessageInput.user("x"), expected_version=-1)
    assert _sent(fake, "if-version") == ["0", "4", "5", "6", None]


async def test_companion_writes_send_expected_version_in_the_request() -> None:
    async with talking_to(cpb.Conversation(conversation_id="c", version=4)) as (fake, client):
        updated = await client.update_conversation("c", title="t", expected_version=3)
        with pytest.raises(ValueError, match="expected_version"):
            await client.update_conversation("c", title="t", expected_version=0)
        with pytest.raises(ValueError, match="title, labels or retention"):
            await client.update_conversation("c")
    assert updated.version == 4
    (call,) = fake.received
    assert call.method == COMPANION + "UpdateConversation"
    assert "if-version" not in call.metadata
    request = cpb.UpdateConversationRequest.FromString(call.request)
    assert request.expected_version == 3
    assert list(request.update_mask.paths) == ["title"]


async def test_a_create_without_an_id_names_one_itself() -> None:
    created = cpb.Conversation(conversation_id="c", version=1)
    async with talking_to(UNAVAILABLE, created, retry=QUICK_RETRIES) as (fake, client):
        await client.create_conversation(title="t")
    first, retry = (cpb.CreateConversationRequest.FromString(c.request) for c in fake.received)
    assert uuid.UUID(first.conversation_id).version == 7
    assert retry.conversation_id == first.conversation_id
    first_key, retry_key = _sent(fake, "idempotency-key")
    assert first_key is not None
    assert retry_key == first_key


async def test_delete_conversation_and_update_state_send_a_key_too() -> None:
    async with talking_to(cpb.DeleteConversationResponse()) as (fake, client):
        await client.delete_conversation("c", allow_missing=True)
        await client.delete_conversation("c", idempotency_key="mine")
        fake.script(cpb.UpdateStateResponse(values_json="{}", version=1))
        await client.update_state("app/a", set={"k": 1})
        await client.update_state("app/a", set={"k": 1}, idempotency_key="ours")
    made_delete, given_delete, made_update, given_update = _sent(fake, "idempotency-key")
    assert (given_delete, given_update) == ("mine", "ours")
    assert made_delete
    assert made_update
    assert made_delete != made_update


async def test_token_request_id_and_extra_metadata() -> None:
    async with talking_to(_got(), token="secret-token-0123456789") as (fake, client):
        await client.get_conversation("c")
        view = client.with_options(request_id="trace-me", metadata=[("X-Tenant", "t1")])
        await view.get_conversation("c")
        # The view shares the connection; closing it leaves the client usable.
        await view.close()
        await client.get_conversation("c")
    first, second, third = (call.metadata for call in fake.received)
    assert first["authorization"] == "Bearer secret-token-0123456789"
    assert second["authorization"] == "Bearer secret-token-0123456789"
    assert second["x-request-id"] == "trace-me"
    assert second["x-tenant"] == "t1"
    assert first["x-request-id"] != third["x-request-id"]
    assert "x-tenant" not in third


async def test_every_answer_carries_the_version_trailer() -> None:
    async with talking_to(_got()) as (fake, client):
        fake.trailing = (("x-conversation-version", "7"),)
        assert (await client.get_conversation("c")).version == 7
        fake.script(_appended())
        assert (await client.append("c", MessageInput.user("hi"))).version == 7


async def test_a_version_conflict_carries_the_current_version() -> None:
    from_trailer = Fail(
        grpc.StatusCode.ABORTED,
        "if-version: the conversation is at version 9, not 4",
        (("x-conversation-version", "9"),),
    )
    from_text = Fail(grpc.StatusCode.ABORTED, "if-version: the conversation is at version 0, not 4")
    async with talking_to(from_trailer) as (fake, client):
        with pytest.raises(VersionConflict) as raised:
            await client.append("c", MessageInput.user("hi"), expected_version=4)
        assert raised.value.current_version == 9
        assert raised.value.field == "if-version"
        fake.script(from_text)
        with pytest.raises(VersionConflict) as raised:
            await client.append("c", MessageInput.user("hi"), expected_version=4)
        assert raised.value.current_version == 0
        assert raised.value.version is None


async def test_trace_context_is_sent_inside_an_active_span() -> None:
    tracer = TracerProvider().get_tracer("agent-state-client tests")
    async with talking_to(_got()) as (fake, client):
        await client.get_conversation("c")
        with tracer.start_as_current_span("model call") as span:
            await client.get_conversation("c")
        trace_id = format(span.get_span_context().trace_id, "032x")

        def call_in_a_span() -> str:
            with Client(fake.address) as sync_client, tracer.start_as_current_span("s") as outer:
                sync_client.get_conversation("c")
            return format(outer.get_span_context().trace_id, "032x")

        # The fake serves on this test's loop: the blocking client runs in
        # another thread.
        sync_trace_id = await asyncio.to_thread(call_in_a_span)
    outside, inside, in_sync = _sent(fake, "traceparent")
    assert outside is None
    assert inside is not None
    assert inside.split("-")[1] == trace_id
    assert in_sync is not None
    assert in_sync.split("-")[1] == sync_trace_id


async def test_a_repeated_page_token_stops_paging() -> None:
    looping = pb.ListConversationMessageIdsResponse(message_ids=["a"], next_page_token="same")
    seen: list[str] = []

    async def read_all(client: AsyncClient) -> None:
        async for message_id in client.message_ids("c"):
            seen.append(message_id)

    async with talking_to(looping) as (_, client):
        with pytest.raises(PagingError):
            await read_all(client)
    assert seen == ["a", "a"]


def _page(updated: int, token: str) -> pb.ListConversationMessagesResponse:
    return pb.ListConversationMessagesResponse(
        metadata=_metadata(updated=updated),
        messages=[pb.Message(id=f"m{updated}{token}", body=pb.MessageBody())],
        next_page_token=token,
    )


async def test_context_starts_over_when_the_conversation_changes_between_pages() -> None:
    pages = (_page(1, "next"), _page(2, "next"), _page(2, "next"), _page(2, ""))
    async with talking_to(*pages) as (fake, client):
        context = await client.context("c")
        assert context.message_ids == ("m2next", "m2")
        fake.script(_page(3, "next"), _page(4, "next"), _page(5, "next"), _page(6, ""))
        with pytest.raises(ContextChanged):
            await client.context("c", attempts=2)
    requests = [pb.ListConversationMessagesRequest.FromString(c.request) for c in fake.received]
    assert {request.page_size for request in requests} == {1000}


async def test_a_body_of_a_newer_contract_goes_back_unchanged() -> None:
    # Field 9 of MessageBody: a variant this contract does not have.
    unknown = pb.MessageBody.FromString(b"\x4a\x03new")
    stored = pb.Message(id="m", conversation_id="c", role=pb.ROLE_USER, body=unknown)
    page = pb.ListConversationMessagesResponse(metadata=_metadata(), messages=[stored])
    async with talking_to(page) as (fake, client):
        (message,) = [message async for message in client.messages("c")]
        assert message.body == UnknownBody(b"\x4a\x03new")
        fake.script(_appended())
        await client.append("other", message.as_input())
    sent = pb.AppendConversationMessagesRequest.FromString(fake.received[-1].request)
    assert sent.messages[0].body.SerializeToString() == b"\x4a\x03new"


async def test_naive_datetimes_are_refused() -> None:
    async with talking_to(cpb.ListConversationsResponse()) as (fake, client):
        with pytest.raises(ValueError, match="updated_after"):
            await client.list_conversations(updated_after=datetime(2026, 1, 1))
        await client.list_conversations(updated_after=datetime(2026, 1, 1, tzinfo=UTC))
    sent = cpb.ListConversationsRequest.FromString(fake.received[0].request)
    assert sent.updated_after.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 1, tzinfo=UTC)


async def test_the_blocking_client_serves_several_threads() -> None:
    async with fake_server(_got()) as fake:

        def work() -> None:
            # The fake serves on this test's loop: the blocking client runs
            # in another thread.
            with Client(fake.address) as client:
                threads = [
                    threading.Thread(target=client.get_conversation, args=("c",)) for _ in range(8)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()

        await asyncio.to_thread(work)
    request_ids = _sent(fake, "x-request-id")
    assert len(request_ids) == 8
    assert len(set(request_ids)) == 8
