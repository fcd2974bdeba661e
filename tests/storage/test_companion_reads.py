"""The storage contract of the companion API's reads and forks, over every
backend: a conversation's tail (the last entries of its ordering, newest
first, under a byte budget), entries and their sizes by id, a
conversation's snapshots in keyset pages, and what a fork needs: holding
the source, reading its ordering a batch at a time, and copying messages
inside the database. On PostgreSQL, the plans of the tail and of the
snapshot list read no more than they return."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from agent_state.errors import ConversationNotFound
from agent_state.model import (
    ConversationState,
    Item,
    MessageCopy,
    NewMessage,
    Original,
    Page,
    Role,
    Snapshot,
)
from agent_state.positions import GAP, MAX_POSITION
from agent_state.storage.base import Store

from .conftest import executed_plan, migrated_postgres, scans_of
from .test_store_contract import (
    BIG,
    FRAME,
    T0,
    Boom,
    add,
    all_items,
    entry,
    message,
    new,
    new_conversation,
    sha256,
)

NIL = UUID(int=0)
EVERYTHING = (frozenset[int](), frozenset[str]())


async def tail(
    store: Store,
    conversation_id: UUID,
    count: int,
    roles: frozenset[int] = frozenset(),
    kinds: frozenset[str] = frozenset(),
    budget: int = BIG,
) -> tuple[ConversationState, Page[tuple[int, bytes]]]:
    """tail_page in one step and in a read transaction, which must agree."""
    async with store.read_once() as once:
        found = await once.tail_page(conversation_id, count, roles, kinds, budget)
    async with store.read() as read:
        assert await read.tail_page(conversation_id, count, roles, kinds, budget) == found
        assert await read.conversation(conversation_id) == found[0]
    return found


# --- tail_page -----------------------------------------------------------------------


async def test_tail_of_an_absent_or_empty_conversation(store: Store) -> None:
    with pytest.raises(ConversationNotFound):
        await tail(store, uuid4(), 5)
    empty = await new_conversation(store)
    state, page = await tail(store, empty, 5)
    assert (state.id, page) == (empty, Page([], more=False))


async def test_tail_of_ten_thousand_messages_is_the_last_ones_newest_first(
    store: Store,
) -> None:
    conversation_id = await new_conversation(store)
    ms = [message(b"%d" % i) for i in range(10_000)]
    detached = [message(b"detached"), message(b"detached too")]
    # Detached messages have no position: a backward scan must pass them.
    await add(
        store,
        conversation_id,
        [*ms, *detached],
        [GAP * (i + 1) for i in range(10_000)] + [None, None],
    )
    state, page = await tail(store, conversation_id, 5)
    assert page == Page([(GAP * (i + 1), entry(ms[i])) for i in range(9999, 9994, -1)], more=False)
    assert state.message_count == 10_002
    _, everything = await tail(store, conversation_id, 1000)
    assert [position for position, _ in everything.rows] == [
        GAP * (i + 1) for i in range(9999, 8999, -1)
    ]
    assert not everything.more


async def test_tail_filters_and_counts_only_matching_rows(store: Store) -> None:
    conversation_id = await new_conversation(store)
    ms = [
        message(b"1", role=Role.USER, kind="text"),
        message(b"2", role=Role.ASSISTANT, kind="text"),
        message(b"3", role=Role.TOOL, kind=""),
        message(b"4", role=Role.USER, kind=""),
        message(b"5", role=Role.ASSISTANT, kind="tool_call"),
    ]
    await add(store, conversation_id, ms, [10, 20, 30, 40, 50])
    body_of = {entry(m): m.body for m in ms}

    async def bodies(count: int, roles: set[int], kinds: set[str]) -> list[bytes]:
        _, page = await tail(store, conversation_id, count, frozenset(roles), frozenset(kinds))
        assert not page.more
        return [body_of[row[1]] for row in page.rows]

    assert await bodies(10, set(), set()) == [b"5", b"4", b"3", b"2", b"1"]
    assert await bodies(2, set(), set()) == [b"5", b"4"]
    assert await bodies(2, {Role.USER}, set()) == [b"4", b"1"]
    assert await bodies(1, {Role.USER, Role.TOOL}, set()) == [b"4"]
    assert await bodies(10, set(), {""}) == [b"4", b"3"]
    assert await bodies(10, {Role.ASSISTANT}, {"text", "tool_call"}) == [b"5", b"2"]
    assert await bodies(10, {Role.USER}, {"tool_call"}) == []
    assert await bodies(10, set(), {"tex"}) == []


async def test_tail_budget_leaves_out_the_oldest(store: Store) -> None:
    conversation_id = await new_conversation(store)
    ms = [message(bytes([i]) * 40) for i in range(4)]
    await add(store, conversation_id, ms, [1, 2, 3, 4])
    newest_first = [(p, entry(m)) for p, m in zip([4, 3, 2, 1], ms[::-1], strict=True)]
    size = 40 + FRAME  # of each entry

    async def cut(count: int, budget: int) -> Page[tuple[int, bytes]]:
        _, page = await tail(store, conversation_id, count, budget=budget)
        return page

    # A row comes while the entries newer than it stay under the budget.
    assert await cut(4, 2 * size + size // 2) == Page(newest_first[:3], more=True)
    assert await cut(4, 3 * size) == Page(newest_first[:3], more=True)
    assert await cut(4, 3 * size + 1) == Page(newest_first, more=False)
    # The newest always comes, however large.
    assert await cut(4, 0) == Page(newest_first[:1], more=True)
    assert await cut(1, 0) == Page(newest_first[:1], more=False)
    # Only the last `count` are "more": older rows never are.
    assert await cut(2, 2 * size) == Page(newest_first[:2], more=False)
    assert await cut(3, 2 * size) == Page(newest_first[:2], more=True)


# --- entries by id -------------------------------------------------------------------


async def test_entry_sizes_and_entries_of_the_ordering_only(store: Store) -> None:
    conversation_id, other = await new_conversation(store), await new_conversation(store)
    placed = [
        NewMessage(message(b"x" * 10), sha256(b"x" * 10), b"head", b"tail"),
        NewMessage(message(b""), sha256(b""), b"", b""),
        new(message(bytes(range(256)) * 8)),
    ]
    detached, elsewhere, deleted = message(), message(), message()
    await add(store, conversation_id, [*placed, detached, deleted], [1, 2, 3, None, 4])
    await add(store, other, [elsewhere], [1])
    async with store.write(conversation_id) as tx:
        await tx.delete([deleted.id])
    named = [n.message.id for n in placed] + [detached.id, elsewhere.id, deleted.id, uuid4()]
    async with store.read() as read:
        sizes = await read.entry_sizes(conversation_id, named)
        entries = await read.entries(conversation_id, named)
        assert await read.entry_sizes(conversation_id, []) == {}
        assert await read.entries(conversation_id, []) == {}
        assert await read.entries(uuid4(), named) == {}
    assert sizes == {n.message.id: len(n.entry) for n in placed}
    assert entries == {n.message.id: n.entry for n in placed}


# --- snapshot_list --------------------------------------------------------------------


async def test_snapshot_list_pages_oldest_first_by_time_then_id(store: Store) -> None:
    conversation_id, other = await new_conversation(store), await new_conversation(store)
    m = message()
    await add(store, conversation_id, [m], [1])
    await add(store, other, [message()], [1])
    # Three share a time: their ids order them.
    times = [T0 + 5, T0, T0 + 5, T0 + 9, T0 + 5]
    snapshots = [Snapshot(uuid4(), conversation_id, at, n + 1) for n, at in enumerate(times)]
    async with store.write(conversation_id) as tx:
        for snapshot in snapshots:
            assert await tx.create_snapshot(snapshot, [m.id] * snapshot.item_count) == (
                snapshot.item_count
            )
    async with store.write(other) as tx:
        await tx.create_snapshot(Snapshot(uuid4(), other, T0 + 1, 0), [])
    ordered = sorted(snapshots, key=lambda s: (s.created_at, s.id.bytes))

    async with store.read() as read:
        start = (-(10**15), NIL)
        assert await read.snapshot_list(conversation_id, start, 10) == Page(ordered, more=False)
        assert await read.snapshot_list(conversation_id, start, 2) == Page(ordered[:2], more=True)
        last = ordered[1]
        after = (last.created_at, last.id)
        assert await read.snapshot_list(conversation_id, after, 2) == Page(ordered[2:4], more=True)
        last = ordered[3]
        assert await read.snapshot_list(conversation_id, (last.created_at, last.id), 2) == Page(
            ordered[4:], more=False
        )
        assert await read.snapshot_list(conversation_id, (T0 + 9, ordered[-1].id), 5) == Page(
            [], more=False
        )
        assert await read.snapshot_list(uuid4(), start, 5) == Page([], more=False)


# --- what a fork needs ---------------------------------------------------------------------


async def _copy_all(
    store: Store, source: UUID, target: UUID, last: int, batch: int
) -> list[tuple[Original, MessageCopy]]:
    """Copies the ordering of `source` up to `last` into a new conversation
    `target`, `batch` originals at a time; what was copied to what."""
    copied: list[tuple[Original, MessageCopy]] = []
    async with store.write(target, create=True) as tx:
        held = await tx.hold(source)
        assert held.id == source
        after, position = 0, 0
        while True:
            originals = await tx.originals(source, after, last, batch)
            copies = []
            for original in originals:
                position += GAP
                copy_id = uuid4()
                head = b"<copy \x00" + copy_id.bytes
                copies.append(MessageCopy(original.header.id, Item(position, copy_id), head, b">"))
            await tx.copy_messages(source, copies)
            copied += zip(originals, copies, strict=True)
            if len(originals) < batch:
                break
            after = originals[-1].position
        await tx.save(replace(tx.state, message_count=len(copied), tail_position=position))
    return copied


async def test_a_copy_has_the_original_but_its_id_and_encoding(store: Store) -> None:
    source = await new_conversation(store)
    bodies = [b"", b"\x00\xff", bytes(range(256)) * 4096, b"plain"]
    ms = [
        message(body, kind=kind, role=role, created_at=at)
        for body, kind, role, at in zip(
            bodies, ["", "ü\x00", "tool", "text"], [1, 2, 3, 1], [0, T0, 1, 5], strict=True
        )
    ]
    news = [
        NewMessage(m, sha256(m.body), b"H" * i + b"\x00", b"\xff" * i) for i, m in enumerate(ms)
    ]
    positions = [GAP, 2 * GAP, 3 * GAP, 5 * GAP]
    await add(store, source, [*news, message(b"detached")], [*positions, None])
    target = uuid4()
    # Batches of 2 over 4 entries: the last batch is empty.
    copied = await _copy_all(store, source, target, MAX_POSITION, 2)

    originals = [original for original, _ in copied]
    assert [o.position for o in originals] == positions
    assert [o.header for o in originals] == [n.message.header for n in news]
    # The copies are in the target's ordering with the original's body
    # inside their own head and tail...
    async with store.read() as read:
        _, page = await read.message_page(target, 0, 10, *EVERYTHING, BIG)
    expected = [
        (copy.item.position, copy.wire_head + n.message.body + copy.wire_tail)
        for (_, copy), n in zip(copied, news, strict=True)
    ]
    assert page == Page(expected, more=False)
    # ... and a snapshot freezes them as copies of the originals: body,
    # role, kind, created_at and digest (bodies stored once).
    ids = [copy.item.message_id for _, copy in copied]
    snapshot = Snapshot(uuid4(), target, T0, len(ids))
    async with store.write(target) as tx:
        assert await tx.create_snapshot(snapshot, ids) == len(ids)
        assert await tx.lookup(ids) == {
            copy.item.message_id: copy.item.position for _, copy in copied
        }
    async with store.read() as read:
        frozen = await read.snapshot_message_page(snapshot, -1, 10, BIG)
    assert [row[1] for row in frozen.rows] == [encoded for _, encoded in expected]
    # The source is as it was.
    assert await all_items(store, source) == [
        Item(p, n.message.id) for p, n in zip(positions, news, strict=True)
    ]


async def test_originals_stop_at_the_last_position_asked(store: Store) -> None:
    source = await new_conversation(store)
    ms = [message(b"%d" % i) for i in range(7)]
    await add(store, source, ms, [GAP * (i + 1) for i in range(7)])
    copied = await _copy_all(store, source, uuid4(), 5 * GAP, 3)
    assert [original.header.id for original, _ in copied] == [m.id for m in ms[:5]]
    copied = await _copy_all(store, source, uuid4(), 3 * GAP, 3)
    assert [original.header.id for original, _ in copied] == [m.id for m in ms[:3]]


async def test_lookup_in_a_held_conversation_and_hold_of_an_absent_one(store: Store) -> None:
    source = await new_conversation(store)
    placed, detached = message(), message()
    await add(store, source, [placed, detached], [GAP, None])
    async with store.write(uuid4(), create=True) as tx:
        found = await tx.lookup([placed.id, detached.id, uuid4()], source)
        assert found == {placed.id: GAP, detached.id: None}
        assert await tx.lookup([placed.id]) == {}
        with pytest.raises(ConversationNotFound) as raised:
            await tx.hold(uuid4())
        assert raised.value.field == "conversation_id"


async def test_a_rolled_back_fork_leaves_nothing(store: Store) -> None:
    source = await new_conversation(store)
    m = message()
    await add(store, source, [m], [GAP])
    target = uuid4()

    async def doomed() -> None:
        async with store.write(target, create=True) as tx:
            await tx.hold(source)
            copy = MessageCopy(m.id, Item(GAP, uuid4()), b"h", b"t")
            await tx.copy_messages(source, [copy])
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    async with store.read() as read:
        with pytest.raises(ConversationNotFound):
            await read.conversation(target)


async def test_a_held_conversation_does_not_change_until_the_fork_ends(store: Store) -> None:
    source = await new_conversation(store)
    ms = [message(b"%d" % i) for i in range(4)]
    await add(store, source, ms, [GAP * (i + 1) for i in range(4)])
    writer_done = asyncio.Event()

    async def write_the_source() -> None:
        # A whole append and a delete of the first message.
        appended = await store.append_at_tail(
            source, [new(message(b"late"))], updated_at=T0 * 2, gap=GAP, max_position=MAX_POSITION
        )
        assert appended is not None
        async with store.write(source) as tx:
            await tx.delete([ms[0].id])
        writer_done.set()

    async with store.write(uuid4(), create=True) as tx:
        held = await tx.hold(source)
        first = await tx.originals(source, 0, MAX_POSITION, 2)
        writer = asyncio.create_task(write_the_source())
        # Give the writer every chance to run: it must wait for the fork.
        await asyncio.sleep(0.3)
        assert not writer_done.is_set()
        rest = await tx.originals(source, first[-1].position, MAX_POSITION, 10)
        assert [o.header.id for o in first + rest] == [m.id for m in ms]
        copies = [
            MessageCopy(o.header.id, Item(GAP * (i + 1), uuid4()), b"", b"")
            for i, o in enumerate(first + rest)
        ]
        await tx.copy_messages(source, copies)
        assert (await tx.hold(source)) == held
    async with asyncio.timeout(10):
        await writer
    assert len(await all_items(store, source)) == 4


# --- PostgreSQL: what the plans read -------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_tail_is_a_backward_index_scan_of_what_it_returns(
    make_postgres_database: Callable[[], str],
) -> None:
    url = make_postgres_database()
    async with migrated_postgres(url) as store:
        conversation_id = uuid4()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO conversations (id, message_count, tail_position, layout_version,"
                " version, created_at, updated_at, largest_entry)"
                " VALUES (%s, 10000, 10000, 0, 1, now(), now(), 20)",
                (conversation_id,),
            )
            # 10,000 in the ordering and 1,000 detached (NULL positions,
            # which a backward scan meets first).
            conn.execute(
                "INSERT INTO messages (conversation_id, id, position, role, kind, entry,"
                " body_offset, body_length, body_sha256, created_at)"
                " SELECT %s, gen_random_uuid(), CASE WHEN g <= 10000 THEN g END, 1 + g %% 3,"
                "  '', convert_to('entry ' || g, 'UTF8'), 0, 1, '\\x00', now()"
                " FROM generate_series(1, 11000) AS g",
                (conversation_id,),
            )
            conn.execute("ANALYZE")
        everything: dict[str, Any] = {"roles": [], "kinds": []}
        cases: dict[str, dict[str, Any]] = {
            "fits": {"budget": 3 << 20},
            "summed": {"budget": 30},
            "filtered": {"budget": 3 << 20, "roles": [2], "kinds": [b""]},
        }
        for name, params in cases.items():
            plan = executed_plan(
                url,
                "conversation_and_tail_page",
                everything | {"conversation": conversation_id, "limit": 5} | params,
            )
            text = json.dumps(plan)
            assert "Sort" not in text, f"{name}: {text}"
            scans = scans_of(plan, "messages")
            assert scans, f"{name}: {text}"
            for scan in scans:
                assert scan["Node Type"] == "Index Scan", f"{name}: {text}"
                assert scan["Index Name"] == "messages_ordering", f"{name}: {text}"
                assert scan["Scan Direction"] == "Backward", f"{name}: {text}"
            # One branch runs: it reads the five rows it returns (filtered:
            # the rows up to the fifth match).
            read = sum(scan["Actual Rows"] * scan["Actual Loops"] for scan in scans)
            assert read == 5, f"{name}: {text}"
            if name == "filtered":
                removed = sum(scan.get("Rows Removed by Filter", 0) for scan in scans)
                assert removed <= 10, f"{name}: {text}"

        async with store.read_once() as once:
            state, page = await once.tail_page(conversation_id, 5, *EVERYTHING, 3 << 20)
        assert [position for position, _ in page.rows] == [10000, 9999, 9998, 9997, 9996]
        assert [bytes(e) for _, e in page.rows] == [b"entry %d" % g for g in range(10000, 9995, -1)]
        assert state.message_count == 10_000


@pytest.mark.postgres
async def test_postgres_snapshot_list_is_a_range_scan_of_its_index(
    make_postgres_database: Callable[[], str],
) -> None:
    url = make_postgres_database()
    async with migrated_postgres(url):
        with psycopg.connect(url, autocommit=True) as conn:
            # 1,000 conversations of 100 snapshots each.
            conn.execute(
                "INSERT INTO conversations (id, message_count, tail_position, layout_version,"
                " version, created_at, updated_at)"
                " SELECT md5(g::text)::uuid, 0, 0, 0, 1, now(), now()"
                " FROM generate_series(1, 1000) AS g"
            )
            conn.execute(
                "INSERT INTO snapshots (conversation_id, id, created_at, item_count, message_ids)"
                " SELECT md5((g / 100)::text)::uuid, gen_random_uuid(),"
                "  timestamptz '2026-01-01' + g * interval '1 second', 0, ''"
                " FROM generate_series(100, 100099) AS g"
            )
            conn.execute("ANALYZE")
            conversation_id = conn.execute("SELECT md5('7')::uuid").fetchone()
        assert conversation_id is not None
        params = {
            "conversation": conversation_id[0],
            "after_at": "2026-01-01T00:12:00Z",
            "after_id": NIL,
            "limit": 11,
        }
        plan = executed_plan(url, "snapshots_after", params)
        text = json.dumps(plan)
        assert "Sort" not in text, text
        (scan,) = scans_of(plan, "snapshots")
        assert scan["Index Name"] == "snapshots_by_creation", text
        assert scan["Actual Rows"] == 11, text
