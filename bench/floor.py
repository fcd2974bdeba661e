"""The floor: the least SQL any correct, durable implementation must issue
for the same work, written directly with psycopg against a minimal table
(one row per message, ordered by an integer position; every write its own
committed transaction, as durable as the service's)."""

from __future__ import annotations

import uuid

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_messages (
    conversation_id uuid        NOT NULL,
    position        bigint      NOT NULL,
    id              uuid        NOT NULL,
    role            smallint    NOT NULL,
    kind            text        NOT NULL,
    body            bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, position)
)
"""

# One statement: the batch goes after the current tail, atomically.
APPEND = """
INSERT INTO floor_messages (conversation_id, position, id, role, kind, body)
SELECT %(conversation)s,
       coalesce((SELECT max(position) FROM floor_messages
                 WHERE conversation_id = %(conversation)s), 0) + batch.n,
       batch.id, batch.role, '', batch.body
FROM unnest(%(ids)s::uuid[], %(roles)s::smallint[], %(bodies)s::bytea[])
     WITH ORDINALITY AS batch(id, role, body, n)
"""

PAGE = """
SELECT position, id, role, kind, body, created_at FROM floor_messages
WHERE conversation_id = %s AND position > %s ORDER BY position LIMIT %s
"""


def setup(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)


def append(conn: psycopg.Connection, conversation: uuid.UUID, bodies: list[bytes]) -> None:
    conn.execute(
        APPEND,
        {
            "conversation": conversation,
            "ids": [uuid.uuid4() for _ in bodies],
            "roles": [1] * len(bodies),
            "bodies": bodies,
        },
    )


def page(
    conn: psycopg.Connection, conversation: uuid.UUID, after: int, size: int
) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = conn.execute(PAGE, (conversation, after, size)).fetchall()
    return rows


async def append_async(
    conn: psycopg.AsyncConnection, conversation: uuid.UUID, bodies: list[bytes]
) -> None:
    await conn.execute(
        APPEND,
        {
            "conversation": conversation,
            "ids": [uuid.uuid4() for _ in bodies],
            "roles": [1] * len(bodies),
            "bodies": bodies,
        },
    )
