"""Typed wrappers around the generated client, and builders for test data.

Everything here talks to the server only through the public gRPC contract.
The calls themselves are in tests.support.calls, shared with the benchmark.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state_client._gen import agent_state_pb2 as pb
from tests.support import calls
from tests.support.calls import Stub

MIB = 1024 * 1024
MAX_REQUEST_BYTES = 3 * MIB
MAX_PAGE_BYTES = 3 * MIB
DEFAULT_PAGE_SIZE = 100
MAX_KIND_CODE_POINTS = 256

USER = pb.ROLE_USER
ASSISTANT = pb.ROLE_ASSISTANT
TOOL = pb.ROLE_TOOL
ROLE_UNSPECIFIED = pb.ROLE_UNSPECIFIED

COMPANION_SERVICE = "agentstate.v1.ConversationsService"
COMPANION_METHODS = [
    "CreateConversation",
    "DescribeConversation",
    "UpdateConversation",
    "ListConversations",
    "DeleteConversation",
    "TailConversationMessages",
    "GetMessages",
    "ForkConversation",
    "ListConversationSnapshots",
]
"""The methods of the companion API served so far (the others answer
UNIMPLEMENTED; tests/e2e/test_companion.py checks both)."""

RW_TOKEN = "rw-token-companion-0123456789"
RO_TOKEN = "ro-token-companion-0123456789"
"""The tokens of the `guarded` server (tests/e2e/conftest.py)."""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata presenting `token`."""
    return (("authorization", f"Bearer {token}"),)


# Scoped state (tests/e2e/test_state.py).
COMPANION_METHODS += ["GetState", "UpdateState", "AppendMessagesWithState"]

CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def new_id() -> str:
    return str(uuid.uuid4())


def role(value: int) -> pb.Role:
    """Any enum number, including ones the contract does not define."""
    return cast(pb.Role, value)


def is_canonical_uuid(value: str) -> bool:
    return CANONICAL_UUID.match(value) is not None


# --- spellings of one UUID -------------------------------------------------


def spellings(canonical: str) -> list[str]:
    """Accepted spellings of one UUID (SEMANTICS: Identifiers)."""
    upper = canonical.upper()
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(canonical))
    hex32 = canonical.replace("-", "")
    return [
        canonical,
        upper,
        mixed,
        "{" + canonical + "}",
        "{" + upper + "}",
        "urn:uuid:" + canonical,
        "urn:uuid:" + upper,
        hex32,
        hex32.upper(),
    ]


def malformed_uuids() -> list[str]:
    """Strings that are not one of the accepted UUID spellings."""
    good = "0f8fad5b-d9cb-469f-a165-70867728950e"
    hex32 = good.replace("-", "")
    return [
        "",
        "not-a-uuid",
        "1234",
        good[:-1],
        good + "0",
        good + "-",
        "g" + good[1:],
        hex32[:-1],
        hex32 + "0",
        # hyphens in the wrong places
        hex32[:7] + "-" + hex32[7:11] + "-" + hex32[11:15] + "-" + hex32[15:19] + "-" + hex32[19:],
        good.replace("-", "", 1),
        # whitespace, unbalanced braces, other prefixes
        " " + good,
        good + " ",
        good + "\n",
        "{" + good,
        good + "}",
        "uuid:" + good,
        "urn:" + good,
        "urn:uuid:",
        # things int(x, 16) would accept
        "0x" + hex32[2:],
        "+" + hex32[1:],
        hex32[:8] + "_" + hex32[9:],
        "\uff10" + hex32[1:],  # fullwidth digit zero
        "\u0660" + hex32[1:],  # Arabic-Indic digit zero
    ]


# --- builders ----------------------------------------------------------------


def tool_text_message(
    text: str,
    *,
    tool_name: str = "search",
    tool_call_id: str = "call_1",
    metadata: dict[str, str] | None = None,
    kind: str = "tool_output",
    msg_role: pb.Role = TOOL,
) -> pb.AppendMessageInput:
    body = pb.MessageBody(
        tool_output=pb.ToolOutputBody(
            tool_name=tool_name,
            tool_call_id=tool_call_id,
            text=pb.ToolTextOutput(text=text),
            metadata=metadata or {},
        )
    )
    body.tool_output.text.SetInParent()
    return pb.AppendMessageInput(role=msg_role, kind=kind, body=body)


def tool_image_message(
    image: pb.ToolImageOutput,
    *,
    tool_name: str = "camera",
    tool_call_id: str = "call_2",
    metadata: dict[str, str] | None = None,
    kind: str = "tool_output",
    msg_role: pb.Role = TOOL,
) -> pb.AppendMessageInput:
    body = pb.MessageBody(
        tool_output=pb.ToolOutputBody(
            tool_name=tool_name,
            tool_call_id=tool_call_id,
            image=image,
            metadata=metadata or {},
        )
    )
    body.tool_output.image.SetInParent()
    return pb.AppendMessageInput(role=msg_role, kind=kind, body=body)


# --- assertions ----------------------------------------------------------------


def expect_error(code: grpc.StatusCode, call: Callable[[], object], *fields: str) -> grpc.RpcError:
    """The call fails with exactly ``code``, and its details name every one of ``fields``."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    details = error.details() or ""
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {details!r}"
    for name in fields:
        assert name in details, f"status details should name {name!r}: {details!r}"
    return error


def status_code(call: Callable[[], object]) -> grpc.StatusCode:
    """The status `call` ends with: its error's code, or OK."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def micros(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def texts(messages: Iterable[pb.Message]) -> list[str]:
    return [m.body.text.text for m in messages]


def content(message: pb.Message) -> tuple[int, str, bytes]:
    """What the client sent: role, kind and body (deterministically serialized)."""
    return (int(message.role), message.kind, message.body.SerializeToString(deterministic=True))


def input_content(message: pb.AppendMessageInput) -> tuple[int, str, bytes]:
    return (int(message.role), message.kind, message.body.SerializeToString(deterministic=True))


def expect_range_change(
    stub: Stub,
    cid: str,
    seeded: Sequence[str],
    order: Sequence[int],
    response_metadata: pb.ConversationMetadata,
    before: pb.ConversationMetadata,
) -> None:
    """After a Replace or Delete on messages made by `seed` (texts m0, m1...):
    the ordering is `seeded` at the indexes `order`, the response's metadata is
    the conversation's, and updated_at has moved on from `before`."""
    assert calls.all_ids(stub, cid) == [seeded[i] for i in order]
    assert texts(calls.list_all(stub, cid)) == [f"m{i}" for i in order]
    metadata = calls.get(stub, cid)
    assert metadata.message_count == len(order)
    assert response_metadata == metadata
    assert micros(metadata.updated_at) > micros(before.updated_at)
