"""Operating the server: configuration precedence and errors, TLS and mTLS,
bearer tokens, Prometheus metrics, structured logs with request ids, and
tracing. Each test starts its own server process with the settings under
test."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from agent_state_client._gen import agent_state_pb2 as pb
from tests.support import calls
from tests.support.calls import text_message
from tests.support.server import ServerProcess, free_port, health_check, run_agent_state, sqlite_url

from .helpers import new_id, status_code

RW_TOKEN = "rw-token-0123456789abcdef"
RO_TOKEN = "ro-token-0123456789abcdef"
SECRET_BODY = "body-that-must-never-be-logged"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Starts servers with given arguments (SQLite unless a URL is given)
    and stops them at the end of the test."""
    started: list[ServerProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        database_url: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> ServerProcess:
        server = ServerProcess(
            database_url or sqlite_url(tmp_path / f"db{len(started)}.sqlite"),
            tmp_path / f"server{len(started)}.log",
            extra_args=list(args),
            env=env or {},
            credentials=credentials,
        )
        started.append(server)
        return server.start_ready()

    yield start
    for server in started:
        assert server.terminate() == 0, server.describe()


def _append(stub: Any, conversation: str, text: str = "hello", **kwargs: Any) -> Any:
    return stub.AppendConversationMessages(
        pb.AppendConversationMessagesRequest(
            conversation_id=conversation, messages=[text_message(text)]
        ),
        timeout=10,
        **kwargs,
    )


# --- configuration ------------------------------------------------------------


def _effective(*args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    result = run_agent_state("config", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    shown: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return shown


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    config = tmp_path / "agent-state.toml"
    config.write_text('max_page_size = 500\ndefault_page_size = 50\nlog_format = "json"\n')
    file_only = _effective("--config", str(config))
    assert file_only["max_page_size"] == {"value": 500, "source": "file"}
    assert file_only["default_page_size"] == {"value": 50, "source": "file"}
    assert file_only["max_append_messages"] == {"value": 1000, "source": "default"}
    env = {"AGENT_STATE_MAX_PAGE_SIZE": "600", "AGENT_STATE_CONFIG_FILE": str(config)}
    with_env = _effective(env=env)
    assert with_env["max_page_size"] == {"value": 600, "source": "env"}
    assert with_env["log_format"] == {"value": "json", "source": "file"}
    with_flag = _effective("--max-page-size", "700", env=env)
    assert with_flag["max_page_size"] == {"value": 700, "source": "flag"}
    # The Go implementation's variable names keep working.
    go_names = _effective(env={"GRPC_ADDRESS": "127.0.0.1:6000"})
    assert go_names["grpc_address"] == {"value": "127.0.0.1:6000", "source": "env"}


def test_config_redacts_secrets(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# operators\nro:{RO_TOKEN}\n")
    env = {
        "AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN}",
        "DATABASE_URL": "postgresql://app:pa55word-secret@db.example:5432/agent",
    }
    for output in (
        run_agent_state("config", "--auth-tokens-file", str(tokens), env=env).stdout,
        run_agent_state("config", "--json", "--auth-tokens-file", str(tokens), env=env).stdout,
    ):
        assert "pa55word-secret" not in output
        assert RW_TOKEN not in output
        assert RO_TOKEN not in output
        assert "postgresql://app:***@db.example:5432/agent" in output
        assert "2 tokens, redacted" in output


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--log-format", "xml"], {}, "log_format"),
        (["--log-level", "loud"], {}, "log_level"),
        ([], {"AGENT_STATE_POOL_MAX_SIZE": "0"}, "pool_max_size"),
        (["--metrics-address", "nowhere"], {}, "metrics_address"),
        (["--grpc-address", "0.0.0.0:0"], {}, "grpc_address"),
        (["--tls-cert-file", "/etc/hostname"], {}, "tls_key_file"),
        (["--tls-cert-file", "/nonexistent.pem", "--tls-key-file", "/etc/hostname"], {},
         "tls_cert_file"),
        ([], {"AGENT_STATE_AUTH_TOKENS": "admin:" + RW_TOKEN}, "auth_tokens"),
        ([], {"AGENT_STATE_AUTH_TOKENS": "rw:short"}, "auth_tokens"),
        (["--default-page-size", "2000"], {}, "default_page_size"),
    ],
)  # fmt: skip
def test_bad_settings_fail_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    for command in ("config", "serve"):
        result = run_agent_state(command, "--sqlite-path", str(tmp_path / "x.db"), *args, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert named in result.stderr
        assert "Traceback" not in result.stderr
        assert RW_TOKEN not in result.stderr


def test_bad_config_files_fail_with_one_line(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("max_page_sise = 10\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("max_page_size = \n")
    for path, named in [
        (unknown, "max_page_sise"),
        (broken, "not valid TOML"),
        (tmp_path / "missing.toml", "cannot read"),
    ]:
        result = run_agent_state("serve", "--config", str(path))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert named in result.stderr


def test_non_loopback_without_tokens_needs_an_explicit_yes(tmp_path: Path) -> None:
    allowed = _effective("--grpc-address", "0.0.0.0:0", "--allow-unauthenticated")
    assert allowed["allow_unauthenticated"]["value"] is True
    with_tokens = _effective(
        "--grpc-address", "0.0.0.0:0", env={"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN}"}
    )
    assert with_tokens["grpc_address"]["value"] == "0.0.0.0:0"
    # migrate listens on nothing, so the image's 0.0.0.0 does not stop it.
    migrated = run_agent_state(
        "migrate", "--sqlite-path", str(tmp_path / "m.db"), env={"GRPC_ADDRESS": "0.0.0.0:50051"}
    )
    assert migrated.returncode == 0, migrated.stderr


# --- TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _pem_files(ca: trustme.CA, directory: Path) -> tuple[Path, Path, Path]:
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    server_cert.private_key_pem.write_to_path(str(key))
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    for extra in server_cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    ca.cert_pem.write_to_path(str(ca_file))
    return cert, key, ca_file


def test_tls(serve: Callable[..., ServerProcess], ca: trustme.CA, tmp_path: Path) -> None:
    cert, key, ca_file = _pem_files(ca, tmp_path)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    server = serve(
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), credentials=credentials
    )
    with grpc.secure_channel(server.address, credentials) as channel:
        reply = _append(calls.make_stub(channel), new_id())
        assert reply.metadata.message_count == 1
    with grpc.insecure_channel(server.address) as plain:
        stub = calls.make_stub(plain)
        assert status_code(lambda: _append(stub, new_id())) is grpc.StatusCode.UNAVAILABLE
    other_ca = trustme.CA()
    stranger = grpc.ssl_channel_credentials(root_certificates=other_ca.cert_pem.bytes())
    with grpc.secure_channel(server.address, stranger) as channel:
        stub = calls.make_stub(channel)
        assert status_code(lambda: _append(stub, new_id())) is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(serve: Callable[..., ServerProcess], ca: trustme.CA, tmp_path: Path) -> None:
    cert, key, ca_file = _pem_files(ca, tmp_path)
    client = ca.issue_cert("agent-runtime@example.test")
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes(),
        private_key=client.private_key_pem.bytes(),
        certificate_chain=client.cert_chain_pems[0].bytes(),
    )
    server = serve(
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-client-ca-file", str(ca_file),
        credentials=with_cert,
    )  # fmt: skip
    with grpc.secure_channel(server.address, with_cert) as channel:
        assert _append(calls.make_stub(channel), new_id()).metadata.message_count == 1
    without_cert = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    with grpc.secure_channel(server.address, without_cert) as channel:
        stub = calls.make_stub(channel)
        assert status_code(lambda: _append(stub, new_id())) is grpc.StatusCode.UNAVAILABLE
    foreign = trustme.CA().issue_cert("intruder@example.test")
    wrong_ca = grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes(),
        private_key=foreign.private_key_pem.bytes(),
        certificate_chain=foreign.cert_chain_pems[0].bytes(),
    )
    with grpc.secure_channel(server.address, wrong_ca) as channel:
        stub = calls.make_stub(channel)
        assert status_code(lambda: _append(stub, new_id())) is grpc.StatusCode.UNAVAILABLE


# --- bearer tokens ------------------------------------------------------------


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_tokens(serve: Callable[..., ServerProcess], tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# read-only dashboards\nro:{RO_TOKEN}\n")
    server = serve(
        "--auth-tokens-file", str(tokens_file), env={"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN}"}
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = calls.make_stub(channel)
        conversation = new_id()

        def get(metadata: list[tuple[str, str]] | None) -> object:
            return stub.GetConversation(
                pb.GetConversationRequest(conversation_id=conversation),
                timeout=10,
                metadata=metadata,
            )

        assert status_code(lambda: _append(stub, conversation)) is grpc.StatusCode.UNAUTHENTICATED
        assert status_code(lambda: get(None)) is grpc.StatusCode.UNAUTHENTICATED
        assert status_code(lambda: get(_bearer("not-a-token-at-all-00000"))) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert status_code(lambda: get([("authorization", RW_TOKEN)])) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        ro = _bearer(RO_TOKEN)
        denied = status_code(lambda: _append(stub, conversation, metadata=ro))
        assert denied is grpc.StatusCode.PERMISSION_DENIED
        # Allowed, and nothing written.
        assert status_code(lambda: get(ro)) is grpc.StatusCode.NOT_FOUND
        assert _append(stub, conversation, metadata=_bearer(RW_TOKEN)).metadata.message_count == 1
        assert status_code(lambda: get(ro)) is grpc.StatusCode.OK
        # Health stays open; reflection is a read.
        assert health_check(channel, "", timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        reflect: Any = reflection_pb2_grpc.ServerReflectionStub(channel)

        def list_services(metadata: list[tuple[str, str]] | None) -> object:
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            return list(reflect.ServerReflectionInfo(iter([request]), metadata=metadata))

        assert status_code(lambda: list_services(None)) is grpc.StatusCode.UNAUTHENTICATED
        assert status_code(lambda: list_services(ro)) is grpc.StatusCode.OK
    assert RW_TOKEN not in server.output()
    assert RO_TOKEN not in server.output()


# --- metrics and logs -----------------------------------------------------------


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics(serve: Callable[..., ServerProcess], make_database_url: Callable[[], str]) -> None:
    port = free_port()
    server = serve("--metrics-address", f"127.0.0.1:{port}", database_url=make_database_url())
    with grpc.insecure_channel(server.address) as channel:
        stub = calls.make_stub(channel)
        conversation = new_id()
        for _ in range(3):
            _append(stub, conversation)
        missing = pb.GetConversationRequest(conversation_id=new_id())
        assert status_code(lambda: stub.GetConversation(missing, timeout=10)) is (
            grpc.StatusCode.NOT_FOUND
        )
        bad = pb.GetConversationRequest(conversation_id="not-a-uuid")
        assert status_code(lambda: stub.GetConversation(bad, timeout=10)) is (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    samples = _scrape(port)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    append = "AppendConversationMessages"
    assert value("agent_state_rpc_requests_total", method=append, code="OK") == 3
    assert value("agent_state_rpc_requests_total", method="GetConversation", code="NOT_FOUND") == 1
    assert (
        value("agent_state_rpc_requests_total", method="GetConversation", code="INVALID_ARGUMENT")
        == 1
    )
    assert value("agent_state_rpc_duration_seconds_count", method=append) == 3
    assert value("agent_state_rpc_duration_seconds_bucket", method=append, le="+Inf") == 3
    assert value("agent_state_rpc_in_flight") == 0
    assert value("agent_state_db_pool_connections", state="open") >= 1
    assert value("agent_state_db_pool_max") >= 1
    assert value("agent_state_db_pool_waiting") == 0
    assert not any(name == "agent_state_storage_errors_total" for name, _ in samples)


def _rpc_lines(output: str, parse: Callable[[str], dict[str, str]]) -> list[dict[str, str]]:
    events = []
    for line in output.splitlines():
        try:
            event = parse(line)
        except ValueError:
            continue
        if event.get("logger") == "agent_state.rpc":
            events.append(event)
    return events


def _logfmt(line: str) -> dict[str, str]:
    pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line)
    if not pairs:
        raise ValueError(line)
    return {key: value.strip('"') for key, value in pairs}


@pytest.mark.parametrize("log_format", ["json", "logfmt"])
def test_one_log_line_per_call_with_request_id(
    serve: Callable[..., ServerProcess], log_format: str
) -> None:
    server = serve("--log-format", log_format, env={"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN}"})
    conversation = new_id()
    with grpc.insecure_channel(server.address) as channel:
        stub = calls.make_stub(channel)
        metadata = [*_bearer(RW_TOKEN), ("x-request-id", "req-from-client-1")]
        _, call = stub.AppendConversationMessages.with_call(
            pb.AppendConversationMessagesRequest(
                conversation_id=conversation, messages=[text_message(SECRET_BODY)]
            ),
            timeout=10,
            metadata=metadata,
        )
        assert ("x-request-id", "req-from-client-1") in list(call.trailing_metadata())
        try:
            stub.GetConversation(
                pb.GetConversationRequest(conversation_id=new_id()),
                timeout=10,
                metadata=_bearer(RW_TOKEN),
            )
        except grpc.RpcError as error:
            trailing = {item.key: item.value for item in error.trailing_metadata()}
            generated = str(trailing["x-request-id"])
        else:
            raise AssertionError("an unknown conversation must be NOT_FOUND")
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    parse = json.loads if log_format == "json" else _logfmt
    lines = _rpc_lines(server.output(), parse)
    by_id = {line["request_id"]: line for line in lines}
    first = by_id["req-from-client-1"]
    assert first["method"] == "AppendConversationMessages"
    assert first["code"] == "OK"
    assert first["conversation_id"] == conversation
    assert float(first["duration_ms"]) >= 0
    assert by_id[generated]["code"] == "NOT_FOUND"
    assert SECRET_BODY not in server.output()
    assert RW_TOKEN not in server.output()


def test_the_server_runs_on_uvloop(serve: Callable[..., ServerProcess]) -> None:
    """uvloop is a dependency wherever it installs, and the server's
    startup line says which event loop it runs."""
    server = serve("--log-format", "json")
    started = [
        line
        for line in map(json.loads, server.output().splitlines())
        if line["msg"].startswith("agent-state listening on")
    ]
    assert [line["event_loop"] for line in started] == ["uvloop"]


# --- tracing ----------------------------------------------------------------------


def test_tracing_spans_for_calls_and_sql(
    serve: Callable[..., ServerProcess], make_database_url: Callable[[], str], backend: str
) -> None:
    server = serve(
        "--tracing",
        env={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "agent-state-test"},
        database_url=make_database_url(),
    )
    with grpc.insecure_channel(server.address) as channel:
        _append(calls.make_stub(channel), new_id(), SECRET_BODY)
    assert server.terminate() == 0
    output = server.output()
    assert '"name": "agynio.api.agent_state.v1.AgentStateService/AppendConversationMessages"' in (
        output
    )
    assert '"rpc.grpc.status_code": 0' in output
    assert '"service.name": "agent-state-test"' in output
    if backend != "sqlite":
        # The statements the call ran are its child spans.
        assert '"db.system": "postgresql"' in output
    assert SECRET_BODY not in output


# --- the CLI client against a locked-down server ----------------------------------


def test_cli_client_over_mutual_tls_with_tokens(
    serve: Callable[..., ServerProcess], ca: trustme.CA, tmp_path: Path
) -> None:
    cert, key, ca_file = _pem_files(ca, tmp_path)
    client = ca.issue_cert("operator@example.test")
    client_cert, client_key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(client_cert))
    client.private_key_pem.write_to_path(str(client_key))
    server = serve(
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-client-ca-file", str(ca_file),
        env={"AGENT_STATE_AUTH_TOKENS": f"rw:{RW_TOKEN},ro:{RO_TOKEN}"},
        credentials=grpc.ssl_channel_credentials(
            root_certificates=ca_file.read_bytes(),
            private_key=client.private_key_pem.bytes(),
            certificate_chain=client.cert_chain_pems[0].bytes(),
        ),
    )  # fmt: skip
    tls = [
        "--address", server.address, "--tls-ca-file", str(ca_file),
        "--tls-cert-file", str(client_cert), "--tls-key-file", str(client_key),
    ]  # fmt: skip
    conversation = new_id()
    appended = run_agent_state("append", conversation, "over mTLS", *tls, "--token", RW_TOKEN)
    assert appended.returncode == 0, appended.stderr
    shown = run_agent_state("show", conversation, *tls, env={"AGENT_STATE_TOKEN": RO_TOKEN})
    assert shown.returncode == 0, shown.stderr
    assert "over mTLS" in shown.stdout
    denied = run_agent_state("append", conversation, "no", *tls, "--token", RO_TOKEN)
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    anonymous = run_agent_state("get", conversation, *tls)
    assert anonymous.returncode == 1
    assert "UNAUTHENTICATED" in anonymous.stderr
    for result in (appended, shown, denied, anonymous):
        assert RW_TOKEN not in result.stdout + result.stderr
        assert RO_TOKEN not in result.stdout + result.stderr
    health = run_agent_state("health", *tls)
    assert health.returncode == 0, health.stderr
