"""Versioned schema migrations, one folder of numbered SQL files per dialect,
and the runner that applies them.

Each file ``NNNN_name.sql`` runs once, in its own transaction, and is
recorded with its checksum in ``schema_migrations`` (created by the
dialect's named query create_schema_migrations). A file that was applied
never changes: a checksum mismatch, or a recorded version this code does not
know (the database is newer than the code), stops start-up. The runner
(`run`) is the same for every dialect; a backend supplies only the hooks of
a `MigrationSession`: the database lock that keeps servers starting together
from racing, a transaction, reading what is recorded, applying one file.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class MigrationError(Exception):
    """The database's recorded migrations do not match this code."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def load(dialect: str) -> list[Migration]:
    """The migrations of `dialect` ("postgres" or "sqlite"), in order."""
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found


def pending(migrations: list[Migration], applied: dict[int, str]) -> list[Migration]:
    """Migrations not yet applied, after checking the applied ones.

    `applied` maps each recorded version to its recorded checksum.
    """
    known = {migration.version: migration for migration in migrations}
    for version, checksum in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version}, which this version of agent-state "
                "does not know; upgrade agent-state"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {version} ({migration.name}) differs from the one applied to "
                "the database; applied migrations must never change"
            )
    return [migration for migration in migrations if migration.version not in applied]


class MigrationSession(ABC):
    """A backend's hooks for the runner, over one connection."""

    @abstractmethod
    def locked(self) -> AbstractAsyncContextManager[None]:
        """Keeps other migrators of the database out (all of them where the
        database can: PostgreSQL runs the whole run as one transaction
        holding an advisory lock, each migration a savepoint in it;
        SQLite's lock is the write lock each `transaction` takes, so
        another process may apply the next migration in between)."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[None]:
        """One transaction, committed when the block exits normally."""

    @abstractmethod
    async def prepare(self) -> None:
        """Create schema_migrations if it does not exist."""

    @abstractmethod
    async def applied(self) -> dict[int, str]:
        """Each recorded version with its checksum; empty when
        schema_migrations does not exist."""

    @abstractmethod
    async def apply(self, migration: Migration) -> None:
        """Run the migration's file and record it, inside `transaction`."""


async def run(dialect: str, session: MigrationSession) -> list[int]:
    """Apply the pending migrations of `dialect`, each in its own
    `transaction` inside `locked`; return the versions applied. What is recorded is read
    again in each transaction, so a migration another server applied
    meanwhile is checked, not applied twice."""
    known = load(dialect)
    done: list[int] = []
    async with session.locked():
        await session.prepare()
        while True:
            async with session.transaction():
                todo = pending(known, await session.applied())
                if todo:
                    await session.apply(todo[0])
            if not todo:
                return done
            done.append(todo[0].version)


async def pending_versions(dialect: str, session: MigrationSession) -> list[int]:
    """Versions of `dialect` the database lacks (after the checks of
    `pending`), without locking or applying anything."""
    return [migration.version for migration in pending(load(dialect), await session.applied())]
