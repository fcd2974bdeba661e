"""PostgreSQL looks messages up by id with a probe of their primary key
(conversation, id) per id, also in a conversation its statistics do not
know yet.

That is the common case of a small deployment: when ANALYZE last ran,
every conversation then in the database made it into the statistics'
list of most common values, so PostgreSQL estimates that a conversation
not on that list has no messages. With its id as a constant, it then
found scanning the whole conversation in messages_ordering (which
includes id) as cheap as probing the key, and picked the scan, once per
id: CreateSnapshot of 2,000 ids took seconds instead of milliseconds.
The queries name the conversation through a scalar subquery, which
PostgreSQL estimates as an average conversation instead. SQLite, which
keeps no statistics here, searches its key for the same queries.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from agent_state.storage import sql
from agent_state.storage.sqlite import SqliteStore
from tests.conftest import migrated

from .conftest import executed_plan, migrated_postgres, plan_nodes

KNOWN_CONVERSATIONS = 20
KNOWN_LENGTH = 300
NEW_LENGTH = 1_500

_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, message_count, tail_position, layout_version, version,"
    " created_at, updated_at, largest_entry)"
    " VALUES (%(id)s, %(length)s, %(length)s, 0, 1, now(), now(), 250)"
)
_INSERT_MESSAGES = (
    "INSERT INTO messages (conversation_id, id, position, role, kind, entry, body_offset,"
    " body_length, body_sha256, created_at)"
    " SELECT %(id)s, gen_random_uuid(), g, 1, '', convert_to(repeat('x', 250), 'UTF8'),"
    "  10, 200, sha256(convert_to(g::text, 'UTF8')), now()"
    " FROM generate_series(1, %(length)s) AS g"
)


def _add_conversation(conn: psycopg.Connection[Any], length: int) -> UUID:
    conversation = uuid4()
    params = {"id": conversation, "length": length}
    conn.execute(_INSERT_CONVERSATION, params)
    conn.execute(_INSERT_MESSAGES, params)
    return conversation


def _estimated_rows(conn: psycopg.Connection[Any], conversation: UUID) -> float:
    row = conn.execute(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM messages WHERE conversation_id = %s",
        (conversation,),
    ).fetchone()
    assert row is not None
    rows: float = row[0][0]["Plan"]["Plan Rows"]
    return rows


PROBES = (
    "lookup",
    "count_existing",
    "entry_sizes",
    "entries_of",
    "freeze_messages",
    "unplace",
    "delete_messages",
    "place",
    "copy_messages",
)
"""Every named query that finds messages by id."""


def _probes(conversation: UUID, ids: list[UUID]) -> dict[str, dict[str, Any]]:
    """The PROBES with parameters that name `ids` of `conversation` (50 of
    them where the call names a few)."""
    packed = b"".join(message_id.bytes for message_id in ids)
    some = ids[500:550]
    return {
        "lookup": {"conversation": conversation, "packed": b"".join(i.bytes for i in some)},
        "count_existing": {"conversation": conversation, "packed": packed},
        "entry_sizes": {"conversation": conversation, "packed": packed},
        "entries_of": {"conversation": conversation, "packed": packed},
        "freeze_messages": {"conversation": conversation, "packed": packed},
        "unplace": {"conversation": conversation, "id": some},
        "delete_messages": {"conversation": conversation, "id": some},
        "place": {
            "conversation": conversation,
            "position": [-1 - index for index in range(len(some))],
            "placed": some,
        },
        "copy_messages": {
            "conversation": conversation,
            "source": conversation,
            "original": some,
            "id": [uuid4() for _ in some],
            "position": [10**12 + index for index in range(len(some))],
            "head": [b""] * len(some),
            "tail": [b""] * len(some),
        },
    }


@pytest.mark.postgres
async def test_lookups_by_id_probe_the_key_in_a_conversation_the_statistics_do_not_know(
    make_postgres_database: Callable[[], str],
) -> None:
    url = make_postgres_database()
    async with migrated_postgres(url):
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(KNOWN_CONVERSATIONS):
                _add_conversation(conn, KNOWN_LENGTH)
            conn.execute("ANALYZE")
            new = _add_conversation(conn, NEW_LENGTH)
            # The situation under test: the statistics take the new
            # conversation for (next to) empty.
            assert _estimated_rows(conn, new) <= 2
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM messages WHERE conversation_id = %s ORDER BY position", (new,)
                )
            ]
    assert len(ids) == NEW_LENGTH
    probes = _probes(new, ids)
    assert set(probes) == set(PROBES)
    for name, params in probes.items():
        plan = executed_plan(url, name, params)
        text = json.dumps(plan)
        indexes = {
            node["Index Name"]
            for node in plan_nodes(plan)
            if node.get("Relation Name") == "messages" and "Index Name" in node
        }
        assert indexes == {"messages_pkey"}, f"{name}: {text}"
        # The key finds each id: no row of the conversation is read and
        # passed over.
        for node in plan_nodes(plan):
            if node.get("Relation Name") == "messages":
                assert node.get("Rows Removed by Filter", 0) == 0, f"{name}: {text}"


async def test_sqlite_lookups_by_id_search_the_key(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    async with migrated(SqliteStore(str(path), busy_timeout_ms=1000)):
        pass
    queries = sql.load("sqlite")
    with sqlite3.connect(path) as db:
        for name in PROBES:
            query = queries[name]
            params = dict.fromkeys(re.findall(r":(\w+)", query))
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {query}", params)]
            of_messages = [step for step in plan if re.search(r"\bmessages\b| m ", step)]
            assert of_messages, f"{name}: {plan}"
            for step in of_messages:
                assert "(conversation_id=? AND id=?)" in step, f"{name}: {plan}"
