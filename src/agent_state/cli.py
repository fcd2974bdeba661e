"""Command line: ``agent-state serve | migrate``.

One top-level handler turns configuration and start-up failures into one
line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click
from pydantic import ValidationError

from .config import Settings
from .errors import StorageUnavailable
from .storage import UnsupportedDatabaseUrl
from .storage.migrations import MigrationError

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _settings(**flags: Any) -> Settings:
    """Settings from the given flags (those that were set) over the environment."""
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            click.echo(f"agent-state: invalid setting {name}: {error['msg']}", err=True)
        sys.exit(EXIT_CONFIG)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(coroutine: Any) -> None:
    try:
        asyncio.run(coroutine)
    except (UnsupportedDatabaseUrl, MigrationError) as exc:
        click.echo(f"agent-state: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except StorageUnavailable as exc:
        click.echo(f"agent-state: {exc} ({type(exc.__cause__).__name__})", err=True)
        sys.exit(EXIT_RUNTIME)
    except OSError as exc:
        click.echo(f"agent-state: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)


_database_options = [
    click.option(
        "--database-url",
        help="postgresql://... or sqlite:///path [env DATABASE_URL; unset: the SQLite file].",
    ),
    click.option(
        "--sqlite-path",
        help="SQLite file used when no database URL is set [env AGENT_STATE_SQLITE_PATH; "
        "default agent-state.db].",
    ),
]


def _with_database_options(command: Any) -> Any:
    for option in reversed(_database_options):
        command = option(command)
    return command


@click.group()
def main() -> None:
    """agent-state: working memory for LLM agents over gRPC."""


@main.command()
@click.option(
    "--grpc-address", help="host:port to listen on [env GRPC_ADDRESS; default 127.0.0.1:50051]."
)
@_with_database_options
@click.option(
    "--migrate/--no-migrate",
    "migrate_on_start",
    default=None,
    help="Apply pending migrations at start-up [env AGENT_STATE_MIGRATE_ON_START; default on].",
)
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR [env AGENT_STATE_LOG_LEVEL].")
@click.option(
    "--workers",
    type=int,
    help="Server processes sharing the port (SO_REUSEPORT) [env AGENT_STATE_WORKERS; default 1].",
)
def serve(**flags: Any) -> None:
    """Serve AgentStateService until SIGTERM or SIGINT."""
    from .server.app import serve as serve_forever
    from .server.workers import run_workers

    settings = _settings(**flags)
    _configure_logging(settings.log_level)
    if settings.workers > 1:
        if settings.grpc_address.rsplit(":", 1)[-1] == "0":
            click.echo("agent-state: --workers needs a fixed port, not port 0", err=True)
            sys.exit(EXIT_CONFIG)
        if settings.migrate_on_start:
            _run(_migrate(settings))
        sys.exit(run_workers(settings))
    _run(serve_forever(settings))


@main.command()
@_with_database_options
def migrate(**flags: Any) -> None:
    """Apply pending schema migrations, then exit."""
    settings = _settings(**flags)
    _configure_logging(settings.log_level)

    _run(_migrate(settings, report=True))


async def _migrate(settings: Settings, *, report: bool = False) -> None:
    from .server.app import store_from

    store = store_from(settings)
    async with store:
        applied = await store.migrate()
    if report:
        click.echo(f"applied migrations: {applied}" if applied else "schema is up to date")
