"""The OpenAI Agents SDK's own session tests, run on AgentStateSession
against the real server of each backend.

They are fetched from the SDK's source distribution (tests/integrations/
upstream.py) and run in a pytest of their own with our plugin
(agent_state_upstream_plugin.py), which puts our session where they build
the SDK's stores. Every test that runs must pass, the counts below must
hold (so that a test quietly not running shows), and the tests the plugin
deselects are exactly those it lists, with their reasons.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

from . import agent_state_upstream_plugin as plugin
from . import upstream

HERE = Path(__file__).resolve().parent

# file -> (tests passed, of them the tests that built at least one of our
# sessions, tests deselected as not applicable). Parametrized cases count
# one each.
EXPECTED = {
    "tests/memory/test_session.py": (38, 32, 18),
    "tests/memory/test_session_limit.py": (15, 15, 0),
    "tests/extensions/memory/test_sqlalchemy_session.py": (21, 20, 22),
    "tests/memory/test_compaction_suffix.py": (14, 14, 32),
}


def test_the_fetched_tests_are_of_the_installed_release() -> None:
    assert metadata.version("openai-agents") == upstream.VERSION
    assert set(EXPECTED) == set(upstream.TEST_FILES)
    assert set(plugin.NOT_APPLICABLE) <= set(upstream.TEST_FILES)


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def test_the_sdk_session_tests_pass_on_agent_state(
    live_server: ServerProcess, tmp_path: Path
) -> None:
    tree = upstream.unpacked()
    report_path = tmp_path / "report.json"
    env = {
        **os.environ,
        plugin.ADDRESS_VARIABLE: live_server.address,
        plugin.REPORT_VARIABLE: str(report_path),
        # The upstream tree's `tests` package first, then the plugin by name.
        "PYTHONPATH": os.pathsep.join([str(tree), str(HERE)]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "agent_state_upstream_plugin",
         "-p", "no:cacheprovider", "--rootdir", str(tree), "-c", str(tree / "pytest.ini"),
         *upstream.TEST_FILES],
        cwd=tree, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())

    outcomes: dict[str, str] = report["outcomes"]
    assert set(outcomes.values()) == {"passed"}, outcomes
    passed = Counter(_file(nodeid) for nodeid in outcomes)
    with_ours = Counter(_file(nodeid) for nodeid, built in report["sessions"].items() if built)
    deselected = Counter(_file(nodeid) for nodeid in report["deselected"])
    found = {name: (passed[name], with_ours[name], deselected[name]) for name in EXPECTED}
    assert found == EXPECTED

    # Every listed test exists upstream (the list does not rot), with its reason.
    names = {nodeid.split("::", 1)[1].split("[", 1)[0] for nodeid in report["deselected"]}
    listed = {name for tests in plugin.NOT_APPLICABLE.values() for name in tests}
    assert names == listed
    assert all(reason for reason in report["deselected"].values())


@pytest.fixture(scope="module", autouse=True)
def _fetched() -> None:
    """The download happens once, before the server-bound tests time out."""
    upstream.unpacked()
