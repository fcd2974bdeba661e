"""Retention through real servers on every backend, each test with a
database of its own: two servers sweeping one database at once delete
every expired conversation exactly once (their metrics add up to the
number expired) and touch nothing else; a server's default max_messages
trims the oldest messages (version + 1, updated_at unchanged, snapshots
still read them); the settings show in `agent-state config`."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb
from tests.support import calls
from tests.support.calls import text_message
from tests.support.server import ServerProcess, free_port, run_agent_state

from .helpers import NOT_FOUND, new_id, status_code, texts

TIMEOUT = 30
DEADLINE_S = 60.0
DELETED = "agent_state_retention_conversations_deleted_total"
TRIMMED = "agent_state_retention_messages_trimmed_total"


class SweepingServer(ServerProcess):
    """A server sweeping every 0.1 s, with metrics on `metrics_port`."""

    def __init__(self, url: str, log: Path, *settings: str) -> None:
        self.metrics_port = free_port()
        address = f"127.0.0.1:{self.metrics_port}"
        every = ["--retention-sweep-seconds", "0.1"]
        super().__init__(url, log, extra_args=["--metrics-address", address, *every, *settings])


def metric(server: SweepingServer, name: str) -> float:
    port = server.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def two_servers(
    make_database_url: Callable[[], str], tmp_path: Path
) -> Iterator[list[SweepingServer]]:
    """Two servers on one database, each sweeping it, with a default
    max_idle of a day."""
    url = make_database_url()
    day = ("--retention-max-idle-seconds", "86400")
    servers = [SweepingServer(url, tmp_path / f"server-{n}.log", *day) for n in range(2)]
    with ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        yield servers


def test_two_servers_delete_each_expired_conversation_once(
    two_servers: list[SweepingServer],
) -> None:
    expiring, lasting, defaulted = [], [], []
    with ExitStack() as stack:
        channels = [
            stack.enter_context(grpc.insecure_channel(server.address)) for server in two_servers
        ]
        companions = [calls.make_companion_stub(channel) for channel in channels]
        stubs = [calls.make_stub(channel) for channel in channels]
        for n in range(60):
            companion, stub = companions[n % 2], stubs[n % 2]
            if n % 3 == 0:
                # Kept: its own retention keeps it a day, or the default does.
                retention = cpb.Retention(max_idle=Duration(seconds=86400), max_messages=0)
                made = companion.CreateConversation(
                    cpb.CreateConversationRequest(retention=retention), timeout=TIMEOUT
                )
                lasting.append(made.conversation_id)
                defaulted.append(new_id())
                calls.append(stub, defaulted[-1], [text_message("kept")])
            else:
                retention = cpb.Retention(max_idle=Duration(seconds=1))
                made = companion.CreateConversation(
                    cpb.CreateConversationRequest(retention=retention), timeout=TIMEOUT
                )
                expiring.append(made.conversation_id)
                calls.append(stub, made.conversation_id, [text_message("bye")])
                companion.UpdateState(
                    cpb.UpdateStateRequest(
                        scope=f"conversation/{made.conversation_id}", set_json='{"a": 1}'
                    ),
                    timeout=TIMEOUT,
                )
        kept = lasting + defaulted
        before = {
            cid: companions[0].DescribeConversation(
                cpb.DescribeConversationRequest(conversation_id=cid), timeout=TIMEOUT
            )
            for cid in kept
        }

        def describe(cid: str) -> grpc.StatusCode:
            request = cpb.DescribeConversationRequest(conversation_id=cid)
            return status_code(lambda: companions[1].DescribeConversation(request, timeout=TIMEOUT))

        eventually(
            lambda: all(describe(cid) is NOT_FOUND for cid in expiring),
            "every expiring conversation deleted",
        )

        def deleted() -> float:
            return sum(metric(server, DELETED) for server in two_servers)

        # Counted when a sweep ends: wait for the counts, then one more
        # sweep of each server, which must find nothing more.
        eventually(lambda: deleted() >= len(expiring), "the deletions counted")
        time.sleep(0.5)
        assert deleted() == len(expiring)
        assert sum(metric(server, TRIMMED) for server in two_servers) == 0
        for cid in expiring:
            scope = cpb.GetStateRequest(scope=f"conversation/{cid}")
            assert companions[0].GetState(scope, timeout=TIMEOUT).version == 0
        for cid in kept:
            after = companions[1].DescribeConversation(
                cpb.DescribeConversationRequest(conversation_id=cid), timeout=TIMEOUT
            )
            assert after == before[cid]
    for server in two_servers:
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        assert not [line for line in lines if line.get("level") == "error"], server.describe()
        assert "Traceback" not in server.output()


def test_default_max_messages_trims_the_oldest(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    server = SweepingServer(
        make_database_url(), tmp_path / "server.log", "--retention-max-messages", "3"
    )
    with server, grpc.insecure_channel(server.address) as channel:
        stub, companion = calls.make_stub(channel), calls.make_companion_stub(channel)
        trimmed, own = new_id(), new_id()
        # Its own retention (no max_messages) replaces the default whole.
        companion.CreateConversation(
            cpb.CreateConversationRequest(
                conversation_id=own, retention=cpb.Retention(max_idle=Duration(seconds=86400))
            ),
            timeout=TIMEOUT,
        )
        calls.append(stub, own, [text_message(str(n)) for n in range(5)])
        # Exempt from the default (a retention of its own) until the first
        # page below has been read: the sweeper runs every 0.1 s.
        companion.CreateConversation(
            cpb.CreateConversationRequest(
                conversation_id=trimmed, retention=cpb.Retention(max_idle=Duration(seconds=86400))
            ),
            timeout=TIMEOUT,
        )
        ids = calls.seed(stub, trimmed, 10)
        snapshot = calls.snapshot(stub, trimmed, ids[:2])
        first_page = stub.ListConversationMessages(
            pb.ListConversationMessagesRequest(conversation_id=trimmed, page_size=2),
            timeout=TIMEOUT,
        )
        assert texts(first_page.messages) == ["m0", "m1"]
        # Back to the server's default: the sweeper trims it.
        companion.UpdateConversation(
            cpb.UpdateConversationRequest(
                conversation=cpb.Conversation(conversation_id=trimmed),
                update_mask=FieldMask(paths=["retention"]),
            ),
            timeout=TIMEOUT,
        )
        before = companion.DescribeConversation(
            cpb.DescribeConversationRequest(conversation_id=trimmed), timeout=TIMEOUT
        )
        eventually(lambda: calls.get(stub, trimmed).message_count == 3, "the trim")
        after = companion.DescribeConversation(
            cpb.DescribeConversationRequest(conversation_id=trimmed), timeout=TIMEOUT
        )
        assert calls.all_ids(stub, trimmed) == ids[7:]
        # One change to the ordering, no update: updated_at stays.
        assert after.version == before.version + 1
        assert after.updated_at == before.updated_at
        assert texts(calls.snapshot_messages(stub, snapshot.snapshot_id)) == ["m0", "m1"]
        assert calls.get(stub, own).message_count == 5
        eventually(lambda: metric(server, TRIMMED) == 7, "the trim counted")
        # A page token from before the trim goes on after what it had read.
        rest = stub.ListConversationMessages(
            pb.ListConversationMessagesRequest(
                conversation_id=trimmed, page_size=10, page_token=first_page.next_page_token
            ),
            timeout=TIMEOUT,
        )
        assert texts(rest.messages) == ["m7", "m8", "m9"]
    assert "retention deleted 0 conversations and trimmed 7 messages" in server.output()


def test_retention_settings_show_in_config() -> None:
    result = run_agent_state(
        "config",
        "--json",
        env={
            "AGENT_STATE_RETENTION_MAX_IDLE_SECONDS": "3600",
            "AGENT_STATE_RETENTION_MAX_MESSAGES": "50",
        },
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["retention_max_idle_seconds"] == {"value": 3600, "source": "env"}
    assert shown["retention_max_messages"] == {"value": 50, "source": "env"}
    assert shown["retention_sweep_seconds"] == {"value": 60.0, "source": "default"}
    refused = run_agent_state("config", "--retention-sweep-seconds", "0")
    assert refused.returncode == 2
    assert "retention_sweep_seconds" in refused.stderr
