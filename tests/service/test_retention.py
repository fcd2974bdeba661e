"""The retention sweeper over every backend, each test on a database of
its own (a sweep reads them all): idle conversations are erased as
DeleteConversation erases them, overlong ones lose their oldest messages
(version + 1, updated_at unchanged, snapshots still read them), a
conversation's own retention replaces the server's default whole, and
batches bounded in conversations and messages get everything done."""

from __future__ import annotations

from typing import TypeVar
from uuid import UUID, uuid4

import pytest

from agent_state.errors import ConversationNotFound, SnapshotNotFound
from agent_state.model import (
    ConversationInput,
    MessageInput,
    Moment,
    Retention,
    RetentionInput,
    StateUpdateInput,
)
from agent_state.retention import RetentionSweeper, Swept
from agent_state.service import Replay
from agent_state.storage.base import Store

from .._gen_helpers import text_body
from .test_companion import Services, services

T = TypeVar("T")

SECOND = 1_000_000
START = 1_800_000_000 * SECOND


class Clock:
    """A clock that stands where it is put, one microsecond on per reading
    (updated_at strictly increases)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        self.now += 1
        return self.now


def landed(result: T | Replay) -> T:
    assert not isinstance(result, Replay)
    return result


def own(max_idle_seconds: int = 0, max_messages: int = 0) -> ConversationInput:
    max_idle = Moment(max_idle_seconds, 0) if max_idle_seconds else None
    return ConversationInput("", {}, RetentionInput(max_idle, max_messages))


async def made(s: Services, given: ConversationInput | None, count: int) -> str:
    """A conversation with `count` messages ("0", "1", ...), created with
    `given` (None: by its first append, no retention of its own)."""
    conversation_id = str(uuid4())
    if given is not None:
        await s.companion.create_conversation(conversation_id, given)
    if count:
        inputs = [
            MessageInput(role=1, kind="", body=text_body(str(n)), body_variant="text")
            for n in range(count)
        ]
        await s.conversations.append(conversation_id, inputs)
    return conversation_id


async def bodies(s: Services, conversation_id: str) -> list[bytes]:
    page = await s.conversations.list_messages(conversation_id, [], [], 1000, "")
    return [entry[16:] for entry in page.entries]


async def absent(s: Services, conversation_id: str) -> bool:
    try:
        await s.companion.describe_conversation(conversation_id)
    except ConversationNotFound:
        return True
    return False


def sweeper(store: Store, clock: Clock, default: Retention, **batches: int) -> RetentionSweeper:
    return RetentionSweeper(store, default, clock=clock, **batches)


async def test_idle_conversations_are_erased(fresh_store: Store) -> None:
    clock = Clock()
    s = services(fresh_store, clock)
    own_hour = await made(s, own(max_idle_seconds=3600), 2)
    defaulted = await made(s, None, 1)
    forever = await made(s, own(max_messages=100), 1)
    await s.companion.update_state(StateUpdateInput(f"conversation/{own_hour}", '{"a": 1}', []), 0)
    snapshot = landed(
        await s.conversations.create_snapshot(own_hour, [str(i) for i in await ids(s, own_hour)])
    )
    default = Retention(max_idle=2 * 3600 * SECOND, max_messages=0)

    updated_at = (await s.companion.describe_conversation(own_hour)).state.updated_at
    # Read next: exactly an hour after its update, not past it yet.
    clock.now = updated_at + 3600 * SECOND - 1
    assert await sweeper(fresh_store, clock, default).sweep() == Swept(0, 0)
    clock.now += SECOND
    # An update of the conversation's details is no update of it.
    await s.companion.update_conversation(defaulted, ["title"], own(), 0)
    assert await sweeper(fresh_store, clock, default).sweep() == Swept(1, 0)
    assert await absent(s, own_hour)
    assert (await s.companion.get_state(f"conversation/{own_hour}")).version == 0
    with pytest.raises(SnapshotNotFound):
        await s.conversations.list_snapshot_message_ids(str(snapshot.snapshot.id), 10, "")
    assert not await absent(s, defaulted)

    clock.now += 3600 * SECOND
    assert await sweeper(fresh_store, clock, default).sweep() == Swept(1, 0)
    assert await absent(s, defaulted)
    # Its own retention sets no max_idle, replacing the default whole.
    assert not await absent(s, forever)
    # Without a default, only conversations' own retention applies.
    assert await sweeper(fresh_store, clock, Retention(0, 0)).sweep() == Swept(0, 0)


async def ids(s: Services, conversation_id: str) -> list[UUID]:
    return (await s.conversations.list_message_ids(conversation_id, 1000, "")).message_ids


async def test_overlong_conversations_lose_their_oldest_messages(fresh_store: Store) -> None:
    clock = Clock()
    s = services(fresh_store, clock)
    trimmed = await made(s, own(max_messages=3), 7)
    defaulted = await made(s, None, 5)
    unlimited = await made(s, own(max_idle_seconds=10**6), 9)
    first_ids = await ids(s, trimmed)
    snapshot = landed(await s.conversations.create_snapshot(trimmed, [str(first_ids[0])]))
    before = await s.companion.describe_conversation(trimmed)

    swept = await sweeper(fresh_store, clock, Retention(0, 4)).sweep()
    assert swept == Swept(0, 4 + 1)
    after = await s.companion.describe_conversation(trimmed)
    assert await bodies(s, trimmed) == [text_body(str(n)) for n in (4, 5, 6)]
    assert after.state.message_count == 3
    # A change of the ordering, but no update: updated_at stays.
    assert after.state.version == before.state.version + 1
    assert after.state.updated_at == before.state.updated_at
    assert await bodies(s, defaulted) == [text_body(str(n)) for n in (1, 2, 3, 4)]
    assert len(await bodies(s, unlimited)) == 9
    # A snapshot still reads a trimmed message back.
    page = await s.conversations.list_snapshot_message_ids(str(snapshot.snapshot.id), 10, "")
    assert page.message_ids == [first_ids[0]]
    # Nothing more to do.
    assert await sweeper(fresh_store, clock, Retention(0, 4)).sweep() == Swept(0, 0)


async def test_small_batches_get_everything_done(fresh_store: Store) -> None:
    clock = Clock()
    s = services(fresh_store, clock)
    long = [await made(s, own(max_messages=2), 9) for _ in range(3)]
    idle = [await made(s, own(max_idle_seconds=1), 1) for _ in range(5)]
    clock.now += 2 * SECOND
    small = sweeper(fresh_store, clock, Retention(0, 0), batch=2, messages_per_batch=4)
    assert await small.sweep() == Swept(5, 3 * 7)
    for conversation_id in long:
        assert await bodies(s, conversation_id) == [text_body("7"), text_body("8")]
    for conversation_id in idle:
        assert await absent(s, conversation_id)


async def test_a_trim_does_not_reset_idleness(fresh_store: Store) -> None:
    clock = Clock()
    s = services(fresh_store, clock)
    conversation_id = await made(s, own(max_idle_seconds=60, max_messages=1), 3)
    clock.now += 30 * SECOND
    assert await sweeper(fresh_store, clock, Retention(0, 0)).sweep() == Swept(0, 2)
    clock.now += 31 * SECOND
    assert await sweeper(fresh_store, clock, Retention(0, 0)).sweep() == Swept(1, 0)
    assert await absent(s, conversation_id)
    # A late append starts it again, empty, at version 1.
    again = await s.conversations.append(
        conversation_id, [MessageInput(1, "", text_body("late"), "text")]
    )
    assert landed(again).state.version == 1
