"""Command line: ``agent-state serve | migrate | config`` and the client commands.

One top-level handler turns configuration and start-up failures into one
line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from . import logs
from .client_commands import append, get, health, ids, show, snapshot
from .config import ConfigFileError, Settings, env_name, load, sources
from .errors import StorageUnavailable
from .storage import UnsupportedDatabaseUrl
from .storage.migrations import MigrationError

EXIT_CONFIG = 2
EXIT_RUNTIME = 1

# One flag per setting, with what --help says about it. auth_tokens has no
# flag on purpose: a command line is visible to every user of the host.
_HELP = {
    "grpc_address": "host:port to listen on (or unix:PATH)",
    "database_url": "postgresql://... or sqlite:///path; unset: the SQLite file",
    "sqlite_path": "SQLite file used when no database URL is set",
    "migrate_on_start": "apply pending migrations at start-up",
    "pool_min_size": "PostgreSQL connections kept open",
    "pool_max_size": "PostgreSQL connections at most",
    "statement_timeout_ms": "bound on every SQL statement",
    "max_append_messages": "messages per append at most",
    "max_request_bytes": "request size at most",
    "max_kind_length": "characters in a message kind at most",
    "default_page_size": "page size when a request gives none",
    "max_page_size": "page size at most",
    "max_response_bytes": "list response size at most",
    "shutdown_grace_seconds": "time in-flight calls get on SIGTERM",
    "idempotency_window_seconds": "how long an idempotency-key replays its response",
    "workers": "server processes sharing the port (SO_REUSEPORT)",
    "tls_cert_file": "PEM server certificate (chain); enables TLS",
    "tls_key_file": "PEM private key of tls_cert_file",
    "tls_client_ca_file": "PEM CA bundle; clients must present a certificate it signed (mTLS)",
    "auth_tokens_file": "file of bearer tokens, one `rw:TOKEN` or `ro:TOKEN` per line",
    "allow_unauthenticated": "allow listening beyond loopback without tokens",
    "metrics_address": "host:port of the Prometheus /metrics endpoint; unset: none",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "log_format": "logfmt or json",
    "tracing": "OpenTelemetry tracing (needs the otel extra; OTEL_* variables configure it)",
}
# Flags kept under their established names.
_FLAG_NAMES = {"migrate_on_start": "migrate"}


def _setting_options(command: Any) -> Any:
    """The flags of every setting in _HELP, plus --config."""
    for name in reversed(list(_HELP)):
        field = Settings.model_fields[name]
        flag = "--" + _FLAG_NAMES.get(name, name).replace("_", "-")
        default = "unset" if field.default is None else field.default
        text = f"{_HELP[name]} [env {env_name(name)}; default {default}]"
        if field.annotation is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=text)
        else:
            option = click.option(flag, name, default=None, help=text)
        command = option(command)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        help="TOML file of settings, below flags and environment [env AGENT_STATE_CONFIG_FILE].",
    )(command)


def _settings(flags: dict[str, Any]) -> Settings:
    """Settings from the given flags over the environment over the config file;
    a bad value ends the process with one line per problem and exit code 2."""
    try:
        return load(**flags)
    except ConfigFileError as exc:
        click.echo(f"agent-state: {exc}", err=True)
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            reason = error["msg"].removeprefix("Value error, ")
            where = f"invalid setting {name}" if name else "invalid settings"
            click.echo(f"agent-state: {where}: {reason}", err=True)
    except ValueError as exc:  # raised while reading a tokens file
        click.echo(f"agent-state: invalid settings: {exc}", err=True)
    sys.exit(EXIT_CONFIG)


def _serving(flags: dict[str, Any]) -> Settings:
    """_settings, plus the checks that only matter to a listening server."""
    settings = _settings(flags)
    try:
        settings.check_listening()
    except ValueError as exc:
        click.echo(f"agent-state: invalid settings: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    return settings


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


@click.group()
def main() -> None:
    """agent-state: working memory for LLM agents over gRPC."""


@main.command()
@_setting_options
def serve(**flags: Any) -> None:
    """Serve AgentStateService until SIGTERM or SIGINT."""
    from .server.app import serve as serve_forever
    from .server.workers import run_workers

    settings = _serving(flags)
    logs.configure(settings.log_level, settings.log_format)
    if settings.workers > 1:
        if settings.grpc_address.rsplit(":", 1)[-1] == "0":
            click.echo("agent-state: --workers needs a fixed port, not port 0", err=True)
            sys.exit(EXIT_CONFIG)
        if settings.migrate_on_start:
            _run(_migrate(settings))
        sys.exit(run_workers(settings))
    if settings.tracing:
        from .server import tracing

        try:
            tracing.enable()
        except tracing.TracingUnavailable as exc:
            click.echo(f"agent-state: invalid setting tracing: {exc}", err=True)
            sys.exit(EXIT_CONFIG)
    _run(serve_forever(settings))


@main.command()
@_setting_options
def migrate(**flags: Any) -> None:
    """Apply pending schema migrations, then exit."""
    settings = _settings(flags)
    logs.configure(settings.log_level, settings.log_format)
    _run(_migrate(settings, report=True))


@main.command()
@_setting_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config(as_json: bool, **flags: Any) -> None:
    """Print the effective configuration (secrets redacted) and where each
    value came from; exit 2 when it is invalid, as serve would."""
    settings = _serving(flags)
    shown = settings.effective()
    origin = sources(settings, flags)
    if as_json:
        click.echo(
            json.dumps(
                {name: {"value": value, "source": origin[name]} for name, value in shown.items()},
                indent=2,
            )
        )
        return
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        text = "unset" if value is None else json.dumps(value)
        click.echo(f"{name:<{width}} = {text}  ({origin[name]})")


async def _migrate(settings: Settings, *, report: bool = False) -> None:
    from .server.app import store_from

    store = store_from(settings)
    async with store:
        applied = await store.migrate()
    if report:
        click.echo(f"applied migrations: {applied}" if applied else "schema is up to date")


main.add_command(get)
main.add_command(show)
main.add_command(append)
main.add_command(ids)
main.add_command(snapshot)
main.add_command(health)
