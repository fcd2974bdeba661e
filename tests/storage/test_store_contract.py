"""The storage contract: one set of assertions, run against every backend.

Each test takes the `store` fixture (an open, migrated store of each
backend) and checks a method of agent_state.storage.base against its
docstring. Tests make their own conversations with fresh ids, so a
database may be shared. The last section covers what only PostgreSQL has:
its pool, timeouts and connection errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from agent_state.errors import ConversationNotFound, SnapshotNotFound, StorageUnavailable
from agent_state.model import (
    AppendKey,
    ConversationState,
    Item,
    NewMessage,
    Page,
    RememberedCall,
    Renumbering,
    Role,
    Snapshot,
    StoredMessage,
)
from agent_state.positions import GAP, MAX_POSITION, append_positions
from agent_state.storage import migrations
from agent_state.storage.base import Store
from agent_state.storage.postgres import _MIGRATION_LOCK, PostgresStore
from agent_state.storage.sqlite import SqliteStore
from tests.conftest import BACKENDS, migrated

from .conftest import FreshDatabase

BIG = 1 << 40
"""A body budget nothing reaches."""

T0 = 1_700_000_000_123_456
"""A creation time with every microsecond digit set."""

_clock = itertools.count()


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


def message(
    body: bytes = b"body",
    *,
    kind: str = "text",
    role: int = Role.USER,
    created_at: int | None = None,
) -> StoredMessage:
    return StoredMessage(
        id=uuid4(),
        role=role,
        kind=kind,
        body=body,
        created_at=T0 + next(_clock) if created_at is None else created_at,
    )


def sha256(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def new(m: StoredMessage) -> NewMessage:
    """`m` as stored, with a head and tail of its own (holding a NUL and a
    0xff byte), so that an entry can only be the one of its message."""
    return NewMessage(m, sha256(m.body), b"<\x00" + m.id.bytes, b">\xff" + m.id.bytes[-1:])


def entry(m: StoredMessage) -> bytes:
    """What message_page and snapshot_message_page return for `m`."""
    return new(m).entry


FRAME = len(new(StoredMessage(uuid4(), 0, "", b"", 0)).entry)
"""Bytes `new` puts around every body."""


async def new_conversation(store: Store) -> UUID:
    conversation_id = uuid4()
    async with store.write(conversation_id, create=True):
        pass
    return conversation_id


async def add(
    store: Store,
    conversation_id: UUID,
    messages: Sequence[StoredMessage | NewMessage],
    positions: Sequence[int | None],
) -> None:
    """Insert `messages` (framed by `new` unless given as NewMessage) and
    place each at its position (None: detached)."""
    news = [m if isinstance(m, NewMessage) else new(m) for m in messages]
    async with store.write(conversation_id) as tx:
        await tx.insert_messages(news)
        await tx.place(
            [Item(p, n.message.id) for n, p in zip(news, positions, strict=True) if p is not None]
        )
        placed = [p for p in positions if p is not None]
        await tx.save(
            replace(
                tx.state,
                message_count=tx.state.message_count + len(messages),
                tail_position=max([tx.state.tail_position, *placed]),
                version=tx.state.version + 1,
            )
        )


async def all_items(store: Store, conversation_id: UUID) -> list[Item]:
    async with store.write(conversation_id) as tx:
        return await tx.items_between(0, None)


# --- write(): creation, missing conversations, rollback ---------------------


async def test_write_create_makes_an_empty_conversation(store: Store) -> None:
    conversation_id = uuid4()
    empty = ConversationState(conversation_id, 0, 0, 0, 0, 0)
    async with store.write(conversation_id, create=True) as tx:
        assert tx.state == empty
        assert await tx.items_between(0, None) == []
    async with store.read() as read:
        assert await read.conversation(conversation_id) == empty
        assert await read.id_page(conversation_id, 0, 10) == Page([], more=False)
        assert await read.renumberings_since(conversation_id, 0) == []


async def test_write_create_keeps_an_existing_conversation(store: Store) -> None:
    conversation_id = await new_conversation(store)
    saved = ConversationState(conversation_id, 3, T0, 3 * GAP, 2, 5)
    async with store.write(conversation_id) as tx:
        await tx.save(saved)
    async with store.write(conversation_id, create=True) as tx:
        assert tx.state == saved


async def test_missing_conversation_is_not_found(store: Store) -> None:
    conversation_id = uuid4()
    with pytest.raises(ConversationNotFound) as raised:
        async with store.write(conversation_id):
            pytest.fail("entered the transaction of a missing conversation")
    assert raised.value.field == "conversation_id"
    assert str(conversation_id) in raised.value.reason
    async with store.read() as read:
        with pytest.raises(ConversationNotFound) as raised:
            await read.conversation(conversation_id)
        assert raised.value.field == "conversation_id"
    # Looking did not create it.
    with pytest.raises(ConversationNotFound):
        async with store.write(conversation_id):
            pass


async def test_rollback_discards_everything(store: Store) -> None:
    conversation_id = await new_conversation(store)
    kept = message()
    await add(store, conversation_id, [kept], [GAP])
    async with store.read() as read:
        state = await read.conversation(conversation_id)

    lost = message()

    async def doomed() -> None:
        async with store.write(conversation_id) as tx:
            await tx.insert_messages([new(lost)])
            await tx.place([Item(2 * GAP, lost.id)])
            await tx.renumber(Renumbering(1, 0, 2 * GAP, (GAP,), (GAP // 2,)))
            await tx.create_snapshot(Snapshot(uuid4(), conversation_id, T0, 1), [lost.id])
            await tx.save(replace(tx.state, message_count=2, version=9, layout_version=1))
            assert await tx.lookup([lost.id]) == {lost.id: 2 * GAP}
            raise Boom

    with pytest.raises(Boom):
        await doomed()

    async with store.write(conversation_id) as tx:
        assert tx.state == state
        assert await tx.lookup([kept.id, lost.id]) == {kept.id: GAP}
        assert await tx.items_between(0, None) == [Item(GAP, kept.id)]
    async with store.read() as read:
        assert await read.renumberings_since(conversation_id, 0) == []


async def test_rolled_back_creation_vanishes(store: Store) -> None:
    conversation_id = uuid4()

    async def doomed() -> None:
        async with store.write(conversation_id, create=True) as tx:
            m = message()
            await tx.insert_messages([new(m)])
            await tx.place([Item(GAP, m.id)])
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    async with store.read() as read:
        with pytest.raises(ConversationNotFound):
            await read.conversation(conversation_id)
    with pytest.raises(ConversationNotFound):
        async with store.write(conversation_id):
            pass
    # It can still be created afterwards, empty.
    async with store.write(conversation_id, create=True) as tx:
        assert tx.state == ConversationState(conversation_id, 0, 0, 0, 0, 0)
        assert await tx.items_between(0, None) == []


async def test_store_stays_usable_after_many_rollbacks(store: Store) -> None:
    # More failures than a pool has connections: none may leak a
    # connection or leave one inside a transaction.
    conversation_id = await new_conversation(store)

    async def doomed_write() -> None:
        async with store.write(conversation_id) as tx:
            await tx.lookup([uuid4()])
            raise Boom

    async def doomed_read() -> None:
        async with store.read() as read:
            await read.conversation(conversation_id)
            raise Boom

    for _ in range(25):
        with pytest.raises(Boom):
            await doomed_write()
        with pytest.raises(Boom):
            await doomed_read()
    m = message()
    await add(store, conversation_id, [m], [GAP])
    assert await all_items(store, conversation_id) == [Item(GAP, m.id)]


async def test_database_errors_are_not_storage_unavailable(store: Store) -> None:
    # A broken rule (two entries at one position) is a bug: the driver's
    # error comes through, the transaction rolls back, the store goes on.
    conversation_id = await new_conversation(store)
    first, second = message(), message()
    await add(store, conversation_id, [first], [GAP])

    async def collide() -> None:
        async with store.write(conversation_id) as tx:
            await tx.insert_messages([new(second)])
            await tx.place([Item(GAP, second.id)])

    with pytest.raises(Exception) as raised:  # noqa: PT011 - the type is the backend's
        await collide()
    assert not isinstance(raised.value, StorageUnavailable | Boom)
    async with store.write(conversation_id) as tx:
        assert await tx.lookup([first.id, second.id]) == {first.id: GAP}
    await add(store, conversation_id, [second], [2 * GAP])
    assert await all_items(store, conversation_id) == [
        Item(GAP, first.id),
        Item(2 * GAP, second.id),
    ]


# --- messages and the ordering ----------------------------------------------


async def test_insert_place_and_lookup(store: Store) -> None:
    conversation_id = await new_conversation(store)
    other_id = await new_conversation(store)
    placed_a, placed_b, detached = message(), message(), message()
    foreign = message()
    await add(store, conversation_id, [placed_a, placed_b, detached], [10, 20, None])
    await add(store, other_id, [foreign], [10])

    async with store.write(conversation_id) as tx:
        ids = [placed_a.id, placed_b.id, detached.id, foreign.id, uuid4()]
        assert await tx.lookup(ids) == {placed_a.id: 10, placed_b.id: 20, detached.id: None}
        assert await tx.lookup([]) == {}
        assert await tx.lookup([detached.id, detached.id]) == {detached.id: None}
        # Within the transaction, its own inserts are visible at once.
        fresh = message()
        await tx.insert_messages([new(fresh)])
        assert await tx.lookup([fresh.id]) == {fresh.id: None}
        await tx.place([Item(30, fresh.id), Item(25, detached.id)])
        assert await tx.lookup([fresh.id, detached.id]) == {fresh.id: 30, detached.id: 25}
    async with store.write(other_id) as tx:
        assert await tx.lookup(ids) == {foreign.id: 10}


async def test_insert_and_place_many_at_once(store: Store) -> None:
    conversation_id = await new_conversation(store)
    messages = [message(f"body {i}".encode()) for i in range(1000)]
    positions = [GAP * (i + 1) for i in range(1000)]
    await add(store, conversation_id, messages, positions)
    items = await all_items(store, conversation_id)
    assert items == [Item(p, m.id) for p, m in zip(positions, messages, strict=True)]
    _, page = await read_page(store, conversation_id, limit=2000)
    assert page.more is False
    assert page.rows == [(p, entry(m)) for p, m in zip(positions, messages, strict=True)]


async def test_items_between_before_and_after(store: Store) -> None:
    conversation_id = await new_conversation(store)
    other_id = await new_conversation(store)
    ms = [message() for _ in range(5)]
    await add(store, conversation_id, ms, [10, 20, 30, 40, 50])
    await add(store, other_id, [message(), message()], [15, 25])
    item = {p: Item(p, m.id) for p, m in zip([10, 20, 30, 40, 50], ms, strict=True)}

    async with store.write(conversation_id) as tx:
        assert await tx.items_between(20, 40) == [item[20], item[30], item[40]]
        assert await tx.items_between(20, None) == [item[20], item[30], item[40], item[50]]
        assert await tx.items_between(0, None) == list(item.values())
        assert await tx.items_between(21, 29) == []
        assert await tx.items_between(30, 30) == [item[30]]
        assert await tx.items_between(51, None) == []

        assert await tx.items_before(40, 2) == [item[30], item[20]]
        assert await tx.items_before(41, 10) == [item[40], item[30], item[20], item[10]]
        assert await tx.items_before(10, 5) == []
        assert await tx.items_before(MAX_POSITION, 1) == [item[50]]

        assert await tx.items_after(20, 2) == [item[30], item[40]]
        assert await tx.items_after(0, 10) == list(item.values())
        assert await tx.items_after(19, 1) == [item[20]]
        assert await tx.items_after(50, 3) == []


async def test_unplace_keeps_the_message_and_delete_removes_it(store: Store) -> None:
    conversation_id = await new_conversation(store)
    a, b, c = message(), message(), message()
    await add(store, conversation_id, [a, b, c], [10, 20, 30])

    async with store.write(conversation_id) as tx:
        await tx.unplace([a.id])
        await tx.delete([b.id])
        assert await tx.lookup([a.id, b.id, c.id]) == {a.id: None, c.id: 30}
        assert await tx.items_between(0, None) == [Item(30, c.id)]
    async with store.write(conversation_id) as tx:
        assert await tx.lookup([a.id, b.id, c.id]) == {a.id: None, c.id: 30}
        # Freed positions and detached messages can be used again.
        await tx.place([Item(20, a.id)])
        assert await tx.items_between(0, None) == [Item(20, a.id), Item(30, c.id)]
        # Deleting a detached message works as well.
        await tx.unplace([c.id])
        await tx.delete([c.id])
        await tx.unplace([])
        await tx.delete([])
    async with store.read() as read:
        page = await read.id_page(conversation_id, 0, 10)
        assert page == Page([Item(20, a.id)], more=False)
        _, messages = await read.message_page(conversation_id, 0, 10, frozenset(), frozenset(), BIG)
        assert messages == Page([(20, entry(a))], more=False)


async def test_renumber_moves_entries_and_records_the_change(store: Store) -> None:
    conversation_id = await new_conversation(store)
    other_id = await new_conversation(store)
    a, b, c, d = message(), message(), message(), message()
    await add(store, conversation_id, [a, b, c, d], [10, 20, 30, 40])
    bystander = message()
    await add(store, other_id, [bystander], [20])

    # New positions overlapping the old ones: a row-by-row move would collide.
    first = Renumbering(
        1, lower=0, upper=40, old_positions=(10, 20, 30), new_positions=(20, 30, 35)
    )
    # An open-ended window reaching the top of the position space.
    second = Renumbering(
        2,
        lower=30,
        upper=None,
        old_positions=(35, 40),
        new_positions=(MAX_POSITION - 1, MAX_POSITION),
    )
    # A window with no entries in it still counts as a change.
    third = Renumbering(3, lower=MAX_POSITION, upper=None, old_positions=(), new_positions=())
    async with store.write(conversation_id) as tx:
        await tx.renumber(first)
        assert await tx.items_between(0, None) == [
            Item(20, a.id),
            Item(30, b.id),
            Item(35, c.id),
            Item(40, d.id),
        ]
        await tx.renumber(second)
        await tx.renumber(third)
        await tx.save(replace(tx.state, layout_version=3))
    async with store.write(conversation_id) as tx:
        assert tx.state.layout_version == 3
        assert await tx.items_between(0, None) == [
            Item(20, a.id),
            Item(30, b.id),
            Item(MAX_POSITION - 1, c.id),
            Item(MAX_POSITION, d.id),
        ]
        assert await tx.lookup([c.id]) == {c.id: MAX_POSITION - 1}
    async with store.read() as read:
        assert await read.renumberings_since(conversation_id, 0) == [first, second, third]
        assert await read.renumberings_since(conversation_id, 1) == [second, third]
        assert await read.renumberings_since(conversation_id, 3) == []
        assert await read.renumberings_since(other_id, 0) == []
        recorded = (await read.renumberings_since(conversation_id, 0))[0]
        assert type(recorded.old_positions) is tuple
        assert type(recorded.new_positions) is tuple
    assert await all_items(store, other_id) == [Item(20, bystander.id)]


async def test_save_and_conversation_round_trip(store: Store) -> None:
    conversation_id = await new_conversation(store)
    saved = ConversationState(
        conversation_id,
        message_count=123_456,
        updated_at=T0,
        tail_position=MAX_POSITION,
        layout_version=77,
        version=1 << 40,
    )
    async with store.write(conversation_id) as tx:
        await tx.save(saved)
    async with store.read() as read:
        assert await read.conversation(conversation_id) == saved
    async with store.write(conversation_id) as tx:
        assert tx.state == saved


async def test_state_is_the_row_as_locked(store: Store) -> None:
    # base.py: `state` is "the conversation's row as locked at the start";
    # save() writes the row, it does not change `state`.
    conversation_id = await new_conversation(store)
    async with store.write(conversation_id) as tx:
        locked = tx.state
        await tx.save(replace(locked, version=1, updated_at=T0))
        assert tx.state == locked


# --- message_page and id_page -----------------------------------------------


async def _filter_fixture(store: Store) -> tuple[UUID, list[StoredMessage]]:
    conversation_id = await new_conversation(store)
    ms = [
        message(b"1", role=Role.USER, kind="text"),
        message(b"2", role=Role.ASSISTANT, kind="text"),
        message(b"3", role=Role.TOOL, kind="tool_result"),
        message(b"4", role=Role.USER, kind=""),
        message(b"5", role=Role.ASSISTANT, kind="tool_call"),
        message(b"6", role=Role.TOOL, kind=""),
    ]
    detached = message(b"detached", role=Role.USER, kind="text")
    await add(store, conversation_id, [*ms, detached], [10, 20, 30, 40, 50, 60, None])
    other_id = await new_conversation(store)
    await add(store, other_id, [message(b"other", role=Role.USER, kind="text")], [15])
    return conversation_id, ms


async def read_page(
    store: Store,
    conversation_id: UUID,
    after: int = 0,
    limit: int = 100,
    roles: frozenset[int] = frozenset(),
    kinds: frozenset[str] = frozenset(),
    budget: int = BIG,
) -> tuple[ConversationState, Page[tuple[int, bytes]]]:
    """message_page in a read transaction, checked to return the
    conversation's row as `conversation` reads it, and to equal what it
    returns under read_once, so that every page test covers both."""
    async with store.read() as read:
        state = await read.conversation(conversation_id)
        in_transaction = await read.message_page(
            conversation_id, after, limit, roles, kinds, budget
        )
    async with store.read_once() as once:
        once_only = await once.message_page(conversation_id, after, limit, roles, kinds, budget)
    assert in_transaction[0] == state
    assert once_only == in_transaction
    return in_transaction


async def test_message_page_of_an_absent_or_empty_conversation(store: Store) -> None:
    absent = uuid4()
    async with store.read_once() as once:
        with pytest.raises(ConversationNotFound):
            await once.message_page(absent, 0, 10, frozenset(), frozenset(), BIG)
        with pytest.raises(ConversationNotFound):
            await once.conversation(absent)
    async with store.read() as read:
        with pytest.raises(ConversationNotFound):
            await read.message_page(absent, 0, 10, frozenset(), frozenset(), BIG)
    empty = await new_conversation(store)
    async with store.read_once() as once:
        state, page = await once.message_page(empty, 0, 10, frozenset(), frozenset(), BIG)
        assert (state.id, state.message_count, page) == (empty, 0, Page([], more=False))
        assert await once.conversation(empty) == state


async def test_message_page_filters(store: Store) -> None:
    conversation_id, ms = await _filter_fixture(store)
    at = {m.body: (10 * int(m.body), entry(m)) for m in ms}

    async def page(
        roles: set[int], kinds: set[str], after: int = 0, limit: int = 10
    ) -> Page[tuple[int, bytes]]:
        _, listed = await read_page(
            store, conversation_id, after, limit, frozenset(roles), frozenset(kinds)
        )
        return listed

    def rows(*bodies: bytes) -> list[tuple[int, bytes]]:
        return [at[body] for body in bodies]

    assert await page(set(), set()) == Page(rows(b"1", b"2", b"3", b"4", b"5", b"6"), False)
    assert await page({Role.USER}, set()) == Page(rows(b"1", b"4"), False)
    assert await page({Role.USER, Role.TOOL}, set()) == Page(rows(b"1", b"3", b"4", b"6"), False)
    assert await page(set(), {""}) == Page(rows(b"4", b"6"), False)
    assert await page(set(), {"text", "tool_call"}) == Page(rows(b"1", b"2", b"5"), False)
    assert await page({Role.TOOL}, {""}) == Page(rows(b"6"), False)
    assert await page({Role.ASSISTANT}, {"text", ""}) == Page(rows(b"2"), False)
    assert await page({Role.USER}, {"tool_call"}) == Page([], False)
    assert await page(set(), {"tex"}) == Page([], False)
    # `more` counts matching rows only.
    assert await page({Role.USER}, set(), limit=2) == Page(rows(b"1", b"4"), False)
    assert await page({Role.ASSISTANT, Role.TOOL}, set(), limit=2) == Page(rows(b"2", b"3"), True)
    assert await page({Role.ASSISTANT, Role.TOOL}, set(), after=30, limit=2) == Page(
        rows(b"5", b"6"), False
    )
    assert await page(set(), {""}, after=40, limit=1) == Page(rows(b"6"), False)


async def test_message_page_paging(store: Store) -> None:
    conversation_id, ms = await _filter_fixture(store)
    everything = frozenset[int](), frozenset[str]()

    async def page(after: int, limit: int) -> Page[tuple[int, bytes]]:
        _, page = await read_page(store, conversation_id, after, limit, *everything)
        return page

    assert await page(0, 2) == Page([(10, entry(ms[0])), (20, entry(ms[1]))], more=True)
    assert await page(20, 2) == Page([(30, entry(ms[2])), (40, entry(ms[3]))], more=True)
    assert await page(40, 2) == Page([(50, entry(ms[4])), (60, entry(ms[5]))], more=False)
    assert await page(60, 2) == Page([], more=False)
    # `after` need not be a position in use.
    assert await page(45, 1) == Page([(50, entry(ms[4]))], more=True)
    assert await page(0, 6) == Page(
        [(10 * (i + 1), entry(m)) for i, m in enumerate(ms)], more=False
    )


async def test_id_page(store: Store) -> None:
    conversation_id, ms = await _filter_fixture(store)
    items = [Item(10 * (i + 1), m.id) for i, m in enumerate(ms)]
    async with store.read() as read:
        assert await read.id_page(conversation_id, 0, 4) == Page(items[:4], more=True)
        assert await read.id_page(conversation_id, 40, 4) == Page(items[4:], more=False)
        assert await read.id_page(conversation_id, 35, 1) == Page(items[3:4], more=True)
        assert await read.id_page(conversation_id, 0, 6) == Page(items, more=False)
        assert await read.id_page(conversation_id, 60, 6) == Page([], more=False)
        assert await read.id_page(uuid4(), 0, 6) == Page([], more=False)


async def _budget_page(
    store: Store,
    conversation_id: UUID,
    budget: int,
    *,
    after: int = 0,
    limit: int = 10,
    roles: frozenset[int] = frozenset(),
) -> Page[tuple[int, bytes]]:
    _, page = await read_page(store, conversation_id, after, limit, roles, budget=budget)
    return page


async def test_message_page_body_budget(store: Store) -> None:
    conversation_id = await new_conversation(store)
    ms = [message(bytes([i]) * 40) for i in range(4)]
    await add(store, conversation_id, ms, [1, 2, 3, 4])
    rows = [(p, entry(m)) for p, m in zip([1, 2, 3, 4], ms, strict=True)]
    size = 40 + FRAME  # of each entry

    # A row comes while the entries before it stay under the budget.
    assert await _budget_page(store, conversation_id, 2 * size + size // 2) == Page(
        rows[:3], more=True
    )
    assert await _budget_page(store, conversation_id, 3 * size + 1) == Page(rows, more=False)
    assert await _budget_page(store, conversation_id, size + 1) == Page(rows[:2], more=True)
    # The first row always comes, however large.
    assert await _budget_page(store, conversation_id, size // 4) == Page(rows[:1], more=True)
    assert await _budget_page(store, conversation_id, 0) == Page(rows[:1], more=True)
    assert await _budget_page(store, conversation_id, 0, after=3) == Page(rows[3:], more=False)
    # The budget starts afresh after `after`; the limit still applies.
    assert await _budget_page(store, conversation_id, size + size // 2, after=1) == Page(
        rows[1:3], more=True
    )
    assert await _budget_page(store, conversation_id, BIG, limit=2) == Page(rows[:2], more=True)
    assert await _budget_page(store, conversation_id, 2 * size + size // 2, limit=3) == Page(
        rows[:3], more=True
    )
    assert await _budget_page(store, conversation_id, 3 * size + 1, limit=4) == Page(
        rows, more=False
    )


async def test_message_page_body_budget_boundary(store: Store) -> None:
    # Entries before a row adding up to exactly the budget end the page.
    conversation_id = await new_conversation(store)
    ms = [message(b"x" * 40) for _ in range(4)]
    await add(store, conversation_id, ms, [1, 2, 3, 4])
    rows = [(p, entry(m)) for p, m in zip([1, 2, 3, 4], ms, strict=True)]
    size = 40 + FRAME
    assert await _budget_page(store, conversation_id, 3 * size) == Page(rows[:3], more=True)
    assert await _budget_page(store, conversation_id, 2 * size) == Page(rows[:2], more=True)
    assert await _budget_page(store, conversation_id, size) == Page(rows[:1], more=True)
    # One byte more lets the next row in.
    assert await _budget_page(store, conversation_id, size + 1) == Page(rows[:2], more=True)
    assert await _budget_page(store, conversation_id, 2 * size + 1) == Page(rows[:3], more=True)
    assert await _budget_page(store, conversation_id, 3 * size + 1) == Page(rows, more=False)


async def test_message_page_budget_counts_head_body_and_tail(store: Store) -> None:
    # Heads, bodies and tails of different sizes: only their sum per entry
    # (35, 51, 30, 3 bytes) puts the boundaries where they are.
    conversation_id = await new_conversation(store)
    frames = [
        (b"H" * 30, b"b" * 5, b""),
        (b"h", b"", b"T" * 50),
        (b"\x00" * 10, b"\xff" * 10, b"t" * 10),
        (b"", b"xyz", b""),
    ]
    news = [NewMessage(message(body), sha256(body), head, tail) for head, body, tail in frames]
    assert [len(n.entry) for n in news] == [35, 51, 30, 3]
    await add(store, conversation_id, news, [1, 2, 3, 4])
    rows = [(p, n.entry) for p, n in zip([1, 2, 3, 4], news, strict=True)]
    for budget, count in [(35, 1), (36, 2), (86, 2), (87, 3), (116, 3), (117, 4)]:
        assert await _budget_page(store, conversation_id, budget) == Page(
            rows[:count], more=count < 4
        ), budget
    assert await _budget_page(store, conversation_id, 51, after=1) == Page(rows[1:2], more=True)
    assert await _budget_page(store, conversation_id, 52, after=1) == Page(rows[1:3], more=True)

    snapshot = Snapshot(uuid4(), conversation_id, T0, 4)
    async with store.write(conversation_id) as tx:
        await tx.create_snapshot(snapshot, [n.message.id for n in news])
    indexed = [(i, n.entry) for i, n in enumerate(news)]
    async with store.read() as read:
        for budget, count in [(35, 1), (36, 2), (86, 2), (87, 3), (116, 3), (117, 4)]:
            assert await read.snapshot_message_page(snapshot, -1, 10, budget) == Page(
                indexed[:count], more=count < 4
            ), budget
        page = read.snapshot_message_page
        assert await page(snapshot, 0, 10, 51) == Page(indexed[1:2], more=True)
        assert await page(snapshot, 0, 10, 52) == Page(indexed[1:3], more=True)


async def test_message_page_budget_counts_matching_rows_only(store: Store) -> None:
    conversation_id = await new_conversation(store)
    ms = [
        message(b"u" * 40, role=Role.USER),
        message(b"a" * 1000, role=Role.ASSISTANT),
        message(b"u" * 40, role=Role.USER),
        message(b"u" * 40, role=Role.USER),
    ]
    await add(store, conversation_id, ms, [1, 2, 3, 4])
    users = frozenset({int(Role.USER)})
    size = 40 + FRAME  # of a user entry
    budget = 2 * size + size // 2
    assert await _budget_page(store, conversation_id, budget, roles=users) == Page(
        [(1, entry(ms[0])), (3, entry(ms[2])), (4, entry(ms[3]))], more=False
    )
    assert await _budget_page(store, conversation_id, 2 * size, roles=users) == Page(
        [(1, entry(ms[0])), (3, entry(ms[2]))], more=True
    )
    assert await _budget_page(store, conversation_id, budget) == Page(
        [(1, entry(ms[0])), (2, entry(ms[1]))], more=True
    )


async def test_empty_bodies_are_bodies(store: Store) -> None:
    conversation_id = await new_conversation(store)
    ms = [message(b"") for _ in range(3)]
    await add(store, conversation_id, ms, [1, 2, 3])
    rows = [(p, entry(m)) for p, m in zip([1, 2, 3], ms, strict=True)]
    assert await _budget_page(store, conversation_id, 2 * FRAME + 1) == Page(rows, more=False)
    assert await _budget_page(store, conversation_id, 2 * FRAME) == Page(rows[:2], more=True)
    assert await _budget_page(store, conversation_id, 0) == Page(rows[:1], more=True)
    # Entries with nothing at all in them are rows too, of size 0.
    empty_id = await new_conversation(store)
    empties = [NewMessage(message(b""), sha256(b""), b"", b"") for _ in range(3)]
    await add(store, empty_id, empties, [1, 2, 3])
    nothing = [(1, b""), (2, b""), (3, b"")]
    assert await _budget_page(store, empty_id, 1) == Page(nothing, more=False)
    assert await _budget_page(store, empty_id, 0) == Page(nothing[:1], more=True)


ODD_KINDS = ["", "\x00", "a\x00b", "ünïcødé ☃ 🎉", "text\x00"]
ODD_BODIES = [b"", b"\x00", b"\x00\xff\x00 binary \x00", bytes(range(256)), b"\xff" * 3000]
ODD_TIMES = [0, 1, T0, 253_402_300_799_999_999]  # up to 9999-12-31T23:59:59.999999Z


async def test_values_round_trip_exactly(store: Store) -> None:
    conversation_id = await new_conversation(store)
    big_body = bytes(range(256)) * 4096  # 1 MiB, stored out of line by some databases
    ms = [
        message(body, kind=kind, created_at=created_at, role=role)
        for body, kind, created_at, role in zip(
            [*ODD_BODIES, big_body],
            itertools.cycle(ODD_KINDS),
            itertools.cycle(ODD_TIMES),
            itertools.cycle(Role),
            strict=False,
        )
    ]
    positions = list(range(1, len(ms) + 1))
    # Creation times at the ends of the range are accepted; they come back
    # only inside the entries, which the service encodes.
    await add(store, conversation_id, ms, positions)
    snapshot = Snapshot(uuid4(), conversation_id, T0, len(ms))
    async with store.write(conversation_id) as tx:
        await tx.create_snapshot(snapshot, [m.id for m in ms])

    def exact(got: bytes, want: StoredMessage) -> None:
        framed = new(want)
        assert type(got) is bytes
        assert got[: len(framed.wire_head)] == framed.wire_head
        assert got[len(framed.wire_head) : len(got) - len(framed.wire_tail)] == want.body
        assert got[len(got) - len(framed.wire_tail) :] == framed.wire_tail

    async with store.read() as read:
        _, page = await read.message_page(conversation_id, 0, 100, frozenset(), frozenset(), BIG)
        assert page == Page([(p, entry(m)) for p, m in zip(positions, ms, strict=True)], False)
        for (_, got), want in zip(page.rows, ms, strict=True):
            exact(got, want)
        assert await read.id_page(conversation_id, 0, 100) == Page(
            [Item(p, m.id) for p, m in zip(positions, ms, strict=True)], more=False
        )
        snapshot_page = await read.snapshot_message_page(snapshot, -1, 100, BIG)
        assert snapshot_page == Page([(i, entry(m)) for i, m in enumerate(ms)], more=False)
        for (_, got), want in zip(snapshot_page.rows, ms, strict=True):
            exact(got, want)
        # Kinds match exactly: no truncation at U+0000, no normalisation.
        for kind in ODD_KINDS:
            _, filtered = await read.message_page(
                conversation_id, 0, 100, frozenset(), frozenset({kind}), BIG
            )
            assert [e for _, e in filtered.rows] == [entry(m) for m in ms if m.kind == kind]
        # Roles as well.
        for role in Role:
            _, filtered = await read.message_page(
                conversation_id, 0, 100, frozenset({int(role)}), frozenset(), BIG
            )
            assert [e for _, e in filtered.rows] == [entry(m) for m in ms if m.role == role]
        assert await read.snapshot(snapshot.id) == snapshot


# --- snapshots --------------------------------------------------------------


async def test_snapshot_round_trip(store: Store) -> None:
    conversation_id = await new_conversation(store)
    a, b, c = message(b"a"), message(b"b"), message(b"c")
    await add(store, conversation_id, [a, b, c], [10, 20, None])
    snapshot = Snapshot(uuid4(), conversation_id, T0, 4)
    async with store.write(conversation_id) as tx:
        # Ids may repeat and need not be in order or placed.
        await tx.create_snapshot(snapshot, [a.id, c.id, a.id, b.id])

    async with store.read() as read:
        assert await read.snapshot(snapshot.id) == snapshot
        assert await read.snapshot_message_page(snapshot, -1, 10, BIG) == Page(
            [(0, entry(a)), (1, entry(c)), (2, entry(a)), (3, entry(b))], more=False
        )
        assert await read.snapshot_message_page(snapshot, -1, 2, BIG) == Page(
            [(0, entry(a)), (1, entry(c))], more=True
        )
        assert await read.snapshot_message_page(snapshot, 1, 2, BIG) == Page(
            [(2, entry(a)), (3, entry(b))], more=False
        )
        assert await read.snapshot_message_page(snapshot, 3, 2, BIG) == Page([], more=False)
        assert await read.snapshot_id_page(snapshot, -1, 3) == Page(
            [(0, a.id), (1, c.id), (2, a.id)], more=True
        )
        assert await read.snapshot_id_page(snapshot, 2, 3) == Page([(3, b.id)], more=False)
        assert await read.snapshot_id_page(snapshot, -1, 4) == Page(
            [(0, a.id), (1, c.id), (2, a.id), (3, b.id)], more=False
        )


async def test_snapshot_survives_changes_to_the_conversation(store: Store) -> None:
    conversation_id = await new_conversation(store)
    a, b, c = message(b"a"), message(b"b"), message(b"c")
    await add(store, conversation_id, [a, b, c], [10, 20, 30])
    snapshot = Snapshot(uuid4(), conversation_id, T0, 3)
    async with store.write(conversation_id) as tx:
        await tx.create_snapshot(snapshot, [a.id, b.id, c.id])
    async with store.read() as read:
        _, live = await read.message_page(conversation_id, 0, 1, frozenset(), frozenset(), BIG)
    assert live == Page([(10, entry(a))], more=True)
    async with store.write(conversation_id) as tx:
        await tx.delete([a.id])
        await tx.unplace([b.id])
        await tx.renumber(Renumbering(1, 0, None, (30,), (5,)))
    async with store.read() as read:
        assert await read.snapshot_message_page(snapshot, -1, 10, BIG) == Page(
            [(0, entry(a)), (1, entry(b)), (2, entry(c))], more=False
        )
        # The frozen copy of the deleted message is its entry as stored at
        # insert: head, body and tail all copied, not just the body.
        frozen = await read.snapshot_message_page(snapshot, -1, 1, BIG)
        framed = new(a)
        assert frozen.rows[0][1] == live.rows[0][1] == framed.wire_head + b"a" + framed.wire_tail
        _, page = await read.message_page(conversation_id, 0, 10, frozenset(), frozenset(), BIG)
        assert page == Page([(5, entry(c))], more=False)
        assert await read.snapshot_id_page(snapshot, -1, 10) == Page(
            [(0, a.id), (1, b.id), (2, c.id)], more=False
        )


async def test_snapshots_share_frozen_messages(store: Store) -> None:
    conversation_id = await new_conversation(store)
    # b and c have the same body; d arrives after the first snapshot.
    a, b, c = message(b"a"), message(b"same"), message(b"same", kind="other")
    await add(store, conversation_id, [a, b, c], [10, 20, 30])
    first = Snapshot(uuid4(), conversation_id, T0, 3)
    async with store.write(conversation_id) as tx:
        await tx.create_snapshot(first, [a.id, b.id, c.id])
    d = message(b"same", role=Role.TOOL)
    await add(store, conversation_id, [d], [40])
    second = Snapshot(uuid4(), conversation_id, T0 + 1, 4)
    third = Snapshot(uuid4(), conversation_id, T0 + 2, 2)
    async with store.write(conversation_id) as tx:
        await tx.create_snapshot(second, [d.id, c.id, b.id, a.id])
        # Two snapshots in one transaction, the second of messages frozen by the first.
        await tx.create_snapshot(third, [d.id, d.id])
    async with store.write(conversation_id) as tx:
        await tx.delete([a.id, b.id, c.id, d.id])

    async with store.read() as read:
        # b, c and d share a body but not their heads and tails.
        assert await read.snapshot_message_page(first, -1, 10, BIG) == Page(
            [(0, entry(a)), (1, entry(b)), (2, entry(c))], more=False
        )
        assert await read.snapshot_message_page(second, -1, 10, BIG) == Page(
            [(0, entry(d)), (1, entry(c)), (2, entry(b)), (3, entry(a))], more=False
        )
        assert await read.snapshot_message_page(third, -1, 10, BIG) == Page(
            [(0, entry(d)), (1, entry(d))], more=False
        )
        assert await read.snapshot(second.id) == second
        assert await read.snapshot(third.id) == third


async def test_empty_snapshot(store: Store) -> None:
    conversation_id = await new_conversation(store)
    snapshot = Snapshot(uuid4(), conversation_id, T0, 0)
    async with store.write(conversation_id) as tx:
        await tx.create_snapshot(snapshot, [])
    async with store.read() as read:
        assert await read.snapshot(snapshot.id) == snapshot
        assert await read.snapshot_message_page(snapshot, -1, 10, BIG) == Page([], more=False)
        assert await read.snapshot_id_page(snapshot, -1, 10) == Page([], more=False)


async def test_snapshot_message_page_body_budget(store: Store) -> None:
    conversation_id = await new_conversation(store)
    ms = [message(bytes([i]) * 40) for i in range(4)]
    await add(store, conversation_id, ms, [1, 2, 3, 4])
    snapshot = Snapshot(uuid4(), conversation_id, T0, 4)
    async with store.write(conversation_id) as tx:
        await tx.create_snapshot(snapshot, [m.id for m in ms])
    rows = [(i, entry(m)) for i, m in enumerate(ms)]
    size = 40 + FRAME  # of each entry
    async with store.read() as read:
        page = read.snapshot_message_page
        assert await page(snapshot, -1, 10, 2 * size + size // 2) == Page(rows[:3], more=True)
        assert await page(snapshot, -1, 10, 2 * size) == Page(rows[:2], more=True)
        assert await page(snapshot, -1, 10, 3 * size) == Page(rows[:3], more=True)
        assert await page(snapshot, -1, 10, 3 * size + 1) == Page(rows, more=False)
        assert await page(snapshot, -1, 10, 0) == Page(rows[:1], more=True)
        assert await page(snapshot, 2, 10, 0) == Page(rows[3:], more=False)
        assert await page(snapshot, 0, 2, BIG) == Page(rows[1:3], more=True)


async def test_missing_snapshot_is_not_found(store: Store) -> None:
    snapshot_id = uuid4()
    async with store.read() as read:
        with pytest.raises(SnapshotNotFound) as raised:
            await read.snapshot(snapshot_id)
    assert raised.value.field == "snapshot_id"
    assert str(snapshot_id) in raised.value.reason


async def test_rolled_back_snapshot_does_not_exist(store: Store) -> None:
    conversation_id = await new_conversation(store)
    m = message()
    await add(store, conversation_id, [m], [GAP])
    snapshot = Snapshot(uuid4(), conversation_id, T0, 1)

    async def doomed() -> None:
        async with store.write(conversation_id) as tx:
            await tx.create_snapshot(snapshot, [m.id])
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    async with store.read() as read:
        with pytest.raises(SnapshotNotFound):
            await read.snapshot(snapshot.id)


# --- transactions side by side ----------------------------------------------


async def test_writers_of_one_conversation_take_turns(store: Store) -> None:
    conversation_id = await new_conversation(store)
    made: list[StoredMessage] = []

    async def append_one(i: int) -> None:
        async with store.write(conversation_id) as tx:
            state = tx.state
            m = message(str(i).encode())
            made.append(m)
            await tx.insert_messages([new(m)])
            # Let the other writers run: without the lock they would read
            # the same tail and collide.
            await asyncio.sleep(0.001)
            position = state.tail_position + 1
            await tx.place([Item(position, m.id)])
            await tx.save(
                replace(
                    state,
                    message_count=state.message_count + 1,
                    tail_position=position,
                    version=state.version + 1,
                )
            )

    await asyncio.gather(*(append_one(i) for i in range(16)))
    async with store.read() as read:
        state = await read.conversation(conversation_id)
        assert (state.message_count, state.tail_position, state.version) == (16, 16, 16)
        _, page = await read.message_page(conversation_id, 0, 100, frozenset(), frozenset(), BIG)
    assert [position for position, _ in page.rows] == list(range(1, 17))
    # Each of the 16 messages (bodies 0..15, ids distinct) is listed once.
    assert sorted(int(m.body) for m in made) == list(range(16))
    assert len({m.id for m in made}) == 16
    assert sorted(e for _, e in page.rows) == sorted(entry(m) for m in made)


async def _while_writing(store: Store, held_id: UUID, check: Callable[[], Awaitable[None]]) -> None:
    """Runs `check` (within 5 s) while a write of `held_id` is open."""
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with store.write(held_id) as tx:
            m = message()
            await tx.insert_messages([new(m)])
            await tx.place([Item(GAP, m.id)])
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    try:
        await asyncio.wait_for(holding.wait(), 10)
        async with asyncio.timeout(5):
            await check()
    finally:
        release.set()
        await holder
    assert len(await all_items(store, held_id)) == 1


async def test_writers_of_different_conversations_do_not_wait(
    store: Store, request: pytest.FixtureRequest
) -> None:
    if isinstance(store, SqliteStore):
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="SQLite has one writer at a time, by design")
        )
    held_id, free_id = await new_conversation(store), await new_conversation(store)
    m = message()

    async def write_the_other() -> None:
        await add(store, free_id, [m], [GAP])

    await _while_writing(store, held_id, write_the_other)
    assert await all_items(store, free_id) == [Item(GAP, m.id)]


async def test_readers_do_not_wait_for_writers(store: Store) -> None:
    held_id = await new_conversation(store)

    async def read_it() -> None:
        # The open write's changes are not visible yet.
        async with store.read() as read:
            assert await read.id_page(held_id, 0, 10) == Page([], more=False)
            assert (await read.conversation(held_id)).version == 0

    await _while_writing(store, held_id, read_it)


async def test_concurrent_creations_make_one_conversation(store: Store) -> None:
    conversation_id = uuid4()

    async def create_and_append(i: int) -> None:
        async with store.write(conversation_id, create=True) as tx:
            m = message(str(i).encode())
            await tx.insert_messages([new(m)])
            position = tx.state.tail_position + 1
            await tx.place([Item(position, m.id)])
            await tx.save(replace(tx.state, tail_position=position, version=tx.state.version + 1))

    await asyncio.gather(*(create_and_append(i) for i in range(8)))
    async with store.read() as read:
        state = await read.conversation(conversation_id)
        assert (state.tail_position, state.version) == (8, 8)
        page = await read.id_page(conversation_id, 0, 10)
        assert [item.position for item in page.rows] == list(range(1, 9))


async def test_cancelled_transactions_roll_back(store: Store) -> None:
    conversation_id = await new_conversation(store)
    inside = asyncio.Event()

    async def stuck_inside() -> None:
        async with store.write(conversation_id) as tx:
            m = message()
            await tx.insert_messages([new(m)])
            await tx.place([Item(GAP, m.id)])
            inside.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stuck_inside())
    await asyncio.wait_for(inside.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        assert await all_items(store, conversation_id) == []

    # Cancelled while waiting for another writer's lock.
    kept = message()

    async def wait_for_lock() -> None:
        async with store.write(conversation_id) as tx:
            await tx.save(replace(tx.state, version=99))

    async def keep() -> None:
        await add(store, conversation_id, [kept], [2 * GAP])

    async def cancel_a_waiter() -> None:
        waiter = asyncio.create_task(wait_for_lock())
        await asyncio.sleep(0.2)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    await _while_writing(store, conversation_id, cancel_a_waiter)
    async with asyncio.timeout(5), store.write(conversation_id) as tx:
        assert tx.state.version == 0
        assert len(await tx.items_between(0, None)) == 1
    await keep()
    assert len(await all_items(store, conversation_id)) == 2


async def test_read_sees_one_state(store: Store) -> None:
    conversation_id = await new_conversation(store)
    first = message()
    await add(store, conversation_id, [first], [GAP])
    async with store.read() as read:
        state = await read.conversation(conversation_id)
        page = await read.id_page(conversation_id, 0, 10)
        async with asyncio.timeout(5):
            await add(store, conversation_id, [message()], [2 * GAP])
        assert await read.conversation(conversation_id) == state
        assert await read.id_page(conversation_id, 0, 10) == page
        _, listed = await read.message_page(conversation_id, 0, 10, frozenset(), frozenset(), BIG)
        assert listed == Page([(GAP, entry(first))], more=False)
    async with store.read() as read:
        assert (await read.conversation(conversation_id)).version == state.version + 1
        assert len((await read.id_page(conversation_id, 0, 10)).rows) == 2


# --- migrate() --------------------------------------------------------------


def _versions(backend: str) -> list[int]:
    return [migration.version for migration in migrations.load(backend)]


@pytest.mark.parametrize("new_database", [p for p in BACKENDS if p.id != "sqlite"], indirect=True)
async def test_postgres_migrations_leave_no_lock_behind(new_database: FreshDatabase) -> None:
    """The migration lock lasts one transaction: behind a transaction-mode
    pooler a session-level lock would stay on whichever server connection
    took it, and the next migrator would wait for it forever. (SQLite's
    lock is its write transaction.)"""
    store = new_database.make()
    async with store:
        await store.migrate()
        await store.migrate()
        # While the store's sessions are still open: closing them would free
        # a session-level lock too, and the check could not fail.
        held = new_database.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
    assert held == [(0,)]


async def test_migrate_twice_applies_once(new_database: FreshDatabase) -> None:
    store = new_database.make()
    await store.open()
    try:
        assert await store.migrate() == _versions(new_database.dialect)
        assert await store.migrate() == []
        conversation_id = await new_conversation(store)
        async with store.read() as read:
            assert (await read.conversation(conversation_id)).version == 0
    finally:
        await store.close()
    # Also from a new store over the migrated database.
    store = new_database.make()
    await store.open()
    try:
        assert await store.migrate() == []
    finally:
        await store.close()


async def test_concurrent_migrations_both_succeed(new_database: FreshDatabase) -> None:
    stores = [new_database.make(), new_database.make()]
    for store in stores:
        await store.open()
    try:
        results = await asyncio.gather(*(store.migrate() for store in stores))
        # Each migration applied once, by one of them.
        assert sorted(results[0] + results[1]) == _versions(new_database.dialect)
        if new_database.dialect == "postgres":
            # The migration lock is held for the whole run there; SQLite
            # takes its lock per migration, so two runs may interleave.
            assert [] in results
        for store in stores:
            await new_conversation(store)
    finally:
        for store in stores:
            await store.close()


async def test_migrate_records_each_migration_with_its_checksum(
    new_database: FreshDatabase,
) -> None:
    async with new_database.make() as store:
        await store.migrate()
    recorded = new_database.execute(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    )
    known = migrations.load(new_database.dialect)
    assert recorded == [(m.version, m.name, m.checksum) for m in known]


async def test_migrate_refuses_a_changed_migration(new_database: FreshDatabase) -> None:
    store = new_database.make()
    await store.open()
    try:
        await store.migrate()
        new_database.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
        with pytest.raises(migrations.MigrationError):
            await store.migrate()
    finally:
        await store.close()


# --- PostgreSQL only ----------------------------------------------------------


def _assert_plain(error: StorageUnavailable, *secrets: str) -> None:
    text = str(error)
    assert text == StorageUnavailable().reason
    for secret in ("SELECT", "postgresql://", *secrets):
        assert secret not in text


@pytest.mark.postgres
async def test_postgres_unreachable_database_fails_promptly() -> None:
    url = "postgresql://agent:hunter2@127.0.0.1:1/nowhere"
    store = PostgresStore(url, connect_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        await store.open()
    assert time.monotonic() - started < 10
    _assert_plain(raised.value, "hunter2", "nowhere")
    await store.close()


@pytest.mark.postgres
async def test_postgres_statement_timeout_is_unavailable(storage_postgres_url: str) -> None:
    holder = PostgresStore(storage_postgres_url)
    impatient = PostgresStore(storage_postgres_url, statement_timeout_ms=200)
    await holder.open()
    await impatient.open()
    try:
        conversation_id = await new_conversation(holder)
        async with holder.write(conversation_id):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as raised:
                async with impatient.write(conversation_id):
                    pass
            assert time.monotonic() - started < 5
        _assert_plain(raised.value)
        # The connection that timed out is fine for the next transaction.
        async with impatient.write(conversation_id) as tx:
            assert tx.state.version == 0
    finally:
        await holder.close()
        await impatient.close()


@pytest.mark.postgres
async def test_postgres_lost_connections_are_unavailable_then_replaced(
    make_postgres_database: Callable[[], str],
) -> None:
    url = make_postgres_database()
    store = PostgresStore(url, min_size=2, max_size=2)
    await store.open()
    try:
        await store.migrate()
        conversation_id = await new_conversation(store)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StorageUnavailable) as raised:
            async with store.write(conversation_id):
                pass
        _assert_plain(raised.value)
        # The pool replaces dead connections; a retry soon succeeds.
        deadline = time.monotonic() + 10
        while True:
            try:
                async with store.read() as read:
                    assert (await read.conversation(conversation_id)).version == 0
                break
            except StorageUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_migrate_waits_beyond_the_statement_timeout(
    make_postgres_database: Callable[[], str],
) -> None:
    url = make_postgres_database()
    store = PostgresStore(url, statement_timeout_ms=100, min_size=1, max_size=1)
    await store.open()
    try:
        # Another server holds the migration lock for longer than the timeout.
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
            await other.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            migrating = asyncio.create_task(store.migrate())
            await asyncio.sleep(0.5)
            assert not migrating.done()
            await other.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
            assert await asyncio.wait_for(migrating, 10) == _versions("postgres")
        # The one connection has its timeout back.
        conversation_id = await new_conversation(store)
        holder = PostgresStore(url)
        await holder.open()
        try:
            async with holder.write(conversation_id):
                with pytest.raises(StorageUnavailable):
                    await _write_nothing(store, conversation_id)
        finally:
            await holder.close()
    finally:
        await store.close()


async def _write_nothing(store: Store, conversation_id: UUID) -> None:
    async with store.write(conversation_id):
        pass


async def _sessions_waiting_for_a_lock(admin: psycopg.AsyncConnection[Any]) -> int:
    cursor = await admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.postgres
async def test_postgres_write_cancelled_while_committing_leaves_no_session_behind(
    make_postgres_database: Callable[[], str],
) -> None:
    """A write cancelled while its queued statements and COMMIT are on the
    wire must not hand its connection on half-way through: the next call
    on it would run inside the leftover pipeline, be answered, and never
    be committed, holding the conversation's lock."""
    url = make_postgres_database()
    async with _one_connection_store(url) as (store, admin, conversation_id):
        # The queued insert waits for this lock when the COMMIT is sent.
        blocker = await psycopg.AsyncConnection.connect(url)
        await blocker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")

        async def write_behind_the_lock() -> None:
            async with store.write(conversation_id) as tx:
                await tx.insert_messages([new(message(b"never"))])

        cancelled = asyncio.create_task(write_behind_the_lock())
        deadline = time.monotonic() + 10
        while await _sessions_waiting_for_a_lock(admin) == 0:
            assert time.monotonic() < deadline, "the write never reached the lock"
            await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await blocker.rollback()
        await blocker.close()

        landed = message(b"landed")
        state = await _append_at_tail(store, conversation_id, [landed], T0)
        assert state is not None
        assert state.message_count == 1
        await _assert_committed_and_nothing_open(admin, conversation_id, [b"landed"])
        async with store.write(conversation_id) as tx:
            assert tx.state == state


@pytest.mark.postgres
async def test_postgres_write_cancelled_at_any_step_leaves_its_connection_clean(
    make_postgres_database: Callable[[], str],
) -> None:
    """Cancel a write at each of its suspension points in turn, entering
    pipeline mode included; after each, an append on the same pooled
    connection is committed and no session is left inside a transaction."""
    async with _one_connection_store(make_postgres_database()) as (
        store,
        admin,
        conversation_id,
    ):

        async def write() -> None:
            async with store.write(conversation_id) as tx:
                await tx.insert_messages([new(message(b"cancelled"))])
                await tx.save(tx.state)

        # First each event-loop turn of the write's start (where no I/O is
        # awaited), then deadlines across its round trips, then one long
        # enough for the write to finish.
        turns = [(steps, 0.0) for steps in range(12)]
        delays = [(0, 0.0005 * step) for step in range(1, 30)] + [(0, 2.0)]
        bodies: list[bytes] = []
        completed = 0
        for case, (steps, delay) in enumerate(turns + delays):
            # A blocking stretch first (on purpose): psycopg then gives the
            # event loop a turn even after a step that did not wait, one more
            # place for the cancellation to land.
            time.sleep(0.01)  # noqa: ASYNC251
            task = asyncio.create_task(write())
            for _ in range(steps):
                await asyncio.sleep(0)
            if delay:
                await asyncio.sleep(delay)
            task.cancel()
            try:
                await task
                completed += 1
            except asyncio.CancelledError:
                pass
            body = f"case {case}".encode()
            state = await _append_at_tail(store, conversation_id, [message(body)], T0 + case)
            assert state is not None, case
            bodies.append(body)
            await _assert_committed_and_nothing_open(
                admin, conversation_id, bodies, cancelled_writes=(completed, case + 1)
            )
        # The last write had time to finish: the sweep reached past its end.
        assert completed > 0


@asynccontextmanager
async def _one_connection_store(
    url: str,
) -> AsyncIterator[tuple[PostgresStore, psycopg.AsyncConnection[Any], UUID]]:
    """A migrated store whose pool holds one connection, so a call after a
    cancelled one gets the same connection; an admin session; a conversation."""
    store = PostgresStore(url, min_size=1, max_size=1)
    await store.open()
    admin = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await store.migrate()
        yield store, admin, await new_conversation(store)
    finally:
        await admin.close()
        await store.close()


async def _assert_committed_and_nothing_open(
    admin: psycopg.AsyncConnection[Any],
    conversation_id: UUID,
    bodies: Sequence[bytes],
    cancelled_writes: tuple[int, int] = (0, 0),
) -> None:
    """Another session sees exactly these appended bodies, and between
    `cancelled_writes` messages of the writes that were cancelled (at least
    those that finished first, at most one a write: a write cancelled just
    after its COMMIT landed anyway); no session of the database is inside a
    statement or transaction."""
    cursor = await admin.execute(
        "SELECT substring(entry FROM body_offset + 1 FOR body_length) FROM messages"
        " WHERE conversation_id = %s",
        (conversation_id,),
    )
    seen = [row[0] for row in await cursor.fetchall()]
    assert sorted(body for body in seen if body != b"cancelled") == sorted(bodies)
    low, high = cancelled_writes
    assert low <= seen.count(b"cancelled") <= high
    cursor = await admin.execute(
        "SELECT state, wait_event, left(query, 40) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'"
    )
    assert await cursor.fetchall() == []


async def test_create_snapshot_counts_only_messages_of_the_conversation(store: Store) -> None:
    conversation_id = await new_conversation(store)
    other_id = await new_conversation(store)
    kept, gone, elsewhere = message(b"kept"), message(b"gone"), message(b"elsewhere")
    await add(store, conversation_id, [kept, gone], [GAP, None])
    await add(store, other_id, [elsewhere], [GAP])
    async with store.write(conversation_id) as tx:
        await tx.delete([gone.id])
    named = [kept.id, uuid4(), gone.id, elsewhere.id, kept.id]
    async with store.write(conversation_id) as tx:
        snapshot = Snapshot(uuid4(), conversation_id, T0, len(named))
        assert await tx.create_snapshot(snapshot, named) == 2
    async with store.write(conversation_id) as tx:
        snapshot = Snapshot(uuid4(), conversation_id, T0, 2)
        assert await tx.create_snapshot(snapshot, [kept.id, kept.id]) == 2


async def test_create_snapshot_refuses_a_snapshot_of_another_conversation(store: Store) -> None:
    conversation_id = await new_conversation(store)
    other_id = await new_conversation(store)
    elsewhere = message(b"elsewhere")
    await add(store, other_id, [elsewhere], [GAP])
    snapshot = Snapshot(uuid4(), other_id, T0, 1)
    with pytest.raises(ValueError, match="conversation of its transaction"):
        async with store.write(conversation_id) as tx:
            await tx.create_snapshot(snapshot, [elsewhere.id])
    async with store.read() as read:
        with pytest.raises(SnapshotNotFound):
            await read.snapshot(snapshot.id)


async def test_pending_migrations_are_reported_without_applying(
    new_database: FreshDatabase,
) -> None:
    store = new_database.make()
    await store.open()
    try:
        everything = _versions(new_database.dialect)
        assert everything
        assert await store.pending_migrations() == everything
        assert await store.pending_migrations() == everything  # nothing was applied
        assert await store.migrate() == everything
        assert await store.pending_migrations() == []
    finally:
        await store.close()


async def test_append_inserts_places_and_saves_in_one_step(store: Store) -> None:
    conversation_id = await new_conversation(store)
    first, second = message(b"one"), message(b"two")
    async with store.write(conversation_id) as tx:
        saved = replace(tx.state, message_count=2, updated_at=T0, tail_position=2 * GAP, version=1)
        await tx.append(
            [new(first), new(second)], [Item(GAP, first.id), Item(2 * GAP, second.id)], saved
        )
    read_state, page = await read_page(store, conversation_id, limit=10)
    assert read_state == saved
    assert page == Page([(GAP, entry(first)), (2 * GAP, entry(second))], more=False)


# --- append_at_tail ------------------------------------------------------------


async def _append_at_tail(
    store: Store,
    conversation_id: UUID,
    messages: Sequence[StoredMessage],
    updated_at: int,
    if_version: int | None = None,
    key: AppendKey | None = None,
) -> ConversationState | None:
    return await store.append_at_tail(
        conversation_id,
        [new(m) for m in messages],
        updated_at=updated_at,
        gap=GAP,
        max_position=MAX_POSITION,
        if_version=if_version,
        key=key,
    )


async def _recalled(store: Store, conversation_id: UUID, key: str) -> RememberedCall | None:
    async with store.write(conversation_id) as tx:
        return await tx.recall(key)


@pytest.mark.parametrize("create", [False, True], ids=["existing", "created"])
async def test_append_at_tail_keeps_the_key_in_its_step(store: Store, create: bool) -> None:
    """The key keeps the appended messages' part of the response, and the
    new message count and updated_at the rest of it is built from."""
    conversation_id = uuid4() if create else await new_conversation(store)
    key = AppendKey("key", sha256(b"request"), b"\x00appended\xff")
    state = await _append_at_tail(store, conversation_id, [message(), message()], T0, key=key)
    assert state is not None
    assert state.message_count == 2
    kept = RememberedCall(key.fingerprint, key.appended, T0, message_count=2)
    assert await _recalled(store, conversation_id, "key") == kept
    # The same key in another conversation is another key.
    other = await new_conversation(store)
    assert await _append_at_tail(store, other, [message()], T0 + 1, key=key) is not None


@pytest.mark.parametrize("earlier", ["one step", "remembered", "expired"])
async def test_append_at_tail_writes_nothing_for_a_key_already_kept(
    store: Store, earlier: str
) -> None:
    """A key the conversation has, however it was kept and however old,
    stops the step: nothing is written (write() then replays or replaces it)."""
    conversation_id = await new_conversation(store)
    first = message(b"first")
    key = AppendKey("key", sha256(b"request"), b"appended")
    if earlier == "one step":
        await _append_at_tail(store, conversation_id, [first], T0, key=key)
    else:
        await _append_at_tail(store, conversation_id, [first], T0)
        # Long expired by any window (yet newer than forget_calls' test keys).
        kept_at = T0 if earlier == "remembered" else T0 - 10**11
        async with store.write(conversation_id) as tx:
            await tx.remember("key", RememberedCall(b"f", b"whole", kept_at))
    before = await read_page(store, conversation_id, limit=10)
    kept = await _recalled(store, conversation_id, "key")
    assert await _append_at_tail(store, conversation_id, [message()], T0 + 1, key=key) is None
    assert await read_page(store, conversation_id, limit=10) == before
    assert await _recalled(store, conversation_id, "key") == kept


async def test_remember_makes_a_one_step_key_whole(store: Store) -> None:
    """An expired one-step key replaced under the lock holds a whole response."""
    conversation_id = await new_conversation(store)
    key = AppendKey("key", sha256(b"request"), b"appended")
    await _append_at_tail(store, conversation_id, [message()], T0, key=key)
    whole = RememberedCall(sha256(b"later"), b"whole response", T0 + 5)
    async with store.write(conversation_id) as tx:
        await tx.remember("key", whole)
    assert await _recalled(store, conversation_id, "key") == whole


async def test_append_at_tail_waits_for_a_duplicate_that_holds_the_lock(store: Store) -> None:
    """A duplicate that holds the conversation's lock and keeps the key
    (the locked path) stops the step queued behind it: it writes nothing,
    though the key was not there when it began."""
    conversation_id = await new_conversation(store)
    key = AppendKey("key", sha256(b"request"), b"appended")
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with store.write(conversation_id) as tx:
            started.set()
            await release.wait()
            await tx.remember("key", RememberedCall(key.fingerprint, b"whole", T0))

    holder = asyncio.create_task(hold())
    await started.wait()
    racer = asyncio.create_task(_append_at_tail(store, conversation_id, [message()], T0, key=key))
    await asyncio.sleep(0.05)
    assert not racer.done()
    release.set()
    await holder
    assert await racer is None
    read_state, page = await read_page(store, conversation_id, limit=10)
    assert read_state.message_count == 0
    assert page.rows == []


@pytest.mark.parametrize("create", [False, True], ids=["existing", "created"])
async def test_concurrent_one_step_duplicates_append_once(store: Store, create: bool) -> None:
    """Eight appends with one key, all at once: one appends and keeps the
    key; the others write nothing (the service then replays the key). Each
    comes at a later time, so that only the key can stop one that waited."""
    conversation_id = uuid4() if create else await new_conversation(store)
    key = AppendKey("key", sha256(b"request"), b"appended")
    results = await asyncio.gather(
        *(_append_at_tail(store, conversation_id, [message()], T0 + n, key=key) for n in range(8))
    )
    landed = [state for state in results if state is not None]
    assert len(landed) == 1
    assert landed[0].message_count == 1
    read_state, page = await read_page(store, conversation_id, limit=10)
    assert read_state == landed[0]
    assert len(page.rows) == 1


async def test_append_at_tail_creates_and_appends(store: Store) -> None:
    conversation_id = uuid4()
    first, second = message(b"one"), message(b"two")
    state = await _append_at_tail(store, conversation_id, [first, second], T0)
    expected = ConversationState(conversation_id, 2, T0, 2 * GAP, 0, 1)
    assert state == expected
    read_state, page = await read_page(store, conversation_id, limit=10)
    assert read_state == expected
    assert page == Page([(GAP, entry(first)), (2 * GAP, entry(second))], more=False)


async def test_append_at_tail_continues_after_the_tail(store: Store) -> None:
    conversation_id = await new_conversation(store)
    # A detached message and an entry far out: the tail, not the count, decides.
    await add(store, conversation_id, [message(), message()], [None, 7 * GAP])
    async with store.write(conversation_id) as tx:
        await tx.save(replace(tx.state, updated_at=T0, layout_version=3, version=5))
    third = message(b"three")
    state = await _append_at_tail(store, conversation_id, [third], T0 + 1)
    assert state == ConversationState(conversation_id, 3, T0 + 1, 8 * GAP, 3, 6)
    read_state, page = await read_page(store, conversation_id, limit=10)
    assert read_state == state
    assert [position for position, _ in page.rows] == [7 * GAP, 8 * GAP]
    assert page.rows[-1][1] == entry(third)


@pytest.mark.parametrize("count", [1, 3])
async def test_append_at_tail_places_where_append_positions_says(store: Store, count: int) -> None:
    """The fast append computes positions itself (in SQL on PostgreSQL):
    they are those of positions.append_positions, as for any append."""
    conversation_id = await new_conversation(store)
    await add(store, conversation_id, [message()], [5 * GAP + 7])
    async with store.read() as read:
        tail = (await read.conversation(conversation_id)).tail_position
    appended = [message() for _ in range(count)]
    state = await _append_at_tail(store, conversation_id, appended, T0)
    assert state is not None
    expected = [Item(p, m.id) for p, m in zip(append_positions(tail, count), appended, strict=True)]
    assert state.tail_position == expected[-1].position
    async with store.write(conversation_id) as tx:
        assert await tx.items_between(tail + 1, None) == expected


@pytest.mark.parametrize("updated_at", [T0, T0 - 1])
async def test_append_at_tail_declines_unless_time_moved_on(store: Store, updated_at: int) -> None:
    conversation_id = await new_conversation(store)
    async with store.write(conversation_id) as tx:
        saved = replace(tx.state, updated_at=T0)
        await tx.save(saved)
    assert await _append_at_tail(store, conversation_id, [message()], updated_at) is None
    read_state, page = await read_page(store, conversation_id, limit=10)
    assert read_state == saved
    assert page.rows == []


async def test_append_at_tail_declines_past_the_position_space(store: Store) -> None:
    conversation_id = await new_conversation(store)
    async with store.write(conversation_id) as tx:
        saved = replace(tx.state, tail_position=MAX_POSITION - 2 * GAP + 1)
        await tx.save(saved)
    assert await _append_at_tail(store, conversation_id, [message()] * 2, T0) is None
    fits = await _append_at_tail(store, conversation_id, [message()], T0)
    assert fits is not None
    assert fits.tail_position == MAX_POSITION - GAP + 1
    async with store.read() as read:
        assert (await read.conversation(conversation_id)).message_count == 1


async def test_append_at_tail_waits_for_the_lock_and_rechecks(store: Store) -> None:
    """Appends queued behind a transaction see its outcome: with one clock
    reading between them, exactly one lands, after the holder's entry."""
    conversation_id = await new_conversation(store)
    started = asyncio.Event()
    release = asyncio.Event()
    held = message()

    async def hold() -> None:
        async with store.write(conversation_id) as tx:
            started.set()
            await release.wait()
            await tx.append(
                [new(held)],
                [Item(GAP, held.id)],
                replace(tx.state, message_count=1, tail_position=GAP, updated_at=T0, version=1),
            )

    holder = asyncio.create_task(hold())
    await started.wait()
    racers = [
        asyncio.create_task(_append_at_tail(store, conversation_id, [message()], T0 + 1))
        for _ in range(4)
    ]
    await asyncio.sleep(0.05)
    assert not any(racer.done() for racer in racers)
    release.set()
    await holder
    states = [await racer for racer in racers]
    landed = [state for state in states if state is not None]
    assert landed == [ConversationState(conversation_id, 2, T0 + 1, 2 * GAP, 0, 2)]
    read_state, page = await read_page(store, conversation_id, limit=10)
    assert read_state == landed[0]
    assert [position for position, _ in page.rows] == [GAP, 2 * GAP]
    assert page.rows[0][1] == entry(held)


async def _at_version(store: Store, version: int) -> ConversationState:
    """A conversation with one message, at `version`."""
    conversation_id = uuid4()
    await _append_at_tail(store, conversation_id, [message()], T0)
    async with store.write(conversation_id) as tx:
        saved = replace(tx.state, version=version)
        await tx.save(saved)
    return saved


async def test_append_at_tail_requires_the_version_it_is_given(store: Store) -> None:
    saved = await _at_version(store, 5)
    for other in (0, 4, 6):
        assert await _append_at_tail(store, saved.id, [message()], T0 + 1, other) is None
    read_state, page = await read_page(store, saved.id, limit=10)
    assert read_state == saved
    assert len(page.rows) == 1
    state = await _append_at_tail(store, saved.id, [message()], T0 + 1, if_version=5)
    assert state == ConversationState(saved.id, 2, T0 + 1, 2 * GAP, 0, 6)
    assert (await read_page(store, saved.id, limit=10))[0] == state


async def test_append_at_tail_at_version_0_only_creates(store: Store) -> None:
    conversation_id = uuid4()
    created = await _append_at_tail(store, conversation_id, [message()], T0, if_version=0)
    assert created == ConversationState(conversation_id, 1, T0, GAP, 0, 1)
    assert await _append_at_tail(store, conversation_id, [message()], T0 + 1, 0) is None
    read_state, page = await read_page(store, conversation_id, limit=10)
    assert read_state == created
    assert len(page.rows) == 1


async def test_append_at_tail_at_a_version_above_0_creates_nothing(store: Store) -> None:
    conversation_id = uuid4()
    assert await _append_at_tail(store, conversation_id, [message()], T0, if_version=1) is None
    async with store.read() as read:
        with pytest.raises(ConversationNotFound):
            await read.conversation(conversation_id)


async def test_append_at_tail_racers_at_one_version_land_once(store: Store) -> None:
    """Appends expecting one version, queued behind a writer that holds the
    conversation: the holder's change does not move the version (a snapshot,
    say), so exactly one of them lands, and the rest see the new version."""
    saved = await _at_version(store, 3)
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with store.write(saved.id):
            started.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await started.wait()
    racers = [
        asyncio.create_task(_append_at_tail(store, saved.id, [message()], T0 + 1 + i, 3))
        for i in range(4)
    ]
    await asyncio.sleep(0.05)
    release.set()
    await holder
    landed = [state for state in [await racer for racer in racers] if state is not None]
    assert [state.version for state in landed] == [4]
    read_state, page = await read_page(store, saved.id, limit=10)
    assert read_state == landed[0]
    assert len(page.rows) == 2


# --- idempotency keys ------------------------------------------------------------


async def test_remember_and_recall_a_call(store: Store) -> None:
    conversation_id = await new_conversation(store)
    other = await new_conversation(store)
    call = RememberedCall(sha256(b"request"), b"\x00response\xff", T0)
    async with store.write(conversation_id) as tx:
        assert await tx.recall("key-1") is None
        await tx.remember("key-1", call)
        assert await tx.recall("key-1") == call
    async with store.write(conversation_id) as tx:
        assert await tx.recall("key-1") == call
        assert await tx.recall("key-2") is None
    # Keys belong to their conversation.
    async with store.write(other) as tx:
        assert await tx.recall("key-1") is None


async def test_write_reads_the_recalled_key_with_the_lock(store: Store) -> None:
    conversation_id = await new_conversation(store)
    call = RememberedCall(sha256(b"request"), b"response", T0)
    async with store.write(conversation_id, recall="key") as tx:
        assert await tx.recall("key") is None
        await tx.remember("key", call)
        # Not the read the lock made: what the transaction has kept since.
        assert await tx.recall("key") == call
    async with store.write(conversation_id, recall="key") as tx:
        assert await tx.recall("key") == call
        # Another key is read when asked for.
        assert await tx.recall("other") is None
        await tx.remember("other", call)
        assert await tx.recall("other") == call
    with pytest.raises(ConversationNotFound):
        async with store.write(uuid4(), recall="key"):
            pass


@pytest.mark.parametrize("create", [False, True], ids=["existing", "created"])
async def test_concurrent_duplicates_recall_the_key_the_first_kept(
    store: Store, create: bool
) -> None:
    """Eight writes with one key, all at once: each reads the key with the
    lock, so exactly one finds it unused and keeps it; the others, waiting
    for the lock meanwhile, find what it kept. Also when the first of them
    creates the conversation."""
    conversation_id = uuid4() if create else await new_conversation(store)
    call = RememberedCall(sha256(b"request"), b"response", T0)
    found: list[RememberedCall | None] = []

    async def duplicate() -> None:
        async with store.write(conversation_id, create=create, recall="key") as tx:
            earlier = await tx.recall("key")
            found.append(earlier)
            if earlier is None:
                # Holding the lock a while lets the others queue behind it.
                await asyncio.sleep(0.05)
                await tx.remember("key", call)

    await asyncio.gather(*(duplicate() for _ in range(8)))
    assert found.count(None) == 1
    assert found.count(call) == 7


async def test_remember_replaces_and_rolls_back(store: Store) -> None:
    conversation_id = await new_conversation(store)
    first = RememberedCall(sha256(b"one"), b"first", T0)
    second = RememberedCall(sha256(b"two"), b"second", T0 + 5)
    async with store.write(conversation_id) as tx:
        await tx.remember("key", first)
    async with store.write(conversation_id) as tx:
        await tx.remember("key", second)

    async def doomed() -> None:
        async with store.write(conversation_id) as tx:
            await tx.remember("key", first)
            await tx.remember("other", first)
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    async with store.write(conversation_id) as tx:
        assert await tx.recall("key") == second
        assert await tx.recall("other") is None


async def test_forget_calls_deletes_only_old_keys_in_batches(store: Store) -> None:
    """Of conversations and of subjects alike, up to the batch of each."""
    conversation_id = await new_conversation(store)
    subject = f"subject/{uuid4()}"
    # Far in the past, so that keys other tests left (at T0) are newer.
    old = T0 - 10**12
    async with store.write(conversation_id) as tx:
        for index in range(5):
            await tx.remember(f"old-{index}", RememberedCall(b"f", b"r", old + index))
            kept = RememberedCall(b"f", b"r", old + index)
            assert await tx.keep_call(subject, f"old-{index}", kept, old - 1)
        await tx.remember("recent", RememberedCall(b"f", b"r", old + 100))
        assert await tx.keep_call(subject, "recent", RememberedCall(b"f", b"r", old + 100), old)
    assert await store.forget_calls(old + 50, 3) == 6
    assert await store.forget_calls(old + 50, 3) == 4
    assert await store.forget_calls(old + 50, 3) == 0
    async with store.write(conversation_id) as tx:
        assert await tx.recall("old-4") is None
        assert await tx.recall("recent") == RememberedCall(b"f", b"r", old + 100)
        assert await tx.recall_call(subject, "old-4") is None
        assert await tx.recall_call(subject, "recent") == RememberedCall(b"f", b"r", old + 100)


async def test_forget_calls_spares_keys_kept_anew_while_it_waits(store: Store) -> None:
    """A key kept again over its expired self, in a transaction that holds
    it while the sweep of old keys runs: the sweep waits, then finds it new."""
    conversation_id = await new_conversation(store)
    subject = f"subject/{uuid4()}"
    old = T0 - 10**12
    async with store.write(conversation_id) as tx:
        await tx.remember("key", RememberedCall(b"f", b"old", old))
        assert await tx.keep_call(subject, "key", RememberedCall(b"f", b"old", old), old - 1)
    holding = asyncio.Event()
    new = RememberedCall(b"f", b"new", T0)

    async def keep_anew() -> None:
        async with store.write(conversation_id) as tx:
            await tx.remember("key", new)
            assert await tx.keep_call(subject, "key", new, old)
            holding.set()
            await asyncio.sleep(0.2)

    async def sweep() -> None:
        await holding.wait()
        await store.forget_calls(old + 50, 100)

    await asyncio.gather(keep_anew(), sweep())
    async with store.write(conversation_id) as tx:
        assert await tx.recall("key") == new
        assert await tx.recall_call(subject, "key") == new


async def test_keep_call_keeps_over_an_expired_key_only(store: Store) -> None:
    subject, other = f"subject/{uuid4()}", f"subject/{uuid4()}"
    first = RememberedCall(sha256(b"one"), b"first", T0)
    second = RememberedCall(sha256(b"two"), b"second", T0 + 5)
    async with store.write_state() as tx:
        assert await tx.recall_call(subject, "key") is None
        assert await tx.keep_call(subject, "key", first, T0 - 100)
        # Fresh (made after expired_at): kept, and nothing changes.
        assert not await tx.keep_call(subject, "key", second, T0 - 1)
        assert await tx.recall_call(subject, "key") == first
        # The same key of another subject is another key.
        assert await tx.keep_call(other, "key", second, T0 - 100)
    async with store.write_state() as tx:
        assert await tx.recall_call(subject, "key") == first
        # Expired (made at or before expired_at): replaced.
        assert await tx.keep_call(subject, "key", second, T0)
        assert await tx.recall_call(subject, "key") == second

    async def doomed() -> None:
        async with store.write_state() as tx:
            assert await tx.keep_call(subject, "key", first, T0 + 10)
            assert await tx.keep_call(subject, "new", first, T0)
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    async with store.write_state() as tx:
        assert await tx.recall_call(subject, "key") == second
        assert await tx.recall_call(subject, "new") is None
        assert await tx.recall_call(other, "key") == second


async def test_of_concurrent_keepers_of_a_key_one_keeps_it(store: Store) -> None:
    """Eight transactions keep one key at once, holding it a while: one
    keeps it; the others wait for its end, then find it kept."""
    subject = f"subject/{uuid4()}"
    kept: list[bool] = []

    async def keeper(index: int) -> None:
        call = RememberedCall(sha256(b"%d" % index), b"response %d" % index, T0)
        async with store.write_state() as tx:
            kept.append(await tx.keep_call(subject, "key", call, T0 - 100))
            await asyncio.sleep(0.05)

    await asyncio.gather(*(keeper(index) for index in range(8)))
    assert kept.count(True) == 1
    async with store.write_state() as tx:
        found = await tx.recall_call(subject, "key")
    assert found is not None
    assert found.response.startswith(b"response ")


async def test_message_page_filter_with_many_kinds(store: Store) -> None:
    conversation_id, messages = await _filter_fixture(store)
    wanted = {m.kind for m in messages[:2]}
    # Far more kinds than fit in one SQL statement's parameters inline.
    kinds = frozenset(wanted | {f"unused-{i}" for i in range(2000)})
    _, page = await read_page(store, conversation_id, kinds=kinds)
    assert page.rows
    assert {entry for _, entry in page.rows} == {entry(m) for m in messages if m.kind in wanted}


@pytest.mark.postgres
async def test_postgres_largest_entry_follows_every_way_in(storage_postgres_url: str) -> None:
    """The page leaves its byte budget unsummed when a page of the largest
    entry fits it: that bound must follow every insert."""
    store = PostgresStore(storage_postgres_url)
    await store.open()
    admin = await psycopg.AsyncConnection.connect(storage_postgres_url, autocommit=True)

    async def largest() -> int:
        cursor = await admin.execute(
            "SELECT largest_entry FROM conversations WHERE id = %s", (conversation_id,)
        )
        row = await cursor.fetchone()
        assert row is not None
        value: int = row[0]
        return value

    try:
        await store.migrate()
        conversation_id = await new_conversation(store)
        assert await largest() == 0
        detached = message(b"d" * 40)
        await add(store, conversation_id, [detached], [None])
        assert await largest() == len(entry(detached))
        tail = message(b"t" * 300)
        await _append_at_tail(store, conversation_id, [message(b"small"), tail], T0)
        assert await largest() == len(entry(tail))
        async with store.write(conversation_id) as tx:
            state = replace(tx.state, tail_position=tx.state.tail_position + GAP)
            small = message(b"x")
            await tx.append([new(small)], [Item(state.tail_position, small.id)], state)
        assert await largest() == len(entry(tail))  # never lowered
    finally:
        await admin.close()
        await store.close()


# --- planner statistics of a fresh database ---------------------------------


async def test_tables_marked_empty_are_analyzed_once_they_hold_rows(
    new_database: FreshDatabase,
) -> None:
    """Migrations analyze messages and conversations while a fresh
    PostgreSQL database is empty, so their statistics say "empty" until
    autovacuum gets to them; the store analyzes them as soon as they hold
    rows, and reports the tables it analyzed."""
    store = new_database.make()
    async with migrated(store):
        if new_database.dialect == "sqlite":
            # No statistics to go stale: nothing to do, nothing waiting.
            assert await store.analyze_tables_marked_empty() == ([], False)
            return
        # Only the store may analyze them during the test.
        new_database.execute(
            "ALTER TABLE messages SET (autovacuum_enabled = false);"
            " ALTER TABLE conversations SET (autovacuum_enabled = false)"
        )
        reltuples = (
            "SELECT relname::text, reltuples FROM pg_class"
            " WHERE relname IN ('messages', 'conversations') ORDER BY relname"
        )
        assert new_database.execute(reltuples) == [("conversations", 0), ("messages", 0)]
        assert await store.analyze_tables_marked_empty() == ([], True)
        conversation_id = await new_conversation(store)
        await add(store, conversation_id, [message(), message()], [1, 2])
        analyzed, waiting = await store.analyze_tables_marked_empty()
        assert (sorted(analyzed), waiting) == (["conversations", "messages"], False)
        assert new_database.execute(reltuples) == [("conversations", 1), ("messages", 2)]
        assert await store.analyze_tables_marked_empty() == ([], False)
