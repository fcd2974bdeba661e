"""The companion API's names, read from the generated descriptor.

Clients of ConversationsService are written against the names the
companion spec (issue 13) fixes: the package, the service, every RPC,
every request and answer field it lists, and the fields of Conversation
and Retention. Each is checked here with its type, so that renaming or
retyping one in proto/agentstate/v1/conversations.proto fails. Fields the
spec does not name may be added freely; these tables only say what must be
there.
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from agent_state_client._gen import conversations_pb2

AGYNIO = "agynio.api.agent_state.v1."
TIMESTAMP = "google.protobuf.Timestamp"

SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_BOOL: "bool",
}

Fields = dict[str, str]

CONVERSATION: Fields = {
    "conversation_id": "string",
    "title": "string",
    "labels": "map<string, string>",
    "message_count": "int64",
    "version": "int64",
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    "retention": "agentstate.v1.Retention",
}

RETENTION: Fields = {
    "max_idle": "google.protobuf.Duration",
    "max_messages": "int64",
}

# rpc: (request fields, answer message, answer fields)
RPCS: dict[str, tuple[Fields, str, Fields]] = {
    "CreateConversation": (
        {
            "conversation_id": "string",
            "title": "string",
            "labels": "map<string, string>",
            "retention": "agentstate.v1.Retention",
        },
        "Conversation",
        CONVERSATION,
    ),
    "DescribeConversation": ({"conversation_id": "string"}, "Conversation", CONVERSATION),
    "UpdateConversation": (
        {
            "conversation": "agentstate.v1.Conversation",
            "update_mask": "google.protobuf.FieldMask",
            "expected_version": "int64",
        },
        "Conversation",
        CONVERSATION,
    ),
    "ListConversations": (
        {
            "labels": "map<string, string>",
            "updated_after": TIMESTAMP,
            "updated_before": TIMESTAMP,
            "order_by": "string",
            "page_size": "int32",
            "page_token": "string",
        },
        "ListConversationsResponse",
        {
            "conversations": "repeated agentstate.v1.Conversation",
            "next_page_token": "string",
        },
    ),
    "DeleteConversation": (
        {"conversation_id": "string", "expected_version": "int64", "allow_missing": "bool"},
        "DeleteConversationResponse",
        {"deleted_message_count": "int64", "deleted_snapshot_count": "int64"},
    ),
    "TailConversationMessages": (
        {
            "conversation_id": "string",
            "count": "int32",
            "roles": f"repeated {AGYNIO}Role",
            "kinds": "repeated string",
        },
        "TailConversationMessagesResponse",
        {
            "metadata": f"{AGYNIO}ConversationMetadata",
            "messages": f"repeated {AGYNIO}Message",
            "truncated": "bool",
        },
    ),
    "GetMessages": (
        {"conversation_id": "string", "message_ids": "repeated string"},
        "GetMessagesResponse",
        {"messages": f"repeated {AGYNIO}Message"},
    ),
    "ForkConversation": (
        {
            "conversation_id": "string",
            "up_to_message_id": "string",
            "new_conversation_id": "string",
            "title": "string",
            "labels": "map<string, string>",
        },
        "ForkConversationResponse",
        {"conversation": "agentstate.v1.Conversation", "message_ids": "repeated string"},
    ),
    "GetState": (
        {"scope": "string"},
        "GetStateResponse",
        {"values_json": "string", "version": "int64"},
    ),
    "UpdateState": (
        {
            "scope": "string",
            "set_json": "string",
            "remove_keys": "repeated string",
            "expected_version": "int64",
        },
        "UpdateStateResponse",
        {"values_json": "string", "version": "int64"},
    ),
    "AppendMessagesWithState": (
        {
            "conversation_id": "string",
            "messages": f"repeated {AGYNIO}AppendMessageInput",
            "state_updates": "repeated agentstate.v1.StateUpdate",
            "expected_version": "int64",
        },
        "AppendMessagesWithStateResponse",
        {
            "metadata": f"{AGYNIO}ConversationMetadata",
            "appended": f"repeated {AGYNIO}Message",
            "state_versions": "map<string, int64>",
        },
    ),
    "ListConversationSnapshots": (
        {"conversation_id": "string", "page_size": "int32", "page_token": "string"},
        "ListConversationSnapshotsResponse",
        {
            "snapshots": "repeated agentstate.v1.SnapshotInfo",
            "next_page_token": "string",
        },
    ),
}

# Messages the answers and requests above refer to, with the fields they need.
NESTED: dict[str, Fields] = {
    "Conversation": CONVERSATION,
    "Retention": RETENTION,
    "StateUpdate": {"scope": "string", "set_json": "string", "remove_keys": "repeated string"},
    "SnapshotInfo": {"snapshot_id": "string", "created_at": TIMESTAMP, "item_count": "int64"},
}

FILE = conversations_pb2.DESCRIPTOR
SERVICE = FILE.services_by_name["ConversationsService"]


def value_type(field: FieldDescriptor) -> str:
    """A field's type without its repetition: a scalar's name or a full name."""
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return SCALARS[field.type]


def type_of(field: FieldDescriptor) -> str:
    """A field's type as the .proto spells it (`repeated X`, `map<K, V>`)."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return f"map<{value_type(key)}, {value_type(value)}>"
    if field.is_repeated:
        return f"repeated {value_type(field)}"
    return value_type(field)


def fields_of(message: Descriptor, names: Fields) -> Fields:
    """The named fields of a message that it has, with their types."""
    return {
        name: type_of(message.fields_by_name[name])
        for name in names
        if name in message.fields_by_name
    }


def test_package_and_service() -> None:
    assert FILE.package == "agentstate.v1"
    assert SERVICE.full_name == "agentstate.v1.ConversationsService"


def test_every_rpc_is_served() -> None:
    assert set(RPCS) <= set(SERVICE.methods_by_name)


@pytest.mark.parametrize("rpc", sorted(RPCS))
def test_rpc_request_and_answer(rpc: str) -> None:
    request_fields, answer, answer_fields = RPCS[rpc]
    method = SERVICE.methods_by_name[rpc]
    assert not method.client_streaming
    assert not method.server_streaming
    assert method.input_type.full_name == f"agentstate.v1.{rpc}Request"
    assert method.output_type.full_name == f"agentstate.v1.{answer}"
    assert fields_of(method.input_type, request_fields) == request_fields
    assert fields_of(method.output_type, answer_fields) == answer_fields


@pytest.mark.parametrize("message", sorted(NESTED))
def test_named_messages(message: str) -> None:
    expected = NESTED[message]
    assert fields_of(FILE.message_types_by_name[message], expected) == expected
