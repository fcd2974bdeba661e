"""Versioned schema migrations, one folder of numbered SQL files per dialect.

Each file ``NNNN_name.sql`` runs once, in its own transaction, and is
recorded with its checksum in ``schema_migrations``. A file that was applied
never changes: a checksum mismatch, or a recorded version this code does not
know (the database is newer than the code), stops start-up. Backends apply
the files under a database lock so that servers starting together do not
race; this module holds the part that is the same for every dialect.
"""

from __future__ import annotations

import hashlib
import re
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
