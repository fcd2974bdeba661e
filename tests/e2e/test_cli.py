"""The command line around the server: migrate, start-up failures that
end with one clear line and the documented exit code, --version, --help
of every command, and what importing it imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import agent_state
import agent_state_client
from agent_state.cli import main
from agent_state.storage import migrations
from tests.support.server import REPO_ROOT, run_agent_state


def test_version_names_both_distributions() -> None:
    result = run_agent_state("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"agent-state {agent_state.__version__}"
        f" (agent-state-client {agent_state_client.__version__})\n"
    )
    assert result.stderr == ""


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_command_has_help() -> None:
    runner = CliRunner()
    names = list(_commands(main))
    assert {"conversation", "snapshot", "state", "append", "tail", "replace"} <= {
        name[0] for name in names
    }
    for name in names:
        result = runner.invoke(main, [*name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage: " in result.output


def test_importing_the_command_line_imports_no_grpc() -> None:
    # Importing grpc fixes its core's log level: `serve` keeps gRPC's
    # default, the client commands set theirs first (cli/session.py).
    check = "import sys, agent_state.cli; assert 'grpc' not in sys.modules, 'grpc imported'"
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_migrate_applies_once(make_database_url: Callable[[], str]) -> None:
    url = make_database_url()
    first = run_agent_state("migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    # The same versions in both dialects.
    versions = [migration.version for migration in migrations.load("sqlite")]
    assert f"applied migrations: {versions}" in first.stdout
    again = run_agent_state("migrate", "--database-url", url)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/db", "sqlite://relative.db", "file:///tmp/x.db"]
)
def test_unsupported_database_urls_are_refused(url: str) -> None:
    result = run_agent_state("migrate", "--database-url", url)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "URL" in result.stderr


def test_a_bad_setting_names_itself(tmp_path: Path) -> None:
    result = run_agent_state(
        "serve", "--sqlite-path", str(tmp_path / "x.db"), env={"AGENT_STATE_MAX_PAGE_SIZE": "lots"}
    )
    assert result.returncode == 2
    assert "max_page_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_postgres_fails_without_leaking_the_password() -> None:
    # Nothing listens on port 1.
    result = run_agent_state(
        "migrate", "--database-url", "postgresql://someone:s3cret-pw@127.0.0.1:1/db"
    )
    assert result.returncode == 1
    assert "unavailable" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_serving_without_migrating_an_unmigrated_database_refuses_to_start(
    make_database_url: Callable[[], str],
) -> None:
    result = run_agent_state(
        "serve", "--no-migrate", "--grpc-address", "127.0.0.1:0", "--database-url",
        make_database_url(),
    )  # fmt: skip
    assert result.returncode == 2
    assert "agent-state migrate" in result.stderr
    assert "Traceback" not in result.stderr
