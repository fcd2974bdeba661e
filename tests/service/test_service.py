"""The conversation rules in process, over every backend: what is hard to
reach through the wire (renumberings under a page token, a clock that
steps back, idempotent replays of each mutating call).

The service is given a codec whose bytes these tests read back directly,
so they look at its results, not at protobuf (the real codec has its own
tests in tests/unit/server, and tests/e2e run both together)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from uuid import UUID, uuid4

import pytest

from agent_state.clock import now_micros
from agent_state.errors import FailedPrecondition
from agent_state.model import (
    ConversationState,
    EncodedMessage,
    EncodedResponse,
    MessageHeader,
    MessageInput,
    Snapshot,
)
from agent_state.service import (
    Appended,
    ConversationService,
    Deleted,
    Idempotency,
    Replaced,
    Replay,
)
from agent_state.storage.base import Store

from .._gen_helpers import text_body

T = TypeVar("T")


class ReadableCodec:
    """A codec whose bytes say plainly what they stand for: a message's
    entry is its id's 16 bytes and its body; a response is a serial number,
    under which `results` keeps the result it encodes."""

    def __init__(self) -> None:
        self.results: dict[EncodedResponse, object] = {}

    def frame(self, conversation_id: UUID, message: MessageHeader) -> tuple[bytes, bytes]:
        return message.id.bytes, b""

    def message_page_header_size(self, state: ConversationState) -> int:
        return 0

    def snapshot_page_header_size(self) -> int:
        return 0

    def token_field_size(self, token_length: int) -> int:
        return token_length

    def appended(self, result: Appended) -> EncodedResponse:
        return self._keep(result)

    def replaced(self, result: Replaced) -> EncodedResponse:
        return self._keep(result)

    def deleted(self, result: Deleted) -> EncodedResponse:
        return self._keep(result)

    def snapshot_created(self, snapshot: Snapshot) -> EncodedResponse:
        return self._keep(snapshot)

    def _keep(self, result: object) -> EncodedResponse:
        response = EncodedResponse(b"response %d" % len(self.results))
        self.results[response] = result
        return response


def _service(
    store: Store, clock: Callable[[], int] = now_micros, codec: ReadableCodec | None = None
) -> ConversationService:
    return ConversationService(store, codec or ReadableCodec(), clock=clock)


def applied(result: T | Replay) -> T:
    """The result of a call made without an idempotency key (never a replay)."""
    assert not isinstance(result, Replay)
    return result


def _text(i: int) -> MessageInput:
    return MessageInput(role=1, kind="", body=text_body(str(i)), body_variant="text")


def _ids(entries: Sequence[EncodedMessage]) -> list[UUID]:
    """Ids of the messages in list entries, as ReadableCodec framed them."""
    return [UUID(bytes=entry[:16]) for entry in entries]


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
    service = _service(store)
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
    service = _service(store)
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
    service = _service(store, clock=lambda: next(readings))
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


async def test_a_retry_with_the_same_key_replays_each_mutating_call(store: Store) -> None:
    codec = ReadableCodec()
    service = _service(store, codec=codec)
    conversation = str(uuid4())

    async def twice(call: Callable[[Idempotency], Awaitable[T | Replay]], name: str) -> T:
        """Make the call, then retry it with the same key: the retry gets
        the encoding of the first call's own result."""
        key = Idempotency(name, fingerprint=name.encode())
        result = applied(await call(key))
        retried = await call(key)
        assert isinstance(retried, Replay)
        assert codec.results[retried.response] == result
        return result

    appended = await twice(lambda key: service.append(conversation, [_text(1), _text(2)], key), "a")
    first, second = (message.message.id for message in appended.messages)
    await twice(
        lambda key: service.replace_range(conversation, str(first), str(first), [], key), "r"
    )
    await twice(lambda key: service.delete_range(conversation, str(second), "", key), "d")
    await twice(lambda key: service.create_snapshot(conversation, [str(first)], key), "s")
    # Each call applied once: the replace took first out of the ordering,
    # the delete removed second, and nothing was appended again.
    state = await service.get_conversation(conversation)
    assert state.message_count == 0
    assert state.version == 3


async def test_a_key_reused_for_another_request_is_refused(store: Store) -> None:
    service = _service(store)
    conversation = str(uuid4())
    await service.append(conversation, [_text(1)], Idempotency("k", b"one request"))
    with pytest.raises(FailedPrecondition):
        await service.append(conversation, [_text(1)], Idempotency("k", b"another"))
    assert (await service.get_conversation(conversation)).message_count == 1
