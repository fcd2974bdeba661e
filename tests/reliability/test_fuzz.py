"""Hostile input against a running server, on both storage backends.

Every call goes through `Fuzzer.call`, which insists that the status is OK or
one of the codes SEMANTICS.md allows for client input (INVALID_ARGUMENT,
NOT_FOUND, RESOURCE_EXHAUSTED), never INTERNAL, UNKNOWN or a storage outage,
and that an OK answer parses as the method's response. After every test the
server process must still be running and SERVING.

Kinds of input:
- raw bytes (random, mutated valid requests, wrong wire types, huge length
  prefixes, deep unknown groups, overlong varints, invalid UTF-8, gzip bombs);
- structurally valid but extreme requests built with the generated messages;
- Hypothesis-generated requests checked against the documented outcome;
- each limit of SEMANTICS.md, at its default and configured smaller;
- calls the client abandons (cancelled, or with deadlines of milliseconds),
  on a server of their own, since a failure there may leave it broken.

The number of calls per method is printed at the end (``pytest -s``).
``AGENT_STATE_FUZZ_EXAMPLES`` (default 40) raises Hypothesis' examples per
property and the rounds of abandoned writes, for on-demand runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import grpc
import psycopg
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.conftest import database_url_for
from tests.e2e.helpers import (
    ASSISTANT,
    INVALID_ARGUMENT,
    MAX_KIND_CODE_POINTS,
    MAX_REQUEST_BYTES,
    MIB,
    NOT_FOUND,
    OK,
    RESOURCE_EXHAUSTED,
    TOOL,
    USER,
    content,
    input_content,
    micros,
    new_id,
    role,
    spellings,
    tool_image_message,
    tool_text_message,
)
from tests.reliability.hypothesis_settings import AGAINST_A_SERVER
from tests.support.calls import (
    MAX_BATCH,
    MAX_PAGE_SIZE,
    Stub,
    all_ids,
    append,
    get,
    list_all,
    make_stub,
    seed,
    snapshot,
    snapshot_ids,
    text_message,
)
from tests.support.server import ServerProcess, health_check

SERVICE = pb.DESCRIPTOR.services_by_name["AgentStateService"]
METHODS = [method.name for method in SERVICE.methods]
REQUEST: dict[str, type[Message]] = {
    m.name: getattr(pb, m.input_type.name) for m in SERVICE.methods
}
DESCRIPTORS: dict[str, Descriptor] = {m.name: m.input_type for m in SERVICE.methods}
FIELDS: dict[str, list[FieldDescriptor]] = {
    name: list(descriptor.fields) for name, descriptor in DESCRIPTORS.items()
}
RESPONSE: dict[str, type[Message]] = {
    m.name: getattr(pb, m.output_type.name) for m in SERVICE.methods
}
LIST_METHODS = [
    "ListConversationMessages",
    "ListConversationMessageIds",
    "ListSnapshotMessages",
    "ListSnapshotMessageIds",
]

# What client input may get (SEMANTICS: Errors, Content). UNAVAILABLE is for
# a database outage, and none is staged here.
ALLOWED = frozenset({OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED})
ALL_CODES = frozenset(grpc.StatusCode)

EXAMPLES = int(os.environ.get("AGENT_STATE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(AGAINST_A_SERVER, max_examples=EXAMPLES)

# (backend, method) -> calls made, for the summary at the end.
CASES: Counter[tuple[str, str]] = Counter()

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1

INVALID_UTF8 = {
    "lone continuation": b"\x80",
    "ff fe": b"a\xff\xfe",
    "overlong slash": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "past U+10FFFF": b"\xf4\x90\x80\x80",
    "cut multibyte": b"ok\xe2\x82",
}

_HYPHENATED = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# The spellings SEMANTICS accepts, as an oracle independent of the server's.
UUID_FORMS = re.compile(
    rf"{_HYPHENATED}|\{{{_HYPHENATED}\}}|(?i:urn:uuid:){_HYPHENATED}|[0-9a-fA-F]{{32}}"
)


# --- wire encoding by hand --------------------------------------------------


def varint(value: int) -> bytes:
    """Base-128 varint; negative values as their 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def overlong(value: int, size: int) -> bytes:
    """`value` as a varint padded with continuation bytes to `size` bytes."""
    raw = varint(value)
    if len(raw) >= size:
        return raw
    return raw[:-1] + bytes((raw[-1] | 0x80,)) + b"\x80" * (size - len(raw) - 1) + b"\x00"


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def delimited(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def nested_groups(number: int, depth: int) -> bytes:
    return key(number, 3) * depth + key(number, 4) * depth


def nested_messages(number: int, depth: int) -> bytes:
    """`depth` length-delimited fields, each inside the previous (built
    bottom-up in linear time)."""
    tag = key(number, 2)
    sizes = [0]
    for _ in range(depth):
        inner = sizes[-1]
        sizes.append(len(tag) + len(varint(inner)) + inner)
    return b"".join(tag + varint(sizes[level]) for level in reversed(range(depth)))


def padded(base: bytes, total: int, number: int = 15) -> bytes:
    """`base` plus one unknown length-delimited field, `total` bytes in all."""
    length = total - len(base)
    for _ in range(4):
        payload_length = total - len(base) - len(key(number, 2)) - len(varint(length))
        length = payload_length
    result = base + delimited(number, b"p" * length)
    assert len(result) == total, (len(result), total)
    return result


def any_wire_value(wire_type: int, number: int) -> bytes:
    """Some well-formed value of `wire_type` for field `number`."""
    if wire_type == 0:
        return key(number, 0) + varint(1)
    if wire_type == 1:
        return key(number, 1) + b"\x01" * 8
    if wire_type == 2:
        return delimited(number, b"ab")
    if wire_type == 5:
        return key(number, 5) + b"\x01" * 4
    return nested_groups(number, 1)


def wire_type_of(descriptor: FieldDescriptor) -> set[int]:
    """The wire types protobuf accepts for a known field."""
    if descriptor.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
        return {2}
    if descriptor.is_repeated:
        return {0, 2}  # packed or not
    return {0}


def canonical(value: str) -> str:
    return str(uuid.UUID(value[-36:] if value[:1] in "uU" else value))


def is_uuid(value: str) -> bool:
    return UUID_FORMS.fullmatch(value) is not None


# --- calling the server -------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    response: bytes | None
    trailing: dict[str, str]


@dataclass
class Fuzzer:
    """Raw calls with identity serializers, counted and checked."""

    channel: grpc.Channel
    backend: str
    _calls: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = field(default_factory=dict)

    def multicallable(self, method: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
        if method not in self._calls:
            self._calls[method] = self.channel.unary_unary(
                f"/{SERVICE.full_name}/{method}",
                request_serializer=lambda data: data,
                response_deserializer=lambda data: data,
            )
        return self._calls[method]

    def call(
        self,
        method: str,
        payload: bytes,
        *,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        timeout: float = 60.0,
        allowed: frozenset[grpc.StatusCode] = ALLOWED,
        compression: grpc.Compression | None = None,
    ) -> Outcome:
        CASES[(self.backend, method)] += 1
        try:
            response, call = self.multicallable(method).with_call(
                payload, timeout=timeout, metadata=tuple(metadata), compression=compression
            )
            outcome = Outcome(OK, "", response, _trailing(call))
        except grpc.RpcError as error:
            failed = cast(grpc.Call, error)  # every RpcError of a finished call is one
            outcome = Outcome(failed.code(), failed.details() or "", None, _trailing(failed))
        assert outcome.code in allowed, (
            f"{method} answered {outcome.code.name} ({outcome.details!r}) to "
            f"{len(payload)} bytes: {payload[:96].hex()}"
        )
        if outcome.response is not None and method in RESPONSE:
            try:
                RESPONSE[method].FromString(outcome.response)
            except DecodeError as exc:
                raise AssertionError(f"{method}: the OK response does not parse: {exc}") from exc
        return outcome

    def expect(self, method: str, payload: bytes, code: grpc.StatusCode, *names: str) -> Outcome:
        """Exactly `code`, with details naming each of `names`."""
        outcome = self.call(method, payload)
        assert outcome.code == code, (
            f"{method}: expected {code.name}, got {outcome.code.name}: {outcome.details!r}"
        )
        for name in names:
            assert name in outcome.details, f"{method}: details should name {name!r}"
        return outcome


def _trailing(call: grpc.Call) -> dict[str, str]:
    return {k: v for k, v in (call.trailing_metadata() or ()) if isinstance(v, str)}


MessageT = TypeVar("MessageT", bound=Message)


def parse(kind: type[MessageT], outcome: Outcome) -> MessageT:
    assert outcome.response is not None, outcome
    return kind.FromString(outcome.response)


def listed(method: str, outcome: Outcome) -> tuple[list[str], str]:
    """The ids an OK answer of a list method holds, and its next page token."""
    if method == "ListConversationMessages":
        messages = parse(pb.ListConversationMessagesResponse, outcome)
        return [m.id for m in messages.messages], messages.next_page_token
    if method == "ListSnapshotMessages":
        items = parse(pb.ListSnapshotMessagesResponse, outcome)
        return [m.id for m in items.messages], items.next_page_token
    if method == "ListConversationMessageIds":
        ids = parse(pb.ListConversationMessageIdsResponse, outcome)
        return list(ids.message_ids), ids.next_page_token
    snapshot_ids = parse(pb.ListSnapshotMessageIdsResponse, outcome)
    return list(snapshot_ids.message_ids), snapshot_ids.next_page_token


def assert_serving(process: ServerProcess, chan: grpc.Channel) -> None:
    assert process.process is not None
    assert process.process.poll() is None, f"the server died: {process.describe()}"
    reply = health_check(chan, "", timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- fixtures -------------------------------------------------------------------


# Totals already printed, per backend: pytest may run this module once per
# backend (between the backends' runs of other modules).
PRINTED: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def case_summary() -> Iterator[None]:
    yield
    for name in sorted({b for b, _ in CASES}):
        counts = {m: n for (b, m), n in CASES.items() if b == name}
        total = sum(counts.values())
        if PRINTED.get(name) != total:
            PRINTED[name] = total
            per_method = ", ".join(f"{m}={n}" for m, n in sorted(counts.items()))
            print(f"\nfuzz cases ({name}): {total} calls: {per_method}")


@pytest.fixture(autouse=True)
def still_serving(live_server: ServerProcess, channel: grpc.Channel) -> Iterator[None]:
    yield
    assert_serving(live_server, channel)


@pytest.fixture
def fz(channel: grpc.Channel, backend: str) -> Fuzzer:
    return Fuzzer(channel, backend)


@pytest.fixture
def stub(channel: grpc.Channel) -> Stub:
    return make_stub(channel)


@dataclass(frozen=True, repr=False)  # a failure report need not print it all
class World:
    """Data the requests refer to. Only reads and snapshots name `cid`, so
    its content never changes; destructive seeds work on other conversations."""

    cid: str
    messages: list[pb.Message]
    snapshot_id: str
    snapshot_order: list[str]
    # The second page's token of each list method (pages of 2 and of 1).
    tokens: dict[str, str]
    # Valid requests to mutate, per method.
    seeds: dict[str, list[bytes]]
    # One valid request per method whose outcome repeats: (payload, code).
    probes: dict[str, tuple[bytes, grpc.StatusCode]]

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages]


WORLD_INPUTS = [
    text_message("hello", USER, ""),
    text_message("hi", ASSISTANT, "k"),
    tool_text_message("out", metadata={"a": "1", "": ""}),
    tool_image_message(pb.ToolImageOutput(external_url="u", width_px=3, height_px=4)),
    text_message("nul", USER, "\x00"),
    text_message("bye", ASSISTANT, "k"),
]


def encode(method: str, **fields: object) -> bytes:
    """A request of `method` with these fields, serialized."""
    return REQUEST[method](**fields).SerializeToString()


@pytest.fixture(scope="package")
def world(channel: grpc.Channel) -> World:
    return build_world(channel)


def build_world(channel: grpc.Channel) -> World:
    stub = make_stub(channel)
    cid = new_id()
    messages = list(append(stub, cid, WORLD_INPUTS).appended)
    a, b, c, _, _, f = [m.id for m in messages]
    order = [c, a, c, f]
    snap = snapshot(stub, cid, order).snapshot_id
    tokens: dict[str, str] = {}
    for method in LIST_METHODS:
        if "Conversation" in method:
            payload = encode(method, conversation_id=cid, page_size=2)
        else:
            payload = encode(method, snapshot_id=snap, page_size=1)
        response = Fuzzer(channel, "").multicallable(method)(payload, timeout=60)
        tokens[method] = listed(method, Outcome(OK, "", response, {}))[1]
    victim = new_id()
    v = seed(stub, victim, 40)
    stable = new_id()
    (s0,) = seed(stub, stable, 1)
    append_target = new_id()
    seeds = {
        "AppendConversationMessages": [
            encode(
                "AppendConversationMessages",
                conversation_id=append_target,
                messages=WORLD_INPUTS[:4],
            ),
            encode(
                "AppendConversationMessages",
                conversation_id=append_target,
                messages=[text_message("x", TOOL, "kind")],
            ),
        ],
        "ListConversationMessages": [
            encode(
                "ListConversationMessages",
                conversation_id=cid,
                roles=[USER, TOOL],
                kinds=["", "k"],
                page_size=3,
            ),
            encode(
                "ListConversationMessages",
                conversation_id=cid,
                page_size=2,
                page_token=tokens["ListConversationMessages"],
            ),
        ],
        "ReplaceConversationMessagesRange": [
            # [from..to] by its own ids in reverse: repeatable, it swaps them.
            encode(
                "ReplaceConversationMessagesRange",
                conversation_id=victim,
                from_message_id=v[1],
                to_message_id=v[2],
                new_message_ids=[v[2], v[1]],
            ),
            encode(
                "ReplaceConversationMessagesRange",
                conversation_id=victim,
                from_message_id=v[3],
                new_message_ids=[v[5], v[6]],
            ),
            encode(
                "ReplaceConversationMessagesRange",
                conversation_id=victim,
                to_message_id=v[8],
                new_message_ids=[v[9]],
            ),
        ],
        "DeleteConversationMessagesRange": [
            encode(
                "DeleteConversationMessagesRange",
                conversation_id=victim,
                from_message_id=v[20],
                to_message_id=v[22],
            ),
            encode("DeleteConversationMessagesRange", conversation_id=victim, to_message_id=v[0]),
            encode(
                "DeleteConversationMessagesRange", conversation_id=victim, from_message_id=v[39]
            ),
        ],
        "GetConversation": [encode("GetConversation", conversation_id=cid)],
        "ListConversationMessageIds": [
            encode(
                "ListConversationMessageIds",
                conversation_id=cid,
                page_size=2,
                page_token=tokens["ListConversationMessageIds"],
            ),
        ],
        "ListSnapshotMessages": [
            encode(
                "ListSnapshotMessages",
                snapshot_id=snap,
                page_size=1,
                page_token=tokens["ListSnapshotMessages"],
            ),
        ],
        "ListSnapshotMessageIds": [
            encode(
                "ListSnapshotMessageIds",
                snapshot_id=snap,
                page_size=1,
                page_token=tokens["ListSnapshotMessageIds"],
            ),
        ],
        "CreateSnapshot": [encode("CreateSnapshot", conversation_id=cid, message_ids=[a, b, a])],
    }
    probes = {method: (requests[0], OK) for method, requests in seeds.items()}
    probes["AppendConversationMessages"] = (seeds["AppendConversationMessages"][1], OK)
    # [s0..s0] replaced by itself: no change, OK every time.
    probes["ReplaceConversationMessagesRange"] = (
        encode(
            "ReplaceConversationMessagesRange",
            conversation_id=stable,
            from_message_id=s0,
            to_message_id=s0,
            new_message_ids=[s0],
        ),
        OK,
    )
    # A conversation that never exists.
    probes["DeleteConversationMessagesRange"] = (
        encode("DeleteConversationMessagesRange", conversation_id=new_id(), from_message_id=a),
        NOT_FOUND,
    )
    return World(cid, messages, snap, order, tokens, seeds, probes)


# --- raw bytes -------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_random_bytes(fz: Fuzzer, method: str) -> None:
    @FUZZ
    @given(st.binary(max_size=2048))
    def run(payload: bytes) -> None:
        fz.call(method, payload)

    run()


@st.composite
def wire_fields(draw: st.DrawFn) -> bytes:
    """A run of fields with any number, any wire type (valid or not) and
    plausible or absurd payloads: the request types' own numbers are likely."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 8))):
        number = draw(st.one_of(st.integers(1, 15), st.sampled_from([0, 19000, 2**29 - 1, 2**29])))
        wire_type = draw(st.integers(0, 7))
        out += key(number, wire_type)
        if wire_type == 0:
            out += varint(draw(st.integers(INT64_MIN, UINT64_MAX)))
        elif wire_type == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wire_type == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        elif wire_type == 2:
            payload = draw(st.one_of(st.binary(max_size=64), wire_fields()))
            length = draw(st.one_of(st.just(len(payload)), st.integers(0, UINT64_MAX)))
            out += varint(length) + payload
        elif wire_type == 3:
            out += draw(wire_fields()) + draw(st.sampled_from([key(number, 4), b""]))
        else:
            out += draw(st.binary(max_size=4))
    return bytes(out)


@pytest.mark.parametrize("method", METHODS)
def test_random_wire_fields(fz: Fuzzer, world: World, method: str) -> None:
    seeds = world.seeds[method]

    @FUZZ
    @given(st.sampled_from([b"", *seeds]), wire_fields(), st.booleans())
    def run(base: bytes, extra: bytes, before: bool) -> None:
        fz.call(method, extra + base if before else base + extra)

    run()


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A valid request with a few bytes truncated, flipped, inserted,
    deleted or spliced from another request."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        where = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "set", "splice"]))
        if operation == "truncate":
            del data[where:]
        elif operation == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif operation == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        elif operation == "set":
            data[where] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x08, 0x0A, 0x0B, 0x0C]))
        else:
            other = draw(st.sampled_from(seeds))
            data[where:] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


@pytest.mark.parametrize("method", METHODS)
def test_mutated_valid_requests(fz: Fuzzer, world: World, method: str) -> None:
    @FUZZ
    @given(mutated(world.seeds[method]))
    def run(payload: bytes) -> None:
        fz.call(method, payload)

    run()


@pytest.mark.parametrize("method", METHODS)
def test_every_truncation_of_a_valid_request(fz: Fuzzer, world: World, method: str) -> None:
    payload = world.seeds[method][0]
    cuts = range(len(payload))
    if len(cuts) > 120:
        step = len(cuts) / 120
        cuts = range(0, len(payload), max(1, round(step)))
    for cut in cuts:
        fz.call(method, payload[:cut])


@pytest.mark.parametrize("method", METHODS)
def test_wrong_wire_types_for_known_fields(fz: Fuzzer, world: World, method: str) -> None:
    base = world.seeds[method][0]
    for descriptor in FIELDS[method]:
        for wire_type in sorted({0, 1, 2, 3, 5} - wire_type_of(descriptor)):
            wrong = any_wire_value(wire_type, descriptor.number)
            fz.call(method, base + wrong)
            fz.call(method, wrong + base)
            # Alone, the field is unknown to the parser: the request names no
            # conversation or snapshot.
            fz.expect(method, wrong, INVALID_ARGUMENT)
    # The same inside an append's nested messages (AppendMessageInput, body,
    # tool output): a field with a foreign wire type is an unknown field there.
    if method == "AppendConversationMessages":
        target = new_id().encode()
        for number in (1, 2, 3):
            for wire_type in (0, 1, 2, 5, 3):
                inner = varint_field(1, USER) + any_wire_value(wire_type, number)
                if number != 3 or wire_type != 2:
                    inner += delimited(3, delimited(1, delimited(1, b"t")))
                fz.call(method, delimited(1, target) + delimited(2, inner))


@pytest.mark.parametrize("method", METHODS)
def test_huge_length_prefixes(fz: Fuzzer, method: str) -> None:
    lengths = [2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**35, 2**62, INT64_MAX, UINT64_MAX]
    for number in range(1, 6):
        for length in lengths:
            fz.expect(method, key(number, 2) + varint(length) + b"abc", INVALID_ARGUMENT, "request")
    if method == "AppendConversationMessages":
        # A nested message claiming more than its parent holds.
        inner = varint_field(1, USER) + key(3, 2) + varint(2**32) + b"\x0a\x00"
        payload = delimited(1, new_id().encode()) + delimited(2, inner)
        fz.expect(method, payload, INVALID_ARGUMENT, "request")


@pytest.mark.parametrize("method", METHODS)
def test_deep_and_broken_unknown_nesting(fz: Fuzzer, world: World, method: str) -> None:
    payload, code = world.probes[method]
    for depth in (1, 10, 50, 90):
        # Unknown fields a newer contract might send: the call is unaffected.
        assert fz.call(method, payload + nested_groups(15, depth)).code == code
        assert fz.call(method, payload + nested_messages(15, depth)).code == code
    for depth in (99, 100, 101, 200, 10_000, 500_000):
        fz.call(method, payload + nested_groups(15, depth))
    for depth in (1_000, 100_000):
        assert fz.call(method, payload + nested_messages(15, depth)).code == code
    broken = {
        "start without end": key(15, 3) * 3,
        "end without start": key(15, 4),
        "mismatched end": key(15, 3) + key(16, 4),
        "field number 0": b"\x00\x00",
        "wire type 6": key(15, 6),
        "wire type 7": key(15, 7),
        "field number 2**29": key(2**29, 0) + b"\x00",
    }
    for name, extra in broken.items():
        outcome = fz.call(method, payload + extra)
        assert outcome.code == INVALID_ARGUMENT, (name, outcome)


@pytest.mark.parametrize("method", METHODS)
def test_overlong_varints(fz: Fuzzer, world: World, method: str) -> None:
    payload, code = world.probes[method]
    # Ten bytes is the longest valid varint; padded encodings of small values parse.
    for size in (2, 5, 9, 10):
        assert fz.call(method, payload + key(15, 0) + overlong(7, size)).code == code
    for size in (11, 12, 20):
        fz.expect(method, payload + key(15, 0) + overlong(7, size), INVALID_ARGUMENT, "request")
    # An overlong tag: field 15 spelled in five and in eleven bytes.
    fz.call(method, payload + overlong(15 << 3, 5) + b"\x00")
    fz.call(method, payload + overlong(15 << 3, 11) + b"\x00")
    # An overlong length prefix.
    fz.call(method, payload + key(15, 2) + overlong(2, 10) + b"ab")
    for descriptor in FIELDS[method]:
        if 0 in wire_type_of(descriptor):
            for value in (INT64_MIN, INT64_MAX, UINT64_MAX, 2**32 + 1, INT32_MIN):
                fz.call(method, payload + varint_field(descriptor.number, value))
            fz.call(method, payload + key(descriptor.number, 0) + overlong(1, 10))


# --- extreme but well-formed requests ------------------------------------------------


def _append_request(cid: str, messages: Sequence[pb.AppendMessageInput]) -> bytes:
    return pb.AppendConversationMessagesRequest(
        conversation_id=cid, messages=list(messages)
    ).SerializeToString()


def _round_trip(fz: Fuzzer, stub: Stub, messages: Sequence[pb.AppendMessageInput]) -> None:
    """Append, then check the response and a list give back what was sent."""
    cid = new_id()
    outcome = fz.expect("AppendConversationMessages", _append_request(cid, messages), OK)
    appended = parse(pb.AppendConversationMessagesResponse, outcome).appended
    sent = [input_content(m) for m in messages]
    assert [content(m) for m in appended] == sent
    assert [content(m) for m in list_all(stub, cid)] == sent


ID_FIELDS = {
    "AppendConversationMessages": ["conversation_id"],
    "ListConversationMessages": ["conversation_id"],
    "ReplaceConversationMessagesRange": [
        "conversation_id",
        "from_message_id",
        "to_message_id",
        "new_message_ids",
    ],
    "DeleteConversationMessagesRange": ["conversation_id", "from_message_id", "to_message_id"],
    "GetConversation": ["conversation_id"],
    "ListConversationMessageIds": ["conversation_id"],
    "ListSnapshotMessages": ["snapshot_id"],
    "ListSnapshotMessageIds": ["snapshot_id"],
    "CreateSnapshot": ["conversation_id", "message_ids"],
}


@pytest.mark.parametrize("method", METHODS)
def test_megabyte_ids(fz: Fuzzer, world: World, method: str) -> None:
    huge = "a" * MIB
    for name in ID_FIELDS[method]:
        request = REQUEST[method].FromString(world.probes[method][0])
        target = getattr(request, name)
        if isinstance(target, str):
            setattr(request, name, huge)
        else:
            del target[:]
            target.append(huge)
        outcome = fz.expect(method, request.SerializeToString(), INVALID_ARGUMENT, name)
        # The message quotes a shortened value, not the megabyte.
        assert len(outcome.details) < 1024, len(outcome.details)


def test_megabyte_kind_is_invalid(fz: Fuzzer) -> None:
    cid = new_id()
    payload = _append_request(cid, [text_message("a"), text_message("b", kind="k" * MIB)])
    fz.expect("AppendConversationMessages", payload, INVALID_ARGUMENT, "messages[1].kind")
    fz.expect(
        "GetConversation",
        pb.GetConversationRequest(conversation_id=cid).SerializeToString(),
        NOT_FOUND,
    )


@pytest.mark.parametrize("method", LIST_METHODS)
def test_megabyte_page_token_and_filters(fz: Fuzzer, world: World, method: str) -> None:
    request = REQUEST[method].FromString(world.probes[method][0])
    request.page_token = "A" * MIB  # type: ignore[attr-defined]
    fz.expect(method, request.SerializeToString(), INVALID_ARGUMENT, "page_token")
    if method == "ListConversationMessages":
        # Huge filter values are just values: they match nothing.
        listed = pb.ListConversationMessagesRequest(conversation_id=world.cid, kinds=["k" * MIB])
        page = parse(
            pb.ListConversationMessagesResponse, fz.expect(method, listed.SerializeToString(), OK)
        )
        assert list(page.messages) == []


def test_huge_bodies_round_trip(fz: Fuzzer, stub: Stub) -> None:
    _round_trip(fz, stub, [text_message("t" * (2 * MIB))])
    _round_trip(fz, stub, [tool_text_message("o", metadata={"big": "v" * (2 * MIB + 7)})])
    wide = {f"key-{i}": str(i) for i in range(50_000)}
    _round_trip(fz, stub, [tool_text_message("wide", metadata=wide)])
    _round_trip(fz, stub, [tool_text_message("", metadata={"k" * MIB: ""}, tool_name="n" * MIB)])


def test_extreme_image_fields_round_trip(fz: Fuzzer, stub: Stub) -> None:
    images = [
        pb.ToolImageOutput(
            width_px=INT32_MAX, height_px=INT32_MIN, detail=cast(pb.ImageDetail, INT32_MAX)
        ),
        pb.ToolImageOutput(width_px=-1, height_px=0, detail=cast(pb.ImageDetail, -1)),
        pb.ToolImageOutput(detail=cast(pb.ImageDetail, INT32_MIN), sha256="z" * 100_000),
        pb.ToolImageOutput(detail=pb.IMAGE_DETAIL_HIGH, external_url="data:" + "A" * 500_000),
        pb.ToolImageOutput(),  # set but empty
    ]
    _round_trip(fz, stub, [tool_image_message(image) for image in images])


def test_unicode_edges_round_trip(fz: Fuzzer, stub: Stub) -> None:
    edges = "\x00\x01\x7f\u0085\u00a0\u200b\u202e\ufeff\ufffe\uffff\U0001f600\U0010ffff\ud7ff"
    _round_trip(
        fz,
        stub,
        [
            text_message(edges, USER, edges),
            text_message("", ASSISTANT, ""),
            tool_text_message(edges, tool_name=edges, tool_call_id=edges, metadata={edges: edges}),
            text_message("\x00" * 1000, TOOL, "\x00"),
        ],
    )


def test_unknown_fields_in_bodies_round_trip(fz: Fuzzer, stub: Stub) -> None:
    """A newer contract's fields (here with invalid UTF-8 and deep groups,
    which unknown fields may hold) come back byte for byte."""
    cid = new_id()
    text_body = delimited(1, delimited(1, b"visible"))
    extras = [
        delimited(15, b"\xff\xfe raw"),
        nested_groups(16, 80),
        nested_messages(17, 2_000),
        varint_field(18, UINT64_MAX) + key(19, 5) + b"\x00\x00\x80\x7f",
    ]
    message = varint_field(1, USER) + delimited(3, text_body + b"".join(extras))
    payload = delimited(1, cid.encode()) + delimited(2, message)
    outcome = fz.expect("AppendConversationMessages", payload, OK)
    sent = pb.MessageBody.FromString(text_body + b"".join(extras))
    stored = parse(pb.AppendConversationMessagesResponse, outcome).appended[0].body
    assert stored.SerializeToString() == sent.SerializeToString()
    (listed,) = list_all(stub, cid)
    assert listed.body.SerializeToString() == sent.SerializeToString()


def test_out_of_range_roles(fz: Fuzzer, world: World) -> None:
    for value in (0, 4, 99, -1, INT32_MAX, INT32_MIN):
        bad = pb.AppendMessageInput(
            role=role(value), body=pb.MessageBody(text=pb.TextBody(text="x"))
        )
        payload = _append_request(new_id(), [text_message("ok"), bad])
        fz.expect("AppendConversationMessages", payload, INVALID_ARGUMENT, "messages[1].role")
        listed = pb.ListConversationMessagesRequest(
            conversation_id=world.cid, roles=[USER, role(value)]
        )
        fz.expect(
            "ListConversationMessages", listed.SerializeToString(), INVALID_ARGUMENT, "roles[1]"
        )
    # Enum numbers past int32 on the wire: protobuf keeps the low 32 bits.
    for value in (2**32 + 1, INT64_MAX, UINT64_MAX):
        message = varint_field(1, value) + delimited(3, delimited(1, delimited(1, b"t")))
        fz.call(
            "AppendConversationMessages", delimited(1, new_id().encode()) + delimited(2, message)
        )


@pytest.mark.parametrize("method", LIST_METHODS)
def test_extreme_page_sizes(fz: Fuzzer, world: World, method: str) -> None:
    if method.startswith("ListConversation"):
        base = delimited(1, world.cid.encode())
        total = len(world.messages)
    else:
        base = delimited(1, world.snapshot_id.encode())
        total = len(world.snapshot_order)
    number = next(d.number for d in FIELDS[method] if d.name == "page_size")
    for size in (INT32_MIN, -1, 0, 1, MAX_PAGE_SIZE, MAX_PAGE_SIZE + 1, INT32_MAX):
        outcome = fz.expect(method, base + varint_field(number, size), OK)
        items, _ = listed(method, outcome)
        assert len(items) == (1 if size == 1 else total), (size, len(items))
    # int64 values in an int32 field: the parser keeps the low 32 bits.
    for size in (INT64_MIN, INT64_MAX, UINT64_MAX, 2**32 + 3, 2**31):
        fz.expect(method, base + varint_field(number, size), OK)


@pytest.mark.parametrize("method", METHODS)
def test_empty_requests_are_invalid(fz: Fuzzer, method: str) -> None:
    fz.expect(method, b"", INVALID_ARGUMENT)
    # Every field present with its default value: just as empty.
    defaults = b"".join(
        delimited(d.number, b"") if 2 in wire_type_of(d) else varint_field(d.number, 0)
        for d in FIELDS[method]
    )
    fz.expect(method, defaults, INVALID_ARGUMENT)


def test_empty_messages(fz: Fuzzer, stub: Stub) -> None:
    append_method = "AppendConversationMessages"
    empty_tool = pb.AppendMessageInput(role=TOOL, body=pb.MessageBody())
    empty_tool.body.tool_output.SetInParent()
    cases: list[tuple[pb.AppendMessageInput, str]] = [
        (pb.AppendMessageInput(), "messages[0].role"),
        (pb.AppendMessageInput(role=USER), "messages[0].body"),
        (pb.AppendMessageInput(role=USER, body=pb.MessageBody()), "messages[0].body"),
        (empty_tool, "messages[0].body.tool_output"),
    ]
    for message, name in cases:
        fz.expect(append_method, _append_request(new_id(), [message]), INVALID_ARGUMENT, name)
    fz.expect(append_method, _append_request(new_id(), []), INVALID_ARGUMENT, "messages")
    empty_text = pb.AppendMessageInput(role=USER, body=pb.MessageBody(text=pb.TextBody()))
    _round_trip(
        fz,
        stub,
        [
            empty_text,
            tool_text_message("", tool_name="", tool_call_id="", kind=""),
            tool_image_message(pb.ToolImageOutput(), tool_name="", tool_call_id="", kind=""),
        ],
    )
    range_methods = ["ReplaceConversationMessagesRange", "DeleteConversationMessagesRange"]
    for method in range_methods:
        payload = REQUEST[method](conversation_id=new_id()).SerializeToString()
        fz.expect(method, payload, INVALID_ARGUMENT, "from_message_id")
    payload = pb.CreateSnapshotRequest(conversation_id=new_id()).SerializeToString()
    fz.expect("CreateSnapshot", payload, INVALID_ARGUMENT, "message_ids")


def _string_fields(method: str) -> list[int]:
    return [d.number for d in FIELDS[method] if d.type == FieldDescriptor.TYPE_STRING]


@pytest.mark.parametrize("method", METHODS)
def test_invalid_utf8_in_string_fields(fz: Fuzzer, world: World, method: str) -> None:
    payload, _ = world.probes[method]
    for number in _string_fields(method):
        for raw in INVALID_UTF8.values():
            fz.expect(method, payload + delimited(number, raw), INVALID_ARGUMENT, "request")
            fz.expect(method, delimited(number, raw) + payload, INVALID_ARGUMENT, "request")
    if method != "AppendConversationMessages":
        return
    # The strings nested in an append: kind, texts, tool output, image, metadata.
    cid = delimited(1, new_id().encode())

    def body_with(raw: bytes) -> list[bytes]:
        # MessageBody: text = 1 {text = 1}; tool_output = 2 {tool_name = 1,
        # tool_call_id = 2, text = 3 {text = 1}, image = 4 {external_url = 1,
        # mime_type = 10, sha256 = 14}, metadata = 10 {key = 1, value = 2}}.
        return [
            delimited(1, delimited(1, raw)),
            delimited(2, delimited(1, raw) + delimited(3, b"")),
            delimited(2, delimited(2, raw) + delimited(3, b"")),
            delimited(2, delimited(3, delimited(1, raw))),
            delimited(2, delimited(4, delimited(1, raw))),
            delimited(2, delimited(4, delimited(10, raw))),
            delimited(2, delimited(4, delimited(14, raw))),
            delimited(2, delimited(10, delimited(1, raw)) + delimited(3, b"")),
            delimited(2, delimited(10, delimited(2, raw)) + delimited(3, b"")),
        ]

    for raw in INVALID_UTF8.values():
        ok_body = delimited(3, delimited(1, delimited(1, b"fine")))
        message = varint_field(1, USER) + delimited(2, raw) + ok_body
        fz.expect(method, cid + delimited(2, message), INVALID_ARGUMENT, "request")
        for body in body_with(raw):
            message = varint_field(1, TOOL) + delimited(3, body)
            fz.expect(method, cid + delimited(2, message), INVALID_ARGUMENT, "request")


def test_many_ids(fz: Fuzzer, stub: Stub) -> None:
    cid = new_id()
    a, b = seed(stub, cid, 2)
    unknown = [new_id() for _ in range(60_000)]
    replace = pb.ReplaceConversationMessagesRangeRequest(
        conversation_id=cid, from_message_id=a, to_message_id=b, new_message_ids=unknown
    )
    fz.expect(
        "ReplaceConversationMessagesRange",
        replace.SerializeToString(),
        NOT_FOUND,
        "new_message_ids[0]",
    )
    replace.ClearField("new_message_ids")
    replace.new_message_ids.extend([a] * 60_000)
    fz.expect(
        "ReplaceConversationMessagesRange",
        replace.SerializeToString(),
        INVALID_ARGUMENT,
        "new_message_ids[1]",
    )
    create = pb.CreateSnapshotRequest(conversation_id=cid, message_ids=unknown)
    fz.expect("CreateSnapshot", create.SerializeToString(), NOT_FOUND, "message_ids[0]")
    create = pb.CreateSnapshotRequest(conversation_id=cid, message_ids=[*unknown[:10], a])
    fz.expect("CreateSnapshot", create.SerializeToString(), NOT_FOUND, "message_ids[0]")
    assert all_ids(stub, cid) == [a, b]


def test_large_filter_sets(fz: Fuzzer, world: World) -> None:
    """A filter is a set of any size the request limit allows (SEMANTICS:
    Lists); a large one is not a storage outage."""
    method = "ListConversationMessages"
    roles = [USER, TOOL] * 400_000
    request = pb.ListConversationMessagesRequest(conversation_id=world.cid, roles=roles)
    page = parse(
        pb.ListConversationMessagesResponse, fz.expect(method, request.SerializeToString(), OK)
    )
    assert [m.id for m in page.messages] == [m.id for m in world.messages if m.role in roles]


@pytest.mark.parametrize("count", [200_000, 300_000])
def test_large_kind_filter_sets(fz: Fuzzer, world: World, count: int) -> None:
    """Any number of distinct kinds that fits in a request is a valid filter."""
    kinds = ["k", *(f"{i:x}" for i in range(count - 1))]
    request = pb.ListConversationMessagesRequest(conversation_id=world.cid, kinds=kinds)
    assert request.ByteSize() < MAX_REQUEST_BYTES
    outcome = fz.call(
        "ListConversationMessages",
        request.SerializeToString(),
        allowed=ALLOWED | {grpc.StatusCode.UNAVAILABLE},
    )
    assert outcome.code == OK, f"{count} distinct kinds: {outcome.code.name}: {outcome.details!r}"
    page = parse(pb.ListConversationMessagesResponse, outcome)
    assert [m.kind for m in page.messages] == ["k", "k"]


def test_hostile_metadata(fz: Fuzzer, world: World) -> None:
    payload, code = world.probes["GetConversation"]
    good_id = "req-" + "x" * 124
    # (metadata, the request ids the server may answer with; () = a new one)
    cases: list[tuple[tuple[tuple[str, str | bytes], ...], tuple[str, ...]]] = [
        ((("x-request-id", good_id),), (good_id,)),
        ((("x-request-id", "y" * 129),), ()),
        ((("x-request-id", ""),), ()),
        ((("x-request-id-bin", b"\x00\xff" * 100),), ()),
        ((("x-request-id", "one"), ("x-request-id", "two")), ("one", "two")),
        ((("authorization", "Bearer " + "t" * 2000),), ()),
        ((("authorization", "Basic ~~~"),), ()),
        (tuple((f"x-junk-{i}", "v" * 50) for i in range(60)), ()),
    ]
    for metadata, echoed in cases:
        outcome = fz.call("GetConversation", payload, metadata=metadata)
        assert outcome.code == code, (metadata[0][0], outcome)
        request_id = outcome.trailing.get("x-request-id", "")
        if echoed:
            assert request_id in echoed
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id


def test_compressed_requests(fz: Fuzzer, world: World) -> None:
    """The request limit holds for what a compressed request expands to."""
    for method in ("GetConversation", "AppendConversationMessages"):
        payload, code = world.probes[method]
        assert fz.call(method, payload, compression=grpc.Compression.Gzip).code == code
        assert fz.call(method, padded(payload, MIB), compression=grpc.Compression.Gzip).code == code
        # 32 MiB of one letter gzip to about 32 KiB.
        bomb = padded(payload, 32 * MIB)
        outcome = fz.call(method, bomb, compression=grpc.Compression.Gzip)
        assert outcome.code == RESOURCE_EXHAUSTED, outcome


@contextlib.contextmanager
def own_server(
    backend_name: str,
    request: pytest.FixtureRequest,
    directory: Path,
    *args: str,
    database_url: str | None = None,
) -> Iterator[grpc.Channel]:
    """A server of the test's own on a fresh database (or `database_url`),
    for tests that may leave it broken or need other settings."""
    process = ServerProcess(
        database_url=database_url or database_url_for(backend_name, request, directory),
        log_path=directory / "own-server.log",
        extra_args=list(args),
    )
    with process, grpc.insecure_channel(process.address) as chan:
        yield chan
        assert_serving(process, chan)


# Deadlines around the time a call takes, so that some expire mid-call.
HASTY_DEADLINES = (0.001, 0.002, 0.004, 0.008)
CLIENT_SIDE = frozenset({grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass
class Abandoned:
    method: str
    future: grpc.Future[bytes]
    rushed: bool


def abandon(fz: Fuzzer, method: str, payload: bytes, patient: int, hasty: int) -> list[Abandoned]:
    """Start calls, cancel half of the `patient` ones at once and give the
    `hasty` ones deadlines of milliseconds."""
    call = fz.multicallable(method)
    # Patient calls get 20 s: a call should end well before statement_timeout (30 s).
    waiting = [call.future(payload, timeout=20) for _ in range(patient)]
    for future in waiting[::2]:
        future.cancel()
    rushed = [call.future(payload, timeout=d) for d in HASTY_DEADLINES for _ in range(hasty)]
    return [Abandoned(method, f, False) for f in waiting] + [
        Abandoned(method, f, True) for f in rushed
    ]


def outcomes(fz: Fuzzer, calls: Sequence[Abandoned]) -> list[str]:
    """Waits for the calls; the unexpected outcomes."""
    problems = []
    for call in calls:
        CASES[(fz.backend, call.method)] += 1
        if call.future.cancelled():
            continue
        error = call.future.exception()
        if error is None:
            continue
        failed = cast(grpc.Call, error)
        expected = ALLOWED | (CLIENT_SIDE if call.rushed else frozenset())
        if failed.code() not in expected:
            problems.append(f"{call.method}: {failed.code().name}: {failed.details()}")
    return problems


def test_abandoned_calls(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Calls the client cancels or lets expire while the server works on
    them leave every method answering as before."""
    with own_server(backend, request, tmp_path) as chan:
        fz = Fuzzer(chan, backend)
        world = build_world(chan)
        for method in METHODS:
            payload, _ = world.probes[method]
            problems = outcomes(fz, abandon(fz, method, payload, patient=20, hasty=25))
            assert not problems, problems[:5]
            for other, (other_payload, code) in world.probes.items():
                codes = Counter(
                    fz.call(other, other_payload, timeout=10, allowed=ALL_CODES).code.name
                    for _ in range(3)
                )
                assert codes == {code.name: 3}, (
                    f"after abandoned {method} calls, {other} answers {dict(codes)}"
                )


def test_abandoned_writes_to_one_conversation(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Abandoned appends racing replaces and snapshots of the same
    conversation (so some wait for its lock when abandoned) leave the
    conversation writable. Rounds grow with AGENT_STATE_FUZZ_EXAMPLES."""
    rounds = max(4, EXAMPLES // 10)
    url = database_url_for(backend, request, tmp_path)
    with own_server(backend, request, tmp_path, database_url=url) as chan:
        fz = Fuzzer(chan, backend)
        stub = make_stub(chan)
        cid = new_id()
        ids = seed(stub, cid, 5)
        writes = {
            "AppendConversationMessages": _append_request(cid, [text_message("w")]),
            "ReplaceConversationMessagesRange": encode(
                "ReplaceConversationMessagesRange",
                conversation_id=cid,
                from_message_id=ids[0],
                to_message_id=ids[0],
                new_message_ids=[ids[0]],
            ),
            "CreateSnapshot": encode("CreateSnapshot", conversation_id=cid, message_ids=ids),
        }
        for round_number in range(rounds):
            started = [
                call
                for method, payload in writes.items()
                for call in abandon(fz, method, payload, patient=10, hasty=10)
            ]
            problems = outcomes(fz, started)
            assert not problems, (round_number, problems[:5])
            if backend == "postgres":
                left = busy_sessions_after_settling(url)
                assert not left, f"round {round_number}: sessions left busy: {left}"
            for method, payload in writes.items():
                outcome = fz.call(method, payload, timeout=10, allowed=ALL_CODES)
                assert outcome.code == OK, (
                    f"round {round_number}: after abandoned writes, {method} answers "
                    f"{outcome.code.name} ({outcome.details})"
                )


def busy_sessions_after_settling(url: str, patience_s: float = 10.0) -> list[tuple[object, ...]]:
    """The database's sessions that are not idle, once the server has had
    `patience_s` to finish what its abandoned calls started. A session left
    inside a statement or transaction by a lost connection never settles."""
    deadline = time.monotonic() + patience_s
    with psycopg.connect(url, autocommit=True) as admin:
        while True:
            busy = admin.execute(
                "SELECT state, wait_event, left(query, 60) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state <> 'idle'"
            ).fetchall()
            if not busy or time.monotonic() > deadline:
                return busy
            time.sleep(0.05)


def test_unknown_methods_are_unimplemented(fz: Fuzzer, world: World) -> None:
    payload = world.probes["GetConversation"][0]
    for path in (
        f"/{SERVICE.full_name}/DropConversation",
        f"/{SERVICE.full_name}/getconversation",
        "/agynio.api.agent_state.v2.AgentStateService/GetConversation",
        "/",
    ):
        call = fz.channel.unary_unary(
            path, request_serializer=lambda data: data, response_deserializer=lambda data: data
        )
        CASES[(fz.backend, "(unknown method)")] += 1
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=10)
        assert isinstance(caught.value, grpc.Call)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED, caught.value.details()


# --- generated requests with a known outcome -----------------------------------------

ints32 = st.integers(INT32_MIN, INT32_MAX)
short_text = st.text(max_size=12)
any_role = st.one_of(st.sampled_from([USER, ASSISTANT, TOOL]), ints32)


garbage_id = short_text.filter(lambda s: not is_uuid(s))


@st.composite
def bodies(draw: st.DrawFn) -> pb.MessageBody | None:
    variant = draw(st.sampled_from(["none", "unset", "text", "tool"]))
    if variant == "none":
        return None
    body = pb.MessageBody()
    if variant == "text":
        body.text.text = draw(st.text(max_size=40))
    elif variant == "tool":
        tool = body.tool_output
        tool.SetInParent()
        tool.tool_name = draw(short_text)
        tool.tool_call_id = draw(short_text)
        tool.metadata.update(draw(st.dictionaries(short_text, short_text, max_size=4)))
        output = draw(st.sampled_from(["none", "text", "image"]))
        if output == "text":
            tool.text.text = draw(st.text(max_size=40))
        elif output == "image":
            image = tool.image
            image.SetInParent()
            image.external_url = draw(short_text)
            image.mime_type = draw(short_text)
            image.detail = cast(pb.ImageDetail, draw(ints32))
            image.width_px = draw(ints32)
            image.height_px = draw(ints32)
            image.sha256 = draw(short_text)
    return body


@st.composite
def message_inputs(draw: st.DrawFn) -> pb.AppendMessageInput:
    message = pb.AppendMessageInput(
        role=role(draw(any_role)),
        kind=draw(
            st.one_of(
                short_text,
                st.integers(MAX_KIND_CODE_POINTS - 2, MAX_KIND_CODE_POINTS + 2).map(
                    lambda n: "\U0001f600" * n
                ),
            )
        ),
    )
    body = draw(bodies())
    if body is not None:
        message.body.CopyFrom(body)
    return message


def _append_error(message: pb.AppendMessageInput) -> str | None:
    """The field SEMANTICS says is at fault, if any."""
    if message.role not in (USER, ASSISTANT, TOOL):
        return "role"
    if len(message.kind) > MAX_KIND_CODE_POINTS:
        return "kind"
    if not message.HasField("body") or message.body.WhichOneof("body") is None:
        return "body"
    if (
        message.body.WhichOneof("body") == "tool_output"
        and message.body.tool_output.WhichOneof("output") is None
    ):
        return "body.tool_output"
    return None


def test_generated_appends(fz: Fuzzer, stub: Stub) -> None:
    @FUZZ
    @given(st.data(), st.lists(message_inputs(), max_size=5), st.booleans())
    def run(data: st.DataObject, messages: list[pb.AppendMessageInput], good_id: bool) -> None:
        cid = data.draw(st.sampled_from(spellings(new_id()))) if good_id else data.draw(garbage_id)
        outcome = fz.call("AppendConversationMessages", _append_request(cid, messages))
        faults = [f"messages[{i}].{f}" for i, m in enumerate(messages) if (f := _append_error(m))]
        named = [*([] if good_id else ["conversation_id"]), *(faults if messages else ["messages"])]
        if named:
            # Any of the faults may be the one named (all are INVALID_ARGUMENT).
            assert outcome.code == INVALID_ARGUMENT, outcome
            assert any(name in outcome.details for name in named), (outcome.details, named)
            if good_id:
                # A rejected append does not create the conversation.
                get_request = pb.GetConversationRequest(conversation_id=cid).SerializeToString()
                fz.expect("GetConversation", get_request, NOT_FOUND)
            return
        assert outcome.code == OK, outcome
        response = parse(pb.AppendConversationMessagesResponse, outcome)
        assert response.metadata.conversation_id == canonical(cid)
        assert response.metadata.message_count == len(messages)
        assert [content(m) for m in response.appended] == [input_content(m) for m in messages]

    run()


@st.composite
def page_tokens(draw: st.DrawFn, world: World, method: str) -> str:
    own = world.tokens[method]
    other = next(t for m, t in world.tokens.items() if m != method)
    return str(
        draw(
            st.one_of(
                st.just(""),
                st.just(own),
                st.just(other),
                st.just(own[:-1]),
                st.just(own + "A"),
                st.just(own[:5] + ("B" if own[5] != "B" else "C") + own[6:]),
                short_text,
            )
        )
    )


def test_generated_conversation_lists(fz: Fuzzer, world: World) -> None:
    method = "ListConversationMessages"

    @FUZZ
    @given(
        st.data(),
        st.sampled_from(["world", "unknown", "garbage"]),
        st.lists(any_role, max_size=4),
        st.lists(
            st.one_of(st.sampled_from(["", "k", "tool_output", "\x00", "x"]), short_text),
            max_size=4,
        ),
        st.one_of(ints32, st.integers(-2, 8)),
        page_tokens(world, method),
    )
    def run(
        data: st.DataObject,
        target: str,
        roles: list[int],
        kinds: list[str],
        page_size: int,
        token: str,
    ) -> None:
        if target == "world":
            cid = data.draw(st.sampled_from(spellings(world.cid)))
        elif target == "unknown":
            cid = data.draw(st.sampled_from(spellings(new_id())))
        else:
            cid = data.draw(garbage_id)
        request = pb.ListConversationMessagesRequest(
            conversation_id=cid,
            roles=[role(r) for r in roles],
            kinds=kinds,
            page_size=page_size,
            page_token=token,
        )
        outcome = fz.call(method, request.SerializeToString())
        # SEMANTICS: what the request alone shows, then existence.
        bad_token = token not in ("", world.tokens[method]) or (
            token != "" and (target != "world" or bool(roles) or bool(kinds))
        )
        if target == "garbage" or any(r not in (USER, ASSISTANT, TOOL) for r in roles):
            assert outcome.code == INVALID_ARGUMENT, outcome
        elif bad_token:
            assert outcome.code == INVALID_ARGUMENT, outcome
            assert "page_token" in outcome.details, outcome
        elif target == "unknown":
            assert outcome.code == NOT_FOUND, outcome
        else:
            assert outcome.code == OK, outcome
            page = parse(pb.ListConversationMessagesResponse, outcome)
            start = 2 if token else 0
            matching = [
                m
                for m in world.messages[start:]
                if (not roles or m.role in roles) and (not kinds or m.kind in kinds)
            ]
            size = 100 if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
            assert list(page.messages) == matching[:size]
            assert bool(page.next_page_token) == (len(matching) > size)
            assert page.metadata.message_count == len(world.messages)

    run()


@pytest.mark.parametrize("method", ["ListSnapshotMessages", "ListSnapshotMessageIds"])
def test_generated_snapshot_lists(fz: Fuzzer, world: World, method: str) -> None:
    @FUZZ
    @given(
        st.data(),
        st.sampled_from(["world", "unknown", "garbage"]),
        st.one_of(ints32, st.integers(-2, 6)),
        page_tokens(world, method),
    )
    def run(data: st.DataObject, target: str, page_size: int, token: str) -> None:
        if target == "world":
            sid = data.draw(st.sampled_from(spellings(world.snapshot_id)))
        elif target == "unknown":
            sid = data.draw(st.sampled_from(spellings(new_id())))
        else:
            sid = data.draw(garbage_id)
        request = REQUEST[method](snapshot_id=sid, page_size=page_size, page_token=token)
        outcome = fz.call(method, request.SerializeToString())
        bad_token = token not in ("", world.tokens[method]) or (token != "" and target != "world")
        if target == "garbage":
            assert outcome.code == INVALID_ARGUMENT, outcome
            assert "snapshot_id" in outcome.details, outcome
        elif bad_token:
            assert outcome.code == INVALID_ARGUMENT, outcome
            assert "page_token" in outcome.details, outcome
        elif target == "unknown":
            assert outcome.code == NOT_FOUND, outcome
        else:
            assert outcome.code == OK, outcome
            ids, next_token = listed(method, outcome)
            expected = world.snapshot_order[1 if token else 0 :]
            size = 100 if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
            assert ids == expected[:size]
            assert bool(next_token) == (len(expected) > size)

    run()


@st.composite
def id_refs(draw: st.DrawFn, ids: Sequence[str]) -> str:
    """An id of `ids` in some spelling, an unknown UUID, or not a UUID."""
    choice = draw(st.sampled_from(["known", "known", "known", "unknown", "garbage"]))
    if choice == "known":
        return draw(st.sampled_from(spellings(draw(st.sampled_from(ids)))))
    if choice == "unknown":
        return str(draw(st.uuids()))
    return draw(garbage_id)


@pytest.mark.parametrize(
    "method", ["ReplaceConversationMessagesRange", "DeleteConversationMessagesRange"]
)
def test_generated_ranges_are_atomic(fz: Fuzzer, stub: Stub, method: str) -> None:
    """Any range request either fails leaving the conversation exactly as it
    was (ordering and updated_at), or succeeds keeping the invariants."""

    @FUZZ
    @given(st.data(), st.booleans(), st.booleans())
    def run(data: st.DataObject, has_from: bool, has_to: bool) -> None:
        cid = new_id()
        ids = seed(stub, cid, 5)
        before = get(stub, cid)
        request = REQUEST[method](conversation_id=cid)
        if has_from:
            request.from_message_id = data.draw(id_refs(ids))  # type: ignore[attr-defined]
        if has_to:
            request.to_message_id = data.draw(id_refs(ids))  # type: ignore[attr-defined]
        if method == "ReplaceConversationMessagesRange":
            request.new_message_ids.extend(data.draw(st.lists(id_refs(ids), max_size=4)))  # type: ignore[attr-defined]
        outcome = fz.call(method, request.SerializeToString())
        after = get(stub, cid)
        ordering = all_ids(stub, cid)
        assert after.message_count == len(ordering) == len(set(ordering))
        if outcome.code != OK:
            assert ordering == ids
            assert micros(after.updated_at) == micros(before.updated_at)
            return
        assert micros(after.updated_at) > micros(before.updated_at)
        assert set(ordering) <= set(ids)
        if method == "DeleteConversationMessagesRange":
            deleted = list(
                parse(pb.DeleteConversationMessagesRangeResponse, outcome).deleted_message_ids
            )
            start = ids.index(deleted[0])
            assert deleted == ids[start : start + len(deleted)]
            assert ordering == ids[:start] + ids[start + len(deleted) :]

    run()


def test_generated_snapshots(fz: Fuzzer, world: World, stub: Stub) -> None:
    @FUZZ
    @given(
        st.data(),
        st.sampled_from(["world", "world", "unknown", "garbage"]),
        st.lists(id_refs(world.ids), max_size=6),
    )
    def run(data: st.DataObject, target: str, refs: list[str]) -> None:
        if target == "world":
            cid = data.draw(st.sampled_from(spellings(world.cid)))
        elif target == "unknown":
            cid = str(uuid.uuid4())
        else:
            cid = data.draw(garbage_id)
        request = pb.CreateSnapshotRequest(conversation_id=cid, message_ids=refs)
        outcome = fz.call("CreateSnapshot", request.SerializeToString())
        if target == "garbage" or not refs or not all(is_uuid(r) for r in refs):
            assert outcome.code == INVALID_ARGUMENT, outcome
        elif target == "unknown" or any(canonical(r) not in world.ids for r in refs):
            assert outcome.code == NOT_FOUND, outcome
        else:
            assert outcome.code == OK, outcome
            created = parse(pb.CreateSnapshotResponse, outcome).snapshot
            assert created.conversation_id == world.cid
            assert snapshot_ids(stub, created.snapshot_id) == [canonical(r) for r in refs]

    run()


# --- limits ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_request_size_limit(fz: Fuzzer, world: World, method: str) -> None:
    """3 MiB exactly is served as usual; one byte more is RESOURCE_EXHAUSTED."""
    payload, code = world.probes[method]
    assert fz.call(method, padded(payload, MAX_REQUEST_BYTES)).code == code
    fz.expect(method, padded(payload, MAX_REQUEST_BYTES + 1), RESOURCE_EXHAUSTED)
    fz.expect(method, padded(payload, 4 * MIB), RESOURCE_EXHAUSTED)


def test_default_append_limits(fz: Fuzzer) -> None:
    method = "AppendConversationMessages"
    batch = [text_message(f"m{i}") for i in range(MAX_BATCH + 1)]
    fz.expect(method, _append_request(new_id(), batch[:MAX_BATCH]), OK)
    fz.expect(method, _append_request(new_id(), batch), INVALID_ARGUMENT, "messages")
    at_limit = text_message("k", kind="\U0001f600" * MAX_KIND_CODE_POINTS)
    over = text_message("k", kind="\U0001f600" * (MAX_KIND_CODE_POINTS + 1))
    fz.expect(method, _append_request(new_id(), [at_limit]), OK)
    fz.expect(
        method, _append_request(new_id(), [at_limit, over]), INVALID_ARGUMENT, "messages[1].kind"
    )


def test_default_page_limits(fz: Fuzzer, stub: Stub) -> None:
    cid = new_id()
    ids = seed(stub, cid, MAX_PAGE_SIZE + 5)
    snap = snapshot(stub, cid, ids).snapshot_id
    requests: dict[str, Callable[[int], Message]] = {
        "ListConversationMessages": lambda n: pb.ListConversationMessagesRequest(
            conversation_id=cid, page_size=n
        ),
        "ListConversationMessageIds": lambda n: pb.ListConversationMessageIdsRequest(
            conversation_id=cid, page_size=n
        ),
        "ListSnapshotMessages": lambda n: pb.ListSnapshotMessagesRequest(
            snapshot_id=snap, page_size=n
        ),
        "ListSnapshotMessageIds": lambda n: pb.ListSnapshotMessageIdsRequest(
            snapshot_id=snap, page_size=n
        ),
    }
    for method, build in requests.items():
        for size, expected in ((0, 100), (-5, 100), (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE)):
            outcome = fz.expect(method, build(size).SerializeToString(), OK)
            items, _ = listed(method, outcome)
            assert len(items) == expected, (method, size, len(items))
    # Pages stop before 3 MiB; a message too big for a page comes alone.
    big = new_id()
    for letter in "ab":
        append(stub, big, [text_message(letter * (2 * MIB))])
    page = parse(
        pb.ListConversationMessagesResponse,
        fz.expect(
            "ListConversationMessages",
            pb.ListConversationMessagesRequest(
                conversation_id=big, page_size=10
            ).SerializeToString(),
            OK,
        ),
    )
    assert len(page.messages) == 1
    assert page.next_page_token


def test_configured_limits(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Each limit is a setting; past it, the same documented codes."""
    with own_server(
        backend,
        request,
        tmp_path,
        "--max-append-messages=3",
        "--max-request-bytes=4096",
        "--max-kind-length=4",
        "--default-page-size=2",
        "--max-page-size=5",
        "--max-response-bytes=2048",
    ) as chan:
        _check_configured_limits(Fuzzer(chan, backend), make_stub(chan))


def _check_configured_limits(fz: Fuzzer, stub: Stub) -> None:
    method = "AppendConversationMessages"
    cid = new_id()
    four = [text_message(str(i)) for i in range(4)]
    fz.expect(method, _append_request(cid, four), INVALID_ARGUMENT, "messages")
    fz.expect(method, _append_request(cid, four[:3]), OK)
    fz.expect(
        method,
        _append_request(cid, [text_message("k", kind="abcde")]),
        INVALID_ARGUMENT,
        "messages[0].kind",
    )
    fz.expect(method, _append_request(cid, [text_message("k", kind="\U0001f600" * 4)]), OK)
    base = _append_request(cid, [text_message("x")])
    fz.expect(method, padded(base, 4096), OK)
    fz.expect(method, padded(base, 4097), RESOURCE_EXHAUSTED)
    get_request = pb.GetConversationRequest(conversation_id=cid).SerializeToString()
    fz.expect("GetConversation", padded(get_request, 4097), RESOURCE_EXHAUSTED)
    ids = seed(stub, cid, 3) + seed(stub, cid, 3)
    snap = snapshot(stub, cid, ids).snapshot_id
    ids_request = pb.ListConversationMessageIdsRequest(conversation_id=cid)
    for size, expected in ((0, 2), (100, 5)):
        ids_request.page_size = size
        ids_page = parse(
            pb.ListConversationMessageIdsResponse,
            fz.expect("ListConversationMessageIds", ids_request.SerializeToString(), OK),
        )
        assert len(ids_page.message_ids) == expected
        snap_request = pb.ListSnapshotMessagesRequest(snapshot_id=snap, page_size=size)
        snap_page = parse(
            pb.ListSnapshotMessagesResponse,
            fz.expect("ListSnapshotMessages", snap_request.SerializeToString(), OK),
        )
        assert len(snap_page.messages) == expected
    # 2 KiB responses: 600-byte messages come two to a page, 1500-byte ones alone.
    wide = new_id()
    for text in ("a" * 600, "b" * 600, "c" * 1500, "d" * 600):
        append(stub, wide, [text_message(text)])
    lister = pb.ListConversationMessagesRequest(conversation_id=wide, page_size=5)
    sizes = []
    while True:
        page = parse(
            pb.ListConversationMessagesResponse,
            fz.expect("ListConversationMessages", lister.SerializeToString(), OK),
        )
        assert page.ByteSize() < 2048
        sizes.append(len(page.messages))
        if not page.next_page_token:
            break
        lister.page_token = page.next_page_token
    assert sizes == [2, 1, 1]
    # An answer listing a range's ids (38 bytes each) stays under 2 KiB too:
    # a range of 60 is refused and changes nothing; one of 40 goes.
    long = new_id()
    long_ids = [i for _ in range(27) for i in seed(stub, long, 3)]
    for method, message in (
        ("DeleteConversationMessagesRange", pb.DeleteConversationMessagesRangeRequest),
        ("ReplaceConversationMessagesRange", pb.ReplaceConversationMessagesRangeRequest),
    ):
        too_many = message(
            conversation_id=long, from_message_id=long_ids[0], to_message_id=long_ids[59]
        )
        fz.expect(method, too_many.SerializeToString(), INVALID_ARGUMENT, "to_message_id")
        assert all_ids(stub, long) == long_ids
    fine = pb.DeleteConversationMessagesRangeRequest(
        conversation_id=long, from_message_id=long_ids[0], to_message_id=long_ids[39]
    )
    fz.expect("DeleteConversationMessagesRange", fine.SerializeToString(), OK)
    assert all_ids(stub, long) == long_ids[40:]
