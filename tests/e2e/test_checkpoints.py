"""The checkpoint store through a real server on every backend: a
checkpoint and its writes read back over the wire, pages, erasure that
refuses late writes, errors naming their field (never INTERNAL), health
and reflection, and the same tokens, metrics and logs as every call."""

from __future__ import annotations

import json
import urllib.request
import uuid
from functools import partial

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from agent_state_client._gen import checkpoints_pb2 as kpb
from agent_state_client._gen import checkpoints_pb2_grpc as kpb_grpc
from tests.support.server import ServerProcess, health_check

from .conftest import Guarded
from .helpers import INVALID_ARGUMENT, NOT_FOUND, RO_TOKEN, RW_TOKEN, bearer, expect_error

SERVICE = "agentstate.v1.CheckpointsService"
TIMEOUT = 30.0
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

CheckpointsStub = kpb_grpc.CheckpointsServiceStub


def make_stub(channel: grpc.Channel) -> CheckpointsStub:
    stub: CheckpointsStub = kpb_grpc.CheckpointsServiceStub(channel)  # type: ignore[no-untyped-call]
    return stub


@pytest.fixture
def checkpoints(channel: grpc.Channel, live_server: ServerProcess) -> CheckpointsStub:
    return make_stub(channel)


def blob(data: bytes, kind: str = "msgpack") -> kpb.Blob:
    return kpb.Blob(type=kind, data=data)


def items(*data: bytes) -> kpb.Value:
    return kpb.Value(items=[blob(item) for item in data], is_list=True)


def put_request(
    thread_id: str, checkpoint_id: str, parent: str = "", *messages: bytes
) -> kpb.PutCheckpointRequest:
    version = str(len(messages))
    return kpb.PutCheckpointRequest(
        thread_id=thread_id,
        checkpoint_id=checkpoint_id,
        parent_checkpoint_id=parent,
        checkpoint=blob(b'{"v": 4}', "json"),
        metadata_json=json.dumps({"source": "loop", "step": len(messages)}),
        channel_versions={"messages": version},
        values=[kpb.ChannelValue(channel="messages", version=version, value=items(*messages))],
    )


def test_a_checkpoint_and_its_writes_read_back(checkpoints: CheckpointsStub) -> None:
    thread_id = str(uuid.uuid4())
    checkpoints.PutCheckpoint(put_request(thread_id, "0001", "", b"hi"), timeout=TIMEOUT)
    checkpoints.PutCheckpoint(put_request(thread_id, "0002", "0001", b"hi", b"ho"), timeout=TIMEOUT)
    writes = kpb.PutWritesRequest(
        thread_id=thread_id,
        checkpoint_id="0002",
        task_id="task",
        task_path="~__pregel_pull, agent",
        writes=[
            kpb.ChannelWrite(idx=0, channel="messages", value=items(b"hey")),
            kpb.ChannelWrite(
                idx=-3, channel="__interrupt__", value=kpb.Value(items=[blob(b"\x00\xff")])
            ),
        ],
    )
    checkpoints.PutWrites(writes, timeout=TIMEOUT)
    found = checkpoints.GetCheckpoint(
        kpb.GetCheckpointRequest(thread_id=thread_id), timeout=TIMEOUT
    ).checkpoint
    assert (found.checkpoint_id, found.parent_checkpoint_id) == ("0002", "0001")
    assert found.checkpoint == blob(b'{"v": 4}', "json")
    assert json.loads(found.metadata_json) == {"source": "loop", "step": 2}
    (value,) = found.values
    assert value.channel == "messages"
    assert [item.data for item in value.value.items] == [b"hi", b"ho"]
    assert [(w.idx, w.channel) for w in found.pending_writes] == [
        (-3, "__interrupt__"),
        (0, "messages"),
    ]
    assert found.pending_writes[0].value.items[0].data == b"\x00\xff"

    listed = checkpoints.ListCheckpoints(
        kpb.ListCheckpointsRequest(thread_id=thread_id, checkpoint_ns="", page_size=1),
        timeout=TIMEOUT,
    )
    assert [c.checkpoint_id for c in listed.checkpoints] == ["0002"]
    rest = checkpoints.ListCheckpoints(
        kpb.ListCheckpointsRequest(
            thread_id=thread_id, checkpoint_ns="", page_size=1, page_token=listed.next_page_token
        ),
        timeout=TIMEOUT,
    )
    assert [c.checkpoint_id for c in rest.checkpoints] == ["0001"]
    assert rest.next_page_token == ""


def test_a_deleted_thread_refuses_its_late_writes(checkpoints: CheckpointsStub) -> None:
    thread_id = str(uuid.uuid4())
    checkpoints.PutCheckpoint(put_request(thread_id, "0001", "", b"a"), timeout=TIMEOUT)
    deleted = checkpoints.DeleteThread(
        kpb.DeleteThreadRequest(thread_id=thread_id), timeout=TIMEOUT
    )
    assert deleted.deleted_checkpoint_count == 1
    late = put_request(thread_id, "0002", "0001", b"a", b"b")
    expect_error(
        FAILED_PRECONDITION,
        partial(checkpoints.PutCheckpoint, late, timeout=TIMEOUT),
        "parent_checkpoint_id",
    )
    expect_error(
        NOT_FOUND,
        partial(
            checkpoints.GetCheckpoint,
            kpb.GetCheckpointRequest(thread_id=thread_id),
            timeout=TIMEOUT,
        ),
        "thread_id",
    )
    checkpoints.PutCheckpoint(put_request(thread_id, "0003", "", b"new"), timeout=TIMEOUT)


def test_thread_operations(checkpoints: CheckpointsStub) -> None:
    source, target = str(uuid.uuid4()), str(uuid.uuid4())
    run = str(uuid.uuid4())
    first = put_request(source, "0001", "", b"a")
    first.metadata_json = json.dumps({"run_id": run})
    checkpoints.PutCheckpoint(first, timeout=TIMEOUT)
    checkpoints.PutCheckpoint(put_request(source, "0002", "0001", b"a", b"b"), timeout=TIMEOUT)
    copied = checkpoints.CopyThread(
        kpb.CopyThreadRequest(source_thread_id=source, target_thread_id=target), timeout=TIMEOUT
    )
    assert copied.copied_checkpoint_count == 2
    pruned = checkpoints.Prune(
        kpb.PruneRequest(thread_ids=[target], strategy=kpb.PRUNE_STRATEGY_KEEP_LATEST),
        timeout=TIMEOUT,
    )
    assert pruned.deleted_checkpoint_count == 1
    by_run = checkpoints.DeleteForRuns(kpb.DeleteForRunsRequest(run_ids=[run]), timeout=TIMEOUT)
    assert by_run.deleted_checkpoint_count == 1
    remaining = checkpoints.ListCheckpoints(
        kpb.ListCheckpointsRequest(thread_id=source), timeout=TIMEOUT
    )
    assert [(c.checkpoint_id, c.parent_checkpoint_id) for c in remaining.checkpoints] == [
        ("0002", "")
    ]


@pytest.mark.parametrize(
    ("request_", "call", "field"),
    [
        (kpb.PutCheckpointRequest(checkpoint_id="1"), "PutCheckpoint", "thread_id"),
        (
            kpb.PutCheckpointRequest(
                thread_id="t", checkpoint_id="1", metadata_json="[]", checkpoint=blob(b"")
            ),
            "PutCheckpoint",
            "metadata_json",
        ),
        (kpb.PutWritesRequest(thread_id="t", checkpoint_id="1"), "PutWrites", "task_id"),
        (kpb.GetCheckpointRequest(thread_id="t\0"), "GetCheckpoint", "thread_id"),
        (kpb.ListCheckpointsRequest(page_token="x"), "ListCheckpoints", "page_token"),
        (kpb.PruneRequest(thread_ids=["t"]), "Prune", "strategy"),
        (kpb.CopyThreadRequest(source_thread_id="t", target_thread_id="t"), "CopyThread", ""),
    ],
)
def test_malformed_requests_name_their_field(
    checkpoints: CheckpointsStub, request_: object, call: str, field: str
) -> None:
    error = expect_error(INVALID_ARGUMENT, partial(getattr(checkpoints, call), request_))
    assert field in (error.details() or "")


def test_health_and_reflection_cover_the_service(
    channel: grpc.Channel, checkpoints: CheckpointsStub
) -> None:
    assert health_check(channel, SERVICE, timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    database = ProtoReflectionDescriptorDatabase(channel)
    assert SERVICE in list(database.get_services())
    service = DescriptorPool(database).FindServiceByName(SERVICE)
    assert {m.name for m in service.methods} == {
        "PutCheckpoint",
        "PutWrites",
        "GetCheckpoint",
        "ListCheckpoints",
        "DeleteThread",
        "CopyThread",
        "Prune",
        "DeleteForRuns",
    }


def test_tokens_metrics_and_logs(guarded: Guarded) -> None:
    thread_id = str(uuid.uuid4())
    get = kpb.GetCheckpointRequest(thread_id=thread_id)
    with grpc.insecure_channel(guarded.server.address) as channel:
        checkpoints = make_stub(channel)
        ro, rw = bearer(RO_TOKEN), bearer(RW_TOKEN)
        expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            partial(checkpoints.GetCheckpoint, get, timeout=TIMEOUT),
        )
        put = put_request(thread_id, "0001", "", b"secret body")
        expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            partial(checkpoints.PutCheckpoint, put, metadata=ro, timeout=TIMEOUT),
        )
        checkpoints.PutCheckpoint(put, metadata=rw, timeout=TIMEOUT)
        assert checkpoints.GetCheckpoint(get, metadata=ro, timeout=TIMEOUT).checkpoint.checkpoint_id
    url = f"http://127.0.0.1:{guarded.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    for method, code in (
        ("GetCheckpoint", "UNAUTHENTICATED"),
        ("GetCheckpoint", "OK"),
        ("PutCheckpoint", "PERMISSION_DENIED"),
        ("PutCheckpoint", "OK"),
    ):
        assert f'agent_state_rpc_requests_total{{code="{code}",method="{method}"}} 1.0' in text
    lines = [
        json.loads(line) for line in guarded.server.output().splitlines() if line.startswith("{")
    ]
    put_lines = [line for line in lines if line.get("method") == "PutCheckpoint"]
    assert [line["code"] for line in put_lines] == ["PERMISSION_DENIED", "OK"]
    assert all(line["thread_id"] == thread_id for line in put_lines)
    assert "secret body" not in guarded.server.output()
