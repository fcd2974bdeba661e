"""The CLI's commands of the companion API, run as a subprocess against the
live server (every backend), cross-checked with the client library:
conversations as a whole (create, describe, list, update, delete, fork)
and scoped state (get, set). Each test labels its conversations with a
run id of its own, so that lists see only them (the server is shared)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from agent_state_client import Client, Retention
from tests.e2e import helpers as h
from tests.support import calls
from tests.support.calls import Stub
from tests.support.server import ServerProcess

from .cli_helpers import Run, field, message_blocks, moment, ok, one_error_line, usage_error


def run_label() -> str:
    return f"run={uuid.uuid4().hex}"


def test_create_describe_update_delete(run: Run, api: Client) -> None:
    label = run_label()
    created = ok(
        run("conversation", "create", "--title", "Trip to Paris", "--label", label,
            "--label", "user=u 1", "--max-idle", "12h", "--max-messages", "500")
    )  # fmt: skip
    conversation = field(created, "conversation_id")
    found = api.describe_conversation(conversation)
    assert found.title == "Trip to Paris"
    key, value = label.split("=")
    assert dict(found.labels) == {key: value, "user": "u 1"}
    assert found.retention == Retention(timedelta(hours=12), 500)
    assert created.splitlines() == [
        f"conversation_id  {conversation}",
        'title            "Trip to Paris"',
        f'labels           {label} user="u 1"',
        "message_count    0",
        "version          1",
        f"created_at       {moment(found.created_at)}",
        f"updated_at       {moment(found.updated_at)}",
        "retention        max_idle=43200s max_messages=500",
    ]
    assert ok(run("conversation", "describe", conversation)) == created
    described = json.loads(ok(run("conversation", "describe", conversation, "--json")))
    assert described["retention"] == {"max_idle_seconds": 43200, "max_messages": 500}
    assert described["labels"] == dict(found.labels)

    exists = run("conversation", "create", conversation)
    assert conversation in one_error_line(exists, "ALREADY_EXISTS")

    stale = run("conversation", "update", conversation, "--title", "x", "--if-version", "2")
    assert "version 1" in one_error_line(stale, "ABORTED")
    updated = ok(
        run("conversation", "update", conversation, "--title", "Trip to Rome", "--label", label,
            "--default-retention", "--if-version", "1")
    )  # fmt: skip
    assert field(updated, "version") == "2"
    assert field(updated, "title") == '"Trip to Rome"'
    assert field(updated, "labels") == label
    assert field(updated, "retention") == "server default"
    cleared = json.loads(ok(run("conversation", "update", conversation, "--no-labels", "--json")))
    assert (cleared["version"], cleared["labels"], cleared["title"]) == (3, {}, "Trip to Rome")
    assert "Nothing to change" in usage_error(run("conversation", "update", conversation))

    ok(run("append", conversation, "one message"))
    assert "version 4" in one_error_line(
        run("conversation", "delete", conversation, "--if-version", "3"), "ABORTED"
    )
    deleted = ok(run("conversation", "delete", conversation, "--if-version", "4"))
    assert deleted.splitlines() == [
        f"conversation_id    {conversation}",
        "deleted_messages   1",
        "deleted_snapshots  0",
        "version            0",
    ]
    assert "conversation_id" in one_error_line(
        run("conversation", "describe", conversation), "NOT_FOUND"
    )
    one_error_line(run("conversation", "delete", conversation), "NOT_FOUND")
    gone = json.loads(ok(run("conversation", "delete", conversation, "--allow-missing", "--json")))
    assert gone == {
        "conversation_id": conversation,
        "deleted_message_count": 0,
        "deleted_snapshot_count": 0,
        "version": 0,
    }


def test_create_with_an_id(run: Run, api: Client) -> None:
    conversation = h.new_id()
    document = json.loads(ok(run("conversation", "create", conversation, "--json")))
    assert document["conversation_id"] == conversation
    assert document["retention"] is None
    assert api.describe_conversation(conversation).version == 1


def test_list_by_labels_newest_first_with_a_limit(run: Run, api: Client) -> None:
    label = run_label()
    made = []
    for n in range(3):
        created = ok(run("conversation", "create", "--label", label, "--title", f"c{n}"))
        made.append(field(created, "conversation_id"))
    # The oldest is updated last: it lists first, newest first.
    ok(run("append", made[0], "bump"))
    newest_first = [made[0], made[2], made[1]]

    lines = ok(run("conversation", "list", "--label", label)).splitlines()
    assert [line.split("  ")[0] for line in lines] == newest_first
    assert lines[0].split("  ")[1:] == [
        "title=c0",
        f'labels="{label}"',
        "message_count=1",
        "version=2",
        f"updated_at={moment(api.describe_conversation(made[0]).updated_at)}",
    ]
    oldest = ok(run("conversation", "list", "--label", label, "--oldest-first", "--page-size", "1"))
    assert [line.split("  ")[0] for line in oldest.splitlines()] == newest_first[::-1]

    limited = run("conversation", "list", "--label", label, "--limit", "2")
    assert limited.returncode == 0
    assert [line.split("  ")[0] for line in limited.stdout.splitlines()] == newest_first[:2]
    assert limited.stderr == "(the first 2; --limit 0 lists all)\n"
    document = json.loads(
        ok(run("conversation", "list", "--label", label, "--limit", "2", "--json"))
    )
    assert [c["conversation_id"] for c in document["conversations"]] == newest_first[:2]
    assert document["more"] is True
    everything = json.loads(ok(run("conversation", "list", "--label", label, "--json")))
    assert everything["more"] is False
    assert len(everything["conversations"]) == 3

    after = moment(api.describe_conversation(made[2]).updated_at)
    since = ok(run("conversation", "list", "--label", label, "--updated-after", after))
    assert [line.split("  ")[0] for line in since.splitlines()] == [made[0]]

    nobody = ok(run("conversation", "list", "--label", run_label()))
    assert nobody == "(no conversations)\n"
    assert "key=value" in usage_error(run("conversation", "list", "--label", "novalue"))


def test_fork_copies_up_to_a_message(stub: Stub, run: Run, api: Client) -> None:
    conversation = h.new_id()
    seeded = calls.seed(stub, conversation, 3)
    label = run_label()
    output = ok(
        run("conversation", "fork", conversation, "--up-to", seeded[1], "--title", "branch",
            "--label", label)
    )  # fmt: skip
    fork = field(output, "conversation_id")
    assert fork != conversation
    assert field(output, "copied_messages") == "2"
    assert field(output, "version") == "1"
    assert h.texts(calls.list_all(stub, fork)) == ["m0", "m1"]
    assert api.describe_conversation(fork).title == "branch"

    chosen = h.new_id()
    document = json.loads(
        ok(run("conversation", "fork", conversation, "--new-id", chosen, "--json"))
    )
    assert document["conversation"]["conversation_id"] == chosen
    assert document["message_ids"] == calls.all_ids(stub, chosen)
    assert len(document["message_ids"]) == 3


def test_state_get_and_set(run: Run, api: Client) -> None:
    scope = f"user/cli/{uuid.uuid4().hex}"
    assert ok(run("state", "get", scope)).splitlines() == [
        f"scope    {scope}",
        "version  0",
        "values   {}",
    ]
    exact = '{"model": "gpt-5", "temperature": 0.10000000000000000001, "big": 12345678901234567890}'
    output = ok(run("state", "set", scope, exact))
    assert field(output, "version") == "1"
    stored = api.get_state(scope)
    assert field(output, "values") == stored.values_json
    assert "0.10000000000000000001" in stored.values_json, "the digits as written"

    document = json.loads(ok(run("state", "get", scope, "--json")))
    assert document == {"scope": scope, "version": 1, "values": json.loads(stored.values_json)}
    assert ok(run("state", "get", scope, "--json")).count("0.10000000000000000001") == 1

    stale = run("state", "set", scope, "--remove", "model", "--if-version", "2")
    assert "version 1" in one_error_line(stale, "ABORTED")
    changed = ok(run("state", "set", scope, "-", "--remove", "model", "--if-version", "1",
                     stdin='{"turns": 2}'))  # fmt: skip
    assert field(changed, "version") == "2"
    assert api.get_state(scope).values == {
        "temperature": 0.1,
        "big": 12345678901234567890,
        "turns": 2,
    }

    assert "JSON" in one_error_line(run("state", "set", scope, "[1, 2]"), "INVALID_ARGUMENT")
    assert "scope" in one_error_line(run("state", "get", "nowhere"), "INVALID_ARGUMENT")
    assert "Give a JSON object" in usage_error(run("state", "set", scope))


def test_a_conversation_scope_goes_with_its_conversation(run: Run, api: Client) -> None:
    conversation = field(ok(run("append", "hello")), "conversation_id")
    scope = f"conversation/{conversation}"
    ok(run("state", "set", scope, '{"step": 1}'))
    ok(run("conversation", "delete", conversation))
    assert ok(run("state", "get", scope)).splitlines()[1:] == ["version  0", "values   {}"]


def test_one_request_id_for_every_call_of_a_command(
    stub: Stub, run: Run, live_server: ServerProcess
) -> None:
    conversation = h.new_id()
    calls.seed(stub, conversation, 2)
    request_id = f"cli-{uuid.uuid4().hex}"
    ok(run("snapshot", "create", conversation, "--request-id", request_id))
    logged = [line for line in live_server.output().splitlines() if request_id in line]
    assert len(logged) == 2, logged
    assert "ListConversationMessages" in logged[0]
    assert "CreateSnapshot" in logged[1]
    blocks = message_blocks(ok(run("tail", conversation, "-n", "1")))
    assert [b[1].strip() for b in blocks] == ["m1"]
