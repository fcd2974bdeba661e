"""Settings in process: precedence (flag > env > file > default), where each
value came from, the errors a bad value gives, and that loading reads each
file once while validation reads nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent_state import config
from agent_state.config import ConfigFileError, Settings, SettingsError, Source, load
from agent_state.rules import Limits
from agent_state.server.access import Access

RW_TOKEN = "rw-token-0123456789abcdef"
RO_TOKEN = "ro-token-0123456789abcdef"


def problems(flags: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> str:
    """The lines a failing load reports, joined."""
    with pytest.raises(SettingsError) as info:
        load(flags, environ or {})
    return "\n".join(info.value.problems)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent-state.toml"
    path.write_text('max_page_size = 500\ndefault_page_size = 50\nlog_format = "json"\n')
    return path


# --- precedence and sources -------------------------------------------------------


def test_defaults_come_from_nowhere_but_the_code() -> None:
    loaded = load({}, {})
    assert set(loaded.sources.values()) == {Source.DEFAULT}
    assert loaded.settings == Settings()
    assert loaded.settings.grpc_address == "127.0.0.1:50051"
    assert loaded.settings.database_url is None


def test_limit_defaults_are_the_services_own() -> None:
    assert load({}, {}).settings.limits() == Limits()


def test_flags_beat_environment_beat_file_beat_defaults(config_file: Path) -> None:
    file_only = load({"config_file": config_file}, {})
    assert file_only.settings.max_page_size == 500
    assert file_only.sources["max_page_size"] is Source.FILE
    assert file_only.sources["config_file"] is Source.FLAG
    assert file_only.sources["max_append_messages"] is Source.DEFAULT

    environ = {"AGENT_STATE_MAX_PAGE_SIZE": "600", "AGENT_STATE_CONFIG_FILE": str(config_file)}
    with_env = load({}, environ)
    assert with_env.settings.max_page_size == 600
    assert with_env.sources["max_page_size"] is Source.ENV
    assert with_env.settings.log_format == "json"
    assert with_env.sources["log_format"] is Source.FILE
    assert with_env.sources["config_file"] is Source.ENV

    with_flag = load({"max_page_size": 700, "default_page_size": None}, environ)
    assert with_flag.settings.max_page_size == 700
    assert with_flag.sources["max_page_size"] is Source.FLAG
    # A flag left unset (None) gives way to what is below it.
    assert with_flag.settings.default_page_size == 50
    assert with_flag.sources["default_page_size"] is Source.FILE


def test_a_config_flag_beats_the_config_variable(config_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("max_page_size = 900\n")
    loaded = load({"config_file": other}, {"AGENT_STATE_CONFIG_FILE": str(config_file)})
    assert loaded.settings.max_page_size == 900
    assert loaded.settings.config_file == other


def test_an_empty_config_variable_names_no_file() -> None:
    loaded = load({}, {"AGENT_STATE_CONFIG_FILE": ""})
    assert loaded.settings.config_file is None
    assert loaded.sources["config_file"] is Source.DEFAULT


@pytest.mark.parametrize(
    "variable", ["AGENT_STATE_WORKERS", "agent_state_workers", "Agent_State_Workers"]
)
def test_variables_count_in_any_letter_case_and_say_so(variable: str) -> None:
    loaded = load({}, {variable: "3"})
    assert loaded.settings.workers == 3
    assert loaded.sources["workers"] is Source.ENV


def test_the_upper_case_variable_wins_over_another_spelling() -> None:
    for environ in (
        {"agent_state_workers": "3", "AGENT_STATE_WORKERS": "4"},
        {"AGENT_STATE_WORKERS": "4", "agent_state_workers": "3"},
    ):
        assert load({}, environ).settings.workers == 4


def test_file_keys_count_in_any_letter_case(tmp_path: Path) -> None:
    path = tmp_path / "upper.toml"
    path.write_text('MAX_PAGE_SIZE = 500\nGrpc_Address = "127.0.0.1:6000"\n')
    loaded = load({"config_file": path}, {})
    assert loaded.settings.max_page_size == 500
    assert loaded.settings.grpc_address == "127.0.0.1:6000"
    assert loaded.sources["max_page_size"] is Source.FILE
    assert loaded.sources["grpc_address"] is Source.FILE


def test_the_go_implementations_names_work_and_come_first() -> None:
    loaded = load({}, {"grpc_address": "127.0.0.1:6000", "DATABASE_URL": "sqlite:///x.db"})
    assert loaded.settings.grpc_address == "127.0.0.1:6000"
    assert loaded.settings.database_url == "sqlite:///x.db"
    assert loaded.sources["grpc_address"] is Source.ENV
    both = {"GRPC_ADDRESS": "127.0.0.1:6000", "AGENT_STATE_GRPC_ADDRESS": "127.0.0.1:7000"}
    assert load({}, both).settings.grpc_address == "127.0.0.1:6000"
    assert load({}, {"AGENT_STATE_GRPC_ADDRESS": "127.0.0.1:7000"}).sources["grpc_address"] == "env"


def test_variables_of_no_setting_are_ignored() -> None:
    loaded = load({}, {"AGENT_STATE_TOKEN": "x", "AGENT_STATE_ADDRESS": "y", "HOME": "/"})
    assert set(loaded.sources.values()) == {Source.DEFAULT}


def test_values_from_text_are_parsed() -> None:
    environ = {
        "AGENT_STATE_MIGRATE_ON_START": "false",
        "AGENT_STATE_SHUTDOWN_GRACE_SECONDS": "2.5",
        "AGENT_STATE_LOG_LEVEL": "debug",
        "AGENT_STATE_METRICS_ADDRESS": "",
    }
    settings = load({}, environ).settings
    assert settings.migrate_on_start is False
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.log_level == "DEBUG"
    assert settings.metrics_address is None


# --- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        ({"log_format": "xml"}, {}, "invalid setting log_format: Input should be 'logfmt'"),
        ({"log_level": "loud"}, {}, "invalid setting log_level:"),
        ({}, {"AGENT_STATE_POOL_MAX_SIZE": "0"}, "invalid setting pool_max_size:"),
        ({}, {"AGENT_STATE_MAX_PAGE_SIZE": "lots"}, "invalid setting max_page_size: Input should"),
        ({"max_page_size": "lots"}, {}, "invalid setting max_page_size: Input should"),
        ({"metrics_address": "nowhere"}, {}, "metrics_address must be host:port"),
        ({"grpc_address": "0.0.0.0:99999"}, {}, "grpc_address must be host:port"),
        ({"workers": 257}, {}, "invalid setting workers:"),
        ({"default_page_size": 2000}, {}, "invalid settings: default_page_size exceeds"),
        ({"pool_min_size": 20}, {}, "invalid settings: pool_min_size exceeds pool_max_size"),
        ({"tls_cert_file": "/etc/hostname"}, {}, "tls_cert_file and tls_key_file go together"),
        (
            {"tls_client_ca_file": "/etc/hostname"},
            {},
            "tls_client_ca_file (mTLS) needs tls_cert_file",
        ),
        (
            {"tls_cert_file": "/nonexistent.pem", "tls_key_file": "/etc/hostname"},
            {},
            "invalid setting tls_cert_file: cannot read /nonexistent.pem",
        ),
        ({"auth_tokens_file": "/"}, {}, "invalid setting auth_tokens_file: cannot read /"),
        (
            {},
            {"AGENT_STATE_AUTH_TOKENS": "admin:" + RW_TOKEN},
            "invalid settings: auth_tokens: entry 1 must be rw:TOKEN or ro:TOKEN",
        ),
        ({}, {"AGENT_STATE_AUTH_TOKENS": "rw:short"}, "a token needs at least 16 characters"),
        ({}, {"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN},ro:{RW_TOKEN}"}, "entry 2 repeats"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_setting(
    flags: dict[str, Any], environ: dict[str, str], expected: str
) -> None:
    reported = problems(flags, environ)
    assert reported.count("\n") == 0, reported
    assert expected in reported
    assert RW_TOKEN not in reported


def test_every_bad_value_is_reported() -> None:
    reported = problems({"log_format": "xml"}, {"AGENT_STATE_MAX_PAGE_SIZE": "lots"})
    assert "max_page_size" in reported
    assert "log_format" in reported


def test_bad_config_files(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("max_page_sise = 10\n")
    assert problems({"config_file": unknown}) == (
        "invalid setting max_page_sise: Extra inputs are not permitted"
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("max_page_size = \n")
    with pytest.raises(ConfigFileError, match=r"^config_file: .*broken.toml is not valid TOML"):
        load({"config_file": broken}, {})
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigFileError, match=r"^config_file: cannot read .*missing.toml"):
        load({}, {"AGENT_STATE_CONFIG_FILE": str(missing)})
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text('max_page_size = "many"\n')
    assert "invalid setting max_page_size" in problems({"config_file": wrong_type})


# --- tokens -----------------------------------------------------------------------


def test_tokens_come_from_the_variable_and_the_file_together(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# operators\nro:{RO_TOKEN}\n\nrw:{RW_TOKEN}  # also inline\n")
    settings = load(
        {"auth_tokens_file": tokens}, {"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN}"}
    ).settings
    assert settings.tokens() == {RO_TOKEN: Access.READ_ONLY, RW_TOKEN: Access.READ_WRITE}
    shown = settings.effective()
    assert shown["auth_tokens"] == "<2 tokens, redacted>"
    assert RW_TOKEN not in str(shown)


def test_a_token_cannot_grant_two_accesses(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ro:{RW_TOKEN}\n")
    reported = problems({"auth_tokens_file": tokens}, {"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN}"})
    assert reported == "invalid settings: a token appears in auth_tokens and auth_tokens_file"


def test_loading_reads_each_file_once(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ro:{RO_TOKEN}\n")
    with config_file.open("a") as file:
        file.write(f'auth_tokens_file = "{tokens}"\n')
    reads: list[Path] = []
    read_text = Path.read_text

    def counting(path: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(path)
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    settings = load({"config_file": config_file}, {}).settings
    assert sorted(reads) == sorted([config_file, tokens])
    # Later uses see the tokens read then, without reading again.
    tokens.write_text(f"rw:{RW_TOKEN}\n")
    assert settings.tokens() == {RO_TOKEN: Access.READ_ONLY}
    assert len(reads) == 2


def test_validation_reads_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    # TLS files are checked by load, not by the model.
    settings = Settings(tls_cert_file=missing, tls_key_file=missing)
    assert settings.tls_cert_file == missing
    # A tokens file must have been read by load, which hands its text over.
    with pytest.raises(ValidationError, match=r"config\.load"):
        Settings(auth_tokens_file=missing)


# --- worker processes and display ---------------------------------------------------


def test_the_environment_of_settings_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ro:{RO_TOKEN}\n")
    flags = {
        "grpc_address": "127.0.0.1:7000",
        "database_url": "postgresql://app:pw@db/agent",
        "max_page_size": 300,
        "migrate_on_start": False,
        "auth_tokens_file": tokens,
    }
    settings = load(flags, {"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN}"}).settings
    environment = settings.environment()
    assert environment["GRPC_ADDRESS"] == "127.0.0.1:7000"
    assert "AGENT_STATE_GRPC_ADDRESS" not in environment
    again = load({}, environment).settings
    assert again == settings
    assert again.tokens() == settings.tokens()
    assert set(environment) <= config.setting_variables()


def test_effective_redacts_the_database_password() -> None:
    environ = {"DATABASE_URL": "postgresql://app:pa55word@db.example:5432/agent"}
    shown = load({}, environ).settings.effective()
    assert shown["database_url"] == "postgresql://app:***@db.example:5432/agent"
    assert shown["auth_tokens"] is None
    assert list(shown) == list(Settings.model_fields)


def test_a_statement_timeout_of_zero_sets_none() -> None:
    """Behind a transaction-mode pooler the timeout belongs on the role (the
    README says so), so the server must be able to set none of its own."""
    from agent_state.runtime import build_store
    from agent_state.storage.postgres import PostgresStore

    url = "postgresql://app@db.example/agent"
    off = load({"statement_timeout_ms": 0, "database_url": url}, {}).settings
    on = load({"database_url": url}, {}).settings
    off_store, on_store = build_store(off), build_store(on)
    assert isinstance(off_store, PostgresStore)
    assert isinstance(on_store, PostgresStore)
    assert off_store.statement_timeout_ms is None
    assert on_store.statement_timeout_ms == 30_000
    assert "statement_timeout_ms" in problems({"statement_timeout_ms": -1})
