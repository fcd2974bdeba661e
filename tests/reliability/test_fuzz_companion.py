"""Hostile input against the companion API (agentstate.v1.ConversationsService)
on a running server, on both storage backends: raw and mutated bytes,
wrong wire types, and requests whose fields take any value (any text,
labels, durations, timestamps, masks, orders, page sizes and tokens,
versions, counts, filters and message ids). Every answer is OK or a status
a client's input may get, never INTERNAL or UNKNOWN; an OK answer parses,
and what it says holds (a created conversation reads back the same, a
tail or a fork holds the conversation's messages). The server keeps
serving.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb
from tests.e2e.helpers import COMPANION_METHODS, new_id
from tests.reliability.test_fuzz import (
    FUZZ,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    any_wire_value,
    assert_serving,
    mutated,
    wire_fields,
    wire_type_of,
)
from tests.support import calls
from tests.support.calls import make_companion_stub, text_message
from tests.support.server import ServerProcess

SERVICE = cpb.DESCRIPTOR.services_by_name["ConversationsService"]
RESPONSE: dict[str, type[Message]] = {
    m.name: getattr(cpb, m.output_type.name) for m in SERVICE.methods
}
FIELDS: dict[str, list[FieldDescriptor]] = {
    m.name: list(m.input_type.fields) for m in SERVICE.methods
}

# What client input may get from these methods. UNAVAILABLE is for a
# database outage, and none is staged here.
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
    }
)


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str
    response: bytes | None


@dataclass
class CompanionFuzzer:
    channel: grpc.Channel
    _calls: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = field(default_factory=dict)

    def call(self, method: str, payload: bytes) -> Answer:
        if method not in self._calls:
            self._calls[method] = self.channel.unary_unary(
                f"/{SERVICE.full_name}/{method}",
                request_serializer=lambda data: data,
                response_deserializer=lambda data: data,
            )
        try:
            response = self._calls[method](payload, timeout=60)
            answer = Answer(grpc.StatusCode.OK, "", response)
        except grpc.RpcError as error:
            failed = cast(grpc.Call, error)
            answer = Answer(failed.code(), failed.details() or "", None)
        assert answer.code in ALLOWED, (
            f"{method} answered {answer.code.name} ({answer.details!r}) to "
            f"{len(payload)} bytes: {payload[:96].hex()}"
        )
        if answer.response is not None:
            try:
                RESPONSE[method].FromString(answer.response)
            except DecodeError as exc:
                raise AssertionError(f"{method}: the OK response does not parse: {exc}") from exc
        return answer

    def send(self, method: str, request: Message) -> Answer:
        return self.call(method, request.SerializeToString())


@pytest.fixture
def fz(channel: grpc.Channel, live_server: ServerProcess) -> Iterator[CompanionFuzzer]:
    yield CompanionFuzzer(channel)
    assert_serving(live_server, channel)


@pytest.fixture(scope="package")
def existing(channel: grpc.Channel) -> str:
    """A conversation the requests may name (some of them delete it: it
    is then absent, which is fine)."""
    stub = make_companion_stub(channel)
    created: cpb.Conversation = stub.CreateConversation(
        cpb.CreateConversationRequest(title="fuzz", labels={"fuzz": "yes"}), timeout=60
    )
    return created.conversation_id


@dataclass(frozen=True)
class Filled:
    """A conversation with messages (of every role, some with a kind) and
    a snapshot, which the reads and forks may name."""

    conversation_id: str
    message_ids: list[str]


@pytest.fixture(scope="package")
def filled(channel: grpc.Channel) -> Filled:
    stub = calls.make_stub(channel)
    conversation_id = new_id()
    roles = [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL]
    messages = [text_message(f"m{i}", roles[i % 3], "k" if i % 2 else "") for i in range(12)]
    ids = [m.id for m in calls.append(stub, conversation_id, messages).appended]
    calls.snapshot(stub, conversation_id, ids[:3])
    return Filled(conversation_id, ids)


def seeds(conversation_id: str, full: Filled | None = None) -> dict[str, list[bytes]]:
    """Valid requests of each method, to mutate."""
    full = full or Filled(conversation_id, [new_id()])
    return {
        "CreateConversation": [
            cpb.CreateConversationRequest(
                title="t", labels={"a": "b"}, retention=cpb.Retention(max_messages=3)
            ).SerializeToString(),
            cpb.CreateConversationRequest(conversation_id=new_id()).SerializeToString(),
        ],
        "DescribeConversation": [
            cpb.DescribeConversationRequest(conversation_id=conversation_id).SerializeToString()
        ],
        "UpdateConversation": [
            cpb.UpdateConversationRequest(
                conversation=cpb.Conversation(
                    conversation_id=conversation_id,
                    title="u",
                    retention=cpb.Retention(max_idle=Duration(seconds=5)),
                ),
                update_mask=FieldMask(paths=["title", "retention"]),
            ).SerializeToString()
        ],
        "ListConversations": [
            cpb.ListConversationsRequest(
                labels={"fuzz": "yes"},
                updated_after=Timestamp(seconds=1),
                order_by="updated_at",
                page_size=2,
            ).SerializeToString()
        ],
        "DeleteConversation": [
            cpb.DeleteConversationRequest(
                conversation_id=new_id(), allow_missing=True
            ).SerializeToString()
        ],
        "TailConversationMessages": [
            cpb.TailConversationMessagesRequest(
                conversation_id=full.conversation_id, count=3, roles=[pb.ROLE_USER], kinds=["k"]
            ).SerializeToString()
        ],
        "GetMessages": [
            cpb.GetMessagesRequest(
                conversation_id=full.conversation_id, message_ids=full.message_ids[:2]
            ).SerializeToString()
        ],
        "ForkConversation": [
            cpb.ForkConversationRequest(
                conversation_id=full.conversation_id,
                up_to_message_id=full.message_ids[-1],
                title="f",
                labels={"fuzz": "fork"},
            ).SerializeToString()
        ],
        "ListConversationSnapshots": [
            cpb.ListConversationSnapshotsRequest(
                conversation_id=full.conversation_id, page_size=1
            ).SerializeToString()
        ],
    } | state_seeds(full.conversation_id)


def state_seeds(conversation_id: str) -> dict[str, list[bytes]]:
    """Valid requests of the scoped state's methods."""
    update = cpb.StateUpdate(
        scope=f"conversation/{conversation_id}", set_json='{"a": 1.0, "b": [null]}'
    )
    return {
        "GetState": [cpb.GetStateRequest(scope="app/fuzz").SerializeToString()],
        "UpdateState": [
            cpb.UpdateStateRequest(
                scope="user/fuzz/u", set_json='{"n": 12345678901234567890123}', remove_keys=["x"]
            ).SerializeToString()
        ],
        "AppendMessagesWithState": [
            cpb.AppendMessagesWithStateRequest(
                conversation_id=conversation_id,
                messages=[text_message("fuzz")],
                state_updates=[update, cpb.StateUpdate(scope="app/fuzz", remove_keys=["a"])],
            ).SerializeToString()
        ],
    }


# --- raw bytes -------------------------------------------------------------------------


@pytest.mark.parametrize("method", COMPANION_METHODS)
def test_random_bytes(fz: CompanionFuzzer, method: str) -> None:
    @FUZZ
    @given(st.binary(max_size=2048))
    def run(payload: bytes) -> None:
        fz.call(method, payload)

    run()


@pytest.mark.parametrize("method", COMPANION_METHODS)
def test_random_wire_fields_and_mutations(
    fz: CompanionFuzzer, existing: str, filled: Filled, method: str
) -> None:
    valid = seeds(existing, filled)[method]

    @FUZZ
    @given(st.sampled_from([b"", *valid]), wire_fields(), mutated(valid))
    def run(base: bytes, extra: bytes, changed: bytes) -> None:
        fz.call(method, base + extra)
        fz.call(method, changed)

    run()


@pytest.mark.parametrize("method", COMPANION_METHODS)
def test_wrong_wire_types_for_known_fields(
    fz: CompanionFuzzer, existing: str, filled: Filled, method: str
) -> None:
    base = seeds(existing, filled)[method][0]
    for descriptor in FIELDS[method]:
        for wire_type in sorted({0, 1, 2, 3, 5} - wire_type_of(descriptor)):
            wrong = any_wire_value(wire_type, descriptor.number)
            fz.call(method, base + wrong)
            fz.call(method, wrong + base)


# --- any field values ---------------------------------------------------------------------

texts = st.text(max_size=40) | st.sampled_from(["", "\x00", "x" * 1001, "\U0001f600" * 300])
keys = st.from_regex(r"[a-z0-9_./-]{1,63}", fullmatch=True) | texts
label_maps = st.dictionaries(keys, texts, max_size=5) | st.just({f"k{i}": "" for i in range(65)})
int64s = st.integers(INT64_MIN, INT64_MAX) | st.sampled_from([0, 1, -1, 2, INT64_MAX])
int32s = st.integers(INT32_MIN, INT32_MAX) | st.sampled_from([0, 1, -1, 1000, 1001])
ids = st.sampled_from(
    ["", "nope", "0" * 32, "{" + "f" * 8 + "-" + "0" * 27 + "}"]
) | st.uuids().map(str)
durations = st.builds(
    Duration,
    seconds=int64s,
    nanos=st.integers(-(10**9) + 1, 10**9 - 1) | st.sampled_from([1000, 0]),
)
timestamps = st.builds(
    Timestamp, seconds=int64s, nanos=st.integers(INT32_MIN, INT32_MAX) | st.just(0)
)
retentions = st.none() | st.builds(
    cpb.Retention, max_idle=st.none() | durations, max_messages=int64s
)
paths = st.lists(
    st.sampled_from(["title", "labels", "retention", "", "version", "retention.max_idle"]) | texts,
    max_size=4,
)
orders = st.sampled_from(["", "updated_at", "updated_at desc", "updated_at asc"]) | texts


@st.composite
def conversations(draw: st.DrawFn, conversation_id: str) -> cpb.Conversation:
    return cpb.Conversation(
        conversation_id=draw(st.just(conversation_id) | ids),
        title=draw(texts),
        labels=draw(label_maps),
        retention=draw(retentions),
        version=draw(int64s),
        message_count=draw(int64s),
    )


def test_create_with_any_values(fz: CompanionFuzzer) -> None:
    @FUZZ
    @given(st.just("") | ids, texts, label_maps, retentions)
    def run(
        conversation_id: str, title: str, labels: dict[str, str], retention: cpb.Retention | None
    ) -> None:
        request = cpb.CreateConversationRequest(
            conversation_id=conversation_id, title=title, labels=labels, retention=retention
        )
        answer = fz.send("CreateConversation", request)
        if answer.response is None:
            return
        created = cpb.Conversation.FromString(answer.response)
        assert (created.title, dict(created.labels), created.version) == (title, labels, 1)
        described = fz.send(
            "DescribeConversation",
            cpb.DescribeConversationRequest(conversation_id=created.conversation_id),
        )
        assert described.response is not None
        assert cpb.Conversation.FromString(described.response) == created

    run()


def test_update_with_any_values(fz: CompanionFuzzer, existing: str) -> None:
    @FUZZ
    @given(conversations(existing), paths, int64s | st.just(0))
    def run(conversation: cpb.Conversation, mask: list[str], expected: int) -> None:
        request = cpb.UpdateConversationRequest(
            conversation=conversation, update_mask=FieldMask(paths=mask), expected_version=expected
        )
        fz.send("UpdateConversation", request)

    run()


def test_list_with_any_values(fz: CompanionFuzzer) -> None:
    @FUZZ
    @given(
        label_maps,
        st.none() | timestamps,
        st.none() | timestamps,
        orders,
        int32s,
        texts
        | st.text(
            alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            min_size=63,
            max_size=63,
        ),
    )
    def run(
        labels: dict[str, str],
        after: Timestamp | None,
        before: Timestamp | None,
        order_by: str,
        page_size: int,
        token: str,
    ) -> None:
        request = cpb.ListConversationsRequest(
            labels=labels,
            updated_after=after,
            updated_before=before,
            order_by=order_by,
            page_size=page_size,
            page_token=token,
        )
        fz.send("ListConversations", request)

    run()


def test_describe_and_delete_with_any_values(fz: CompanionFuzzer) -> None:
    @FUZZ
    @given(ids, int64s, st.booleans())
    def run(conversation_id: str, expected: int, allow_missing: bool) -> None:
        fz.send(
            "DescribeConversation", cpb.DescribeConversationRequest(conversation_id=conversation_id)
        )
        request = cpb.DeleteConversationRequest(
            conversation_id=conversation_id, expected_version=expected, allow_missing=allow_missing
        )
        fz.send("DeleteConversation", request)

    run()


roles = st.lists(st.integers(INT32_MIN, INT32_MAX) | st.sampled_from([0, 1, 2, 3, 4]), max_size=4)
kinds = st.lists(texts | st.just("k"), max_size=4)
tokens = texts | st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    min_size=63,
    max_size=63,
)


def test_tail_with_any_values(fz: CompanionFuzzer, filled: Filled) -> None:
    @FUZZ
    @given(st.just(filled.conversation_id) | ids, int32s, roles, kinds)
    def run(
        conversation_id: str, count: int, role_filter: list[int], kind_filter: list[str]
    ) -> None:
        request = cpb.TailConversationMessagesRequest(
            conversation_id=conversation_id,
            count=count,
            roles=role_filter,  # type: ignore[arg-type]
            kinds=kind_filter,
        )
        answer = fz.send("TailConversationMessages", request)
        if answer.response is None:
            return
        reply = cpb.TailConversationMessagesResponse.FromString(answer.response)
        assert len(reply.messages) <= count
        if conversation_id == filled.conversation_id:
            found = [message.id for message in reply.messages]
            # The last of the ordering that match, oldest first.
            assert found == [i for i in filled.message_ids if i in found]


# --- scoped state ---------------------------------------------------------------------------

scope_kinds = st.sampled_from(["app", "user", "conversation", "App", ""])
scope_parts = st.lists(texts | ids, max_size=3)
scopes = st.builds(lambda kind, parts: "/".join([kind, *parts]), scope_kinds, scope_parts) | texts
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
set_jsons = (
    st.dictionaries(st.text(max_size=5), json_values, max_size=5).map(json.dumps)
    | json_values.map(json.dumps)
    | texts
    | st.sampled_from(['{"a": 1, "a": 2}', '{"a": NaN}', '{"a": "\\ud800"}', "{" * 3000, "1e400"])
)
key_lists = st.lists(st.text(max_size=5) | texts, max_size=4)


def test_state_with_any_values(fz: CompanionFuzzer, existing: str) -> None:
    @FUZZ
    @given(st.just(f"conversation/{existing}") | scopes, set_jsons, key_lists, int64s)
    def run(scope: str, set_json: str, remove_keys: list[str], expected: int) -> None:
        request = cpb.UpdateStateRequest(
            scope=scope, set_json=set_json, remove_keys=remove_keys, expected_version=expected
        )
        answer = fz.send("UpdateState", request)
        read = fz.send("GetState", cpb.GetStateRequest(scope=scope))
        if answer.response is None:
            return
        updated = cpb.UpdateStateResponse.FromString(answer.response)
        # What an update answers is the state, and reads back.
        assert read.response is not None
        assert cpb.GetStateResponse.FromString(read.response).values_json == updated.values_json
        values = json.loads(updated.values_json)
        assert set(values) >= set(json.loads(set_json or "{}")) - set(remove_keys)
        assert not set(values) & set(remove_keys)

    run()


def test_get_messages_with_any_values(fz: CompanionFuzzer, filled: Filled) -> None:
    wanted = st.sampled_from(filled.message_ids) | ids

    @FUZZ
    @given(
        st.just(filled.conversation_id) | ids,
        st.lists(wanted, max_size=6) | st.just([filled.message_ids[0]] * 1001),
    )
    def run(conversation_id: str, message_ids: list[str]) -> None:
        request = cpb.GetMessagesRequest(conversation_id=conversation_id, message_ids=message_ids)
        answer = fz.send("GetMessages", request)
        if answer.response is not None:
            reply = cpb.GetMessagesResponse.FromString(answer.response)
            assert [m.id for m in reply.messages] == [str(uuid.UUID(i)) for i in message_ids]

    run()


def test_list_snapshots_with_any_values(fz: CompanionFuzzer, filled: Filled) -> None:
    @FUZZ
    @given(st.just(filled.conversation_id) | ids, int32s, tokens)
    def run(conversation_id: str, page_size: int, token: str) -> None:
        request = cpb.ListConversationSnapshotsRequest(
            conversation_id=conversation_id, page_size=page_size, page_token=token
        )
        fz.send("ListConversationSnapshots", request)

    run()


def test_fork_with_any_values(fz: CompanionFuzzer, filled: Filled) -> None:
    @FUZZ
    @given(
        st.just(filled.conversation_id) | ids,
        st.just("") | st.sampled_from(filled.message_ids) | ids,
        st.just("") | ids,
        texts,
        label_maps,
    )
    def run(
        conversation_id: str,
        up_to: str,
        new_conversation_id: str,
        title: str,
        labels: dict[str, str],
    ) -> None:
        request = cpb.ForkConversationRequest(
            conversation_id=conversation_id,
            up_to_message_id=up_to,
            new_conversation_id=new_conversation_id,
            title=title,
            labels=labels,
        )
        answer = fz.send("ForkConversation", request)
        if answer.response is None:
            return
        reply = cpb.ForkConversationResponse.FromString(answer.response)
        conversation = reply.conversation
        assert (conversation.title, dict(conversation.labels), conversation.version) == (
            title,
            labels,
            1,
        )
        assert conversation.message_count == len(reply.message_ids)
        if conversation_id == filled.conversation_id:
            last = filled.message_ids.index(up_to) + 1 if up_to else len(filled.message_ids)
            assert len(reply.message_ids) == last


def test_append_with_state_with_any_values(fz: CompanionFuzzer, existing: str) -> None:
    @FUZZ
    @given(
        st.just(existing) | ids,
        st.lists(
            st.builds(cpb.StateUpdate, scope=scopes, set_json=set_jsons, remove_keys=key_lists),
            max_size=3,
        ),
        int64s | st.just(0),
        st.integers(0, 2),
    )
    def run(
        conversation_id: str, updates: list[cpb.StateUpdate], expected: int, count: int
    ) -> None:
        request = cpb.AppendMessagesWithStateRequest(
            conversation_id=conversation_id,
            messages=[text_message(str(n)) for n in range(count)],
            state_updates=updates,
            expected_version=expected,
        )
        answer = fz.send("AppendMessagesWithState", request)
        if answer.response is None:
            return
        response = cpb.AppendMessagesWithStateResponse.FromString(answer.response)
        assert len(response.appended) == count
        assert set(response.state_versions) == {update.scope for update in updates}

    run()
