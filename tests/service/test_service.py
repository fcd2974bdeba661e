"""The conversation rules in process, over every backend: what is hard to
reach through the wire (renumberings under a page token, a clock that
steps back)."""

from __future__ import annotations

from typing import TypeVar
from uuid import UUID, uuid4

from agent_state._gen import agent_state_pb2 as pb
from agent_state.model import MessageInput
from agent_state.service import ConversationService, Replay
from agent_state.storage.base import Store

from .._gen_helpers import text_body

T = TypeVar("T")


def applied(result: T | Replay) -> T:
    """The result of a call made without an idempotency key (never a replay)."""
    assert not isinstance(result, Replay)
    return result


def _text(i: int) -> MessageInput:
    return MessageInput(role=1, kind="", body=text_body(str(i)), body_variant="text")


def _ids(entries: list[bytes]) -> list[UUID]:
    """Ids of the messages in list entries, as a client decodes them."""
    response = pb.ListConversationMessagesResponse.FromString(b"".join(entries))
    return [UUID(message.id) for message in response.messages]


async def _all_ids(
    service: ConversationService, conversation: str, page_size: int = 7
) -> list[UUID]:
    ids: list[UUID] = []
    token = ""
    while True:
        page = await service.list_message_ids(conversation, page_size, token)
        ids += page.message_ids
        token = page.next_page_token
        if not token:
            return ids


async def _insert_after(service: ConversationService, conversation: str, anchor: UUID) -> UUID:
    """Append a message, then move it right after `anchor`."""
    new = applied(await service.append(conversation, [_text(0)])).messages[0].message.id
    await service.replace_range(conversation, str(anchor), "", [str(new)])
    return new


async def test_inserting_at_one_spot_keeps_the_order_exact(store: Store) -> None:
    service = ConversationService(store)
    conversation = str(uuid4())
    first, last = applied(await service.append(conversation, [_text(1), _text(2)])).messages
    inserted = [await _insert_after(service, conversation, first.message.id) for _ in range(150)]
    assert await _all_ids(service, conversation) == [
        first.message.id,
        *reversed(inserted),
        last.message.id,
    ]
    state = await service.get_conversation(conversation)
    assert state.layout_version > 0, "the test must force renumberings"
    assert state.message_count == 152


async def _insert_first(service: ConversationService, conversation: str) -> UUID:
    """Append a message, then move it to the head of the ordering."""
    first = (await service.list_message_ids(conversation, 1, "")).message_ids[0]
    new = applied(await service.append(conversation, [_text(0)])).messages[0].message.id
    await service.replace_range(conversation, "", str(first), [str(new)])
    return new


async def test_a_page_token_survives_renumberings_and_its_own_message_deleted(
    store: Store,
) -> None:
    service = ConversationService(store)
    conversation = str(uuid4())
    await service.append(conversation, [_text(i) for i in range(10)])
    # A crowded head: positions there halve with every insert.
    for _ in range(25):
        await _insert_first(service, conversation)
    order = await _all_ids(service, conversation)
    first_page = await service.list_messages(conversation, [], [], 5, "")
    listed = _ids(first_page.entries)
    assert listed == order[:5]
    # The page's last message goes, and the head fills up until the
    # entries around the cursor's place are spread out again.
    await service.delete_range(conversation, str(listed[-1]), str(listed[-1]))
    version = (await service.get_conversation(conversation)).layout_version
    for _ in range(30):
        await _insert_first(service, conversation)
    assert (await service.get_conversation(conversation)).layout_version > version
    rest: list[UUID] = []
    token = first_page.next_page_token
    while token:
        page = await service.list_messages(conversation, [], [], 5, token)
        rest += _ids(page.entries)
        token = page.next_page_token
    # Neither skipped nor repeated: exactly the messages after the cursor.
    assert rest == order[5:]


async def test_updated_at_increases_even_when_the_clock_steps_back(store: Store) -> None:
    readings = iter([5_000_000, 4_000_000, 4_000_000, 1])
    service = ConversationService(store, clock=lambda: next(readings))
    conversation = str(uuid4())
    a = applied(await service.append(conversation, [_text(1)]))
    b = applied(await service.append(conversation, [_text(2)]))
    c = applied(
        await service.replace_range(
            conversation, str(b.messages[0].message.id), "", [str(a.messages[0].message.id)]
        )
    )
    d = applied(await service.delete_range(conversation, str(a.messages[0].message.id), ""))
    stamps = [a.state.updated_at, b.state.updated_at, c.state.updated_at, d.state.updated_at]
    assert stamps == [5_000_000, 5_000_001, 5_000_002, 5_000_003]
    assert (await service.get_conversation(conversation)).updated_at == 5_000_003
