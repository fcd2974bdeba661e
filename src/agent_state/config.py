"""Settings: flags over environment variables over a config file over defaults.

The Go implementation's variable names (GRPC_ADDRESS, DATABASE_URL) work
unchanged; every other setting is AGENT_STATE_<NAME>. The optional config
file is TOML with the settings' names as keys (`grpc_address = "..."`),
named by --config or AGENT_STATE_CONFIG_FILE.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .rules import Limits

# Settings read under the Go implementation's names first.
_ENV_NAMES = {"grpc_address": "GRPC_ADDRESS", "database_url": "DATABASE_URL"}

CONFIG_FILE_VARIABLE = "AGENT_STATE_CONFIG_FILE"

# The file read by the Settings being built (set by `load`).
_config_file: ContextVar[Path | None] = ContextVar("agent_state_config_file", default=None)


class Access(StrEnum):
    """What a bearer token may do."""

    READ_ONLY = "ro"
    READ_WRITE = "rw"


def env_name(setting: str) -> str:
    return _ENV_NAMES.get(setting, f"AGENT_STATE_{setting.upper()}")


def setting_variables() -> set[str]:
    """Every environment variable some setting is read from."""
    names = {f"AGENT_STATE_{name.upper()}" for name in Settings.model_fields}
    return names | set(_ENV_NAMES.values())


def parse_tokens(text: str, setting: str) -> dict[str, Access]:
    """Entries `rw:TOKEN` or `ro:TOKEN`, separated by commas or newlines
    (a file may also hold blank lines and `#` comments). Error messages
    name the entry by its number, never by its text."""
    tokens: dict[str, Access] = {}
    entries = [line.split("#", 1)[0] for line in text.replace(",", "\n").splitlines()]
    for number, entry in enumerate((e.strip() for e in entries if e.strip()), start=1):
        access, separator, token = entry.partition(":")
        if not separator or access not in ("ro", "rw"):
            raise ValueError(f"{setting}: entry {number} must be rw:TOKEN or ro:TOKEN")
        if len(token) < 16 or any(c.isspace() for c in token):
            raise ValueError(
                f"{setting}: entry {number}: a token needs at least 16 characters and no spaces"
            )
        if token in tokens:
            raise ValueError(f"{setting}: entry {number} repeats a token")
        tokens[token] = Access(access)
    return tokens


def is_loopback(address: str) -> bool:
    """Whether a gRPC listen address only accepts connections from this host."""
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENT_STATE_", extra="forbid")

    config_file: Path | None = None
    grpc_address: Annotated[
        str,
        Field(
            validation_alias=AliasChoices(
                "grpc_address", "GRPC_ADDRESS", "AGENT_STATE_GRPC_ADDRESS"
            )
        ),
    ] = "127.0.0.1:50051"
    database_url: Annotated[
        str | None,
        Field(
            validation_alias=AliasChoices(
                "database_url", "DATABASE_URL", "AGENT_STATE_DATABASE_URL"
            )
        ),
    ] = None
    sqlite_path: str = "agent-state.db"
    migrate_on_start: bool = True
    pool_min_size: Annotated[int, Field(ge=1)] = 1
    pool_max_size: Annotated[int, Field(ge=1)] = 10
    statement_timeout_ms: Annotated[int | None, Field(ge=1)] = 30_000
    max_append_messages: Annotated[int, Field(ge=1)] = 1000
    max_request_bytes: Annotated[int, Field(ge=1024)] = 3 * 1024 * 1024
    max_kind_length: Annotated[int, Field(ge=1)] = 256
    default_page_size: Annotated[int, Field(ge=1)] = 100
    max_page_size: Annotated[int, Field(ge=1)] = 1000
    max_response_bytes: Annotated[int, Field(ge=1024)] = 3 * 1024 * 1024
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    idempotency_window_seconds: Annotated[int, Field(ge=1)] = 24 * 3600
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
    _tokens: dict[str, Access] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        if path is None:
            return init_settings, env_settings
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path)

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

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file", "auth_tokens_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size exceeds pool_max_size")
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size exceeds max_page_size")
        # Read and parsed once: a bad entry is a bad setting, and every
        # later use sees the same tokens even if the file changes.
        self._tokens = self._read_tokens()
        return self

    def check_listening(self) -> None:
        """Raises ValueError if serving these settings would open the API,
        unauthenticated, beyond this host (checked by serve, not migrate)."""
        exposed = not self.allow_unauthenticated and not is_loopback(self.grpc_address)
        if exposed and not self.tokens():
            raise ValueError(
                f"grpc_address {self.grpc_address} is not loopback and no auth tokens"
                " are set; set auth_tokens or auth_tokens_file, or allow_unauthenticated=true"
            )

    def tokens(self) -> dict[str, Access]:
        """Bearer tokens from auth_tokens and auth_tokens_file together."""
        return dict(self._tokens)

    def _read_tokens(self) -> dict[str, Access]:
        tokens: dict[str, Access] = {}
        if self.auth_tokens is not None:
            tokens |= parse_tokens(self.auth_tokens.get_secret_value(), "auth_tokens")
        if self.auth_tokens_file is not None:
            text = self.auth_tokens_file.read_text(encoding="utf-8")
            for token, access in parse_tokens(text, "auth_tokens_file").items():
                if tokens.get(token, access) is not access:
                    raise ValueError("a token appears in auth_tokens and auth_tokens_file")
                tokens[token] = access
        return tokens

    def environment(self) -> dict[str, str]:
        """These settings as the environment variables that win when read
        back (for worker processes), with every other variable named after
        a setting left out."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
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

    def limits(self) -> Limits:
        return Limits(
            max_append_messages=self.max_append_messages,
            max_kind_length=self.max_kind_length,
            default_page_size=self.default_page_size,
            max_page_size=self.max_page_size,
            max_response_bytes=self.max_response_bytes,
            idempotency_window_seconds=self.idempotency_window_seconds,
        )


@contextmanager
def _reading(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


class ConfigFileError(Exception):
    """The config file cannot be read or is not TOML."""


def load(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings from `flags` (those not None) over the environment over the
    config file (`config_file`, else AGENT_STATE_CONFIG_FILE) over defaults.
    Raises pydantic.ValidationError or ConfigFileError."""
    import tomllib

    if config_file is None and os.environ.get(CONFIG_FILE_VARIABLE):
        config_file = Path(os.environ[CONFIG_FILE_VARIABLE])
    if config_file is not None:
        try:
            tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigFileError(
                f"config_file: cannot read {config_file}: {exc.strerror}"
            ) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"config_file: {config_file} is not valid TOML: {exc}") from exc
    given = {name: value for name, value in flags.items() if value is not None}
    if config_file is not None:
        given["config_file"] = config_file
    with _reading(config_file):
        return Settings(**given)


def sources(settings: Settings, flags: dict[str, Any]) -> dict[str, str]:
    """Where each setting's value came from: flag, env, file or default."""
    file_keys: set[str] = set()
    if settings.config_file is not None:
        import tomllib

        file_keys = set(tomllib.loads(settings.config_file.read_text(encoding="utf-8")))
    origin: dict[str, str] = {}
    for name in Settings.model_fields:
        variables = [f"AGENT_STATE_{name.upper()}"] + (
            [_ENV_NAMES[name]] if name in _ENV_NAMES else []
        )
        if flags.get(name) is not None:
            origin[name] = "flag"
        elif any(variable in os.environ for variable in variables):
            origin[name] = "env"
        elif name in file_keys:
            origin[name] = "file"
        else:
            origin[name] = "default"
    return origin
