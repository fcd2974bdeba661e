"""Settings: flags over environment variables over a config file over defaults.

The Go implementation's variable names (GRPC_ADDRESS, DATABASE_URL) work
unchanged; every other setting is AGENT_STATE_<NAME>, in any letter case.
The optional config file is TOML with the settings' names as keys
(`grpc_address = "..."`), named by --config or AGENT_STATE_CONFIG_FILE.

`Settings` only parses and validates the values it is given. `load` is the
one place that reads: the environment, the config file and the tokens
file, each once, and whether the TLS files can be read. It also records
where each value came from, for `agent-state config`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .model import Retention
from .rules import Limits
from .server.access import Access, combined_tokens

# Settings read under the Go implementation's names first.
_GO_NAMES = {"grpc_address": "GRPC_ADDRESS", "database_url": "DATABASE_URL"}
# Settings naming a file the server reads; `load` checks each can be read.
_FILE_SETTINGS = ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "auth_tokens_file")
# The request limits' defaults are the service's own.
_LIMITS = Limits()
# The longest protobuf Duration, 10,000 years: a conversation's own max_idle
# reaches as far.
_MAX_DURATION_SECONDS = 315_576_000_000

T = TypeVar("T")


def env_names(setting: str) -> tuple[str, ...]:
    """The variables a setting is read from, the first found winning."""
    own = f"AGENT_STATE_{setting.upper()}"
    return (_GO_NAMES[setting], own) if setting in _GO_NAMES else (own,)


def env_name(setting: str) -> str:
    """The variable named in --help and written for worker processes."""
    return env_names(setting)[0]


def setting_variables() -> set[str]:
    """Every environment variable some setting is read from."""
    return {variable for name in Settings.model_fields for variable in env_names(name)}


def _host_port(value: str, setting: str) -> str:
    _host, separator, port = value.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{setting} must be host:port")
    return value


def redacted_url(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class _FileTexts:
    """What `load` read for the settings that name a file, handed to
    validation as its context so that validators never read."""

    auth_tokens_file: str | None = None


class Settings(BaseModel):
    """Every setting, parsed and validated without I/O; `load` builds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_file: Path | None = None
    grpc_address: str = "127.0.0.1:50051"
    database_url: str | None = None
    sqlite_path: str = "agent-state.db"
    migrate_on_start: bool = True
    pool_min_size: Annotated[int, Field(ge=1)] = 1
    pool_max_size: Annotated[int, Field(ge=1)] = 10
    # 0: the server sets none (behind a pooler, set one on the role instead).
    statement_timeout_ms: Annotated[int, Field(ge=0)] = 30_000
    prepared_statements: bool = True
    max_append_messages: Annotated[int, Field(ge=1)] = _LIMITS.max_append_messages
    max_request_bytes: Annotated[int, Field(ge=1024)] = 3 * 1024 * 1024
    max_kind_length: Annotated[int, Field(ge=1)] = _LIMITS.max_kind_length
    default_page_size: Annotated[int, Field(ge=1)] = _LIMITS.default_page_size
    max_page_size: Annotated[int, Field(ge=1)] = _LIMITS.max_page_size
    max_response_bytes: Annotated[int, Field(ge=1024)] = _LIMITS.max_response_bytes
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    idempotency_window_seconds: Annotated[int, Field(ge=1)] = _LIMITS.idempotency_window_seconds
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    auth_tokens: SecretStr | None = None
    auth_tokens_file: Path | None = None
    allow_unauthenticated: bool = False
    metrics_address: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["logfmt", "json"] = "logfmt"
    tracing: bool = False
    # The server's default retention (0: no limit of that kind), and how
    # often the sweeper applies retention.
    retention_max_idle_seconds: Annotated[int, Field(ge=0, le=_MAX_DURATION_SECONDS)] = 0
    retention_max_messages: Annotated[int, Field(ge=0)] = 0
    retention_sweep_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    _tokens: dict[str, Access] = PrivateAttr(default_factory=dict)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("grpc_address")
    @classmethod
    def _grpc_address(cls, value: str) -> str:
        return value if value.startswith("unix:") else _host_port(value, "grpc_address")

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _host_port(value, "metrics_address")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size exceeds pool_max_size")
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size exceeds max_page_size")
        texts = info.context if isinstance(info.context, _FileTexts) else _FileTexts()
        if self.auth_tokens_file is not None and texts.auth_tokens_file is None:
            raise ValueError("auth_tokens_file was not read; build settings with config.load")
        # Parsed once: a bad entry is a bad setting, and every later use
        # sees the same tokens even if the file changes.
        self._tokens = combined_tokens(
            self.auth_tokens.get_secret_value() if self.auth_tokens is not None else None,
            texts.auth_tokens_file if self.auth_tokens_file is not None else None,
        )
        return self

    def tokens(self) -> dict[str, Access]:
        """Bearer tokens from auth_tokens and auth_tokens_file together."""
        return dict(self._tokens)

    def environment(self) -> dict[str, str]:
        """These settings as the environment variables that win when read
        back (for worker processes), with every other variable named after
        a setting left out."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            # The config file is left out: every value it gave is in here.
            if value is None or name == "config_file":
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[env_name(name)] = str(value)
        return out

    def effective(self) -> dict[str, Any]:
        """Every setting with its value, secrets redacted, for display."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = f"<{len(self.tokens())} tokens, redacted>"
            elif name == "database_url" and value is not None:
                value = redacted_url(value)
            elif isinstance(value, Path):
                value = str(value)
            shown[name] = value
        return shown

    def default_retention(self) -> Retention:
        """The retention of conversations without one of their own."""
        return Retention(
            max_idle=self.retention_max_idle_seconds * 1_000_000,
            max_messages=self.retention_max_messages,
        )

    def limits(self) -> Limits:
        return Limits(
            max_append_messages=self.max_append_messages,
            max_kind_length=self.max_kind_length,
            default_page_size=self.default_page_size,
            max_page_size=self.max_page_size,
            max_response_bytes=self.max_response_bytes,
            idempotency_window_seconds=self.idempotency_window_seconds,
        )


class Source(StrEnum):
    """Where a setting's value came from."""

    FLAG = "flag"
    ENV = "env"
    FILE = "file"
    DEFAULT = "default"


class SettingsError(Exception):
    """Settings that cannot be used: one line per problem, each naming its setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ConfigFileError(SettingsError):
    """The config file cannot be read or is not TOML."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


@dataclass(frozen=True)
class Loaded:
    """Settings, and where each of their values came from."""

    settings: Settings
    sources: dict[str, Source]


def load(
    flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
) -> Loaded:
    """Settings from `flags` (those not None) over the environment (`environ`,
    else the process's) over the config file (flag config_file, else
    AGENT_STATE_CONFIG_FILE) over the defaults. Raises SettingsError."""
    given = {name: value for name, value in (flags or {}).items() if value is not None}
    from_env = _from_environment(os.environ if environ is None else environ)
    config_file = given.get("config_file", from_env.get("config_file"))
    from_file = _read_config_file(Path(str(config_file))) if config_file else {}
    values: dict[str, object] = {}
    sources = dict.fromkeys(Settings.model_fields, Source.DEFAULT)
    for source, layer in ((Source.FILE, from_file), (Source.ENV, from_env), (Source.FLAG, given)):
        values |= layer
        sources |= {name: source for name in layer if name in sources}
    texts = _read_named_files(values)
    try:
        settings = Settings.model_validate(values, context=texts)
    except ValidationError as exc:
        problems = [_problem(error["loc"], error["msg"]) for error in exc.errors()]
        raise SettingsError(problems) from None
    return Loaded(settings, sources)


def _from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings' values found in `environ`, whatever the letter case of
    the variables' names. An empty AGENT_STATE_CONFIG_FILE names no file."""
    by_name = _case_folded(environ, str.upper, setting_variables())
    found: dict[str, str] = {}
    for setting in Settings.model_fields:
        present = [variable for variable in env_names(setting) if variable in by_name]
        if present:
            found[setting] = by_name[present[0]]
    if not found.get("config_file"):
        found.pop("config_file", None)
    return found


def _read_config_file(path: Path) -> dict[str, Any]:
    """The file's entries by setting name; its keys are setting names in
    any letter case (other keys are kept, for validation to refuse)."""
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"config_file: cannot read {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"config_file: {path} is not valid TOML: {exc}") from exc
    return _case_folded(entries, str.lower, set(Settings.model_fields))


def _case_folded(
    entries: Mapping[str, T], fold: Callable[[str], str], names: Set[str]
) -> dict[str, T]:
    """`entries` with every key that is one of `names` in another letter
    case renamed to it; of several spellings of one name, the exact one wins."""
    folded: dict[str, T] = {}
    for key, value in entries.items():
        name = fold(key) if fold(key) in names else key
        if key == name or name not in folded:
            folded[name] = value
    return folded


def _read_named_files(values: Mapping[str, object]) -> _FileTexts:
    """Reads the tokens file and checks that the TLS files can be read.
    A value that is not a path is left for validation to report."""
    problems: list[str] = []
    tokens_text: str | None = None
    for name in _FILE_SETTINGS:
        value = values.get(name)
        if not isinstance(value, str | os.PathLike):
            continue
        path = Path(value)
        try:
            if name == "auth_tokens_file":
                tokens_text = path.read_text(encoding="utf-8")
            elif not os.access(path, os.R_OK):
                raise PermissionError
        except (OSError, UnicodeDecodeError):
            problems.append(_problem((name,), f"cannot read {path}"))
    if problems:
        raise SettingsError(problems)
    return _FileTexts(auth_tokens_file=tokens_text)


def _problem(location: tuple[int | str, ...], message: str) -> str:
    name = ".".join(str(part) for part in location)
    reason = message.removeprefix("Value error, ")
    return f"invalid setting {name}: {reason}" if name else f"invalid settings: {reason}"
