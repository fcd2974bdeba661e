"""The conversation rules in process, over every backend: what is hard to
reach through the wire (renumberings under a page token, a clock that
steps back, idempotent replays of each mutating call).

The service is given a codec whose bytes these tests read back directly,
so they look at its results, not at protobuf (the real codec has its own
tests in tests/unit/server, and tests/e2e run both together)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest

from agent_state import paging
from agent_state.clock import now_micros
from agent_state.errors import (
    ConversationNotFound,
    FailedPrecondition,
    InvalidArgument,
    MessageNotFound,
    VersionMismatch,
)
from agent_state.model import (
    ConversationState,
    EncodedMessage,
    EncodedResponse,
    ExpectedVersion,
    MessageHeader,
    MessageInput,
    NewMessage,
)
from agent_state.paging import Cursor, PagedList
from agent_state.service import (
    Appended,
    ConversationService,
    Deleted,
    Idempotency,
    Replaced,
    Replay,
    SnapshotCreated,
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
        state = result.state
        return self.appended_again(
            state.id, state.message_count, state.updated_at, self.appended_messages(result.messages)
        )

    def appended_messages(self, messages: Sequence[NewMessage]) -> bytes:
        return self._keep(tuple(messages))

    def appended_again(
        self, conversation_id: UUID, message_count: int, updated_at: int, appended: bytes
    ) -> EncodedResponse:
        messages = self.results[EncodedResponse(appended)]
        return self._keep((conversation_id, message_count, updated_at, messages))

    def said(self, result: object) -> object:
        """What the encoding of `result` stands for: an append's response
        carries the conversation's metadata and the messages, not its whole
        state."""
        if isinstance(result, Appended):
            state = result.state
            return (state.id, state.message_count, state.updated_at, tuple(result.messages))
        return result

    def replaced(self, result: Replaced) -> EncodedResponse:
        return self._keep(result)

    def deleted(self, result: Deleted) -> EncodedResponse:
        return self._keep(result)

    def snapshot_created(self, result: SnapshotCreated) -> EncodedResponse:
        return self._keep(result)

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
        assert codec.results[retried.response] == codec.said(result)
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


# --- versions ----------------------------------------------------------------------


def _expect(version: int) -> ExpectedVersion:
    return ExpectedVersion(version, "if-version")


async def _first_id(service: ConversationService, conversation: str) -> str:
    return str((await service.list_message_ids(conversation, 1, "")).message_ids[0])


async def test_a_conversation_is_at_version_1_when_created_and_each_change_adds_1(
    store: Store,
) -> None:
    # The third reading stands still. (Times of now: the idempotency key
    # stays clear of other tests' sweeps of old keys in a shared database.)
    start = now_micros()
    still = iter([start, start + 1, start])
    service = _service(store, clock=lambda: next(still, start + 1_000_000))
    fast, slow = str(uuid4()), str(uuid4())
    # Created by the one-statement append, and by the locked one (a key).
    assert applied(await service.append(fast, [_text(1)])).state.version == 1
    first = applied(await service.append(slow, [_text(1)], Idempotency("k", b"a")))
    assert first.state.version == 1
    # The clock stood still: the locked path, which counts the same.
    assert applied(await service.append(fast, [_text(2)])).state.version == 2
    message = await _first_id(service, fast)
    replaced = applied(await service.replace_range(fast, message, message, []))
    assert replaced.state.version == 3
    snapshot = applied(await service.create_snapshot(fast, [message]))
    assert snapshot.state.version == 3
    remaining = await _first_id(service, fast)
    deleted = applied(await service.delete_range(fast, remaining, ""))
    assert deleted.state.version == 4
    assert (await service.get_conversation(fast)).version == 4
    replay = await service.append(slow, [_text(1)], Idempotency("k", b"a"))
    assert isinstance(replay, Replay)
    assert replay.version == 1
    assert (await service.get_conversation(slow)).version == 1


async def test_every_write_goes_ahead_only_at_the_version_it_expects(store: Store) -> None:
    service = _service(store)
    conversation = str(uuid4())
    await service.append(conversation, [_text(1), _text(2)])
    message, last = (await service.list_message_ids(conversation, 2, "")).message_ids
    writes: list[Callable[[ExpectedVersion], Awaitable[object]]] = [
        lambda expected: service.append(conversation, [_text(3)], None, expected),
        lambda expected: service.replace_range(
            conversation, str(message), str(message), [], None, expected
        ),
        lambda expected: service.create_snapshot(conversation, [str(message)], None, expected),
        lambda expected: service.delete_range(conversation, str(last), "", None, expected),
    ]
    for write in writes:
        before = await service.get_conversation(conversation)
        for stale in (0, before.version - 1, before.version + 1):
            with pytest.raises(VersionMismatch) as refused:
                await write(_expect(stale))
            assert (refused.value.expected, refused.value.current) == (stale, before.version)
            assert refused.value.field == "if-version"
            assert refused.value.version == before.version
            assert await service.get_conversation(conversation) == before
        await write(_expect(before.version))
    assert (await service.get_conversation(conversation)).version == 4


async def test_version_0_appends_only_to_a_conversation_that_does_not_exist(
    store: Store,
) -> None:
    service = _service(store)
    conversation = str(uuid4())
    created = applied(await service.append(conversation, [_text(1)], None, _expect(0)))
    assert created.state.version == 1
    with pytest.raises(VersionMismatch) as refused:
        await service.append(conversation, [_text(2)], None, _expect(0))
    assert (refused.value.expected, refused.value.current) == (0, 1)
    assert (await service.get_conversation(conversation)).message_count == 1


async def test_a_version_above_0_of_a_missing_conversation_fails_and_creates_nothing(
    store: Store,
) -> None:
    service = _service(store)
    conversation = str(uuid4())
    message = str(uuid4())
    for write in (
        lambda: service.append(conversation, [_text(1)], None, _expect(1)),
        lambda: service.append(conversation, [_text(1)], Idempotency("k", b"a"), _expect(1)),
        lambda: service.replace_range(conversation, message, message, [], None, _expect(2)),
        lambda: service.delete_range(conversation, message, "", None, _expect(3)),
        lambda: service.create_snapshot(conversation, [message], None, _expect(4)),
    ):
        with pytest.raises(VersionMismatch) as refused:
            await write()
        assert refused.value.current == 0
        assert refused.value.version is None, "no conversation, no version to report"
    # Version 0 holds for a missing conversation: what fails next is the
    # conversation's absence.
    with pytest.raises(ConversationNotFound):
        await service.delete_range(conversation, message, "", None, _expect(0))
    with pytest.raises(ConversationNotFound):
        await service.get_conversation(conversation)


async def test_a_replay_answers_whatever_the_version_is_now(store: Store) -> None:
    codec = ReadableCodec()
    service = _service(store, codec=codec)
    conversation = str(uuid4())
    key = Idempotency("k", b"first append")
    first = applied(await service.append(conversation, [_text(1)], key, _expect(0)))
    await service.append(conversation, [_text(2)])
    # The retry's expected version no longer holds, and its key still replays.
    replay = await service.append(conversation, [_text(1)], key, _expect(0))
    assert isinstance(replay, Replay)
    assert codec.results[replay.response] == codec.said(first)
    assert replay.version == 2
    assert (await service.get_conversation(conversation)).message_count == 2


async def test_a_conditional_append_at_the_version_takes_the_one_step_path(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(store)
    conversation = str(uuid4())
    await service.append(conversation, [_text(1)])
    transactions: list[UUID] = []
    write = store.write

    def counted(conversation_id: UUID, *, create: bool = False, recall: str | None = None) -> Any:
        transactions.append(conversation_id)
        return write(conversation_id, create=create, recall=recall)

    monkeypatch.setattr(store, "write", counted)
    fresh = str(uuid4())
    assert (
        applied(await service.append(conversation, [_text(2)], None, _expect(1))).state.version == 2
    )
    assert applied(await service.append(fresh, [_text(1)], None, _expect(0))).state.version == 1
    assert transactions == []
    # A mismatch is found out under the lock, to name the current version.
    with pytest.raises(VersionMismatch):
        await service.append(conversation, [_text(3)], None, _expect(1))
    assert transactions == [UUID(conversation)]


async def test_errors_found_after_reading_the_conversation_carry_its_version(
    store: Store,
) -> None:
    service = _service(store)
    conversation = str(uuid4())
    await service.append(conversation, [_text(1)])
    await service.append(conversation, [_text(2)])
    unknown = str(uuid4())
    with pytest.raises(MessageNotFound) as missing:
        await service.replace_range(conversation, unknown, unknown, [])
    assert missing.value.version == 2
    with pytest.raises(MessageNotFound) as missing:
        await service.create_snapshot(conversation, [unknown])
    assert missing.value.version == 2
    second = (await service.list_message_ids(conversation, 2, "")).message_ids[1]
    first = await _first_id(service, conversation)
    with pytest.raises(InvalidArgument) as reversed_range:
        await service.delete_range(conversation, str(second), first)
    assert reversed_range.value.version == 2
    # A token from a layout the conversation never had is found out once
    # the conversation is read.
    ahead = paging.encode(
        PagedList.CONVERSATION_MESSAGE_IDS, UUID(conversation), paging.NO_FILTER, Cursor(1, 9)
    )
    with pytest.raises(InvalidArgument) as future_token:
        await service.list_message_ids(conversation, 1, ahead)
    assert future_token.value.version == 2
    # Found before anything was read: no version.
    with pytest.raises(InvalidArgument) as malformed:
        await service.replace_range("not an id", "", "", [])
    assert malformed.value.version is None
    with pytest.raises(ConversationNotFound) as absent:
        await service.replace_range(str(uuid4()), unknown, unknown, [])
    assert absent.value.version is None
