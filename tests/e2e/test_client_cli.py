"""The client commands of the CLI, run as a subprocess against the live
server (every backend), cross-checked with the gRPC API itself: messages
(append, show, get, ids, tail, replace, delete), snapshots, failures and
colour. Conversations as a whole and state: test_client_cli_companion.py.

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

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2

from agent_state_client import Client
from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e import helpers as h
from tests.support import calls
from tests.support.calls import Stub, text_message
from tests.support.server import ServerProcess, free_port

from .cli_helpers import (
    UUID,
    Run,
    cli,
    field,
    invoke,
    message_blocks,
    moment,
    ok,
    one_error_line,
    stamp,
    usage_error,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- append, show, get ------------------------------------------------------------


def test_append_then_show(stub: Stub, run: Run, api: Client) -> None:
    conversation = h.new_id()
    first = ok(run("append", conversation, "hello\nthere"))
    assert re.fullmatch(UUID, field(first, "message_id"))
    assert field(first, "conversation_id") == conversation
    assert field(first, "message_count") == "1"
    assert field(first, "version") == "1"
    second = ok(run("append", conversation, "hi!", "--role", "assistant", "--kind", "reply"))
    assert field(second, "message_count") == "2"
    assert field(second, "version") == "2"

    stored = calls.list_all(stub, conversation)
    assert stored[0].id == field(first, "message_id")
    assert [(m.role, m.kind, m.body.text.text) for m in stored] == [
        (h.USER, "", "hello\nthere"),
        (h.ASSISTANT, "reply", "hi!"),
    ]
    metadata = api.get_conversation(conversation)
    assert field(second, "updated_at") == moment(metadata.updated_at)

    output = ok(run("show", conversation))
    assert output.splitlines()[0] == (
        f"conversation  conversation_id={conversation}  message_count=2"
        f"  updated_at={moment(metadata.updated_at)}  version=2"
    )
    created = [stamp(m.created_at) for m in stored]
    assert message_blocks(output) == [
        [f'[0]  {stored[0].id}  user  kind=""  {created[0]}', "    hello", "    there"],
        [f"[1]  {stored[1].id}  assistant  kind=reply  {created[1]}", "    hi!"],
    ]


def test_append_without_an_id_makes_a_conversation(stub: Stub, run: Run) -> None:
    output = ok(run("append", "first words"))
    conversation = field(output, "conversation_id")
    assert re.fullmatch(UUID, conversation)
    assert field(output, "version") == "1"
    assert h.texts(calls.list_all(stub, conversation)) == ["first words"]

    from_stdin = json.loads(ok(run("append", "-", "--json", stdin="from\nstdin\n")))
    made = from_stdin["metadata"]["conversation_id"]
    assert made != conversation
    assert h.texts(calls.list_all(stub, made)) == ["from\nstdin\n"]
    assert from_stdin["messages"][0]["body"] == {"text": "from\nstdin\n"}


def test_append_a_tool_output(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    ok(
        run(
            "append", conversation, "3 results", "--tool-name", "web_search",
            "--tool-call-id", "call_9", "--tool-metadata", "source=bing",
            "--tool-metadata", "latency=12 ms", "--kind", "tool_output",
        )
    )  # fmt: skip
    [stored] = calls.list_all(stub, conversation)
    assert stored.role == h.TOOL
    assert stored.kind == "tool_output"
    output = stored.body.tool_output
    assert (output.tool_name, output.tool_call_id, output.text.text) == (
        "web_search",
        "call_9",
        "3 results",
    )
    assert dict(output.metadata) == {"source": "bing", "latency": "12 ms"}


def test_append_a_batch_of_json_lines_atomically(stub: Stub, run: Run, tmp_path: Path) -> None:
    conversation = h.new_id()
    lines = [
        {"text": "what is on the picture?"},
        {"role": "assistant", "kind": "tool_call", "text": '{"name": "camera"}'},
        {
            "kind": "tool_output",
            "body": {
                "tool_output": {
                    "tool_name": "camera",
                    "tool_call_id": "call_2",
                    "image": {"external_url": "https://img.example/cat.png", "detail": "high"},
                    "metadata": {"k": "v"},
                }
            },
        },
    ]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    appended = ok(run("append", conversation, "--batch", str(batch)))
    stored = calls.list_all(stub, conversation)
    assert [line.split()[-1] for line in appended.splitlines()[:3]] == [m.id for m in stored]
    assert [(m.role, m.kind) for m in stored] == [
        (h.USER, ""),
        (h.ASSISTANT, "tool_call"),
        (h.TOOL, "tool_output"),
    ]
    image = stored[2].body.tool_output.image
    assert (image.external_url, image.detail) == ("https://img.example/cat.png", 3)

    # What `show --json` prints appends again as it is, one message a line.
    shown = json.loads(ok(run("show", conversation, "--json")))["messages"]
    copy = h.new_id()
    stdin = "".join(json.dumps(message) + "\n" for message in shown)
    ok(run("append", copy, "--batch", "-", stdin=stdin))
    copied = calls.list_all(stub, copy)
    assert [(m.role, m.kind, m.body) for m in copied] == [(m.role, m.kind, m.body) for m in stored]

    # A message the server refuses fails the whole batch: nothing is stored.
    refused = h.new_id()
    stdin = json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": "x", "kind": "k" * 257})
    line = one_error_line(run("append", refused, "--batch", "-", stdin=stdin), "INVALID_ARGUMENT")
    assert "messages[1].kind" in line
    h.expect_error(h.NOT_FOUND, lambda: calls.get(stub, refused))


def test_append_with_state_lands_together(run: Run, api: Client) -> None:
    conversation, scope = h.new_id(), f"app/cli-{h.new_id()}"
    output = ok(run("append", conversation, "remember this", "--state", scope, '{"turns": 1}'))
    assert field(output, f"state_version[{scope}]") == "1"
    assert api.get_state(scope).values == {"turns": 1}
    assert api.get_conversation(conversation).message_count == 1


def test_get_prints_the_metadata_and_version(stub: Stub, run: Run, api: Client) -> None:
    conversation = h.new_id()
    calls.seed(stub, conversation, 3)
    metadata = api.get_conversation(conversation)
    assert ok(run("get", conversation)).splitlines() == [
        f"conversation_id  {conversation}",
        "message_count    3",
        f"updated_at       {moment(metadata.updated_at)}",
        "version          1",
    ]


def test_json_output_is_one_document_of_the_results_fields(
    stub: Stub, run: Run, api: Client
) -> None:
    conversation = h.new_id()
    appended = json.loads(ok(run("append", conversation, "first", "--kind", "k", "--json")))
    [stored] = calls.list_all(stub, conversation)
    metadata = api.get_conversation(conversation)
    expected_metadata = {
        "conversation_id": conversation,
        "message_count": 1,
        "updated_at": moment(metadata.updated_at),
        "version": 1,
    }
    first = {
        "id": stored.id,
        "conversation_id": conversation,
        "role": "user",
        "kind": "k",
        "created_at": stamp(stored.created_at),
        "body": {"text": "first"},
    }
    assert appended == {"metadata": expected_metadata, "messages": [first]}
    assert json.loads(ok(run("get", conversation, "--json"))) == expected_metadata
    assert json.loads(ok(run("show", conversation, "--json"))) == {
        "metadata": expected_metadata,
        "messages": [{"index": 0, **first}],
    }
    assert json.loads(ok(run("ids", conversation, "--json"))) == {
        "conversation_id": conversation,
        "message_ids": [stored.id],
    }


# --- every body variant --------------------------------------------------------------


def test_tool_bodies_render_their_fields(stub: Stub, run: Run) -> None:
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
    blocks = message_blocks(ok(run("show", conversation)))
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


# --- paging, filters, tail -----------------------------------------------------------


def test_ids_are_every_id_in_order_across_pages(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    seeded = calls.seed(stub, conversation, 7)
    # Reorder, so that the ordering is not creation order: [6, 0, 1, ..., 5].
    calls.replace(stub, conversation, to_id=seeded[0], new_ids=[seeded[6]])
    expected = calls.all_ids(stub, conversation)
    assert expected == [seeded[6], *seeded[:6]]

    assert ok(run("ids", conversation, "--page-size", "2")).splitlines() == expected
    blocks = message_blocks(ok(run("show", conversation)))
    assert [b[0].split("  ")[:2] for b in blocks] == [[f"[{i}]", x] for i, x in enumerate(expected)]
    assert [b[1].strip() for b in blocks] == ["m6", "m0", "m1", "m2", "m3", "m4", "m5"]


def test_filters_keep_the_index_in_the_whole_ordering(stub: Stub, run: Run) -> None:
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
    ids = calls.all_ids(stub, conversation)

    def shown(*args: str) -> list[tuple[str, str]]:
        output = ok(run("show", conversation, *args))
        return [(b[0].split("  ")[0], b[1].strip()) for b in message_blocks(output)]

    assert shown("--role", "assistant") == [("[1]", "a1"), ("[3]", "note")]
    assert shown("--kind", "question", "--kind", "") == [
        ("[0]", "q1"),
        ("[2]", "q2"),
        ("[3]", "note"),
    ]
    assert shown("--id", ids[2], "--id", ids[0]) == [("[2]", "q2"), ("[0]", "q1")]
    none = ok(run("show", conversation, "--role", "tool"))
    assert message_blocks(none) == []
    assert none.splitlines()[-1] == "(no messages)"


def test_tail_prints_the_last_messages(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    calls.append(
        stub,
        conversation,
        [text_message(f"m{i}", h.USER if i % 2 == 0 else h.ASSISTANT) for i in range(6)],
    )
    last = message_blocks(ok(run("tail", conversation, "-n", "2")))
    assert [(b[0].split("  ")[0], b[1].strip()) for b in last] == [("[4]", "m4"), ("[5]", "m5")]
    filtered = message_blocks(ok(run("tail", conversation, "--count", "2", "--role", "user")))
    assert [(b[0].split("  ")[0], b[1].strip()) for b in filtered] == [
        ("[-2]", "m2"),
        ("[-1]", "m4"),
    ]
    document = json.loads(ok(run("tail", conversation, "-n", "1", "--json")))
    assert document["truncated"] is False
    assert document["metadata"]["message_count"] == 6
    assert [(m["index"], m["body"]) for m in document["messages"]] == [(5, {"text": "m5"})]


# --- replace and delete ranges, versions ---------------------------------------------------


def test_replace_summarises_a_range_under_a_version(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    seeded = calls.seed(stub, conversation, 4)  # version 1
    summary = field(
        ok(run("append", conversation, "summary of m0..m2", "--kind", "summary")), "message_id"
    )

    stale = run("replace", conversation, "--from", seeded[0], "--to", seeded[2], summary,
                "--if-version", "1")  # fmt: skip
    line = one_error_line(stale, "ABORTED")
    assert "version 2" in line
    assert calls.all_ids(stub, conversation) == [*seeded, summary], "nothing changed"

    output = ok(run("replace", conversation, "--from", seeded[0], "--to", seeded[2], summary,
                    "--if-version", "2"))  # fmt: skip
    assert [line.split() for line in output.splitlines()[:4]] == [
        ["replaced_message_id", seeded[0]],
        ["replaced_message_id", seeded[1]],
        ["replaced_message_id", seeded[2]],
        ["inserted_message_id", summary],
    ]
    assert field(output, "version") == "3"
    assert calls.all_ids(stub, conversation) == [summary, seeded[3]]

    # No new ids: the range is detached (kept for snapshots, out of the ordering).
    detached = json.loads(
        ok(run("replace", conversation, "--from", seeded[3], "--to", seeded[3], "--json"))
    )
    assert detached["replaced_message_ids"] == [seeded[3]]
    assert detached["inserted_message_ids"] == []
    assert detached["metadata"]["version"] == 4
    assert calls.all_ids(stub, conversation) == [summary]


def test_delete_removes_a_range_for_good(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    seeded = calls.seed(stub, conversation, 5)
    output = ok(run("delete", conversation, "--to", seeded[1]))
    assert [line.split() for line in output.splitlines()[:2]] == [
        ["deleted_message_id", seeded[0]],
        ["deleted_message_id", seeded[1]],
    ]
    assert field(output, "message_count") == "3"
    assert field(output, "version") == "2"
    one_error_line(run("delete", conversation, "--from", seeded[3], "--if-version", "1"), "ABORTED")
    document = json.loads(ok(run("delete", conversation, "--from", seeded[3], "--json")))
    assert document["deleted_message_ids"] == [seeded[3], seeded[4]]
    assert calls.all_ids(stub, conversation) == [seeded[2]]

    refused = usage_error(run("delete", conversation))
    assert "conversation delete" in refused
    assert calls.all_ids(stub, conversation) == [seeded[2]]


def test_append_if_version(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    ok(run("append", conversation, "only while new", "--if-version", "0"))
    again = run("append", conversation, "again", "--if-version", "0")
    assert "version 1" in one_error_line(again, "ABORTED")
    assert field(ok(run("append", conversation, "next", "--if-version", "1")), "version") == "2"
    assert h.texts(calls.list_all(stub, conversation)) == ["only while new", "next"]


# --- snapshots --------------------------------------------------------------------------


def test_snapshots_create_list_show(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    ids = calls.seed(stub, conversation, 3, prefix="s")
    calls.append(stub, conversation, [h.tool_text_message("tool said", tool_call_id="call_9")])
    tool_id = calls.all_ids(stub, conversation)[-1]

    whole = ok(run("snapshot", "create", conversation))
    whole_id = field(whole, "snapshot_id")
    assert field(whole, "item_count") == "4"
    assert field(whole, "version") == "2", "a snapshot changes no version"
    assert calls.snapshot_ids(stub, whole_id) == [*ids, tool_id]
    named = json.loads(
        ok(run("snapshot", "create", conversation, ids[2], tool_id, ids[0], ids[2], "--json"))
    )
    assert named["item_count"] == 4
    assert named["conversation_id"] == conversation
    named_id = named["snapshot_id"]
    one_error_line(run("snapshot", "create", conversation, "--if-version", "1"), "ABORTED")

    listed = ok(run("snapshot", "list", conversation)).splitlines()
    assert [line.split("  ")[0] for line in listed] == [whole_id, named_id]
    assert "item_count=4" in listed[1]
    document = json.loads(ok(run("snapshot", "list", conversation, "--json")))
    assert [(s["snapshot_id"], s["item_count"]) for s in document["snapshots"]] == [
        (whole_id, 4),
        (named_id, 4),
    ]

    # Later changes do not show in the snapshot.
    calls.delete(stub, conversation, from_id=ids[0], to_id=ids[2])
    output = ok(run("snapshot", "show", named_id, "--page-size", "1"))
    assert output.splitlines()[0] == f"snapshot  snapshot_id={named_id}"
    blocks = message_blocks(output)
    assert [b[0].split("  ")[:3] for b in blocks] == [
        ["[0]", ids[2], "user"],
        ["[1]", tool_id, "tool"],
        ["[2]", ids[0], "user"],
        ["[3]", ids[2], "user"],
    ]
    assert blocks[0][1:] == ["    s2"]
    assert blocks[1][1:4] == [
        "    tool output  tool_name=search  tool_call_id=call_9",
        "    text:",
        "        tool said",
    ]
    shown = json.loads(ok(run("snapshot", "show", named_id, "--json")))
    assert shown["snapshot_id"] == named_id
    assert [(m["index"], m["id"]) for m in shown["messages"]] == list(
        enumerate([ids[2], tool_id, ids[0], ids[2]])
    )


def test_a_snapshot_of_an_empty_conversation_says_why(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    [only] = calls.seed(stub, conversation, 1)
    calls.delete(stub, conversation, from_id=only)
    result = run("snapshot", "create", conversation, "--request-id", "empty-1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"agent-state: conversation {conversation} has no messages to snapshot"
        " (request id empty-1)\n"
    )


# --- health and errors ------------------------------------------------------------------


def test_health_of_the_live_server(run: Run) -> None:
    assert ok(run("health")) == "SERVING\n"
    assert json.loads(ok(run("health", "--json"))) == {"status": "SERVING"}


def test_health_where_nothing_listens() -> None:
    address = f"127.0.0.1:{free_port()}"
    line = one_error_line(cli("health", "--timeout", "5", address=address), "UNAVAILABLE")
    assert f"nothing listens at {address}" in line


@pytest.mark.parametrize(
    "command", [["get"], ["show"], ["ids"], ["tail"], ["snapshot", "create"], ["snapshot", "list"]]
)
def test_unknown_conversation(command: list[str], run: Run) -> None:
    line = one_error_line(run(*command, h.new_id()), "NOT_FOUND")
    assert "conversation_id" in line


def test_an_unknown_snapshot_prints_nothing_on_stdout(run: Run, live_server: ServerProcess) -> None:
    missing = h.new_id()
    result = run("snapshot", "show", missing, "--request-id", "cli-test-unknown-snapshot")
    line = one_error_line(result, "NOT_FOUND")
    assert missing in line
    assert line.endswith(" (request id cli-test-unknown-snapshot)\n")
    # The id quoted is the one the server logged the call under.
    logged = [entry for entry in live_server.output().splitlines() if "cli-test-unknown" in entry]
    assert len(logged) == 1
    assert "ListSnapshotMessages" in logged[0]
    assert "NOT_FOUND" in logged[0]


def test_a_malformed_id_is_the_servers_invalid_argument(run: Run) -> None:
    assert "conversation_id" in one_error_line(run("get", "not-a-uuid"), "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["show", "{id}", "--tls-cert-file", "{cert}"], "--tls-key-file"),
        (["show", "{id}", "--tls-key-file", "{cert}"], "--tls-cert-file"),
        (["show", "{id}", "--no-tls", "--tls-ca-file", "{cert}"], "--no-tls"),
        (["show", "{id}", "--timeout", "0"], "--timeout"),
        (["show", "{id}", "--role", "system"], "--role"),
        (["show", "{id}", "--id", "{id}", "--role", "user"], "--id"),
        (["append"], "TEXT"),
        (["append", "{id}", "a", "b"], "TEXT"),
        (["append", "{id}"], "Give the TEXT to append to"),
        (["append", "{id}", "x", "--tool-name", "t"], "--tool-call-id"),
        (["append", "{id}", "--batch", "{cert}"], "line 1: not JSON"),
        (["append", "{id}", "x", "--state", "app/a", "{{}}", "--if-version", "0"], "--state"),
        (["tail", "{id}", "-n", "0"], "--count"),
        (["replace", "{id}"], "--from"),
        (["append", "{id}", "x", "--if-version", "-1"], "--if-version"),
    ],
)
def test_usage_errors_exit_2(args: list[str], said: str, tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    # Nothing listens at the address: a usage error is found before any call.
    filled = [a.format(cert=cert, id=h.new_id()) for a in args]
    assert said in usage_error(invoke(*filled, address=f"127.0.0.1:{free_port()}"))


def test_an_address_the_client_cannot_read_is_a_usage_error() -> None:
    line = usage_error(invoke("health", address="http://127.0.0.1:50051"))
    assert "address: unknown scheme in 'http://127.0.0.1:50051'" in line


# --- colour -------------------------------------------------------------------------------


def test_colour_only_when_asked_without_a_tty(stub: Stub, run: Run) -> None:
    conversation = h.new_id()
    calls.append(stub, conversation, [text_message("red \x1b[31malert\x1b[0m", kind="k")])
    plain = ok(run("show", conversation))
    assert "\x1b" not in plain
    assert "red \\x1b[31malert\\x1b[0m" in plain, "stored escapes are shown, not obeyed"

    coloured = ok(run("show", conversation, "--color"))
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == plain
    assert "\x1b" not in ok(run("show", conversation, "--no-color"))
    assert "\x1b" in ok(run("health", "--color"))


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


def test_the_request_id_is_sent_as_given(recorder: Recorder) -> None:
    address = recorder.start()
    ok(invoke("health", "--request-id", "ticket-4711", address=address))
    ok(invoke("health", address=address))
    given, made = (m["x-request-id"] for m in recorder.metadata)
    assert given == "ticket-4711"
    assert re.fullmatch(r"[0-9a-f]{32}", made)


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
    assert recorder.metadata[0]["authorization"] == "Bearer s3cret"

    untrusted = cli("health", *tls_options(pki, ca="other_ca"), address=address)
    assert "is not signed by a CA this client trusts" in one_error_line(untrusted, "UNAVAILABLE")
    one_error_line(cli("health", *tls_options(pki, client=False), address=address), "UNAVAILABLE")
    plaintext = one_error_line(cli("health", "--timeout", "5", address=address), "UNAVAILABLE")
    assert "a TLS server? try --tls" in plaintext
    assert len(recorder.metadata) == 1, "no other call got through"


def test_server_only_tls(recorder: Recorder, pki: dict[str, Path]) -> None:
    address = recorder.start(server_credentials(pki, mutual=False))
    ok(cli("health", *tls_options(pki, client=False), address=address))
    # The certificate names agent-state.test, not 127.0.0.1.
    name_mismatch = ["--timeout", "5", "--tls-ca-file", str(pki["ca"])]
    line = one_error_line(cli("health", *name_mismatch, address=address), "UNAVAILABLE")
    assert f"the certificate of {address} is for another name" in line
    # The system roots do not include the test CA.
    system_roots = ["--timeout", "5", "--tls", "--tls-server-name", "agent-state.test"]
    one_error_line(cli("health", *system_roots, address=address), "UNAVAILABLE")
    assert len(recorder.metadata) == 1


def test_tls_against_a_plaintext_server_is_one_readable_line(recorder: Recorder) -> None:
    address = recorder.start()
    for args in (["--tls"], []):
        target = address if args else f"agent-states://{address}"
        result = cli("health", "--timeout", "5", *args, address=target)
        line = one_error_line(result, "UNAVAILABLE")
        assert f"UNAVAILABLE: {target} does not speak TLS: connect without --tls" in line
        assert "SSL" not in line
    assert recorder.metadata == []


@pytest.mark.parametrize("option", ["--tls-ca-file", "--tls-cert-file", "--tls-key-file"])
def test_a_file_without_pem_is_a_usage_error(
    option: str, pki: dict[str, Path], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM\n")
    options = tls_options(pki)
    options[options.index(option) + 1] = str(junk)
    assert "no PEM" in usage_error(cli("health", *options, address=f"127.0.0.1:{free_port()}"))
