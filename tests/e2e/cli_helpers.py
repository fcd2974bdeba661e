"""Running the `agent-state` command in the CLI tests, and reading what it
printed: as a process of its own (`cli`), or in the test's process through
click's runner (`invoke`), which spares a Python start-up per command for
the many tests of what the commands do against the server process. What
only a process shows (a terminal, gRPC's own lines on stderr, the entry
point) is tested with `cli`."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime
from typing import Protocol

from click.testing import CliRunner
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state.cli import main
from tests.support.server import run_agent_state

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_FAILURE = re.compile(r"agent-state: ([A-Z_]+): .+ \(request id [0-9A-Za-z-]+\)\n")


class Run(Protocol):
    """`cli` against the live server."""

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]: ...


def cli(
    *args: str,
    address: str | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m agent_state ARGS [--address ADDRESS]``, output captured."""
    command = list(args)
    if address is not None:
        command += ["--address", address]
    return run_agent_state(*command, env=env, stdin=stdin)


def invoke(
    *args: str, address: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``agent-state ARGS --address ADDRESS`` in this process, as `cli` runs it."""
    # Unset what the developer's environment may hold, and give back the
    # gRPC log level the command sets (the runner restores what it is given).
    isolated: dict[str, str | None] = {
        "AGENT_STATE_ADDRESS": None,
        "AGENT_STATE_TOKEN": None,
        "GRPC_VERBOSITY": os.environ.get("GRPC_VERBOSITY"),
        **(env or {}),
    }
    command = [*args, "--address", address]
    result = CliRunner().invoke(main, command, input=stdin, env=isolated)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(command, result.exit_code, result.stdout, result.stderr)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that succeeded, and said nothing on stderr."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert result.stderr == ""
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str], code: str) -> str:
    """The one line a failed call ends with: its status and request id, on
    stderr, exit code 1, nothing on stdout."""
    assert result.returncode == 1, result
    assert result.stdout == "", "a failure prints nothing on stdout"
    matched = _FAILURE.fullmatch(result.stderr)
    assert matched, result.stderr
    assert matched.group(1) == code, result.stderr
    return result.stderr


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """What a usage error (exit code 2) said, with nothing on stdout."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def field(output: str, name: str) -> str:
    """The value of the aligned ``name  value`` line of `output` (the only one)."""
    found = [
        line.split(None, 1)[1] for line in output.splitlines() if line.split(None, 1)[0] == name
    ]
    assert len(found) == 1, (name, output)
    return found[0]


def moment(when: datetime) -> str:
    """A time as the CLI prints it: RFC 3339 UTC with microseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamp(value: Timestamp) -> str:
    return moment(value.ToDatetime(tzinfo=UTC))


def message_blocks(output: str) -> list[list[str]]:
    """The lines of ``show``/``tail``/``snapshot show`` output grouped per
    message (header first)."""
    blocks: list[list[str]] = []
    for line in output.splitlines():
        if line.startswith("["):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return blocks
