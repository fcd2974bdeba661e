"""Settings: flags over environment variables over defaults.

The Go implementation's variable names (GRPC_ADDRESS, DATABASE_URL) work
unchanged; every other setting is AGENT_STATE_<NAME>.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .rules import Limits

# Settings read under the Go implementation's names first.
_ENV_NAMES = {"grpc_address": "GRPC_ADDRESS", "database_url": "DATABASE_URL"}


def setting_variables() -> set[str]:
    """Every environment variable some setting is read from."""
    names = {f"AGENT_STATE_{name.upper()}" for name in Settings.model_fields}
    return names | set(_ENV_NAMES.values())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENT_STATE_", extra="forbid")

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
    log_level: str = "INFO"
    workers: Annotated[int, Field(ge=1, le=256)] = 1

    def environment(self) -> dict[str, str]:
        """These settings as the environment variables that win when read
        back (for worker processes), with every other variable named after
        a setting left out."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            out[_ENV_NAMES.get(name, f"AGENT_STATE_{name.upper()}")] = str(value)
        return out

    def limits(self) -> Limits:
        return Limits(
            max_append_messages=self.max_append_messages,
            max_kind_length=self.max_kind_length,
            default_page_size=self.default_page_size,
            max_page_size=self.max_page_size,
            max_response_bytes=self.max_response_bytes,
        )
