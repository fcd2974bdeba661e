"""`agent-state config` against `serve`, in process: config refuses exactly
what serve refuses before it opens anything, with the same line and exit
code 2, and accepts what serve would start with. Also the flags' types."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from agent_state.cli import main
from agent_state.cli.server_commands import EXIT_CONFIG, serve
from agent_state.runtime import NotServable, check_serving
from agent_state.storage import UnsupportedDatabaseUrl

RW_TOKEN = "rw-token-0123456789abcdef"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--database-url", "mysql://x"], {}, "unsupported database URL scheme 'mysql'"),
        (["--database-url", "sqlite://relative.db"], {}, "a SQLite URL is sqlite:///"),
        ([], {"DATABASE_URL": "file:///tmp/x.db"}, "unsupported database URL scheme 'file'"),
        (["--workers", "2", "--grpc-address", "127.0.0.1:0"], {}, "--workers needs a fixed port"),
        (["--grpc-address", "0.0.0.0:50051"], {}, "grpc_address 0.0.0.0:50051 is not loopback"),
        ([], {"agent_state_max_page_size": "lots"}, "invalid setting max_page_size"),
        (["--max-page-size", "lots"], {}, "invalid setting max_page_size"),
        (["--default-page-size", "2000"], {}, "default_page_size exceeds max_page_size"),
        (["--tls-cert-file", "/etc/hostname"], {}, "tls_cert_file and tls_key_file go together"),
        ([], {"AGENT_STATE_AUTH_TOKENS": "rw:short"}, "auth_tokens: entry 1"),
        (["--tracing"], {"OTEL_TRACES_EXPORTER": "zipkin"}, "invalid setting tracing"),
    ],
)  # fmt: skip
def test_config_exits_2_exactly_where_serve_would(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    args = ["--sqlite-path", str(tmp_path / "x.db"), *args]
    shown = invoke("config", *args, env=env)
    served = invoke("serve", *args, env=env)
    assert (shown.exit_code, served.exit_code) == (EXIT_CONFIG, EXIT_CONFIG)
    assert shown.stderr == served.stderr
    assert shown.stderr.startswith("agent-state: ")
    assert shown.stderr.count("\n") == 1, shown.stderr
    assert named in shown.stderr
    assert shown.stdout == served.stdout == ""


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--workers", "2", "--grpc-address", "127.0.0.1:50099"], {}),
        (["--grpc-address", "0.0.0.0:50051", "--allow-unauthenticated"], {}),
        (["--grpc-address", "0.0.0.0:50051"], {"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN}"}),
        (["--database-url", "postgresql://app@db.example/agent"], {}),
        (["--database-url", "sqlite:////tmp/agent-state.db"], {}),
    ],
)
def test_config_accepts_settings_that_pass_the_serving_checks(
    args: list[str], env: dict[str, str]
) -> None:
    result = invoke("config", "--json", *args, env=env)
    assert result.exit_code == 0, result.stderr
    if env:
        assert RW_TOKEN not in result.stdout


def test_config_names_the_source_whatever_the_variables_case() -> None:
    result = invoke("config", "--json", env={"agent_state_workers": "3"})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["workers"] == {"value": 3, "source": "env"}
    text = invoke("config", "--workers", "4", env={"agent_state_workers": "3"}).stdout
    assert "workers                    = 4  (flag)" in text.splitlines()


def test_check_serving_raises_value_errors() -> None:
    from agent_state.config import load

    with pytest.raises(NotServable, match="fixed port"):
        check_serving(load({"workers": 2, "grpc_address": "127.0.0.1:0"}, {}).settings)
    with pytest.raises(UnsupportedDatabaseUrl):
        check_serving(load({"database_url": "mysql://x"}, {}).settings)
    check_serving(load({}, {}).settings)


def test_setting_flags_are_typed_in_help() -> None:
    types = {
        option.name: option.type.name
        for option in serve.params
        if isinstance(option, click.Option) and not option.is_flag
    }
    assert types["max_page_size"] == "integer"
    assert types["workers"] == "integer"
    assert types["statement_timeout_ms"] == "integer"
    assert types["shutdown_grace_seconds"] == "float"
    assert types["tls_cert_file"] == "path"
    assert types["grpc_address"] == "text"
    help_text = invoke("serve", "--help").stdout
    assert "--max-page-size INTEGER" in help_text
