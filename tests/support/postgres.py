"""Throwaway PostgreSQL databases on a running server, for the tests and the
benchmark: `create_database` and `drop_database`, or `throwaway_database`
for both around a block.

Every database is handed out as a ``postgresql://`` URL, whatever form the
administrative connection string has (URL or libpq ``key=value``), because
that is the form the server's DATABASE_URL takes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Taken apart by postgres_url_from_conninfo; any other parameter goes into the query.
_URL_PARTS = ("user", "password", "host", "port", "dbname")


def postgres_url_from_conninfo(
    conninfo: str,
    *,
    dbname: str | None = None,
    host: str | None = None,
    port: int | None = None,
    password: str | None = None,
) -> str:
    """A ``postgresql://`` URL for a libpq conninfo string or URL, optionally
    naming another database or re-targeted to another host, port or password."""
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.get("user", "postgres")), safe="")
    secret = str(params.get("password", "")) if password is None else password
    auth = user + (":" + quote(secret, safe="") if secret else "")
    target_host = host or str(params.get("host", "127.0.0.1"))
    target_port = port or int(str(params.get("port", 5432)))
    target_dbname = quote(dbname or str(params.get("dbname", "postgres")), safe="")
    options = {name: str(value) for name, value in params.items() if name not in _URL_PARTS}
    query = "?" + urlencode(options) if options else ""
    return f"postgresql://{auth}@{target_host}:{target_port}/{target_dbname}{query}"


def random_database_name(prefix: str) -> str:
    """A name no other run picks: runs in parallel share one server."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def create_database(admin_url: str, name: str) -> str:
    """A new, empty database `name` on the server of `admin_url`; its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return postgres_url_from_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop `name`, ending the sessions a server under test may still hold on it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def throwaway_database(admin_url: str, prefix: str) -> Iterator[str]:
    """The URL of a fresh database for the block, dropped afterwards."""
    name = random_database_name(prefix)
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)
