"""examples/adk_session_service.py, run as a user runs it (a fresh Python
process) against the real server on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata

from tests.support.server import REPO_ROOT, ServerProcess

EXAMPLE = REPO_ROOT / "examples" / "adk_session_service.py"


def test_the_example_runs(live_server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), live_server.address],
        cwd=REPO_ROOT,
        env={**os.environ, "AGENT_STATE_ADDRESS": "127.0.0.1:1"},  # the argument wins
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "alice: What is the weather in Lisbon?",
        "  weather_agent calls get_weather({'city': 'Lisbon'})",
        "weather_agent: Lisbon: sunny, 24 °C.",
        "stored: 4 events, state {'last_answer': 'Lisbon: sunny, 24 °C.', 'units': 'metric',"
        " 'user:last_city': 'Lisbon'}",
        "alice: Which city was that again?",
        "weather_agent: You asked about Lisbon.",
        "alice has 1 session(s) in weather-example",
    ]


def test_the_readme_names_the_version_tested() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    named = re.search(r"tested with google-adk (\S+) \(the version", readme)
    assert named is not None
    locked = (REPO_ROOT / "requirements" / "dev.txt").read_text()
    assert f"\ngoogle-adk=={named.group(1)} " in locked
    assert metadata.version("google-adk") == named.group(1)


def test_without_google_adk_the_import_says_what_to_install() -> None:
    probe = (
        "import sys\n"
        "sys.modules['google.adk'] = None  # as if google-adk were not installed\n"
        "import agent_state_client.integrations  # the package itself needs nothing\n"
        "try:\n"
        "    import agent_state_client.integrations.adk\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'agent-state-client[adk]'" in done.stdout
