"""The README's "Using it from Python" examples, each run as it is written
(a fresh Python process) against the real server on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import REPO_ROOT, ServerProcess

SECTION = "## Using it from Python"


def _examples() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index(SECTION) + len(SECTION)
    end = readme.find("\n## ", start)
    section = readme[start : end if end >= 0 else None]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


EXAMPLES = _examples()


def test_the_section_has_its_examples() -> None:
    assert len(EXAMPLES) == 3
    agent_loop = EXAMPLES[1]
    for call in ("append(", "context(", "replace_range(", "create_snapshot(", "expected_version"):
        assert call in agent_loop


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_example_runs(number: int, live_server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / f"example_{number}.py"
    script.write_text(EXAMPLES[number])
    env = dict(os.environ, AGENT_STATE_ADDRESS=live_server.address)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "Traceback" not in done.stderr
