"""Server commands: ``agent-state serve | migrate | config``.

One handler per kind of failure turns configuration and start-up failures
into one line on stderr and a non-zero exit code, never a traceback.
`config` loads and checks the settings through the same functions as
`serve`, so it exits 2 exactly where serve would refuse to start.

The runtime (and through it grpc) is imported only when a command runs:
importing grpc fixes its core's log level, which the client commands set
first (see client_commands).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .. import logs
from ..config import Loaded, Settings, SettingsError, env_name, load
from ..errors import StorageUnavailable
from ..storage import UnsupportedDatabaseUrl
from ..storage.migrations import MigrationError

EXIT_CONFIG = 2
EXIT_RUNTIME = 1

T = TypeVar("T")
CommandT = TypeVar("CommandT", bound=Callable[..., None])

# One flag per setting, with what --help says about it. auth_tokens has no
# flag on purpose: a command line is visible to every user of the host.
_HELP = {
    "grpc_address": "host:port to listen on (or unix:PATH)",
    "database_url": "postgresql://... or sqlite:///path; unset: the SQLite file",
    "sqlite_path": "SQLite file used when no database URL is set",
    "migrate_on_start": "apply pending migrations at start-up",
    "pool_min_size": "PostgreSQL connections kept open",
    "pool_max_size": "PostgreSQL connections at most",
    "statement_timeout_ms": "bound on every SQL statement; 0: none",
    "prepared_statements": "PostgreSQL prepared statements (off behind a transaction pooler)",
    "max_append_messages": "messages per append at most",
    "max_request_bytes": "request size at most",
    "max_kind_length": "characters in a message kind at most",
    "default_page_size": "page size when a request gives none",
    "max_page_size": "page size at most",
    "max_response_bytes": "responses listing messages or ids stay under this size",
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
    "retention_max_idle_seconds": "default retention: seconds idle before deletion; 0: never",
    "retention_max_messages": "default retention: messages a conversation keeps at most; 0: all",
    "retention_sweep_seconds": "how often the sweeper applies retention",
}
# Flags kept under their established names.
_FLAG_NAMES = {"migrate_on_start": "migrate"}
# The click type of a setting's flag, by the setting's type (None allowed);
# any other setting's flag is text, checked when the settings load.
_FLAG_TYPES: dict[object, click.ParamType[Any]] = {
    int: click.INT,
    float: click.FLOAT,
    Path: click.Path(path_type=Path),
}


class _SettingType(click.ParamType[Any]):
    """A setting's click type (INTEGER in --help, say) whose bad values are
    left to the settings loader, so that a bad flag ends in the same one
    line naming the setting as a bad variable or file entry, not in a
    usage error."""

    def __init__(self, typed: click.ParamType[Any]) -> None:
        self.name = typed.name
        self._typed = typed

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self._typed.convert(value, param, ctx)
        except click.BadParameter:
            return value


def _flag_type(annotation: object) -> click.ParamType[Any]:
    options = getattr(annotation, "__args__", (annotation,))
    kinds = [_FLAG_TYPES[kind] for kind in options if kind in _FLAG_TYPES]
    return _SettingType(kinds[0]) if kinds else click.STRING


def setting_options(command: CommandT) -> CommandT:
    """The flags of every setting in _HELP, plus --config."""
    for name in reversed(list(_HELP)):
        field = Settings.model_fields[name]
        flag = "--" + _FLAG_NAMES.get(name, name).replace("_", "-")
        default = "unset" if field.default is None else field.default
        text = f"{_HELP[name]} [env {env_name(name)}; default {default}]"
        if field.annotation is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=text)
        else:
            option = click.option(flag, name, type=_flag_type(field.annotation), help=text)
        command = option(command)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        help=f"TOML file of settings, below flags and environment [env {env_name('config_file')}].",
    )(command)


def _exit(lines: list[str], code: int) -> NoReturn:
    for line in lines:
        click.echo(f"agent-state: {line}", err=True)
    sys.exit(code)


def _loaded(flags: dict[str, Any]) -> Loaded:
    """Settings from the given flags over the environment over the config file;
    a bad value ends the process with one line per problem and exit code 2."""
    try:
        return load(flags)
    except SettingsError as exc:
        _exit(exc.problems, EXIT_CONFIG)


def _servable(flags: dict[str, Any]) -> Loaded:
    """_loaded, plus the checks serve makes before it opens anything."""
    from ..runtime import check_serving

    loaded = _loaded(flags)
    try:
        check_serving(loaded.settings)
    except ValueError as exc:  # NotServable, UnsupportedDatabaseUrl
        _exit([str(exc)], EXIT_CONFIG)
    return loaded


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (not on Windows): measured
    0.04-0.08 ms less server CPU per call, 0.37 ms less for a page of
    1,000 messages on PostgreSQL (README, Performance)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(coroutine)
    except (UnsupportedDatabaseUrl, MigrationError) as exc:
        _exit([str(exc)], EXIT_CONFIG)
    except StorageUnavailable as exc:
        _exit([f"{exc} ({type(exc.__cause__).__name__})"], EXIT_RUNTIME)
    except OSError as exc:
        _exit([str(exc)], EXIT_RUNTIME)


@click.command()
@setting_options
def serve(**flags: Any) -> None:
    """Serve AgentStateService until SIGTERM or SIGINT."""
    from .. import runtime

    settings = _servable(flags).settings
    logs.configure(settings.log_level, settings.log_format)
    if settings.workers > 1:
        from ..server.workers import run_workers

        if settings.migrate_on_start:
            _run(runtime.migrate(settings))
        sys.exit(run_workers(settings))
    if settings.tracing:
        from ..server import tracing

        tracing.enable()  # checked by _servable, with the other settings
    _run(runtime.serve(settings))


@click.command()
@setting_options
def migrate(**flags: Any) -> None:
    """Apply pending schema migrations, then exit."""
    from .. import runtime

    settings = _loaded(flags).settings
    logs.configure(settings.log_level, settings.log_format)
    applied = _run(runtime.migrate(settings))
    click.echo(f"applied migrations: {applied}" if applied else "schema is up to date")


@click.command()
@setting_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config(as_json: bool, **flags: Any) -> None:
    """Print the effective configuration (secrets redacted) and where each
    value came from; exit 2 when it is invalid, as serve would."""
    loaded = _servable(flags)
    shown = loaded.settings.effective()
    if as_json:
        document = {
            name: {"value": value, "source": loaded.sources[name]} for name, value in shown.items()
        }
        click.echo(json.dumps(document, indent=2))
        return
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        text = "unset" if value is None else json.dumps(value)
        click.echo(f"{name:<{width}} = {text}  ({loaded.sources[name]})")


COMMANDS = [serve, migrate, config]
