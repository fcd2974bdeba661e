"""Typed wrappers around the generated client, and builders for test data.

Everything here talks to the server only through the public gRPC contract.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Protocol, TypeVar, cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state._gen import agent_state_pb2 as pb
from agent_state._gen import agent_state_pb2_grpc as pb_grpc

Stub = pb_grpc.AgentStateServiceStub

RPC_TIMEOUT_S = 60.0
MIB = 1024 * 1024
MAX_REQUEST_BYTES = 3 * MIB
MAX_PAGE_BYTES = 3 * MIB
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH = 1000
MAX_KIND_CODE_POINTS = 256

USER = pb.ROLE_USER
ASSISTANT = pb.ROLE_ASSISTANT
TOOL = pb.ROLE_TOOL
ROLE_UNSPECIFIED = pb.ROLE_UNSPECIFIED

CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def make_stub(channel: grpc.Channel) -> Stub:
    stub: Stub = pb_grpc.AgentStateServiceStub(channel)  # type: ignore[no-untyped-call]
    return stub


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


def text_message(text: str, msg_role: pb.Role = USER, kind: str = "") -> pb.AppendMessageInput:
    return pb.AppendMessageInput(
        role=msg_role, kind=kind, body=pb.MessageBody(text=pb.TextBody(text=text))
    )


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


# --- calls ---------------------------------------------------------------------


def append(
    stub: Stub, conversation_id: str, messages: Iterable[pb.AppendMessageInput]
) -> pb.AppendConversationMessagesResponse:
    response: pb.AppendConversationMessagesResponse = stub.AppendConversationMessages(
        pb.AppendConversationMessagesRequest(
            conversation_id=conversation_id, messages=list(messages)
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return response


def seed(
    stub: Stub,
    conversation_id: str,
    count: int,
    *,
    prefix: str = "m",
    msg_role: pb.Role = USER,
    kind: str = "",
) -> list[str]:
    """Append ``count`` text messages ``prefix0``, ``prefix1``...; return their ids."""
    ids: list[str] = []
    start = 0
    while start < count:
        batch = [
            text_message(f"{prefix}{i}", msg_role, kind)
            for i in range(start, min(count, start + MAX_BATCH))
        ]
        ids += [m.id for m in append(stub, conversation_id, batch).appended]
        start += len(batch)
    return ids


def get(stub: Stub, conversation_id: str) -> pb.ConversationMetadata:
    response: pb.GetConversationResponse = stub.GetConversation(
        pb.GetConversationRequest(conversation_id=conversation_id), timeout=RPC_TIMEOUT_S
    )
    return response.metadata


def list_page(
    stub: Stub,
    conversation_id: str,
    *,
    page_size: int = 0,
    page_token: str = "",
    roles: Sequence[pb.Role] = (),
    kinds: Sequence[str] = (),
) -> pb.ListConversationMessagesResponse:
    response: pb.ListConversationMessagesResponse = stub.ListConversationMessages(
        pb.ListConversationMessagesRequest(
            conversation_id=conversation_id,
            roles=list(roles),
            kinds=list(kinds),
            page_size=page_size,
            page_token=page_token,
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return response


class _Paged(Protocol):
    @property
    def next_page_token(self) -> str: ...


PageT = TypeVar("PageT", bound=_Paged)


def _pages(fetch: Callable[[str], PageT], items: Callable[[PageT], Sized]) -> list[PageT]:
    """Every page of a list, following next_page_token from the first."""
    pages: list[PageT] = []
    token = ""
    while True:
        page = fetch(token)
        pages.append(page)
        assert len(pages) < 10_000, "paging does not terminate"
        if not page.next_page_token:
            return pages
        assert len(items(page)), "a page with a next_page_token must not be empty"
        token = page.next_page_token


def list_pages(
    stub: Stub,
    conversation_id: str,
    *,
    page_size: int = 0,
    roles: Sequence[pb.Role] = (),
    kinds: Sequence[str] = (),
) -> list[pb.ListConversationMessagesResponse]:
    return _pages(
        lambda token: list_page(
            stub, conversation_id, page_size=page_size, page_token=token, roles=roles, kinds=kinds
        ),
        lambda page: page.messages,
    )


def list_all(
    stub: Stub,
    conversation_id: str,
    *,
    page_size: int = MAX_PAGE_SIZE,
    roles: Sequence[pb.Role] = (),
    kinds: Sequence[str] = (),
) -> list[pb.Message]:
    return [
        m
        for page in list_pages(stub, conversation_id, page_size=page_size, roles=roles, kinds=kinds)
        for m in page.messages
    ]


def ids_page(
    stub: Stub, conversation_id: str, *, page_size: int = 0, page_token: str = ""
) -> pb.ListConversationMessageIdsResponse:
    response: pb.ListConversationMessageIdsResponse = stub.ListConversationMessageIds(
        pb.ListConversationMessageIdsRequest(
            conversation_id=conversation_id, page_size=page_size, page_token=page_token
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return response


def ids_pages(
    stub: Stub, conversation_id: str, *, page_size: int = 0
) -> list[pb.ListConversationMessageIdsResponse]:
    return _pages(
        lambda token: ids_page(stub, conversation_id, page_size=page_size, page_token=token),
        lambda page: page.message_ids,
    )


def all_ids(stub: Stub, conversation_id: str, *, page_size: int = MAX_PAGE_SIZE) -> list[str]:
    """The ordering, read with ListConversationMessageIds."""
    return [
        i
        for page in ids_pages(stub, conversation_id, page_size=page_size)
        for i in page.message_ids
    ]


def replace(
    stub: Stub,
    conversation_id: str,
    *,
    from_id: str = "",
    to_id: str = "",
    new_ids: Sequence[str] = (),
) -> pb.ReplaceConversationMessagesRangeResponse:
    response: pb.ReplaceConversationMessagesRangeResponse = stub.ReplaceConversationMessagesRange(
        pb.ReplaceConversationMessagesRangeRequest(
            conversation_id=conversation_id,
            from_message_id=from_id,
            to_message_id=to_id,
            new_message_ids=list(new_ids),
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return response


def delete(
    stub: Stub, conversation_id: str, *, from_id: str = "", to_id: str = ""
) -> pb.DeleteConversationMessagesRangeResponse:
    response: pb.DeleteConversationMessagesRangeResponse = stub.DeleteConversationMessagesRange(
        pb.DeleteConversationMessagesRangeRequest(
            conversation_id=conversation_id, from_message_id=from_id, to_message_id=to_id
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return response


def snapshot(stub: Stub, conversation_id: str, message_ids: Sequence[str]) -> pb.ContextSnapshot:
    response: pb.CreateSnapshotResponse = stub.CreateSnapshot(
        pb.CreateSnapshotRequest(conversation_id=conversation_id, message_ids=list(message_ids)),
        timeout=RPC_TIMEOUT_S,
    )
    return response.snapshot


def snapshot_page(
    stub: Stub, snapshot_id: str, *, page_size: int = 0, page_token: str = ""
) -> pb.ListSnapshotMessagesResponse:
    response: pb.ListSnapshotMessagesResponse = stub.ListSnapshotMessages(
        pb.ListSnapshotMessagesRequest(
            snapshot_id=snapshot_id, page_size=page_size, page_token=page_token
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return response


def snapshot_pages(
    stub: Stub, snapshot_id: str, *, page_size: int = 0
) -> list[pb.ListSnapshotMessagesResponse]:
    return _pages(
        lambda token: snapshot_page(stub, snapshot_id, page_size=page_size, page_token=token),
        lambda page: page.messages,
    )


def snapshot_messages(
    stub: Stub, snapshot_id: str, *, page_size: int = MAX_PAGE_SIZE
) -> list[pb.Message]:
    return [m for p in snapshot_pages(stub, snapshot_id, page_size=page_size) for m in p.messages]


def snapshot_ids_page(
    stub: Stub, snapshot_id: str, *, page_size: int = 0, page_token: str = ""
) -> pb.ListSnapshotMessageIdsResponse:
    response: pb.ListSnapshotMessageIdsResponse = stub.ListSnapshotMessageIds(
        pb.ListSnapshotMessageIdsRequest(
            snapshot_id=snapshot_id, page_size=page_size, page_token=page_token
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return response


def snapshot_ids_pages(
    stub: Stub, snapshot_id: str, *, page_size: int = 0
) -> list[pb.ListSnapshotMessageIdsResponse]:
    return _pages(
        lambda token: snapshot_ids_page(stub, snapshot_id, page_size=page_size, page_token=token),
        lambda page: page.message_ids,
    )


def snapshot_ids(stub: Stub, snapshot_id: str, *, page_size: int = MAX_PAGE_SIZE) -> list[str]:
    return [
        i for p in snapshot_ids_pages(stub, snapshot_id, page_size=page_size) for i in p.message_ids
    ]


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


def micros(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def texts(messages: Iterable[pb.Message]) -> list[str]:
    return [m.body.text.text for m in messages]


def content(message: pb.Message) -> tuple[int, str, bytes]:
    """What the client sent: role, kind and body (deterministically serialized)."""
    return (int(message.role), message.kind, message.body.SerializeToString(deterministic=True))


def input_content(message: pb.AppendMessageInput) -> tuple[int, str, bytes]:
    return (int(message.role), message.kind, message.body.SerializeToString(deterministic=True))
