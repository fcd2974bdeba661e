"""Scoped state through a real server on every backend: GetState,
UpdateState and AppendMessagesWithState, exact JSON, versions and
conditional writes, the trailing conversation version, idempotent
retries, errors naming their field (INVALID_ARGUMENT before NOT_FOUND,
never INTERNAL), and the same tokens, metrics and logs as every call."""

from __future__ import annotations

import json
import urllib.request
import uuid
from functools import partial
from typing import Any

import grpc
import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb
from tests.support import calls
from tests.support.calls import CompanionStub, Stub, text_message
from tests.support.server import ServerProcess

from .conftest import Guarded
from .helpers import (
    COMPANION_SERVICE,
    INVALID_ARGUMENT,
    NOT_FOUND,
    RO_TOKEN,
    RW_TOKEN,
    bearer,
    expect_error,
    new_id,
    texts,
)
from .test_companion import ABORTED, TIMEOUT, VERSION, trailing

MIB = 1024 * 1024
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
def companion(channel: grpc.Channel, live_server: ServerProcess) -> CompanionStub:
    return calls.make_companion_stub(channel)


def app() -> str:
    return f"app/{uuid.uuid4()}"


def get_state(companion: CompanionStub, scope: str) -> cpb.GetStateResponse:
    reply, call = companion.GetState.with_call(cpb.GetStateRequest(scope=scope), timeout=TIMEOUT)
    assert VERSION not in trailing(call)
    state: cpb.GetStateResponse = reply
    return state


def update_state(
    companion: CompanionStub,
    scope: str,
    set_json: str = "",
    remove_keys: tuple[str, ...] = (),
    expected_version: int = 0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> cpb.UpdateStateResponse:
    reply, call = companion.UpdateState.with_call(
        cpb.UpdateStateRequest(
            scope=scope,
            set_json=set_json,
            remove_keys=list(remove_keys),
            expected_version=expected_version,
        ),
        timeout=TIMEOUT,
        metadata=metadata,
    )
    assert VERSION not in trailing(call)
    updated: cpb.UpdateStateResponse = reply
    return updated


def append_with_state(
    companion: CompanionStub,
    conversation_id: str,
    words: list[str],
    updates: list[cpb.StateUpdate],
    expected_version: int = 0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[cpb.AppendMessagesWithStateResponse, dict[str, str]]:
    reply, call = companion.AppendMessagesWithState.with_call(
        cpb.AppendMessagesWithStateRequest(
            conversation_id=conversation_id,
            messages=[text_message(word) for word in words],
            state_updates=updates,
            expected_version=expected_version,
        ),
        timeout=TIMEOUT,
        metadata=metadata,
    )
    return reply, trailing(call)


# --- GetState and UpdateState ----------------------------------------------------------


def test_state_round_trips_exactly(companion: CompanionStub) -> None:
    scope = f"user/chat/{uuid.uuid4()}"
    assert get_state(companion, scope) == cpb.GetStateResponse(values_json="{}", version=0)
    sent = (
        '{"one": 1, "one_point_zero": 1.0, "huge": 1e400, "big": 12345678901234567890123,'
        ' "tenth": 0.1, "none": null, "text": "\\u0000 \U0001f600", "list": [1, [2.50]]}'
    )
    updated = update_state(companion, scope, sent)
    expected = (
        '{"big":12345678901234567890123,"huge":1e400,"list":[1,[2.50]],"none":null,'
        '"one":1,"one_point_zero":1.0,"tenth":0.1,"text":"\\u0000 \U0001f600"}'
    )
    assert (updated.values_json, updated.version) == (expected, 1)
    assert get_state(companion, scope) == cpb.GetStateResponse(values_json=expected, version=1)
    removed = update_state(companion, scope, '{"one": 2}', ("huge", "list", "absent"), 1)
    assert json.loads(removed.values_json, parse_float=str) == {
        "big": 12345678901234567890123,
        "none": None,
        "one": 2,
        "one_point_zero": "1.0",
        "tenth": "0.1",
        "text": "\x00 \U0001f600",
    }
    assert removed.version == 2
    error = expect_error(
        ABORTED,
        partial(update_state, companion, scope, '{"x": 1}', (), 1),
        "expected_version",
        "version 2",
    )
    assert VERSION not in trailing(error)
    assert get_state(companion, scope).version == 2


def test_a_conversations_state_needs_it_and_goes_with_it(
    companion: CompanionStub, stub: Stub
) -> None:
    cid = new_id()
    scope = f"conversation/{cid}"
    expect_error(NOT_FOUND, partial(update_state, companion, scope, '{"a": 1}'), "scope", cid)
    # The request's own mistakes come first.
    expect_error(INVALID_ARGUMENT, partial(update_state, companion, scope, "[1]"), "set_json")
    calls.append(stub, cid, [text_message("hello")])
    upper = f"conversation/{cid.upper()}"
    assert update_state(companion, upper, '{"a": 1}').version == 1
    assert get_state(companion, scope).values_json == '{"a":1}'
    companion.DeleteConversation(
        cpb.DeleteConversationRequest(conversation_id=cid), timeout=TIMEOUT
    )
    assert get_state(companion, scope) == cpb.GetStateResponse(values_json="{}", version=0)


BAD_UPDATES: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"scope": ""}, ("scope",)),
    ({"scope": "app"}, ("scope",)),
    ({"scope": "app/a/b"}, ("scope",)),
    ({"scope": "user/chat/"}, ("scope",)),
    ({"scope": "app/\x00"}, ("scope", "U+0000")),
    ({"scope": "app/" + "x" * 257}, ("scope", "257")),
    ({"scope": "conversation/nope"}, ("scope", "UUID")),
    ({"set_json": "[]"}, ("set_json", "object")),
    ({"set_json": "null"}, ("set_json", "object")),
    ({"set_json": " "}, ("set_json", "JSON")),
    ({"set_json": '{"a": 1,}'}, ("set_json", "JSON")),
    ({"set_json": '{"a": 1, "a": 2}'}, ("set_json", "repeats")),
    ({"set_json": '{"a": NaN}'}, ("set_json", "NaN")),
    ({"set_json": '{"a": "\\ud800"}'}, ("set_json", "surrogate")),
    ({"set_json": '{"a":' + "[" * 5000 + "]" * 5000 + "}"}, ("set_json", "deeper")),
    ({"set_json": '{"a": 1}', "remove_keys": ["b", "a"]}, ("remove_keys[1]",)),
    ({"expected_version": -1}, ("expected_version",)),
    ({"set_json": json.dumps({"a": "x" * MIB})}, ("set_json", "1048576")),
]


@pytest.mark.parametrize(("fields", "named"), BAD_UPDATES)
def test_update_state_refuses_a_bad_request_naming_the_field(
    companion: CompanionStub, fields: dict[str, Any], named: tuple[str, ...]
) -> None:
    request = cpb.UpdateStateRequest(**({"scope": app()} | fields))
    expect_error(INVALID_ARGUMENT, partial(companion.UpdateState, request, timeout=TIMEOUT), *named)
    if "scope" not in fields:
        assert get_state(companion, request.scope).version == 0


def test_invalid_utf8_is_refused_naming_the_field(channel: grpc.Channel) -> None:
    scope = app()
    good = cpb.UpdateStateRequest(scope=scope, set_json='{"a": 1}', remove_keys=["k", "z"])
    for bad, field in [
        (good.SerializeToString().replace(b'"a"', b'"\xff"'), "set_json"),
        (good.SerializeToString().replace(b"z", b"\xc3"), "remove_keys[1]"),
    ]:
        call = channel.unary_unary(
            f"/{COMPANION_SERVICE}/UpdateState",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        expect_error(INVALID_ARGUMENT, partial(call, bad, timeout=TIMEOUT), field, "UTF-8")
    nested = cpb.AppendMessagesWithStateRequest(
        conversation_id=new_id(),
        messages=[text_message("x")],
        state_updates=[cpb.StateUpdate(scope=app()), cpb.StateUpdate(scope=app(), set_json="{}")],
    ).SerializeToString()
    call = channel.unary_unary(
        f"/{COMPANION_SERVICE}/AppendMessagesWithState",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    bad = nested.replace(b"{}", b"{\xff")
    expect_error(INVALID_ARGUMENT, partial(call, bad, timeout=TIMEOUT), "state_updates[1].set_json")


def test_update_state_replays_with_an_idempotency_key(companion: CompanionStub) -> None:
    scope, key = app(), (("idempotency-key", f"k-{uuid.uuid4()}"),)
    first = update_state(companion, scope, '{"a": 1}', metadata=key)
    assert (first.values_json, first.version) == ('{"a":1}', 1)
    update_state(companion, scope, '{"b": 2}')
    # The first answer again, applied once.
    assert update_state(companion, scope, '{"a": 1}', metadata=key) == first
    assert get_state(companion, scope).version == 2
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        partial(update_state, companion, scope, '{"a": 9}', metadata=key),
        "idempotency-key",
    )


def test_state_past_1_mib_counts_what_is_stored(companion: CompanionStub) -> None:
    scope = app()
    half = "x" * (MIB // 2)
    update_state(companion, scope, json.dumps({"a": half}))
    expect_error(
        INVALID_ARGUMENT,
        partial(update_state, companion, scope, json.dumps({"b": half})),
        "set_json",
        "1 MiB",
    )
    assert get_state(companion, scope).version == 1


# --- AppendMessagesWithState -------------------------------------------------------------


def test_append_with_state_lands_whole(companion: CompanionStub, stub: Stub) -> None:
    cid = new_id()
    own, user = f"conversation/{cid.upper()}", f"user/chat/{uuid.uuid4()}"
    reply, metadata = append_with_state(
        companion,
        cid,
        ["a", "b"],
        [cpb.StateUpdate(scope=own, set_json='{"turn": 1}'), cpb.StateUpdate(scope=user)],
    )
    assert metadata[VERSION] == "1"
    assert dict(reply.state_versions) == {own: 1, user: 1}
    assert reply.metadata == calls.get(stub, cid)
    # The messages as stored, whole, as the agynio append answers them.
    assert list(reply.appended) == calls.list_all(stub, cid)
    assert texts(reply.appended) == ["a", "b"]
    again, metadata = append_with_state(
        companion, cid, ["c"], [cpb.StateUpdate(scope=own, remove_keys=["turn"])], 1
    )
    assert (metadata[VERSION], dict(again.state_versions)) == ("2", {own: 2})
    assert get_state(companion, f"conversation/{cid}").values_json == "{}"
    assert texts(calls.list_all(stub, cid)) == ["a", "b", "c"]


def test_append_with_state_lands_nothing_on_a_failure(companion: CompanionStub, stub: Stub) -> None:
    cid, scope = new_id(), app()
    request = partial(append_with_state, companion, cid, ["lost"])
    # Absent: at version 0, and not created.
    error = expect_error(
        ABORTED,
        partial(request, [cpb.StateUpdate(scope=scope, set_json="{}")], 1),
        "expected_version",
        "version 0",
    )
    # It does not exist, so it has no version to report.
    assert VERSION not in trailing(error)
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid), "conversation_id")
    calls.append(stub, cid, [text_message("first")])
    error = expect_error(
        ABORTED, partial(request, [cpb.StateUpdate(scope=scope)], 7), "version 1, not 7"
    )
    assert trailing(error)[VERSION] == "1"
    expect_error(
        INVALID_ARGUMENT,
        partial(request, [cpb.StateUpdate(scope=scope), cpb.StateUpdate(scope=scope.upper())]),
        "state_updates[1].scope",
    )
    expect_error(
        INVALID_ARGUMENT,
        partial(request, [cpb.StateUpdate(scope=scope), cpb.StateUpdate(scope=scope)]),
        "state_updates[1].scope",
        "state_updates[0]",
    )
    missing = f"conversation/{new_id()}"
    error = expect_error(
        NOT_FOUND,
        partial(request, [cpb.StateUpdate(scope=scope), cpb.StateUpdate(scope=missing)]),
        "state_updates[1].scope",
    )
    assert trailing(error)[VERSION] == "1"
    big = json.dumps({"a": "x" * (MIB // 2)})
    update_state(companion, scope, big)
    expect_error(
        INVALID_ARGUMENT,
        partial(request, [cpb.StateUpdate(scope=scope, set_json=big.replace('"a"', '"b"'))]),
        "state_updates[0].set_json",
    )
    assert texts(calls.list_all(stub, cid)) == ["first"]
    assert calls.get(stub, cid).message_count == 1
    assert get_state(companion, scope).version == 1


def test_append_with_state_replays_for_its_idempotency_key(
    companion: CompanionStub, stub: Stub
) -> None:
    cid, scope = new_id(), app()
    key = (("idempotency-key", f"k-{uuid.uuid4()}"),)
    request = cpb.AppendMessagesWithStateRequest(
        conversation_id=cid,
        messages=[text_message("once")],
        state_updates=[cpb.StateUpdate(scope=scope, set_json='{"n": 1}')],
    )
    first = companion.AppendMessagesWithState(request, timeout=TIMEOUT, metadata=key)
    calls.append(stub, cid, [text_message("later")])
    again, call = companion.AppendMessagesWithState.with_call(
        request, timeout=TIMEOUT, metadata=key
    )
    assert again.SerializeToString() == first.SerializeToString()
    # The version now, whatever the replayed answer says.
    assert trailing(call)[VERSION] == "2"
    assert texts(calls.list_all(stub, cid)) == ["once", "later"]
    assert get_state(companion, scope).version == 1
    changed = cpb.AppendMessagesWithStateRequest(conversation_id=cid, messages=[text_message("x")])
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        partial(companion.AppendMessagesWithState, changed, timeout=TIMEOUT, metadata=key),
        "idempotency-key",
    )


def test_append_with_state_keeps_the_append_rules(companion: CompanionStub) -> None:
    cid = new_id()
    for request, field in [
        (cpb.AppendMessagesWithStateRequest(conversation_id=cid), "messages"),
        (cpb.AppendMessagesWithStateRequest(messages=[text_message("x")]), "conversation_id"),
        (
            cpb.AppendMessagesWithStateRequest(
                conversation_id=cid, messages=[pb.AppendMessageInput(role=pb.ROLE_USER)]
            ),
            "messages[0].body",
        ),
        (
            cpb.AppendMessagesWithStateRequest(
                conversation_id=cid,
                messages=[text_message("x")],
                state_updates=[cpb.StateUpdate(scope=f"app/{i}") for i in range(101)],
            ),
            "state_updates",
        ),
    ]:
        expect_error(
            INVALID_ARGUMENT,
            partial(companion.AppendMessagesWithState, request, timeout=TIMEOUT),
            field,
        )


# --- tokens, metrics, logs --------------------------------------------------------------


def test_state_tokens_metrics_and_logs(guarded: Guarded) -> None:
    scope, cid = app(), new_id()
    with grpc.insecure_channel(guarded.server.address) as channel:
        companion = calls.make_companion_stub(channel)
        ro, rw = bearer(RO_TOKEN), bearer(RW_TOKEN)
        expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            partial(companion.GetState, cpb.GetStateRequest(scope=scope), timeout=TIMEOUT),
        )
        assert companion.GetState(cpb.GetStateRequest(scope=scope), metadata=ro).version == 0
        expect_error(PERMISSION_DENIED, partial(update_state, companion, scope, metadata=ro))
        error = expect_error(
            PERMISSION_DENIED,
            partial(append_with_state, companion, cid, ["x"], [], metadata=ro),
        )
        assert VERSION not in trailing(error)
        assert update_state(companion, scope, '{"a": 1}', metadata=rw).version == 1
        _, metadata = append_with_state(
            companion, cid, ["x"], [cpb.StateUpdate(scope=scope)], metadata=rw
        )
        assert metadata[VERSION] == "1"

    url = f"http://127.0.0.1:{guarded.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()

    def requests(method: str, code: str) -> float:
        prefix = f'agent_state_rpc_requests_total{{code="{code}",method="{method}"}} '
        (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(line.removeprefix(prefix))

    assert requests("GetState", "UNAUTHENTICATED") == 1
    assert requests("GetState", "OK") == 1
    assert requests("UpdateState", "PERMISSION_DENIED") == 1
    assert requests("UpdateState", "OK") == 1
    assert requests("AppendMessagesWithState", "PERMISSION_DENIED") == 1
    assert requests("AppendMessagesWithState", "OK") == 1
    # Retention's counters are there from the start.
    assert "agent_state_retention_conversations_deleted_total 0.0" in text
    assert "agent_state_retention_messages_trimmed_total 0.0" in text

    lines = [
        json.loads(line) for line in guarded.server.output().splitlines() if line.startswith("{")
    ]
    appended = [
        line
        for line in lines
        if line.get("method") == "AppendMessagesWithState" and line["code"] == "OK"
    ]
    assert len(appended) == 1
    assert appended[0]["conversation_id"] == cid
    assert '"a": 1' not in guarded.server.output()
