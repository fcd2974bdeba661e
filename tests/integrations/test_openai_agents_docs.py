"""The README's "Use it with the OpenAI Agents SDK" section and the
example it names: the set-up runs as written, the version it names is the
one installed (and pinned in requirements/dev.txt), and
examples/openai_agents_session.py runs against the real server of each
backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tests.support.server import REPO_ROOT, ServerProcess

SECTION = "## Use it with the OpenAI Agents SDK"
EXAMPLE = REPO_ROOT / "examples" / "openai_agents_session.py"


def _section() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    return readme[start : readme.index("\n## ", start + len(SECTION))]


def _run(*command: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_the_version_named_is_the_one_pinned_and_installed() -> None:
    version = metadata.version("openai-agents")
    assert f"tested with {version}" in _section()
    assert f"openai-agents=={version}" in (REPO_ROOT / "requirements" / "dev.txt").read_text()


def test_the_set_up_is_three_lines_that_make_a_session(tmp_path: Path) -> None:
    (setup,) = re.findall(r"^```python\n(.*?)^```$", _section(), flags=re.S | re.M)
    assert len([line for line in setup.splitlines() if line.strip()]) == 3
    check = (
        "from agents.memory import Session\n"
        "assert isinstance(session, Session), session\n"
        "print(session.conversation_id)\n"
    )
    script = tmp_path / "setup.py"
    script.write_text(setup + check)
    assert _run(sys.executable, str(script), cwd=tmp_path).strip()


def test_the_example_runs(live_server: ServerProcess) -> None:
    env = {key: value for key, value in os.environ.items() if key != "AGENT_STATE_ADDRESS"}
    output = _run(sys.executable, str(EXAMPLE), live_server.address, env=env)
    assert "turn 1: It is sunny and 24°C in Lisbon." in output
    assert "turn 2: You asked about Lisbon." in output
    assert "function_call_output" in output
