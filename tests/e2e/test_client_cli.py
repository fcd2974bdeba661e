"""The client commands of the CLI, run as a subprocess against the live server
(SQLite and PostgreSQL), cross-checked with the gRPC API itself.

TLS and tokens are checked against a small in-process gRPC server that
records what it received, since they are about the client's side of the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e import helpers as h
from tests.support import calls
from tests.support.calls import Stub, text_message
from tests.support.server import ServerProcess, free_port, run_agent_state

ANSI = re.compile(r"\x1b\[[0-9;]*m")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


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


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert result.stderr == ""
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str], code: str) -> str:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"agent-state: {code}: "), result.stderr
    return result.stderr


def proto_json(message: Any) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def message_blocks(output: str) -> list[list[str]]:
    """The lines of ``show``/``snapshot`` output grouped per message (header first)."""
    blocks: list[list[str]] = []
    for line in output.splitlines():
        if line.startswith("["):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return blocks


# --- append, show, get ------------------------------------------------------------


def test_append_then_show(stub: Stub, live_server: ServerProcess) -> None:
    conversation = h.new_id()
    first = ok(cli("append", conversation, "hello\nthere", address=live_server.address))
    match = re.search(rf"^message_id\s+({UUID})$", first, re.MULTILINE)
    assert match, first
    assert re.search(r"^message_count\s+1$", first, re.MULTILINE), first
    second = ok(
        cli(
            "append",
            conversation,
            "hi, how can I help?",
            "--role",
            "assistant",
            "--kind",
            "reply",
            address=live_server.address,
        )
    )
    assert re.search(r"^message_count\s+2$", second, re.MULTILINE), second

    stored = calls.list_all(stub, conversation)
    assert stored[0].id == match.group(1)
    assert [(m.role, m.kind, m.body.text.text) for m in stored] == [
        (h.USER, "", "hello\nthere"),
        (h.ASSISTANT, "reply", "hi, how can I help?"),
    ]

    output = ok(cli("show", conversation, address=live_server.address))
    assert output.splitlines()[0].startswith(f"conversation  conversation_id={conversation}")
    assert "message_count=2" in output.splitlines()[0]
    created = [m.created_at.ToJsonString() for m in stored]
    assert message_blocks(output) == [
        [f'[0]  {stored[0].id}  user  kind=""  {created[0]}', "    hello", "    there"],
        [f"[1]  {stored[1].id}  assistant  kind=reply  {created[1]}", "    hi, how can I help?"],
    ]


def test_append_reads_stdin_for_dash(stub: Stub, live_server: ServerProcess) -> None:
    conversation = h.new_id()
    ok(cli("append", conversation, "-", address=live_server.address, stdin="from\nstdin\n"))
    assert h.texts(calls.list_all(stub, conversation)) == ["from\nstdin\n"]


def test_get_prints_the_count(stub: Stub, live_server: ServerProcess) -> None:
    conversation = h.new_id()
    calls.seed(stub, conversation, 3)
    metadata = calls.get(stub, conversation)
    output = ok(cli("get", conversation, address=live_server.address))
    assert output.splitlines() == [
        f"conversation_id  {conversation}",
        "message_count    3",
        f"updated_at       {metadata.updated_at.ToJsonString()}",
    ]


def test_json_output_is_what_the_api_returns(stub: Stub, live_server: ServerProcess) -> None:
    conversation = h.new_id()
    appended = json.loads(
        ok(
            cli(
                "append",
                conversation,
                "first",
                "--kind",
                "k",
                "--json",
                address=live_server.address,
            )
        )
    )
    stored = calls.list_all(stub, conversation)
    assert appended == {
        "metadata": proto_json(calls.get(stub, conversation)),
        "appended": [proto_json(stored[0])],
    }
    calls.append(
        stub,
        conversation,
        [h.tool_text_message("out", metadata={"k": "v"}), text_message("", h.ASSISTANT)],
    )
    stored = calls.list_all(stub, conversation)
    metadata = calls.get(stub, conversation)

    got = json.loads(ok(cli("get", conversation, "--json", address=live_server.address)))
    assert got == {"metadata": proto_json(metadata)}
    assert got["metadata"]["messageCount"] == "3"

    shown = json.loads(
        ok(cli("show", conversation, "--json", "--page-size", "2", address=live_server.address))
    )
    assert shown == {
        "metadata": proto_json(metadata),
        "messages": [{"index": i, **proto_json(m)} for i, m in enumerate(stored)],
    }
    assert shown["messages"][2]["kind"] == "", "fields at their defaults are present"

    listed = json.loads(ok(cli("ids", conversation, "--json", address=live_server.address)))
    assert listed == {"conversationId": conversation, "messageIds": [m.id for m in stored]}


# --- every body variant --------------------------------------------------------------


def test_tool_bodies_render_their_fields(stub: Stub, live_server: ServerProcess) -> None:
    conversation = h.new_id()
    image = pb.ToolImageOutput(
        external_url="https://images.example/cat.png",
        mime_type="image/png",
        detail=pb.IMAGE_DETAIL_HIGH,
        width_px=640,
        height_px=480,
        sha256="9f" * 32,
    )
    calls.append(
        stub,
        conversation,
        [
            text_message("look this up", kind="user"),
            h.tool_text_message(
                "3 results\nbest: agent-state",
                tool_name="web_search",
                tool_call_id="call_abc",
                metadata={"source": "bing", "latency": "12 ms"},
            ),
            h.tool_image_message(image, tool_name="camera", tool_call_id="call_img"),
        ],
    )
    stored = calls.list_all(stub, conversation)
    output = ok(cli("show", conversation, address=live_server.address))
    blocks = message_blocks(output)
    assert [block[0].split("  ")[:3] for block in blocks] == [
        ["[0]", stored[0].id, "user"],
        ["[1]", stored[1].id, "tool"],
        ["[2]", stored[2].id, "tool"],
    ]
    assert blocks[1][1:] == [
        "    tool output  tool_name=web_search  tool_call_id=call_abc",
        "    text:",
        "        3 results",
        "        best: agent-state",
        '    metadata  latency="12 ms"  source=bing',
    ]
    assert "kind=tool_output" in blocks[1][0]
    assert blocks[2][1:] == [
        "    tool output  tool_name=camera  tool_call_id=call_img",
        "    image  external_url=https://images.example/cat.png  mime_type=image/png"
        f"  detail=high  width_px=640  height_px=480  sha256={'9f' * 32}",
    ]


# --- paging, filters, snapshots -------------------------------------------------------


def test_ids_are_every_id_in_order_across_pages(stub: Stub, live_server: ServerProcess) -> None:
    conversation = h.new_id()
    seeded = calls.seed(stub, conversation, 7)
    # Reorder, so that the ordering is not creation order: [6, 0, 1, ..., 5].
    calls.replace(stub, conversation, to_id=seeded[0], new_ids=[seeded[6]])
    expected = calls.all_ids(stub, conversation)
    assert expected == [seeded[6], *seeded[:6]]

    output = ok(cli("ids", conversation, "--page-size", "2", address=live_server.address))
    assert output.splitlines() == expected

    shown = ok(cli("show", conversation, "--page-size", "3", address=live_server.address))
    blocks = message_blocks(shown)
    assert [b[0].split("  ")[:2] for b in blocks] == [[f"[{i}]", x] for i, x in enumerate(expected)]
    assert [b[1].strip() for b in blocks] == ["m6", "m0", "m1", "m2", "m3", "m4", "m5"]


def test_filters_keep_the_index_in_the_whole_ordering(
    stub: Stub, live_server: ServerProcess
) -> None:
    conversation = h.new_id()
    calls.append(
        stub,
        conversation,
        [
            text_message("q1", h.USER, "question"),
            text_message("a1", h.ASSISTANT, "answer"),
            text_message("q2", h.USER, "question"),
            text_message("note", h.ASSISTANT, ""),
        ],
    )
    by_role = ok(
        cli(
            "show",
            conversation,
            "--role",
            "assistant",
            "--page-size",
            "1",
            address=live_server.address,
        )
    )
    assert [(b[0].split("  ")[0], b[1].strip()) for b in message_blocks(by_role)] == [
        ("[1]", "a1"),
        ("[3]", "note"),
    ]
    by_kind = ok(
        cli("show", conversation, "--kind", "question", "--kind", "", address=live_server.address)
    )
    assert [(b[0].split("  ")[0], b[1].strip()) for b in message_blocks(by_kind)] == [
        ("[0]", "q1"),
        ("[2]", "q2"),
        ("[3]", "note"),
    ]
    none = ok(cli("show", conversation, "--role", "tool", address=live_server.address))
    assert message_blocks(none) == []
    assert none.splitlines()[-1] == "(no messages)"


def test_snapshot_renders_its_messages(stub: Stub, live_server: ServerProcess) -> None:
    conversation = h.new_id()
    ids = calls.seed(stub, conversation, 3, prefix="s")
    calls.append(stub, conversation, [h.tool_text_message("tool said", tool_call_id="call_9")])
    tool_id = calls.all_ids(stub, conversation)[-1]
    taken = calls.snapshot(stub, conversation, [ids[2], tool_id, ids[0], ids[2]])
    # Later changes do not show in the snapshot.
    calls.delete(stub, conversation, from_id=ids[0], to_id=ids[2])

    output = ok(cli("snapshot", taken.snapshot_id, "--page-size", "1", address=live_server.address))
    assert output.splitlines()[0] == f"snapshot  snapshot_id={taken.snapshot_id}"
    blocks = message_blocks(output)
    assert [b[0].split("  ")[:3] for b in blocks] == [
        ["[0]", ids[2], "user"],
        ["[1]", tool_id, "tool"],
        ["[2]", ids[0], "user"],
        ["[3]", ids[2], "user"],
    ]
    assert blocks[0][1:] == ["    s2"]
    assert blocks[1][1:3] == [
        "    tool output  tool_name=search  tool_call_id=call_9",
        "    text:",
    ]
    assert blocks[1][3] == "        tool said"

    document = json.loads(
        ok(cli("snapshot", taken.snapshot_id, "--json", address=live_server.address))
    )
    expected = calls.snapshot_messages(stub, taken.snapshot_id)
    assert document == {
        "snapshotId": taken.snapshot_id,
        "messages": [{"index": i, **proto_json(m)} for i, m in enumerate(expected)],
    }


# --- health and errors ------------------------------------------------------------------


def test_health_of_the_live_server(live_server: ServerProcess) -> None:
    assert ok(cli("health", address=live_server.address)) == "SERVING\n"
    document = json.loads(ok(cli("health", "--json", address=live_server.address)))
    assert document == {"status": "SERVING"}


def test_health_where_nothing_listens() -> None:
    result = cli("health", "--timeout", "5", address=f"127.0.0.1:{free_port()}")
    one_error_line(result, "UNAVAILABLE")
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["get", "show", "ids"])
def test_unknown_conversation(command: str, live_server: ServerProcess) -> None:
    result = cli(command, h.new_id(), address=live_server.address)
    line = one_error_line(result, "NOT_FOUND")
    assert "conversation_id" in line
    assert "Traceback" not in result.stderr


def test_unknown_snapshot(live_server: ServerProcess) -> None:
    one_error_line(cli("snapshot", h.new_id(), address=live_server.address), "NOT_FOUND")


def test_a_malformed_id_is_the_servers_invalid_argument(live_server: ServerProcess) -> None:
    one_error_line(cli("get", "not-a-uuid", address=live_server.address), "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    "args",
    [
        ["--tls-cert-file", "{cert}"],
        ["--tls-key-file", "{cert}"],
        ["--no-tls", "--tls-ca-file", "{cert}"],
        ["--timeout", "0"],
        ["--role", "system"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    result = cli("show", h.new_id(), *[a.format(cert=cert) for a in args])
    assert result.returncode == 2, result
    assert "Usage:" in result.stderr
    assert result.stdout == ""


# --- colour -------------------------------------------------------------------------------


def test_colour_only_when_asked_without_a_tty(stub: Stub, live_server: ServerProcess) -> None:
    conversation = h.new_id()
    calls.append(stub, conversation, [text_message("red \x1b[31malert\x1b[0m", kind="k")])
    plain = ok(cli("show", conversation, address=live_server.address))
    assert "\x1b" not in plain
    assert "red \\x1b[31malert\\x1b[0m" in plain, "stored escapes are shown, not obeyed"

    coloured = ok(cli("show", conversation, "--color", address=live_server.address))
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == plain
    assert "\x1b" not in ok(cli("show", conversation, "--no-color", address=live_server.address))
    assert "\x1b" in ok(cli("health", "--color", address=live_server.address))


def test_colour_by_default_on_a_tty(live_server: ServerProcess) -> None:
    leader, follower = pty.openpty()
    try:
        on_tty = subprocess.run(
            [sys.executable, "-m", "agent_state", "health", "--address", live_server.address],
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
            check=True,
        )
        os.close(follower)
        follower = -1
        written = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's output is drained
            while chunk := os.read(leader, 4096):
                written += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert on_tty.stderr == b""
    assert ANSI.search(written.decode()), written
    assert ANSI.sub("", written.decode()).strip() == "SERVING"


# --- tokens and TLS, against a recording server -------------------------------------------


class Recorder:
    """A gRPC server that answers Health/Check with SERVING and keeps each call's metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.servers: list[grpc.Server] = []

    def check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    def start(self, credentials: grpc.ServerCredentials | None = None) -> str:
        """Serve (plaintext, or TLS with ``credentials``) until the test ends; the address."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.servers.append(server)
        handler = grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.check,
                    request_deserializer=health_pb2.HealthCheckRequest.FromString,
                    response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers([handler])
        address = f"127.0.0.1:{free_port()}"
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
        server.start()
        return address


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    yield recording
    for server in recording.servers:
        server.stop(None)


def test_the_token_is_sent_as_bearer_metadata_and_never_printed(recorder: Recorder) -> None:
    address = recorder.start()
    by_flag = cli("health", "--token", "s3cret-flag", "--json", address=address)
    by_env = cli("health", address=address, env={"AGENT_STATE_TOKEN": "s3cret-env"})
    without = cli("health", address=address)
    for result in (by_flag, by_env, without):
        ok(result)
        assert "s3cret" not in result.stdout + result.stderr
    assert [m.get("authorization") for m in recorder.metadata] == [
        "Bearer s3cret-flag",
        "Bearer s3cret-env",
        None,
    ]


def test_a_token_grpc_cannot_send_is_a_usage_error_that_does_not_echo_it() -> None:
    result = cli("health", "--token", "s3cret\nline")
    assert result.returncode == 2
    assert "s3cret" not in result.stdout + result.stderr


def test_the_address_comes_from_the_environment(recorder: Recorder) -> None:
    address = recorder.start()
    ok(cli("health", env={"AGENT_STATE_ADDRESS": address}))
    assert len(recorder.metadata) == 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for agent-state.test and a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("agent-state.test")
    client = ca.issue_cert("client@agent-state.test")
    other_ca = trustme.CA()
    files = {
        "ca": ca.cert_pem,
        "other_ca": other_ca.cert_pem,
        "server_key": server.private_key_pem,
        "client_key": client.private_key_pem,
    }
    paths = {name: directory / f"{name}.pem" for name in files}
    for name, blob in files.items():
        blob.write_to_path(str(paths[name]))
    paths["server_cert"] = directory / "server_cert.pem"
    paths["server_cert"].write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    paths["client_cert"] = directory / "client_cert.pem"
    paths["client_cert"].write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    return paths


def tls_options(pki: dict[str, Path], *, ca: str = "ca", client: bool = True) -> list[str]:
    options = ["--timeout", "5", "--tls-server-name", "agent-state.test"]
    options += ["--tls-ca-file", str(pki[ca])]
    if client:
        options += ["--tls-cert-file", str(pki["client_cert"])]
        options += ["--tls-key-file", str(pki["client_key"])]
    return options


def server_credentials(pki: dict[str, Path], *, mutual: bool) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(pki["server_key"].read_bytes(), pki["server_cert"].read_bytes())],
        root_certificates=pki["ca"].read_bytes() if mutual else None,
        require_client_auth=mutual,
    )


def test_mutual_tls(recorder: Recorder, pki: dict[str, Path]) -> None:
    address = recorder.start(server_credentials(pki, mutual=True))
    with_cert = cli("health", *tls_options(pki), "--token", "s3cret", address=address)
    assert ok(with_cert) == "SERVING\n"
    assert recorder.metadata == [{**recorder.metadata[0], "authorization": "Bearer s3cret"}]

    refused = [
        cli("health", *tls_options(pki, client=False), address=address),
        cli("health", *tls_options(pki, ca="other_ca"), address=address),
        cli("health", "--timeout", "5", address=address),
    ]
    for result in refused:
        one_error_line(result, "UNAVAILABLE")
    assert len(recorder.metadata) == 1, "no other call got through"


def test_server_only_tls(recorder: Recorder, pki: dict[str, Path]) -> None:
    address = recorder.start(server_credentials(pki, mutual=False))
    ok(cli("health", *tls_options(pki, client=False), address=address))
    # The certificate names agent-state.test, not 127.0.0.1; the system roots
    # do not include the test CA.
    name_mismatch = ["--timeout", "5", "--tls-ca-file", str(pki["ca"])]
    one_error_line(cli("health", *name_mismatch, address=address), "UNAVAILABLE")
    system_roots = ["--timeout", "5", "--tls", "--tls-server-name", "agent-state.test"]
    one_error_line(cli("health", *system_roots, address=address), "UNAVAILABLE")
    assert len(recorder.metadata) == 1


@pytest.mark.parametrize("option", ["--tls-ca-file", "--tls-cert-file", "--tls-key-file"])
def test_a_file_without_pem_is_a_usage_error(
    option: str, pki: dict[str, Path], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM\n")
    options = tls_options(pki)
    options[options.index(option) + 1] = str(junk)
    result = cli("health", *options, address=f"127.0.0.1:{free_port()}")
    assert result.returncode == 2, result
    assert "no PEM" in result.stderr
