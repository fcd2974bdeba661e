"""Requests whose bytes do not parse as the method's message are
INVALID_ARGUMENT (never INTERNAL), and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import checkpoints_pb2 as kpb
from tests.e2e.helpers import COMPANION_METHODS, COMPANION_SERVICE, new_id
from tests.support import calls
from tests.support.calls import Stub, text_message

SERVICE = pb.DESCRIPTOR.services_by_name["AgentStateService"]
CHECKPOINTS = kpb.DESCRIPTOR.services_by_name["CheckpointsService"]
# (service, method): every method of AgentStateService, those of the
# companion API served so far, and the checkpoint store's.
METHODS = (
    [(SERVICE.full_name, method.name) for method in SERVICE.methods]
    + [(COMPANION_SERVICE, method) for method in COMPANION_METHODS]
    + [(CHECKPOINTS.full_name, method.name) for method in CHECKPOINTS.methods]
)

MALFORMED = {
    "truncated length": b"\x0a\x10abc",
    "bad wire type": b"\x0f",
    "invalid UTF-8 in a string field": b"\x0a\x02\xff\xfe",
    "garbage": bytes(range(256)) * 4,
}


def _raw_call(channel: grpc.Channel, service: str, method: str, payload: bytes) -> grpc.RpcError:
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(payload, timeout=10)
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    return error


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[m for _, m in METHODS])
@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_unparsable_request_is_invalid_argument(
    channel: grpc.Channel, stub: Stub, service: str, method: str, payload: bytes
) -> None:
    error = _raw_call(channel, service, method, payload)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "request" in (error.details() or "")
    # Still serving.
    cid = new_id()
    assert (
        calls.append(stub, cid, [text_message("after a malformed request")]).metadata.message_count
        == 1
    )
