"""Storage backends behind one interface; `make_store` picks one from a
database URL.

- base.py: the interface (Store, ReadTransaction, WriteTransaction).
- sql/: every query, by name, in one file per dialect (postgres.sql,
  sqlite.sql) holding the same names in the same order.
- transactions.py: every operation, written once (Read, Write, and
  StoreOperations, the shared half of the Store-level ones), over the small
  `Executor` each backend provides.
- common.py: dialect-free helpers without I/O: the time parameter marker,
  rows to values, pages under a byte budget, the steps of a renumbering,
  not-found errors, the snapshot ownership check.
- migrations/: the numbered schema files per dialect and their runner.
- postgres.py, sqlite.py: only what is the dialect's own: connections and
  pools or threads, transactions, cancellation, the executor (how a
  statement runs, value adaptation) and the translation of driver errors;
  append_at_tail and forget_calls run there too (see their comments).
"""

from __future__ import annotations

from .base import ReadTransaction, Store, WriteTransaction

__all__ = [
    "ReadTransaction",
    "Store",
    "UnsupportedDatabaseUrl",
    "WriteTransaction",
    "database_location",
    "make_store",
]


class UnsupportedDatabaseUrl(ValueError):
    pass


def database_location(database_url: str | None, sqlite_path: str) -> tuple[str, str]:
    """Which backend `database_url` names, and where: ("postgres", the URL)
    or ("sqlite", a file path); raises UnsupportedDatabaseUrl. Opens and
    builds nothing, so settings can be checked with it alone.

    ``postgresql://`` or ``postgres://``: PostgreSQL. ``sqlite:///path``
    (``sqlite:////abs/path`` for an absolute path): SQLite. No URL: the
    SQLite file `sqlite_path`. Any other scheme is refused, never guessed.
    """
    if not database_url:
        return "sqlite", sqlite_path
    scheme, _, rest = database_url.partition(":")
    if scheme in ("postgresql", "postgres"):
        return "postgres", database_url
    if scheme == "sqlite":
        path = rest.removeprefix("///")
        if not rest.startswith("///") or not path:
            raise UnsupportedDatabaseUrl(
                "a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path"
            )
        return "sqlite", path
    raise UnsupportedDatabaseUrl(
        f"unsupported database URL scheme {scheme!r}; use postgresql://... or sqlite:///path"
    )


def make_store(
    database_url: str | None,
    *,
    sqlite_path: str = "agent-state.db",
    pool_min_size: int = 1,
    pool_max_size: int = 10,
    statement_timeout_ms: int | None = None,
    prepared_statements: bool = True,
) -> Store:
    """The backend for `database_url` (see database_location), not yet opened."""
    backend, location = database_location(database_url, sqlite_path)
    if backend == "postgres":
        from .postgres import PostgresStore

        return PostgresStore(
            location,
            min_size=pool_min_size,
            max_size=pool_max_size,
            statement_timeout_ms=statement_timeout_ms,
            prepared_statements=prepared_statements,
        )
    from .sqlite import SqliteStore

    return SqliteStore(location)
