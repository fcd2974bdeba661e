"""The client distribution installs alone: its wheel is built from
client/, installed into a fresh virtualenv with only the requirements it
declares, and imported there; none of the server's dependencies come
along.

The fresh virtualenv gets grpcio and protobuf from the package index pip
is configured with (PyPI, or a local mirror): without one this test fails
at that step, saying so. It asks for the versions this environment has, so
that pip's cache usually serves them. And the server distribution
depends on exactly this client's version.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import agent_state_client

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client"
# The server's own dependencies, which the client must never pull in.
SERVER_ONLY = ("psycopg", "psycopg-binary", "psycopg-pool", "pydantic", "pydantic-core",
               "prometheus-client", "click", "agent-state")  # fmt: skip


def _run(*command: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("client-wheel")
    # hatchling comes from this environment (dev requirements): no download.
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", out, CLIENT)  # fmt: skip
    (built,) = out.glob("agent_state_client-*.whl")
    return built


def _declared_requirements(wheel: Path) -> list[str]:
    """Requires-Dist of the wheel, without the extras' ones."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(name).decode()
    lines = re.findall(r"^Requires-Dist: (.+)$", text, flags=re.M)
    return [line for line in lines if "extra ==" not in line]


def test_the_wheel_holds_the_client_and_its_generated_code(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for module in ("__init__.py", "py.typed", "_gen/agent_state_pb2.py",
                   "_gen/conversations_pb2.py", "_gen/conversations_pb2_grpc.py",
                   "integrations/__init__.py", "integrations/openai_agents.py"):  # fmt: skip
        assert f"agent_state_client/{module}" in names
    assert not any(name.startswith("agent_state/") for name in names)
    requirements = _declared_requirements(wheel)
    assert sorted(re.split(r"[<>=!~ ;\[]", line)[0] for line in requirements) == [
        "grpcio",
        "protobuf",
    ]


def test_it_installs_alone_in_a_fresh_virtualenv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    pip = (python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
    _run(*pip, "--no-deps", wheel)
    # The same versions as here, so that pip's cache can serve them.
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "".join(f"{name}=={metadata.version(name)}\n" for name in ("grpcio", "protobuf"))
    )
    _run(*pip, "--constraint", constraints, *_declared_requirements(wheel))
    _run(python, "-m", "pip", "check")
    installed = json.loads(_run(python, "-m", "pip", "list", "--format=json"))
    names = {package["name"].lower().replace("_", "-") for package in installed}
    assert "agent-state-client" in names
    assert not names & set(SERVER_ONLY)
    probe = (
        "import importlib.util, agent_state_client as c\n"
        "from agent_state_client._gen import conversations_pb2_grpc\n"
        "client = c.Client('127.0.0.1:1')\n"
        "client.close()\n"
        "for name in ('psycopg', 'pydantic', 'prometheus_client', 'agent_state', 'agents'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        # The adapters' package imports alone; an adapter names its extra.
        "import agent_state_client.integrations\n"
        "try:\n"
        "    import agent_state_client.integrations.openai_agents\n"
        "except ImportError as missing:\n"
        "    assert 'agent-state-client[openai-agents]' in str(missing), missing\n"
        "else:\n"
        "    raise AssertionError('imported without the OpenAI Agents SDK')\n"
        "print(c.__version__)\n"
    )
    assert _run(python, "-c", probe, cwd=tmp_path).strip() == "0.1.0"


def test_the_openai_agents_extra_is_declared(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(name).decode()
    assert "Provides-Extra: openai-agents" in text
    assert re.search(
        r"^Requires-Dist: openai-agents>=[\d.]+; extra == 'openai-agents'$", text, re.M
    )


def test_the_server_depends_on_this_client() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert f"agent-state-client=={agent_state_client.__version__}" in server["dependencies"]
