"""Typed calls of the public gRPC contract, for the tests and the benchmark:
one function a call (with a deadline), and helpers that page through a list
to its end, checking as they go that paging terminates and that no page
before the last is empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Sized
from functools import partial
from typing import Protocol, TypeVar

import grpc

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import agent_state_pb2_grpc as pb_grpc
from agent_state_client._gen import conversations_pb2_grpc as cpb_grpc

Stub = pb_grpc.AgentStateServiceStub
CompanionStub = cpb_grpc.ConversationsServiceStub

RPC_TIMEOUT_S = 60.0
MAX_PAGE_SIZE = 1000
MAX_BATCH = 1000


def make_stub(channel: grpc.Channel) -> Stub:
    stub: Stub = pb_grpc.AgentStateServiceStub(channel)  # type: ignore[no-untyped-call]
    return stub


def make_companion_stub(channel: grpc.Channel) -> CompanionStub:
    """A client of the companion API, agentstate.v1.ConversationsService."""
    stub: CompanionStub = cpb_grpc.ConversationsServiceStub(channel)  # type: ignore[no-untyped-call]
    return stub


def text_message(
    text: str, msg_role: pb.Role = pb.ROLE_USER, kind: str = ""
) -> pb.AppendMessageInput:
    return pb.AppendMessageInput(
        role=msg_role, kind=kind, body=pb.MessageBody(text=pb.TextBody(text=text))
    )


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


def append_in_batches(
    stub: Stub, conversation_id: str, messages: Sequence[pb.AppendMessageInput]
) -> list[str]:
    """Append `messages` in as few calls as the batch limit allows; their ids."""
    ids: list[str] = []
    for start in range(0, len(messages), MAX_BATCH):
        batch = messages[start : start + MAX_BATCH]
        ids += [m.id for m in append(stub, conversation_id, batch).appended]
    return ids


def seed(
    stub: Stub,
    conversation_id: str,
    count: int,
    *,
    prefix: str = "m",
    msg_role: pb.Role = pb.ROLE_USER,
    kind: str = "",
) -> list[str]:
    """Append ``count`` text messages ``prefix0``, ``prefix1``...; return their ids."""
    messages = [text_message(f"{prefix}{i}", msg_role, kind) for i in range(count)]
    return append_in_batches(stub, conversation_id, messages)


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


def _pages(fetch: Callable[..., PageT], items: Callable[[PageT], Sized]) -> list[PageT]:
    """Every page of a list, following next_page_token from the first;
    `fetch` takes the page_token."""
    pages: list[PageT] = []
    token = ""
    while True:
        page = fetch(page_token=token)
        pages.append(page)
        assert len(pages) < 10_000, "paging does not terminate"
        if not page.next_page_token:
            return pages
        assert len(items(page)), "a page with a next_page_token must not be empty"
        token = page.next_page_token


class _MessagePage(Protocol):
    @property
    def messages(self) -> Sequence[pb.Message]: ...


class _IdPage(Protocol):
    @property
    def message_ids(self) -> Sequence[str]: ...


def _messages(page: _MessagePage) -> Sequence[pb.Message]:
    return page.messages


def _message_ids(page: _IdPage) -> Sequence[str]:
    return page.message_ids


def list_pages(
    stub: Stub,
    conversation_id: str,
    *,
    page_size: int = 0,
    roles: Sequence[pb.Role] = (),
    kinds: Sequence[str] = (),
) -> list[pb.ListConversationMessagesResponse]:
    fetch = partial(list_page, stub, conversation_id, page_size=page_size, roles=roles, kinds=kinds)
    return _pages(fetch, _messages)


def list_all(
    stub: Stub,
    conversation_id: str,
    *,
    page_size: int = MAX_PAGE_SIZE,
    roles: Sequence[pb.Role] = (),
    kinds: Sequence[str] = (),
) -> list[pb.Message]:
    pages = list_pages(stub, conversation_id, page_size=page_size, roles=roles, kinds=kinds)
    return [m for page in pages for m in page.messages]


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
    return _pages(partial(ids_page, stub, conversation_id, page_size=page_size), _message_ids)


def all_ids(stub: Stub, conversation_id: str, *, page_size: int = MAX_PAGE_SIZE) -> list[str]:
    """The ordering, read with ListConversationMessageIds."""
    pages = ids_pages(stub, conversation_id, page_size=page_size)
    return [i for page in pages for i in page.message_ids]


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
    return _pages(partial(snapshot_page, stub, snapshot_id, page_size=page_size), _messages)


def snapshot_messages(
    stub: Stub, snapshot_id: str, *, page_size: int = MAX_PAGE_SIZE
) -> list[pb.Message]:
    pages = snapshot_pages(stub, snapshot_id, page_size=page_size)
    return [m for page in pages for m in page.messages]


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
    return _pages(partial(snapshot_ids_page, stub, snapshot_id, page_size=page_size), _message_ids)


def snapshot_ids(stub: Stub, snapshot_id: str, *, page_size: int = MAX_PAGE_SIZE) -> list[str]:
    pages = snapshot_ids_pages(stub, snapshot_id, page_size=page_size)
    return [i for page in pages for i in page.message_ids]
