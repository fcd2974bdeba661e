"""The blocking Client against the real server: the same answers and
errors as AsyncClient, iterators that page as they go and can stop early,
views with other options."""

from __future__ import annotations

import uuid

import pytest

from agent_state_client import (
    Client,
    ConversationNotFound,
    MessageInput,
    NotFound,
    Role,
    VersionConflict,
)


def new_id() -> str:
    return str(uuid.uuid4())


def test_a_conversation_through_the_blocking_client(sync_client: Client) -> None:
    created = sync_client.create_conversation(title="blocking", labels={"kind": "sync"})
    conversation = created.conversation_id
    appended = sync_client.append(
        conversation, [MessageInput.user(f"m{index}") for index in range(5)]
    )
    assert appended.metadata.message_count == 5
    assert [m.text for m in sync_client.messages(conversation, page_size=2)] == [
        "m0", "m1", "m2", "m3", "m4"
    ]  # fmt: skip
    assert list(sync_client.message_ids(conversation, page_size=2)) == list(appended.message_ids)
    context = sync_client.context(conversation, roles=[Role.USER])
    assert context.message_ids == appended.message_ids
    summary = sync_client.append(conversation, MessageInput.assistant("sum", kind="summary"))
    sync_client.replace_range(
        conversation,
        from_message_id=appended.message_ids[0],
        to_message_id=appended.message_ids[3],
        new_message_ids=summary.message_ids,
    )
    snapshot = sync_client.create_snapshot(
        conversation, sync_client.context(conversation).message_ids
    )
    assert [m.text for m in sync_client.snapshot_messages(snapshot.snapshot_id)] == ["sum", "m4"]
    assert list(sync_client.snapshot_message_ids(snapshot.snapshot_id)) == [
        summary.message_ids[0], appended.message_ids[4]
    ]  # fmt: skip
    described = sync_client.describe_conversation(conversation)
    assert described.version == 4  # created, two appends, a replace
    with pytest.raises(VersionConflict) as raised:
        sync_client.update_conversation(conversation, title="late", expected_version=1)
    assert raised.value.current_version == 4
    found = list(sync_client.conversations(labels={"kind": "sync"}))
    assert conversation in [c.conversation_id for c in found]
    assert sync_client.delete_conversation(conversation).deleted_snapshot_count == 1


def test_stopping_an_iteration_early_leaves_the_client_usable(sync_client: Client) -> None:
    conversation = new_id()
    sync_client.append(conversation, [MessageInput.user(str(index)) for index in range(6)])
    for message in sync_client.messages(conversation, page_size=2):
        if message.text == "2":
            break
    assert sync_client.get_conversation(conversation).message_count == 6


def test_errors_are_the_same_classes(sync_client: Client) -> None:
    view = sync_client.with_options(request_id="sync-request-1", timeout=30)
    with pytest.raises(ConversationNotFound) as raised:
        view.get_conversation(new_id())
    assert raised.value.request_id == "sync-request-1"
    # The view shares the connection: the client still works after it is closed.
    view.close()
    assert (
        sync_client.get_conversation(
            sync_client.append(new_id(), MessageInput.user("x")).metadata.conversation_id
        ).message_count
        == 1
    )


def test_another_service_of_the_server_through_the_same_connection(sync_client: Client) -> None:
    from grpc_health.v1 import health_pb2

    check = health_pb2.HealthCheckRequest(service="agentstate.v1.ConversationsService")
    reply = sync_client.call_unary(
        "/grpc.health.v1.Health/Check", check, health_pb2.HealthCheckResponse
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    unknown = health_pb2.HealthCheckRequest(service="no.such.Service")
    with pytest.raises(NotFound):
        sync_client.call_unary(
            "/grpc.health.v1.Health/Check", unknown, health_pb2.HealthCheckResponse
        )
    with pytest.raises(ValueError, match="expected /package"):
        sync_client.call_unary("Check", check, health_pb2.HealthCheckResponse)
