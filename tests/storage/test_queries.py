"""The named-query files (storage/sql/) and the dialect-free helpers
(storage/common.py): no database needed."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from uuid import uuid4

import pytest

from agent_state.model import Page, Renumbering
from agent_state.storage import common, postgres, sql, sqlite, transactions

DIALECTS = {"postgres": postgres, "sqlite": sqlite}


def test_both_dialects_name_the_same_queries_in_the_same_order() -> None:
    pg, lite = sql.load("postgres"), sql.load("sqlite")
    assert pg.shared == lite.shared
    assert set(pg.own).isdisjoint(lite.shared)
    assert set(lite.own).isdisjoint(pg.shared)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_query_is_used_by_its_backend(dialect: str) -> None:
    # The operations (transactions.py) name the queries both dialects
    # share; a backend names its own.
    source = inspect.getsource(DIALECTS[dialect]) + inspect.getsource(transactions)
    queries = sql.load(dialect)
    unused = [name for name in queries if f'"{name}"' not in source]
    assert unused == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_query_texts_carry_no_header_or_description(dialect: str) -> None:
    for name, text in sql.load(dialect).items():
        assert text == text.strip()
        assert not text.startswith("--"), name
        assert "-- name:" not in text, name


def test_parse_splits_shared_and_own_queries() -> None:
    text = """-- intro, belongs to no query

-- name: first
-- what it does
SELECT 1
-- a comment inside stays
FROM t

-- Section heading ---
-- name: second
SELECT 2

-- only in this dialect

-- name: third
SELECT 3
"""
    queries = sql.parse("test", text)
    assert queries.shared == ("first", "second")
    assert queries.own == ("third",)
    assert queries["first"] == "SELECT 1\n-- a comment inside stays\nFROM t"
    assert queries["second"] == "SELECT 2"
    assert dict(queries) == {
        "first": "SELECT 1\n-- a comment inside stays\nFROM t",
        "second": "SELECT 2",
        "third": "SELECT 3",
    }


@pytest.mark.parametrize(
    "text",
    [
        "-- name: twice\nSELECT 1\n-- name: twice\nSELECT 2\n",
        "-- name: twice\nSELECT 1\n-- only in this dialect\n-- name: twice\nSELECT 2\n",
        "-- name: empty\n-- only a description\n-- name: next\nSELECT 1\n",
    ],
)
def test_parse_refuses_repeated_names_and_empty_queries(text: str) -> None:
    with pytest.raises(ValueError, match=r"test\.sql"):
        sql.parse("test", text)


def _rows(*sizes: int) -> list[tuple[int, bytes]]:
    """One (key, encoding) row per size: keys 1, 2, ..."""
    return [(key, bytes([key]) * size) for key, size in enumerate(sizes, start=1)]


@pytest.mark.parametrize(
    ("sizes", "limit", "budget", "taken", "more"),
    [
        ([], 10, 100, 0, False),
        ([10, 10, 10], 10, 100, 3, False),
        ([10, 10, 10], 2, 100, 2, True),
        ([10, 10, 10], 3, 100, 3, False),
        # A row is taken while the rows before it add up to less than the budget.
        ([10, 10, 10], 10, 20, 2, True),
        ([10, 10, 10], 10, 21, 3, False),
        # The first row always comes back, however large.
        ([500, 10], 10, 100, 1, True),
        ([500], 10, 100, 1, False),
    ],
)
def test_budgeted_page(sizes: list[int], limit: int, budget: int, taken: int, more: bool) -> None:
    rows = _rows(*sizes)
    page = common.budgeted_page(iter(rows), limit, budget)
    assert page == Page(rows[:taken], more=more)


def test_budgeted_page_stops_at_a_row_the_query_left_out() -> None:
    rows: list[tuple[int, bytes | None]] = [(1, b"entry"), (2, None)]
    assert common.budgeted_page(rows, 10, 1 << 20) == Page([(1, b"entry")], more=True)


def test_budgeted_page_reads_no_row_past_the_one_that_ends_the_page() -> None:
    read: list[int] = []

    def cursor() -> Iterator[tuple[int, bytes]]:
        for row in _rows(10, 10, 10, 10):
            read.append(row[0])
            yield row

    common.budgeted_page(cursor(), 2, 100)
    assert read == [1, 2, 3]


def test_parked_moves_park_at_the_negated_new_positions() -> None:
    change = Renumbering(4, 0, 100, (10, 20, 30), (25, 50, 75))
    # Negative, so a parked row collides with no row's position.
    assert common.parked_moves(change) == [(10, -25), (20, -50), (30, -75)]


def test_packing_round_trips() -> None:
    positions = (1, 1 << 40, (1 << 62) - 1)
    assert common.unpack_positions(common.pack_positions(positions)) == positions
    ids = [uuid4() for _ in range(3)]
    packed = common.pack_ids(ids)
    assert len(packed) == 3 * common.ID_SIZE
    assert common.unpack_ids(packed) == ids


def test_id_slice_is_one_based_and_in_bytes() -> None:
    ids = [uuid4() for _ in range(5)]
    packed = common.pack_ids(ids)
    bounds = common.id_slice(after=1, count=2)
    start, length = bounds["start"], bounds["length"]
    assert common.unpack_ids(packed[start - 1 : start - 1 + length]) == ids[2:4]
    assert common.id_slice(after=-1, count=1) == {"start": 1, "length": 16}
