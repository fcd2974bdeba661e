"""What it costs to send an append's columns to PostgreSQL: psycopg's text
lists, psycopg's binary lists (%b), and the backend's own binary arrays
(storage/postgres.py, `_column`), measured in one run.

    python -m bench.column_arrays [--rounds 2]

Each way runs the same statement, the eight array casts of append_at_tail
(`%(id)s::uuid[]` ...) counted by `cardinality`, on one autocommit
connection under uvloop, for one message of 300 bytes, two of 300 bytes,
one of 100 kB and 100 of 300 bytes; it reports the client's CPU per
execute (time.process_time). Nothing is asserted: the values' round trip
is tested in tests/storage/test_column_arrays.py.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Any

import psycopg
import uvloop

from agent_state.storage import common, postgres
from bench.harness import ADMIN_URL

_ARRAYS = (
    ("id", "uuid"),
    ("role", "smallint"),
    ("kind", "bytea"),
    ("entry", "bytea"),
    ("body_offset", "integer"),
    ("body_length", "integer"),
    ("digest", "bytea"),
    ("created_at", "timestamptz"),
)
_QUERY = "SELECT " + " + ".join(f"cardinality(%({name})s::{kind}[])" for name, kind in _ARRAYS)
_BINARY_QUERY = _QUERY.replace(")s::", ")b::")
_SIZES = ((1, 300), (2, 300), (1, 100_000), (100, 300))


def _columns(count: int, size: int) -> dict[str, list[Any]]:
    return {
        "id": [uuid.uuid4() for _ in range(count)],
        "role": [1] * count,
        "kind": [b"message"] * count,
        "entry": [os.urandom(size) for _ in range(count)],
        "body_offset": [12] * count,
        "body_length": [size - 20] * count,
        "digest": [os.urandom(32) for _ in range(count)],
        "created_at": [common.Micros(1_700_000_000_000_000)] * count,
    }


async def _cpu_ms(
    conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any], count: int, reps: int
) -> float:
    for _ in range(20):
        await conn.execute(query, params)
    started = time.process_time()
    for _ in range(reps):
        row = await (await conn.execute(query, params, binary=True)).fetchone()
    elapsed = time.process_time() - started
    assert row == (8 * count,), row
    return elapsed / reps * 1000


async def _main(rounds: int) -> None:
    conn = await psycopg.AsyncConnection.connect(
        ADMIN_URL, autocommit=True, context=postgres._ADAPTERS
    )
    async with conn:
        print("| columns | round | text lists | psycopg binary (%b) | backend's arrays |")
        print("|---|---:|---:|---:|---:|")
        for count, size in _SIZES:
            columns = _columns(count, size)
            ours = {name: postgres._column(values) for name, values in columns.items()}
            reps = 2000 if count * size < 10_000 else 200
            for round_ in range(1, rounds + 1):
                text = await _cpu_ms(conn, _QUERY, columns, count, reps)
                binary = await _cpu_ms(conn, _BINARY_QUERY, columns, count, reps)
                backend = await _cpu_ms(conn, _QUERY, ours, count, reps)
                print(
                    f"| {count} x {size:,} B | {round_} | {text:.3f} ms | {binary:.3f} ms"
                    f" | {backend:.3f} ms |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    uvloop.run(_main(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
