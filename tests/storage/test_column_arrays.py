"""PostgreSQL receives a column of values as one binary array built by the
backend (postgres._column), not as psycopg's text array: every element
must arrive exactly as it was, whatever its type, with its NULLs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from agent_state.storage import common, postgres

_TIME = 1_733_500_000_123_456  # microseconds since the Unix epoch

COLUMNS: list[tuple[str, Sequence[Any], Callable[[Any], Any]]] = [
    ("bytea", [b"", b"\x00\xff" * 1000, None, bytes(range(256))], lambda v: v),
    ("uuid", [uuid4(), None, UUID(int=0), UUID(int=2**128 - 1)], lambda v: v),
    ("bigint", [0, -1, 2**63 - 1, -(2**63), None], lambda v: v),
    ("smallint", [1, 2, 32767, None], lambda v: v),
    ("integer", [0, 2**31 - 1, None], lambda v: v),
    ("boolean", [True, False, None], lambda v: v),
    ("text", ["", "plain", "ünïcødé ✓", None], lambda v: v),
    # Read back as microseconds (the backend's loader).
    ("timestamptz", [common.Micros(_TIME), common.Micros(0), None], lambda v: v.value),
]


@pytest.mark.postgres
@pytest.mark.parametrize(("sql_type", "values", "expected"), COLUMNS, ids=[c[0] for c in COLUMNS])
def test_a_column_arrives_element_for_element(
    make_postgres_database: Callable[[], str],
    sql_type: str,
    values: Sequence[Any],
    expected: Callable[[Any], Any],
) -> None:
    column = postgres._column(values)
    assert isinstance(column, postgres._Column)
    with psycopg.connect(make_postgres_database(), context=postgres._ADAPTERS) as conn:
        row = conn.execute(
            f"SELECT %(v)s::{sql_type}[], cardinality(%(v)s::{sql_type}[])",
            {"v": column},
            binary=True,
        ).fetchone()
    assert row is not None
    assert row[0] == [None if v is None else expected(v) for v in values]
    assert row[1] == len(values)


@pytest.mark.postgres
@pytest.mark.parametrize("values", [[], [None, None]], ids=["empty", "all-null"])
def test_a_column_without_a_typed_value_goes_as_psycopg_adapts_a_list(
    make_postgres_database: Callable[[], str], values: list[Any]
) -> None:
    column = postgres._column(values)
    assert column is values
    with psycopg.connect(make_postgres_database(), context=postgres._ADAPTERS) as conn:
        row = conn.execute("SELECT %(v)s::uuid[]", {"v": column}).fetchone()
    assert row == (values,)


def test_a_bytea_column_refuses_a_value_that_is_not_bytes() -> None:
    # bytes(3) would be three zero bytes: the dumper must not make that up.
    column = postgres._column([b"ok", 3])
    dumper = postgres._ColumnDumper(type(column))
    with pytest.raises(TypeError, match="bytea column holds int"):
        dumper.dump(column)
