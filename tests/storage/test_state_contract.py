"""The storage contract of scoped state and of the retention sweeper, over
every backend: state rows read back byte for byte, a scope's row is locked
by the transaction that changes it (no lost update), a conversation's
scope is held against erasure and goes with it; the sweeper's batches
find exactly the idle and overlong conversations, erase as
DeleteConversation erases, trim as DeleteConversationMessagesRange
deletes, and on PostgreSQL skip what another transaction holds, so that
two sweepers never take the same conversation.

Sweeps read the whole database, so their tests run on a database of
their own (`fresh_store`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from uuid import UUID, uuid4

import pytest

from agent_state.errors import ConversationNotFound
from agent_state.model import (
    EMPTY_STATE,
    ConversationDetails,
    ConversationRecord,
    Overlong,
    Retention,
    Scope,
    Snapshot,
    StoredState,
    Trim,
)
from agent_state.positions import GAP
from agent_state.storage.base import Store
from tests.conftest import BACKENDS, opened_store

from .test_store_contract import BIG, T0, Boom, add, all_items, entry, message, new_conversation

HOUR = 3_600_000_000
NOW = T0 + 1000 * HOUR


def app_scope() -> Scope:
    return Scope(f"app/{uuid4()}")


def conversation_scope(conversation_id: UUID) -> Scope:
    return Scope(f"conversation/{conversation_id}", conversation_id)


async def stored(store: Store, scope: Scope) -> StoredState | None:
    async with store.read_once() as rx:
        return await rx.scoped_state(scope)


async def save(store: Store, scope: Scope, state: StoredState) -> None:
    async with store.write_state() as tx:
        if scope.conversation_id is not None:
            assert await tx.hold_conversations([scope.conversation_id])
        await tx.lock_states([scope])
        await tx.save_states([(scope, state)])


# --- scoped state ----------------------------------------------------------------


async def test_an_unknown_scope_has_no_state(store: Store) -> None:
    assert await stored(store, app_scope()) is None
    async with store.read() as rx:
        assert await rx.scoped_state(Scope(f"user/{uuid4()}/x")) is None


async def test_lock_states_makes_absent_rows_empty_and_saved_states_read_back(
    store: Store,
) -> None:
    conversation_id = await new_conversation(store)
    kept, new = app_scope(), conversation_scope(conversation_id)
    await save(store, kept, StoredState(b'{"a":1}', 4))
    scopes = sorted([kept, new, Scope(f"user/{uuid4()}/\U0001f600")])
    # Exact bytes: NUL escapes, astral characters, any bytes at all.
    texts = [b'{"a":"\\u0000 \xf0\x9f\x98\x80"}', b"{}", b'{"n":1e400}']
    async with store.write_state() as tx:
        assert await tx.hold_conversations([conversation_id]) == {conversation_id}
        locked = await tx.lock_states(scopes)
        assert locked == {
            scope.key: StoredState(b'{"a":1}', 4) if scope == kept else EMPTY_STATE
            for scope in scopes
        }
        await tx.save_states(
            [(scope, StoredState(text, 7)) for scope, text in zip(scopes, texts, strict=True)]
        )
    for scope, text in zip(scopes, texts, strict=True):
        assert await stored(store, scope) == StoredState(text, 7)


async def test_a_rolled_back_lock_leaves_no_row(store: Store) -> None:
    scope = app_scope()

    async def doomed() -> None:
        async with store.write_state() as tx:
            await tx.lock_states([scope])
            await tx.save_states([(scope, StoredState(b'{"a":1}', 1))])
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    assert await stored(store, scope) is None


async def test_hold_conversations_finds_those_that_exist(store: Store) -> None:
    present = sorted([await new_conversation(store), await new_conversation(store)])
    async with store.write_state() as tx:
        assert await tx.hold_conversations([]) == set()
        assert await tx.hold_conversations(sorted([*present, uuid4()])) == set(present)
    # Within a conversation's write transaction too, its own row included.
    async with store.write(present[0]) as tx:
        assert await tx.hold_conversations(present) == set(present)


async def test_a_conversations_state_goes_with_it(store: Store) -> None:
    conversation_id = await new_conversation(store)
    scope, other = conversation_scope(conversation_id), app_scope()
    await save(store, scope, StoredState(b"{}", 1))
    await save(store, other, StoredState(b"{}", 1))
    async with store.write(conversation_id) as tx:
        await tx.erase()
    assert await stored(store, scope) is None
    assert await stored(store, other) == StoredState(b"{}", 1)


async def test_two_updates_of_one_scope_apply_one_after_the_other(store: Store) -> None:
    """The second transaction to lock a (new) scope waits for the first
    and then sees what it saved: no update is lost."""
    scope = app_scope()
    first_locked, release = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def update(name: bytes, hold: bool) -> None:
        async with store.write_state() as tx:
            current = (await tx.lock_states([scope]))[scope.key]
            seen.append(current.version)
            if hold:
                first_locked.set()
                await release.wait()
            await tx.save_states(
                [(scope, StoredState(current.values_json + name, current.version + 1))]
            )

    first = asyncio.create_task(update(b"1", hold=True))
    await asyncio.wait_for(first_locked.wait(), 10)
    second = asyncio.create_task(update(b"2", hold=False))
    # The second cannot lock the row while the first holds it.
    done, _ = await asyncio.wait({second}, timeout=0.5)
    assert not done
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert seen == [0, 1]
    assert await stored(store, scope) == StoredState(b"{}12", 2)


async def test_held_conversation_is_erased_only_after_the_state_lands(store: Store) -> None:
    """hold_conversations keeps the conversation until the transaction
    ends: an erasure waits for it, then takes the new state along."""
    conversation_id = await new_conversation(store)
    scope = conversation_scope(conversation_id)
    held, release = asyncio.Event(), asyncio.Event()

    async def update() -> None:
        async with store.write_state() as tx:
            assert await tx.hold_conversations([conversation_id]) == {conversation_id}
            held.set()
            await release.wait()
            await tx.lock_states([scope])
            await tx.save_states([(scope, StoredState(b'{"x":1}', 1))])

    async def erase() -> None:
        async with store.write(conversation_id) as tx:
            await tx.erase()

    updating = asyncio.create_task(update())
    await asyncio.wait_for(held.wait(), 10)
    erasing = asyncio.create_task(erase())
    done, _ = await asyncio.wait({erasing}, timeout=0.5)
    assert not done
    release.set()
    await asyncio.wait_for(asyncio.gather(updating, erasing), 10)
    assert await stored(store, scope) is None


# --- the retention sweeper ------------------------------------------------------


async def conversation(
    store: Store,
    updated_at: int,
    retention: Retention | None = None,
    messages: int = 0,
) -> UUID:
    """A conversation updated at `updated_at` with `messages` messages
    (the n-th at position n * GAP) and its own `retention` (None: none)."""
    conversation_id = uuid4()
    async with store.write(conversation_id, create=True) as tx:
        state = replace(tx.state, updated_at=updated_at, version=1)
        details = ConversationDetails("", {}, retention)
        await tx.save_record(ConversationRecord(state, updated_at, details))
    if messages:
        await add(
            store,
            conversation_id,
            [message(str(n).encode()) for n in range(messages)],
            [n * GAP for n in range(1, messages + 1)],
        )
        async with store.write(conversation_id) as tx:
            await tx.save(replace(tx.state, updated_at=updated_at))
    return conversation_id


async def exists(store: Store, conversation_id: UUID) -> bool:
    async with store.read() as rx:
        record = await rx.describe(conversation_id)
    return record.state.id == conversation_id


async def gone(store: Store, conversation_id: UUID) -> bool:
    try:
        await exists(store, conversation_id)
    except ConversationNotFound:
        return True
    return False


async def test_lock_idle_finds_conversations_idle_past_their_max_idle(fresh_store: Store) -> None:
    own_idle = await conversation(fresh_store, NOW - 2 * HOUR, Retention(HOUR, 0))
    # Never idle past their own max_idle: recent, idle exactly as long, an
    # own retention whose max_idle is 0 (it replaces the default whole),
    # and the longest duration a retention may have, measured exactly.
    await conversation(fresh_store, NOW - HOUR // 2, Retention(HOUR, 0))
    await conversation(fresh_store, NOW - HOUR, Retention(HOUR, 0))
    await conversation(fresh_store, NOW - 10_000 * HOUR, Retention(0, 5))
    await conversation(fresh_store, 0, Retention(315_576_000_000 * 1_000_000, 0))
    default_idle = await conversation(fresh_store, NOW - 3 * HOUR)
    default_recent = await conversation(fresh_store, NOW - HOUR)

    async def idle(default_max_idle: int) -> set[UUID]:
        async with fresh_store.sweep() as tx:
            return set(await tx.lock_idle(NOW, default_max_idle, 100))

    assert await idle(0) == {own_idle}
    assert await idle(2 * HOUR) == {own_idle, default_idle}
    assert await idle(HOUR // 2) == {own_idle, default_idle, default_recent}
    # A default so long its cutoff is before year 1 finds nothing more.
    assert await idle(315_576_000_000 * 1_000_000) == {own_idle}


async def test_lock_idle_takes_at_most_a_batch(fresh_store: Store) -> None:
    idle = {await conversation(fresh_store, NOW - 2 * HOUR, Retention(HOUR, 0)) for _ in range(3)}
    idle |= {await conversation(fresh_store, NOW - 2 * HOUR) for _ in range(3)}
    found: list[UUID] = []
    for _ in range(4):
        async with fresh_store.sweep() as tx:
            batch = await tx.lock_idle(NOW, HOUR, 2)
            assert len(batch) <= 2
            await tx.erase(batch)
        found += batch
    assert sorted(found) == sorted(idle)


async def test_erase_erases_as_delete_conversation_does(fresh_store: Store) -> None:
    victim = await conversation(fresh_store, T0, messages=3)
    kept = await conversation(fresh_store, T0, messages=1)
    for conversation_id in (victim, kept):
        await save(fresh_store, conversation_scope(conversation_id), StoredState(b"{}", 1))
        async with fresh_store.write(conversation_id) as tx:
            ids = [item.message_id for item in await tx.items_between(0, None)]
            await tx.create_snapshot(Snapshot(uuid4(), conversation_id, T0, len(ids)), ids)
    async with fresh_store.sweep() as tx:
        await tx.erase([])
        await tx.erase([victim])
    assert await gone(fresh_store, victim)
    assert await stored(fresh_store, conversation_scope(victim)) is None
    assert await exists(fresh_store, kept)
    assert await stored(fresh_store, conversation_scope(kept)) == StoredState(b"{}", 1)
    # The erasure every table sees is test_companion_contract's, run
    # through the same statements (transactions._erasure).


async def test_lock_overlong_finds_conversations_over_their_max_messages(
    fresh_store: Store,
) -> None:
    own_over = await conversation(fresh_store, T0, Retention(0, 2), messages=5)
    # At their own limit, and without one (0).
    await conversation(fresh_store, T0, Retention(0, 3), messages=3)
    await conversation(fresh_store, T0, Retention(HOUR, 0), messages=9)
    default_over = await conversation(fresh_store, T0, messages=4)
    default_at = await conversation(fresh_store, T0, messages=2)

    async def overlong(default_max_messages: int) -> set[Overlong]:
        async with fresh_store.sweep() as tx:
            return set(await tx.lock_overlong(default_max_messages, 100))

    assert await overlong(0) == {Overlong(own_over, 5, 2)}
    assert await overlong(2) == {Overlong(own_over, 5, 2), Overlong(default_over, 4, 2)}
    assert await overlong(1) == {
        Overlong(own_over, 5, 2),
        Overlong(default_over, 4, 1),
        Overlong(default_at, 2, 1),
    }


async def test_trim_deletes_the_oldest_entries_and_counts_a_change(fresh_store: Store) -> None:
    trimmed = await conversation(fresh_store, T0, Retention(0, 2))
    ms = [message(b"m%d" % n) for n in range(5)]
    detached = message(b"detached")
    await add(fresh_store, trimmed, [*ms, detached], [10, 20, 30, 40, 50, None])
    other = await conversation(fresh_store, T0, messages=3)
    snapshot = Snapshot(uuid4(), trimmed, T0, 2)
    async with fresh_store.write(trimmed) as tx:
        await tx.create_snapshot(snapshot, [ms[0].id, ms[4].id])
        before = tx.state
    async with fresh_store.sweep() as tx:
        await tx.trim([])
        await tx.trim([Trim(trimmed, 3), Trim(other, 1)])
    async with fresh_store.write(trimmed) as tx:
        after = tx.state
        assert await tx.lookup([m.id for m in [*ms, detached]]) == {
            ms[3].id: 40,
            ms[4].id: 50,
            detached.id: None,
        }
    assert after == replace(
        before, message_count=before.message_count - 3, version=before.version + 1
    )
    assert after.updated_at == T0
    assert [item.position for item in await all_items(fresh_store, other)] == [2 * GAP, 3 * GAP]
    # Snapshots still read the trimmed messages back.
    async with fresh_store.read() as rx:
        page = await rx.snapshot_message_page(snapshot, -1, 10, BIG)
    assert [row[1] for row in page.rows] == [entry(ms[0]), entry(ms[4])]


# --- PostgreSQL: sweepers and writers at once -------------------------------------


POSTGRES = [backend for backend in BACKENDS if backend.id != "sqlite"]


@pytest.fixture(params=POSTGRES)
async def fresh_postgres(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """As fresh_store, on PostgreSQL (directly and through PgBouncer)."""
    async with opened_store(request, shared=False) as opened:
        yield opened


async def test_postgres_sweepers_at_once_skip_what_the_other_holds(fresh_postgres: Store) -> None:
    """Two sweeps at once on one database take disjoint batches without
    waiting for each other; together they erase every idle conversation
    once."""
    store = fresh_postgres
    idle = {await conversation(store, NOW - 2 * HOUR, Retention(HOUR, 0)) for _ in range(6)}
    kept = await conversation(store, NOW, Retention(HOUR, 0))
    first_locked, release = asyncio.Event(), asyncio.Event()
    batches: dict[str, list[UUID]] = {}

    async def sweep(name: str, limit: int, hold: bool) -> None:
        async with store.sweep() as tx:
            batches[name] = await tx.lock_idle(NOW, 0, limit)
            if hold:
                first_locked.set()
                await release.wait()
            await tx.erase(batches[name])

    first = asyncio.create_task(sweep("first", 4, hold=True))
    await asyncio.wait_for(first_locked.wait(), 10)
    # While the first holds its batch, the second takes the rest at once.
    await asyncio.wait_for(sweep("second", 100, hold=False), 10)
    release.set()
    await first
    assert len(batches["first"]) == 4
    assert set(batches["first"]).isdisjoint(batches["second"])
    assert set(batches["first"]) | set(batches["second"]) == idle
    for conversation_id in idle:
        assert await gone(store, conversation_id)
    assert await exists(store, kept)


async def test_postgres_sweep_skips_a_conversation_a_writer_holds(fresh_postgres: Store) -> None:
    store = fresh_postgres
    held = await conversation(store, NOW - 2 * HOUR, Retention(HOUR, 1), messages=3)
    locked, release = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        async with store.write(held):
            locked.set()
            await release.wait()

    writer = asyncio.create_task(write())
    await asyncio.wait_for(locked.wait(), 10)
    async with asyncio.timeout(10):
        async with store.sweep() as tx:
            assert await tx.lock_idle(NOW, 0, 100) == []
            assert await tx.lock_overlong(0, 100) == []
    release.set()
    await writer
    async with store.sweep() as tx:
        assert await tx.lock_idle(NOW, 0, 100) == [held]
        assert await tx.lock_overlong(0, 100) == [Overlong(held, 3, 1)]
