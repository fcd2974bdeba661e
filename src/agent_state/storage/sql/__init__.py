"""Named queries, one file per dialect: postgres.sql and sqlite.sql.

Each query sits under a ``-- name: some_query`` line; the comment lines
right under that header say what the query does and why, and are not sent
to the database. Both files hold the same names in the same order, so that
they read side by side; queries only one dialect needs follow the line
``-- only in this dialect``. The files are read once, at import of the
backend, and never assembled at run time: every statement sent is one of
these constant texts (which also lets psycopg reuse its prepared statements).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources

_HEADER = re.compile(r"--\s*name:\s*(\w+)\s*")
_DIALECT_ONLY = "-- only in this dialect"


@dataclass(frozen=True)
class Queries(Mapping[str, str]):
    """The queries of one dialect by name, in file order."""

    dialect: str
    texts: Mapping[str, str]
    shared: tuple[str, ...]
    """Names, in order, that the other dialect's file has too."""
    own: tuple[str, ...]
    """Names only this dialect has."""

    def __getitem__(self, name: str) -> str:
        return self.texts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __len__(self) -> int:
        return len(self.texts)


def load(dialect: str) -> Queries:
    """The queries of `dialect` ("postgres" or "sqlite")."""
    text = resources.files(__package__).joinpath(f"{dialect}.sql").read_text(encoding="utf-8")
    return parse(dialect, text)


def parse(dialect: str, text: str) -> Queries:
    """Queries from the text of a named-query file; raises ValueError on a
    repeated name or a header without a query under it."""
    texts: dict[str, str] = {}
    shared: list[str] = []
    own: list[str] = []
    names = shared
    name: str | None = None
    lines: list[str] = []

    def finish() -> None:
        if name is None:
            return
        # Blank and comment lines before the next header belong to no query.
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("--")):
            lines.pop()
        body = "\n".join(lines).strip()
        if not body:
            raise ValueError(f"{dialect}.sql: query {name!r} is empty")
        texts[name] = body

    for line in text.splitlines():
        header = _HEADER.fullmatch(line)
        if header or line.strip() == _DIALECT_ONLY:
            finish()
            name, lines = None, []
            if not header:
                names = own
                continue
            name = header[1]
            if name in shared or name in own:
                raise ValueError(f"{dialect}.sql: query {name!r} is named twice")
            names.append(name)
        elif name is not None and (lines or not line.startswith("--")):
            # The comment lines right under a header describe the query.
            lines.append(line)
    finish()
    return Queries(dialect, texts, tuple(shared), tuple(own))
