"""The storage contract of the companion API (conversations as a whole),
over every backend: creation, records with their details and labels,
ListConversations' pages, and erasure, which leaves no row of the
conversation in any table of the database's catalog. On PostgreSQL, the
plans of ListConversations' queries over 100,000 conversations scan no
table whole."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from agent_state.errors import ConversationNotFound
from agent_state.model import (
    ConversationDetails,
    ConversationKey,
    ConversationRange,
    ConversationRecord,
    Erased,
    Page,
    RememberedCall,
    Renumbering,
    Retention,
    Scope,
    Snapshot,
    StoredState,
)
from agent_state.positions import GAP, MAX_POSITION
from agent_state.storage import sql, transactions
from agent_state.storage.base import Store
from tests.conftest import BACKENDS, factory, location

from .conftest import FreshDatabase, migrated_postgres
from .test_store_contract import T0, Boom, add, message, new, new_conversation, sha256

NIL = UUID(int=0)
LAST = UUID(int=(1 << 128) - 1)

DETAILS = ConversationDetails(
    title="nul \x00, astral \U0001f600, ascii",
    labels={"user": "alice", "team/a.b-c_d": "\x00 value \u00e9", "empty": ""},
    retention=Retention(max_idle=3_600_000_001, max_messages=50),
)


@dataclass(frozen=True)
class Opened:
    """An open, migrated store, and the database under it for direct SQL."""

    store: Store
    database: FreshDatabase


@pytest.fixture(params=BACKENDS)
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
    backend: str = request.param
    where = location(backend, request, "t.db", shared=True)
    database = FreshDatabase(backend, where, factory(backend, where))
    store = database.make()
    await store.open()
    try:
        await store.migrate()
        yield Opened(store, database)
    finally:
        await store.close()


def window() -> int:
    """The start of a stretch of updated_at values no other test uses
    (databases are shared), far in the past."""
    return 946_684_800_000_000 + random.randrange(10**9) * 10**6


async def created(
    store: Store, details: ConversationDetails = DETAILS, updated_at: int = T0
) -> ConversationRecord:
    """A conversation with `details`, created and updated at `updated_at`."""
    async with store.write(uuid4(), create=True) as tx:
        assert tx.created
        state = replace(tx.state, updated_at=updated_at, version=1)
        record = ConversationRecord(state, updated_at, details)
        await tx.save_record(record)
    return record


def every(
    newest_first: bool,
    start: int,
    end: int,
    limit: int = 100,
    labels: dict[str, str] | None = None,
) -> ConversationRange:
    """The conversations updated strictly between `start` and `end`, with
    every one of `labels`."""
    return ConversationRange(
        labels or {}, ConversationKey(start, LAST), ConversationKey(end, NIL), newest_first, limit
    )


async def page_of(store: Store, selection: ConversationRange) -> Page[ConversationRecord]:
    async with store.read() as read:
        return await read.conversation_page(selection)


# --- creation and records ------------------------------------------------------


async def test_write_tells_whether_it_created_the_conversation(store: Store) -> None:
    conversation_id = uuid4()
    async with store.write(conversation_id, create=True) as tx:
        assert tx.created
    async with store.write(conversation_id, create=True) as tx:
        assert not tx.created
    async with store.write(conversation_id) as tx:
        assert not tx.created


async def test_rolled_back_creation_is_created_again(store: Store) -> None:
    conversation_id = uuid4()

    async def doomed() -> None:
        async with store.write(conversation_id, create=True) as tx:
            assert tx.created
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    async with store.write(conversation_id, create=True) as tx:
        assert tx.created


@pytest.mark.parametrize(
    "retention", [None, Retention(0, 0), Retention(1, 0), Retention(0, 7), Retention(2**62, 2**62)]
)
async def test_record_round_trips_exactly(store: Store, retention: Retention | None) -> None:
    record = await created(store, dataclasses.replace(DETAILS, retention=retention))
    async with store.read() as read:
        assert await read.describe(record.state.id) == record
    async with store.write(record.state.id) as tx:
        assert await tx.record() == record


async def test_new_conversation_has_no_details(store: Store) -> None:
    conversation_id = await new_conversation(store)
    async with store.read() as read:
        record = await read.describe(conversation_id)
    assert record.details == ConversationDetails("", {}, None)
    assert record.state.version == 0


async def test_save_record_replaces_labels_whole_and_rolls_back(store: Store) -> None:
    record = await created(store)
    changed = replace(
        record,
        state=replace(record.state, version=2),
        details=ConversationDetails("new", {"other": "x"}, None),
    )
    async with store.write(record.state.id) as tx:
        await tx.save_record(changed)
        assert await tx.record() == changed

    async def doomed() -> None:
        async with store.write(record.state.id) as tx:
            await tx.save_record(record)
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    cleared = replace(changed, details=ConversationDetails("", {}, None))
    async with store.write(record.state.id) as tx:
        assert await tx.record() == changed
        await tx.save_record(cleared)
    async with store.read() as read:
        assert await read.describe(record.state.id) == cleared


async def test_describe_of_an_absent_conversation_is_not_found(store: Store) -> None:
    absent = uuid4()
    async with store.read() as read:
        with pytest.raises(ConversationNotFound) as raised:
            await read.describe(absent)
    assert raised.value.field == "conversation_id"


# --- ListConversations' pages ------------------------------------------------------


async def test_conversation_page_orders_and_bounds(store: Store) -> None:
    start = window()
    # Two share an updated_at: the id breaks the tie.
    times = [start + 10, start + 20, start + 20, start + 30, start + 40]
    records = [await created(store, updated_at=at) for at in times]
    ascending = sorted(records, key=lambda r: (r.state.updated_at, r.state.id))

    oldest = await page_of(store, every(False, start, start + 100))
    assert oldest == Page(ascending, more=False)
    newest = await page_of(store, every(True, start, start + 100))
    assert newest == Page(ascending[::-1], more=False)
    # Both bounds exclude conversations updated right at them.
    inner = await page_of(store, every(False, start + 10, start + 40))
    assert inner.rows == ascending[1:4]
    # Keys between: a page after a conversation's own key.
    first, second = ascending[1], ascending[2]
    after = ConversationKey(first.state.updated_at, first.state.id)
    selection = ConversationRange({}, after, ConversationKey(start + 100, NIL), False, 2)
    assert await page_of(store, selection) == Page([second, ascending[3]], more=True)
    before = ConversationKey(second.state.updated_at, second.state.id)
    selection = ConversationRange({}, ConversationKey(start, LAST), before, True, 10)
    assert await page_of(store, selection) == Page([first, ascending[0]], more=False)
    assert await page_of(store, every(True, start, start + 100, limit=5)) == Page(
        ascending[::-1], more=False
    )
    assert await page_of(store, every(True, start, start + 100, limit=4)) == Page(
        ascending[:0:-1], more=True
    )


@pytest.mark.parametrize("cap", [transactions.DRIVING_LABEL_CAP, 2])
async def test_conversation_page_keeps_those_with_every_label(
    store: Store, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    """Every label must match, whichever way the page is read: driven by
    the rarest label, or (a cap of 2: every label is common) walking the
    order."""
    monkeypatch.setattr(transactions, "DRIVING_LABEL_CAP", cap)
    start = window()
    labelled = [
        {"app": "chat", "user": "alice"},
        {"app": "chat", "user": "bob"},
        {"app": "chat", "user": "alice", "topic": "\x00"},
        {"app": "mail", "user": "alice"},
        {},
    ]
    records = [
        await created(store, ConversationDetails("", labels, None), start + index + 1)
        for index, labels in enumerate(labelled)
    ]

    async def listed(newest_first: bool = False, **labels: str) -> list[ConversationRecord]:
        found = await page_of(store, every(newest_first, start, start + 100, labels=labels))
        assert not found.more
        return found.rows

    assert await listed(app="chat", user="alice") == [records[0], records[2]]
    assert await listed(True, app="chat", user="alice") == [records[2], records[0]]
    assert await listed(user="alice") == [records[0], records[2], records[3]]
    assert await listed(topic="\x00") == [records[2]]
    assert await listed(topic="") == []
    assert await listed(user="carol") == []
    assert await listed(app="chat", user="alice", topic="\x00", extra="x") == []
    assert await listed() == records
    limited = every(True, start, start + 100, 1, {"app": "chat"})
    assert await page_of(store, limited) == Page([records[2]], more=True)


# --- erasure ---------------------------------------------------------------------


def _id_literal(database: FreshDatabase, conversation_id: UUID) -> str:
    if database.dialect == "sqlite":
        return f"x'{conversation_id.hex}'"
    return f"'{conversation_id}'::uuid"


def _tables(database: FreshDatabase) -> dict[str, set[str]]:
    """Every table of the database's catalog, with its columns."""
    if database.dialect == "sqlite":
        names = database.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return {
            name: {
                column
                for (column,) in database.execute(f"SELECT name FROM pragma_table_info('{name}')")
            }
            for (name,) in names
        }
    rows = database.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns AS c"
        " JOIN information_schema.tables AS t USING (table_schema, table_name)"
        " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
    )
    tables: dict[str, set[str]] = {}
    for table, column in rows:
        tables.setdefault(table, set()).add(column)
    return tables


UNRELATED = {
    "schema_migrations",
    # The checkpoint store's, by thread (DeleteThread erases them).
    "checkpoint_threads",
    "checkpoints",
    "checkpoint_values",
    "checkpoint_blobs",
    "checkpoint_writes",
}
"""Tables that hold nothing of any conversation."""


def rows_of(database: FreshDatabase, conversation_id: UUID) -> dict[str, int]:
    """How many rows of each table of the catalog belong to the
    conversation. A table that cannot tell (no conversation_id column) must
    be one that holds nothing of conversations."""
    literal = _id_literal(database, conversation_id)
    counts: dict[str, int] = {}
    for table, columns in sorted(_tables(database).items()):
        if table == "conversations":
            column = "id"
        elif "conversation_id" in columns:
            column = "conversation_id"
        else:
            assert table in UNRELATED, f"{table}: how does DeleteConversation erase its rows?"
            continue
        ((count,),) = database.execute(f"SELECT count(*) FROM {table} WHERE {column} = {literal}")
        counts[table] = count
    return counts


async def _filled(opened: Opened, body: bytes) -> tuple[UUID, int, int]:
    """A conversation with a row in every table a conversation has rows in:
    placed and detached messages, a renumbering, snapshots with frozen
    copies and bodies, idempotency keys (its own and one of a subject it
    owns), labels, and the state of its scope. Returns its id, and how many
    messages and snapshots it has."""
    store = opened.store
    conversation_id = (await created(store)).state.id
    placed = [message(body), message(body), message(b"third")]
    detached = message(b"detached")
    await add(store, conversation_id, [*placed, detached], [GAP, 2 * GAP, 3 * GAP, None])
    async with store.write(conversation_id) as tx:
        await tx.renumber(Renumbering(1, 0, None, (GAP,), (GAP // 2,)))
        for ids in ([placed[0].id, detached.id], [placed[1].id]):
            snapshot = Snapshot(uuid4(), conversation_id, T0, len(ids))
            assert await tx.create_snapshot(snapshot, ids) == len(ids)
        await tx.remember("key", RememberedCall(sha256(b"request"), b"response", T0))
        owned = RememberedCall(sha256(b"request"), b"response", T0, owner=conversation_id)
        assert await tx.keep_call(f"subject/{conversation_id}", "key", owned, T0 - 1)
        scope = Scope(f"conversation/{conversation_id}", conversation_id)
        assert await tx.hold_conversations([conversation_id])
        await tx.lock_states([scope])
        await tx.save_states([(scope, StoredState(b"{}", 1))])
    return conversation_id, 4, 2


async def test_erase_leaves_no_row_of_the_conversation_in_any_table(opened: Opened) -> None:
    store, database = opened.store, opened.database
    victim, messages, snapshots = await _filled(opened, b"shared body")
    # Another conversation with the same bodies (snapshot_bodies are keyed
    # by conversation and SHA-256), and state of no conversation.
    kept, _, _ = await _filled(opened, b"shared body")
    app_scope = f"app/{uuid4()}"
    value = "'\\x7b7d'::bytea" if database.dialect == "postgres" else "x'7b7d'"
    database.execute(
        "INSERT INTO scoped_state (scope, conversation_id, values_json, version)"
        f" VALUES ('{app_scope}', NULL, {value}, 3)"
    )
    before = rows_of(database, victim)
    assert {table for table, count in before.items() if count} >= {
        "conversations",
        "messages",
        "conversation_renumberings",
        "snapshots",
        "snapshot_messages",
        "snapshot_bodies",
        "idempotency_keys",
        "call_keys",
        "conversation_labels",
        "scoped_state",
    }
    kept_before = rows_of(database, kept)

    async with store.write(victim) as tx:
        assert await tx.erase() == Erased(messages=messages, snapshots=snapshots)

    assert rows_of(database, victim) == dict.fromkeys(before, 0)
    assert rows_of(database, kept) == kept_before
    assert database.execute(f"SELECT version FROM scoped_state WHERE scope = '{app_scope}'") == [
        (3,)
    ]
    with pytest.raises(ConversationNotFound):
        async with store.write(victim):
            pass


async def test_rolled_back_erasure_keeps_everything(opened: Opened) -> None:
    store, database = opened.store, opened.database
    conversation_id, _, _ = await _filled(opened, b"body")
    before = rows_of(database, conversation_id)

    async def doomed() -> None:
        async with store.write(conversation_id) as tx:
            await tx.erase()
            raise Boom

    with pytest.raises(Boom):
        await doomed()
    assert rows_of(database, conversation_id) == before


async def test_an_erased_conversation_starts_again_empty(store: Store) -> None:
    record = await created(store)
    await add(store, record.state.id, [message()], [GAP])
    async with store.write(record.state.id) as tx:
        assert await tx.erase() == Erased(messages=1, snapshots=0)
    again = await store.append_at_tail(
        record.state.id, [new(message())], updated_at=T0 + 5, gap=GAP, max_position=MAX_POSITION
    )
    assert again is not None
    assert (again.version, again.message_count, again.tail_position) == (1, 1, GAP)
    async with store.read() as read:
        described = await read.describe(record.state.id)
    assert described.details == ConversationDetails("", {}, None)
    assert described.created_at == T0 + 5


async def test_erasing_an_empty_conversation(store: Store) -> None:
    record = await created(store)
    async with store.write(record.state.id) as tx:
        assert await tx.erase() == Erased(messages=0, snapshots=0)


# --- PostgreSQL: plans over 100,000 conversations ----------------------------------


CONVERSATIONS = 100_000
USERS = 1000

_QUERIES = sql.load("postgres")


def _explain(url: str, query: str, params: dict[str, Any]) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(f"EXPLAIN {_QUERIES[query]}", params).fetchall()
    return "\n".join(row[0] for row in rows)


@pytest.mark.postgres
async def test_postgres_list_conversations_scans_no_table_whole(
    make_postgres_database: Callable[[], str],
) -> None:
    url = make_postgres_database()
    async with migrated_postgres(url) as store:
        with psycopg.connect(url, autocommit=True) as conn:
            # One statement a table: 100,000 conversations a millisecond
            # apart, a user label each (100 conversations a user), an app
            # label on all, and a message in every tenth.
            conn.execute(
                "INSERT INTO conversations (id, message_count, tail_position, layout_version,"
                " version, created_at, updated_at)"
                " SELECT md5(g::text)::uuid, 0, 0, 0, 1, now(),"
                "  timestamptz '2026-01-01' + g * interval '1 millisecond'"
                " FROM generate_series(1, %s) AS g",
                (CONVERSATIONS,),
            )
            conn.execute(
                "INSERT INTO conversation_labels (conversation_id, key, value)"
                " SELECT md5(g::text)::uuid, 'user', convert_to('user-' || g %% %s, 'UTF8')"
                " FROM generate_series(1, %s) AS g",
                (USERS, CONVERSATIONS),
            )
            conn.execute(
                "INSERT INTO conversation_labels (conversation_id, key, value)"
                " SELECT md5(g::text)::uuid, 'app', convert_to('chat', 'UTF8')"
                " FROM generate_series(1, %s) AS g",
                (CONVERSATIONS,),
            )
            conn.execute(
                "INSERT INTO messages (conversation_id, id, position, role, kind, entry,"
                " body_offset, body_length, body_sha256, created_at)"
                " SELECT md5(g::text)::uuid, md5('m' || g)::uuid, 1, 1, '', '\\x00', 0, 1,"
                "  '\\x00', now() FROM generate_series(1, %s, 10) AS g",
                (CONVERSATIONS,),
            )
            conn.execute("ANALYZE")

        everything = {
            "after_at": datetime(1, 1, 1, tzinfo=UTC),
            "after_id": NIL,
            "before_at": datetime(9999, 12, 31, tzinfo=UTC),
            "before_id": LAST,
            "limit": 101,
        }
        bounded = everything | {"after_at": datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)}
        user = {"label_keys": ["user"], "label_values": [b"user-42"]}
        both = {"label_keys": ["app", "user"], "label_values": [b"chat", b"user-42"]}
        none: dict[str, list[Any]] = {"label_keys": [], "label_values": []}
        driver = {"driver_key": "user", "driver_value": b"user-42"}
        plans = {
            f"{query} {name}": _explain(url, query, params)
            for query in ("conversations_newest_first", "conversations_oldest_first")
            for name, params in {
                "unfiltered": everything | none,
                "bounded": bounded | none,
                "common label": everything | {"label_keys": ["app"], "label_values": [b"chat"]},
            }.items()
        } | {
            f"conversations_by_label {name} {newest}": _explain(
                url, "conversations_by_label", params | {"newest_first": newest}
            )
            for newest in (True, False)
            for name, params in {
                "one label": everything | user | driver,
                "two": everything | both | driver,
            }.items()
        }
        plans["label_matches"] = _explain(url, "label_matches", both | {"cap": 5000})
        for name, plan in plans.items():
            assert "Seq Scan" not in plan, f"{name}:\n{plan}"
            assert "messages" not in plan, f"{name}:\n{plan}"
        for name, plan in plans.items():
            if name.startswith("conversations_") and "by_label" not in name:
                assert "conversations_by_update" in plan, f"{name}:\n{plan}"

        # And the pages are right at that size.
        async with store.read() as read:
            page = await read.conversation_page(
                ConversationRange(
                    {"user": "user-42", "app": "chat"},
                    ConversationKey(-(10**15), LAST),
                    ConversationKey(10**16, NIL),
                    True,
                    1000,
                )
            )
            common = await read.conversation_page(
                ConversationRange(
                    {"app": "chat"},
                    ConversationKey(-(10**15), LAST),
                    ConversationKey(10**16, NIL),
                    False,
                    10,
                )
            )
        assert len(page.rows) == CONVERSATIONS // USERS
        assert not page.more
        updated = [record.state.updated_at for record in page.rows]
        assert updated == sorted(updated, reverse=True)
        assert all(record.details.labels["user"] == "user-42" for record in page.rows)
        assert len(common.rows) == 10
        assert common.more
