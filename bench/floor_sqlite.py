"""The SQLite floor: the same work as the SQL floor (bench/floor.py), done
with the `sqlite3` module directly on a file of its own, as durable as the
service's SQLite backend (WAL, ``synchronous=FULL``): one row per message
keyed by conversation and position, every append its own committed
transaction, keyset pages for reads."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_messages (
    conversation_id BLOB    NOT NULL,
    position        INTEGER NOT NULL,
    id              BLOB    NOT NULL,
    role            INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (conversation_id, position)
) WITHOUT ROWID
"""

TAIL = "SELECT coalesce(max(position), 0) FROM floor_messages WHERE conversation_id = ?"

INSERT = """
INSERT INTO floor_messages (conversation_id, position, id, role, kind, body)
VALUES (?, ?, ?, 1, '', ?)
"""

PAGE = """
SELECT position, id, role, kind, body, created_at FROM floor_messages
WHERE conversation_id = ? AND position > ? ORDER BY position LIMIT ?
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the floor's own file, its table created; transactions
    are explicit (autocommit mode, BEGIN IMMEDIATE around each append)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(SCHEMA)
    return conn


def append(conn: sqlite3.Connection, conversation: uuid.UUID, bodies: list[bytes]) -> None:
    """The batch after the current tail, in one committed transaction."""
    key = conversation.bytes
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(TAIL, (key,)).fetchone()
        tail: int = row[0]
        conn.executemany(
            INSERT,
            [(key, tail + n, uuid.uuid4().bytes, body) for n, body in enumerate(bodies, 1)],
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def page(
    conn: sqlite3.Connection, conversation: uuid.UUID, after: int, size: int
) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = conn.execute(
        PAGE, (conversation.bytes, after, size)
    ).fetchall()
    return rows
