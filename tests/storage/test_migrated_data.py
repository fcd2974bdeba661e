"""Migrations carry existing data over: a database written by an older
release, with its rows put in by hand in that release's schema, reads
back the same through today's store after migrate()."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from agent_state.model import (
    ConversationDetails,
    ConversationKey,
    ConversationRange,
    Erased,
    Item,
    RememberedCall,
    Snapshot,
)
from agent_state.positions import GAP
from agent_state.storage import migrations

from .conftest import FreshDatabase
from .test_store_contract import BIG, T0, add, entry, message, new, new_conversation

FRAMED = 3
"""The migration that moved the ordering into messages, with each entry framed."""

COMPANION = 4
"""The migration that added the companion API's schema."""

KEEP_A_KEY = (
    "INSERT INTO idempotency_keys (conversation_id, key, fingerprint, response, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
"""An idempotency key as releases before migration 6 kept it."""


_load = migrations.load


def _before(version: int) -> Callable[[str], list[migrations.Migration]]:
    """migrations.load as a release before `version` had it."""

    def load(dialect: str) -> list[migrations.Migration]:
        return [m for m in _load(dialect) if m.version < version]

    return load


def _since(version: int, dialect: str) -> list[int]:
    """The versions a database just before `version` still lacks."""
    return [m.version for m in _load(dialect) if m.version >= version]


def _run(
    database: FreshDatabase, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[tuple[Any, ...]]:
    """Run `statements` ("?" placeholders) on the database directly; the
    rows of the last."""
    rows: list[tuple[Any, ...]] = []
    if database.dialect == "sqlite":
        with sqlite3.connect(database.location) as conn:
            for query, params in statements:
                values = [p.bytes if isinstance(p, UUID) else p for p in params]
                rows = conn.execute(query, values).fetchall()
        return rows
    with psycopg.connect(database.location, autocommit=True) as pg:
        for query, params in statements:
            result = pg.execute(query.replace("?", "%s").encode(), params)
            rows = result.fetchall() if result.description else []
    return rows


def _time(database: FreshDatabase, micros: int) -> Any:
    if database.dialect == "sqlite":
        return micros
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


async def test_messages_ordering_and_detached_messages_survive_the_framing_migration(
    new_database: FreshDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation_id = uuid4()
    placed = [message(b"first"), message(b"\x00second\xff"), message(b"")]
    detached = message(b"detached")
    positions = [1024, 2048, 3072]
    store = new_database.make()
    await store.open()
    try:
        with monkeypatch.context() as older:
            older.setattr(migrations, "load", _before(FRAMED))
            assert await store.migrate() == list(range(1, FRAMED))

        updated_at = T0 + 99
        rows: list[tuple[str, Sequence[Any]]] = [
            (
                "INSERT INTO conversations (id, message_count, tail_position, layout_version,"
                " version, created_at, updated_at) VALUES (?, 3, 3072, 0, 5, ?, ?)",
                (conversation_id, _time(new_database, T0), _time(new_database, updated_at)),
            )
        ]
        for m in [*placed, detached]:
            framed = new(m)
            rows.append(
                (
                    "INSERT INTO messages (conversation_id, id, role, kind, body, body_sha256,"
                    " created_at, wire_head, wire_tail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation_id,
                        m.id,
                        m.role,
                        m.kind.encode(),
                        m.body,
                        framed.body_sha256,
                        _time(new_database, m.created_at),
                        framed.wire_head,
                        framed.wire_tail,
                    ),
                )
            )
        # In reverse, so that the copy's order comes from positions alone.
        for m, position in reversed(list(zip(placed, positions, strict=True))):
            rows.append(
                (
                    "INSERT INTO conversation_items (conversation_id, position, message_id)"
                    " VALUES (?, ?, ?)",
                    (conversation_id, position, m.id),
                )
            )
        _run(new_database, rows)

        assert await store.migrate() == _since(FRAMED, new_database.dialect)

        async with store.read() as read:
            state, page = await read.message_page(
                conversation_id, 0, 10, frozenset(), frozenset(), BIG
            )
        assert (state.message_count, state.version, state.updated_at) == (3, 5, updated_at)
        assert page.rows == [(p, entry(m)) for p, m in zip(positions, placed, strict=True)]
        assert not page.more

        snapshot = Snapshot(uuid4(), conversation_id, T0 + 100, 3)
        async with store.write(conversation_id) as tx:
            assert await tx.lookup([detached.id, placed[1].id]) == {
                detached.id: None,
                placed[1].id: 2048,
            }
            # The body and the frame around it are cut back out of each
            # migrated entry when a snapshot freezes it.
            ids = [detached.id, placed[2].id, placed[1].id]
            assert await tx.create_snapshot(snapshot, ids) == 3
        async with store.read() as read:
            frozen = await read.snapshot_message_page(snapshot, -1, 10, BIG)
        assert frozen.rows == [(0, entry(detached)), (1, entry(placed[2])), (2, entry(placed[1]))]
        bodies = "SELECT sha256, body FROM snapshot_bodies WHERE conversation_id = ?"
        assert sorted(_run(new_database, [(bodies, [conversation_id])])) == sorted(
            (new(m).body_sha256, m.body) for m in [detached, placed[2], placed[1]]
        )

        # An append after the migration lands after the migrated tail, and
        # the largest entry follows it.
        later = message(b"later" * 50)
        async with store.write(conversation_id) as tx:
            grown = replace(tx.state, message_count=4, tail_position=4096, version=6)
            await tx.append([new(later)], [Item(4096, later.id)], grown)
        async with store.read() as read:
            _, page = await read.message_page(
                conversation_id, 3072, 10, frozenset(), frozenset(), BIG
            )
        assert page.rows == [(4096, entry(later))]
    finally:
        await store.close()

    if new_database.dialect == "postgres":
        largest = max(len(entry(m)) for m in [*placed, detached, later])
        assert new_database.execute(
            f"SELECT largest_entry FROM conversations WHERE id = '{conversation_id}'"
        ) == [(largest,)]


async def test_conversations_keep_their_version_and_data_through_the_companion_migration(
    new_database: FreshDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at migration 3, written by that release's operations
    (their queries are today's for its tables), gains the companion API's
    schema: every conversation keeps its version, messages and snapshots,
    and gets an empty title, no labels and the server's retention."""
    placed = [message(b"one"), message(b"\x00two\xff")]
    detached = message(b"detached")
    store = new_database.make()
    await store.open()
    try:
        with monkeypatch.context() as older:
            older.setattr(migrations, "load", _before(COMPANION))
            assert await store.migrate() == list(range(1, COMPANION))
            conversation_id = await new_conversation(store)
            await add(store, conversation_id, [*placed, detached], [GAP, 2 * GAP, None])
            snapshot = Snapshot(uuid4(), conversation_id, T0 + 8, 2)
            async with store.write(conversation_id) as tx:
                await tx.save(replace(tx.state, updated_at=T0 + 7, version=5))
                assert await tx.create_snapshot(snapshot, [detached.id, placed[0].id]) == 2
            # A key as that release kept it (today's remember names a later column).
            key_row = [conversation_id, "key", b"f", b"response", _time(new_database, T0)]
            _run(new_database, [(KEEP_A_KEY, key_row)])
            async with store.read() as read:
                before = await read.conversation(conversation_id)

        assert await store.migrate() == _since(COMPANION, new_database.dialect)

        async with store.read() as read:
            record = await read.describe(conversation_id)
            _, page = await read.message_page(conversation_id, 0, 10, frozenset(), frozenset(), BIG)
            frozen = await read.snapshot_message_page(snapshot, -1, 10, BIG)
            listed = await read.conversation_page(
                ConversationRange(
                    {},
                    ConversationKey(T0 + 6, UUID(int=(1 << 128) - 1)),
                    ConversationKey(T0 + 8, UUID(int=0)),
                    True,
                    10,
                )
            )
        assert record.state == before
        assert record.state.version == 5
        assert record.details == ConversationDetails("", {}, None)
        assert page.rows == [(GAP, entry(placed[0])), (2 * GAP, entry(placed[1]))]
        assert frozen.rows == [(0, entry(detached)), (1, entry(placed[0]))]
        assert listed.rows == [record]

        # The new columns take writes; erasure takes the old rows too.
        labelled = replace(record, details=ConversationDetails("t", {"k": "v"}, None))
        async with store.write(conversation_id) as tx:
            assert await tx.recall("key") == RememberedCall(b"f", b"response", T0)
            await tx.save_record(labelled)
        async with store.read() as read:
            assert await read.describe(conversation_id) == labelled
        async with store.write(conversation_id) as tx:
            assert await tx.erase() == Erased(messages=3, snapshots=1)
    finally:
        await store.close()
