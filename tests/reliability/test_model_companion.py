"""Model-based test of the companion API: random sequences of its RPCs and
of the agynio writes against the real server, checked against
tests/reliability/companion_model.py (a model of COMPANION.md over
model.py's model of SEMANTICS.md).

A Hypothesis state machine creates, describes, updates (field masks,
expected_version), lists (label filters, time bounds, both orders, small
pages continued across changes, misused tokens), deletes (then appends
again, also under an idempotency key the deletion erased), tails, reads by
id, forks and lists the snapshots of conversations, reads and updates
scoped state (exact JSON), and appends with state; in
between, the agynio appends, replaces, deletes of a range and snapshots of
test_model.py change the same conversations. Every status code, every
response field and every x-conversation-version trailer is checked: each
change adds exactly 1 to the version, and a call that fails changes nothing.

Runs once per backend on the shared e2e server. Every run lists only its
own conversations: its first call creates a conversation, and a listing
without one of the run's labels is bounded below by that conversation's
updated_at; label values and app and user scopes carry the run's id.
AGENT_STATE_MODEL_EXAMPLES and AGENT_STATE_MODEL_STEPS size the search as
for test_model.py; ``pytest -s`` shows the call counts.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TypeVar

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule, run_state_machine_as_test

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb
from tests.reliability.companion_model import (
    MAX_STATE_BYTES,
    AlteredToken,
    CompanionModel,
    CompanionToken,
    Json,
    ListingToken,
    Number,
    SnapshotsToken,
    StateUpdate,
    ns_timestamp,
    parse_scope,
    timestamp_ns,
    token_text,
)
from tests.reliability.hypothesis_settings import AGAINST_A_SERVER
from tests.reliability.model import Conversation, Expected, canonical_id, succeeds
from tests.reliability.test_model import (
    EXAMPLES,
    RPC_TIMEOUT_S,
    STEPS,
    AgynioWrites,
    CallStats,
    _alter,
    as_role,
    message_inputs,
    new_uuid,
    rarely,
    reported_versions,
)
from tests.support.calls import CompanionStub, Stub, make_companion_stub

R = TypeVar("R")
COMPANION_METHODS = frozenset(
    method.name for method in cpb.DESCRIPTOR.services_by_name["ConversationsService"].methods
)

# --- data ---------------------------------------------------------------------------

LABEL_KEYS = ["team", "user", "a.b/c-d_e", "x"]
BAD_LABEL_KEYS = ["", "Team", "a" * 64, "cl\u00e9", "a b", "a:b"]
TITLES = st.one_of(
    st.text(max_size=12),
    st.text(max_size=12),
    # At the limit in code points, not bytes.
    st.sampled_from(["\u00e9" * 1000, "\U0001f600" * 1000, "t\x00"]),
)
BAD_TITLES = st.sampled_from(["x" * 1001, "\U0001f600" * 1001])
# Retention the sweeper never applies while a run lasts (it sweeps every
# minute): no max_idle under an hour, no max_messages a run reaches.
IDLE_SECONDS = [0, 3600, 30 * 86400, 315_576_000_000]
MAX_MESSAGES = [0, 5000, 2**40]
BAD_IDLES = [(-1, 0), (3600, 1), (0, -1000), (315_576_000_001, 0), (3600, 10**9)]
UPDATE_PATHS = ["title", "labels", "retention"]
BAD_PATHS = ["", "name", "Title", "labels.team", "retention.max_idle", "version"]
ORDER_BYS = ["", "updated_at desc", "updated_at"]
BAD_ORDER_BYS = ["updated_at asc", "UPDATED_AT", "created_at", " updated_at", "updated_at  desc"]
SMALL_PAGES = st.integers(1, 3)
PAGE_SIZES = st.one_of(SMALL_PAGES, SMALL_PAGES, st.sampled_from([0, -1, 100, 1000, 1001]))
NEVER_ISSUED_TOKENS = ["x", "not a token", "%%%", "AAAA", "=="]
ROLES = [int(pb.ROLE_USER), int(pb.ROLE_ASSISTANT), int(pb.ROLE_TOOL)]
KINDS = ["", "question", "answer", "summary", "never-used"]

# Few keys, so that updates meet each other's keys.
STATE_KEYS = st.sampled_from(["a", "b", "n", "\u00e9", "", "\x00", 'k"q'])
JSON_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        ["0", "-0", "1.0", "0.1", "1e400", "1E-7", "-2.50", "12345678901234567890123", "1200.50"]
    ),
).map(Number)
JSON_SCALARS: st.SearchStrategy[Json] = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6), JSON_NUMBERS
)
JSON_VALUES: st.SearchStrategy[Json] = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
# set_json texts that are no JSON object the state takes.
BAD_SET_JSON = [
    "[]",
    "1",
    "null",
    '"x"',
    "{",
    '{"a": 1} x',
    "{'a': 1}",
    '{"a": 1, "a": 2}',
    '{"a": NaN}',
    '{"a": -Infinity}',
    '{"a": "\\ud800"}',
    '{"deep": ' + "[" * 100 + "]" * 100 + "}",  # 101 levels
]
# The deepest nesting taken: 100 levels, the object counted.
DEEPEST: Json = []
for _ in range(98):
    DEEPEST = [DEEPEST]


def render(value: Json, space: str, ascii_only: bool) -> str:
    """`value` as JSON text a client might send: `space` between tokens,
    members in their own order, strings escaped or not."""
    if isinstance(value, Number):
        return value.text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, list):
        return "[" + ("," + space).join(render(v, space, ascii_only) for v in value) + "]"
    if isinstance(value, dict):
        members = (
            f"{json.dumps(k, ensure_ascii=ascii_only)}{space}:{space}{render(v, space, ascii_only)}"
            for k, v in value.items()
        )
        return "{" + space + ("," + space).join(members) + space + "}"
    return json.dumps(value)  # null, true, false


@st.composite
def set_jsons(draw: st.DrawFn) -> tuple[str, dict[str, Json] | None]:
    """A set_json text and the object it holds (None: not a valid one)."""
    if draw(st.integers(0, 99)) < 8:
        return draw(st.sampled_from(BAD_SET_JSON)), None
    if draw(st.integers(0, 99)) < 10:
        return "", {}  # sets nothing
    values = draw(st.dictionaries(STATE_KEYS, JSON_VALUES, max_size=3))
    if draw(st.integers(0, 99)) < 15:
        values[draw(STATE_KEYS)] = None  # stored as null, not dropped
    if draw(st.integers(0, 99)) < 3:
        values["deep"] = DEEPEST
    space = draw(st.sampled_from(["", " ", "\n\t "]))
    return render(values, space, draw(st.booleans())), values


# --- the state machine -------------------------------------------------------------------


class CompanionMachine(AgynioWrites):
    def __init__(self, client: Stub, companion: CompanionStub, stats: CallStats) -> None:
        super().__init__(client, stats)
        self.companion_stub = companion
        self.companion = CompanionModel()
        self.model = self.companion
        # Label values and scopes carry it: runs share the server.
        self.run = uuid.uuid4().hex[:10]
        self.scopes = [
            f"app/{self.run}",
            f"app/{self.run}" + "\u00e9" * (256 - len(self.run)),
            f"user/{self.run}/alice",
            f"user/{self.run}/b\u00e9",
        ]
        # Every conversation of the run is updated after this (set by begin).
        self.floor_ns = 0
        self.past_the_limit = False

    # --- calling -------------------------------------------------------------------------

    def _check_version(
        self, method: str, call: grpc.Call, raw_cid: str | None, failed: bool
    ) -> None:
        """x-conversation-version of a companion call: the version of the
        conversation it names after the call, also on an error when that
        conversation exists (COMPANION.md "Versions"), else none; a fork's is
        its new conversation's. DeleteConversation answers 0 (gone, as
        `if-version: 0` means; spec silent, the README says so). The agynio
        writes are checked as in CallingMachine."""
        if method not in COMPANION_METHODS:
            super()._check_version(method, call, raw_cid, failed)
            return
        reported = reported_versions(call)
        if method == "DeleteConversation" and not failed:
            assert reported == ["0"], f"DeleteConversation: x-conversation-version {reported}"
            return
        if method in ("CreateConversation", "ForkConversation") and not failed:
            raw_cid = self.companion.last_made  # the server may have chosen its id
        cid = None if raw_cid is None else canonical_id(raw_cid)
        conv = None if cid is None else self.companion.conversations.get(cid)
        expected = [] if conv is None else [str(conv.version)]
        assert reported == expected, f"{method}: x-conversation-version {reported} != {expected}"

    def _send(self, request: Message, expected: Expected[R], raw_cid: str | None) -> R | None:
        """A companion call of the method `request` is for, checked as
        `_call` checks."""
        method = type(request).__name__.removesuffix("Request")
        with_call = getattr(self.companion_stub, method).with_call
        return self._call(
            method, lambda: with_call(request, timeout=RPC_TIMEOUT_S), expected, raw_cid
        )

    def _create(
        self,
        raw_cid: str,
        title: str,
        labels: Mapping[str, str],
        retention: cpb.Retention | None,
    ) -> cpb.Conversation | None:
        request = cpb.CreateConversationRequest(
            conversation_id=raw_cid, title=title, labels=labels, retention=retention
        )
        created = self._send(
            request,
            self.companion.create_conversation(raw_cid, title, labels, retention),
            raw_cid,
        )
        if created is not None:
            self._adopt(created.conversation_id)
        return created

    def _adopt(self, cid: str) -> None:
        """Reads and writes may name a conversation a call made."""
        if cid not in self.pool and len(self.pool) < 10:
            self.pool.append(cid)

    def _describe(self, raw_cid: str) -> None:
        request = cpb.DescribeConversationRequest(conversation_id=raw_cid)
        self._send(
            request,
            self.companion.describe(raw_cid),
            raw_cid,
        )

    def _delete_conversation(
        self, raw_cid: str, expected_version: int, allow_missing: bool = False
    ) -> cpb.DeleteConversationResponse | None:
        request = cpb.DeleteConversationRequest(
            conversation_id=raw_cid, expected_version=expected_version, allow_missing=allow_missing
        )
        return self._send(
            request,
            self.companion.delete_conversation(raw_cid, expected_version, allow_missing),
            raw_cid,
        )

    def _list_conversations(
        self,
        labels: Mapping[str, str],
        after: Timestamp | None,
        before: Timestamp | None,
        order_by: str,
        page_size: int,
        token: CompanionToken,
    ) -> cpb.ListConversationsResponse | None:
        request = cpb.ListConversationsRequest(
            labels=labels, order_by=order_by, page_size=page_size, page_token=token_text(token)
        )
        if after is not None:
            request.updated_after.CopyFrom(after)
        if before is not None:
            request.updated_before.CopyFrom(before)
        return self._send(
            request,
            self.companion.list_conversations(labels, after, before, order_by, page_size, token),
            None,
        )

    def _list_snapshots(
        self, raw_cid: str, page_size: int, token: CompanionToken
    ) -> cpb.ListConversationSnapshotsResponse | None:
        request = cpb.ListConversationSnapshotsRequest(
            conversation_id=raw_cid, page_size=page_size, page_token=token_text(token)
        )
        return self._send(
            request,
            self.companion.list_snapshots(raw_cid, page_size, token),
            raw_cid,
        )

    def _append_with_state(
        self,
        raw_cid: str,
        inputs: Sequence[pb.AppendMessageInput],
        updates: Sequence[StateUpdate],
        expected_version: int,
    ) -> cpb.AppendMessagesWithStateResponse | None:
        request = cpb.AppendMessagesWithStateRequest(
            conversation_id=raw_cid,
            messages=list(inputs),
            state_updates=[
                cpb.StateUpdate(scope=u.scope, set_json=u.set_json, remove_keys=list(u.remove_keys))
                for u in updates
            ],
            expected_version=expected_version,
        )
        return self._send(
            request,
            self.companion.append_with_state(raw_cid, inputs, updates, expected_version),
            raw_cid,
        )

    def _get_state(self, raw_scope: str) -> None:
        request = cpb.GetStateRequest(scope=raw_scope)
        self._send(
            request,
            self.companion.get_state(raw_scope),
            None,
        )

    def _update_state(self, update: StateUpdate, expected_version: int) -> None:
        request = cpb.UpdateStateRequest(
            scope=update.scope,
            set_json=update.set_json,
            remove_keys=list(update.remove_keys),
            expected_version=expected_version,
        )
        self._send(
            request,
            self.companion.update_state(update, expected_version),
            None,
        )

    # --- drawing -------------------------------------------------------------------------

    def _labels(self, data: st.DataObject) -> dict[str, str]:
        """Labels of the run (valid), mostly; now and then invalid ones."""
        values = [self.run, f"{self.run}-b", f"{self.run} \u00e9"]
        labels = data.draw(
            st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(values), max_size=3)
        )
        if rarely(data, 3):
            labels[data.draw(st.sampled_from(BAD_LABEL_KEYS))] = self.run
        elif rarely(data, 2):
            labels["x"] = "v" * 257
        elif rarely(data, 2):
            labels = {f"k{i}": self.run for i in range(65)}
        return labels

    def _title(self, data: st.DataObject) -> str:
        title: str = data.draw(BAD_TITLES if rarely(data, 3) else TITLES)
        return title

    def _retention(self, data: st.DataObject) -> cpb.Retention | None:
        """Unset (mostly), valid, or now and then invalid."""
        if data.draw(st.booleans()):
            return None
        retention = cpb.Retention(max_messages=data.draw(st.sampled_from(MAX_MESSAGES)))
        if data.draw(st.booleans()):
            seconds = data.draw(st.sampled_from(IDLE_SECONDS))
            nanos = data.draw(st.sampled_from([0, 5000])) if seconds else 0
            retention.max_idle.CopyFrom(Duration(seconds=seconds, nanos=nanos))
        if rarely(data, 6):
            seconds, nanos = data.draw(st.sampled_from(BAD_IDLES))
            retention.max_idle.CopyFrom(Duration(seconds=seconds, nanos=nanos))
        elif rarely(data, 3):
            retention.max_messages = -1
        return retention

    def _version(self, data: st.DataObject, current: int) -> int:
        """An expected_version: none (0), the current one, or another (now
        and then a negative one)."""
        choice = data.draw(st.sampled_from(["none", "current", "current", "other"]))
        if choice == "none":
            return 0
        if choice == "current":
            return current
        return -1 if rarely(data, 10) else data.draw(st.sampled_from([current + 1, 7]))

    def _scope(self, data: st.DataObject) -> str:
        """A scope of the run: an app's, a user's, or a conversation's (of the
        pool, or unknown); now and then a malformed one."""
        choice = "bad" if rarely(data, 6) else data.draw(st.sampled_from(["named", "conversation"]))
        if choice == "named":
            return data.draw(st.sampled_from(self.scopes))
        if choice == "conversation":
            cid = new_uuid() if rarely(data, 15) else data.draw(st.sampled_from(self.pool))
            return f"conversation/{self._spell(data, cid)}"
        bad = [
            "",
            "app",
            "app/",
            f"app/{self.run}/x",
            f"user/{self.run}",
            f"user//{self.run}",
            "conversation/not-a-uuid",
            f"conversation/{new_uuid()}/x",
            f"team/{self.run}",
            f"App/{self.run}",
            f"/app/{self.run}",
            f"app/{self.run}" + "x" * 257,
            f"app/{self.run}\x00",
        ]
        scope: str = data.draw(st.sampled_from(bad))
        return scope

    def _state_update(self, data: st.DataObject, scope: str) -> StateUpdate:
        text, values = data.draw(set_jsons())
        remove = data.draw(st.lists(STATE_KEYS, max_size=2))
        if values and rarely(data, 5):
            remove.append(data.draw(st.sampled_from(sorted(values))))  # set and removed
        return StateUpdate(scope, text, values, tuple(remove))

    def _filters(self, data: st.DataObject) -> tuple[list[int], list[str]]:
        roles = data.draw(st.lists(st.sampled_from(ROLES), max_size=2))
        if rarely(data, 8):
            roles.append(data.draw(st.sampled_from([0, 4, -1])))
        kinds = data.draw(st.lists(st.sampled_from(KINDS), max_size=2))
        return roles, kinds

    def _bound(self, data: st.DataObject) -> Timestamp | None:
        """An updated_after or updated_before: unset, near a conversation's
        updated_at (to the nanosecond), or now and then invalid."""
        if data.draw(st.booleans()):
            return None
        if rarely(data, 6):
            seconds, nanos = data.draw(
                st.sampled_from([(0, 10**9), (0, -1), (253_402_300_800, 0), (-62_135_596_801, 0)])
            )
            return Timestamp(seconds=seconds, nanos=nanos)
        known = self._known()
        if not known:
            return ns_timestamp(self.floor_ns)
        conv = data.draw(st.sampled_from(known))
        delta = data.draw(st.sampled_from([-1000, -1, 0, 1, 999, 1000]))
        return ns_timestamp(conv.updated_at * 1000 + delta)

    def _listing_filter(
        self, data: st.DataObject
    ) -> tuple[dict[str, str], Timestamp | None, Timestamp | None, str]:
        """Filters of a new listing; a listing that names no label of the run
        is bounded below by the run's first update, so that it lists no
        conversation of another test."""
        values = [self.run, f"{self.run}-b", f"{self.run} \u00e9", f"{self.run}-none"]
        labels = data.draw(
            st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(values), max_size=2)
        )
        if rarely(data, 4):
            labels[data.draw(st.sampled_from(BAD_LABEL_KEYS))] = self.run
        after, before = self._bound(data), self._bound(data)
        lowest = None if after is None else timestamp_ns(after)
        if not labels and (lowest is None or lowest < self.floor_ns):
            after = ns_timestamp(self.floor_ns)
        order_by = data.draw(st.sampled_from(ORDER_BYS))
        if rarely(data, 5):
            order_by = data.draw(st.sampled_from(BAD_ORDER_BYS))
        return labels, after, before, order_by

    def _listing_token(self, data: st.DataObject, kind: type) -> CompanionToken:
        """Mostly an issued token of this list, else one of the other list,
        an altered one, or a string never issued."""
        tokens = self.companion.listing_tokens
        same = [t for t in tokens if isinstance(t, kind)]
        choice = "same" if same and not rarely(data, 30) else "other"
        if choice == "same":
            token: CompanionToken = data.draw(st.sampled_from(same))
            return token
        how = data.draw(st.sampled_from(["never", "foreign", "altered"]))
        if how == "foreign" and tokens:
            return data.draw(st.sampled_from(tokens))
        if how == "altered" and tokens:
            record = data.draw(st.sampled_from(tokens))
            return AlteredToken(record, _alter(data, record.token))
        return data.draw(st.sampled_from(NEVER_ISSUED_TOKENS))

    # --- rules: conversations as a whole -------------------------------------------------

    @initialize()
    def begin(self) -> None:
        """The run's first change: every conversation of the run is updated
        after it, every other conversation before."""
        created = self._create("", "begin", {"team": self.run}, None)
        assert created is not None
        self.floor_ns = (created.updated_at.seconds * 10**9 + created.updated_at.nanos) - 1

    @rule(data=st.data())
    def create_conversation(self, data: st.DataObject) -> None:
        choice = data.draw(st.sampled_from(["fresh", "fresh", "made", "existing", "bad"]))
        raw_cid = ""
        if choice == "fresh":
            raw_cid = self._spell(data, new_uuid())
        elif choice == "existing" and self._known():
            raw_cid = self._spell(data, data.draw(st.sampled_from(self._known())).id)
        elif choice == "bad":
            raw_cid = self._malformed(data, allow_empty=False)
        self._create(raw_cid, self._title(data), self._labels(data), self._retention(data))

    @rule(data=st.data())
    def describe(self, data: st.DataObject) -> None:
        self._describe(self._conversation(data)[0])

    @rule(data=st.data())
    def update_conversation(self, data: st.DataObject) -> None:
        raw_cid, conv = self._conversation(data)
        paths = data.draw(st.lists(st.sampled_from(UPDATE_PATHS), min_size=1, max_size=3))
        if rarely(data, 10):
            paths = data.draw(st.lists(st.sampled_from(BAD_PATHS), max_size=1)) + paths[:1]
        given = cpb.Conversation(
            conversation_id=raw_cid,
            title=self._title(data),
            labels=self._labels(data),
            # Output-only fields: ignored.
            message_count=data.draw(st.integers(0, 9)),
            version=data.draw(st.integers(0, 9)),
        )
        if (retention := self._retention(data)) is not None:
            given.retention.CopyFrom(retention)
        expected = self._version(data, 0 if conv is None else conv.version)
        request = cpb.UpdateConversationRequest(
            conversation=given, update_mask=FieldMask(paths=paths), expected_version=expected
        )
        self._send(
            request,
            self.companion.update_conversation(given, paths, expected),
            raw_cid,
        )

    @rule(data=st.data())
    def delete_conversation(self, data: st.DataObject) -> None:
        raw_cid, conv = self._conversation(data)
        expected = self._version(data, 0 if conv is None else conv.version)
        self._delete_conversation(raw_cid, expected, data.draw(st.booleans()))

    @precondition(lambda self: bool(self._known()))
    @rule(data=st.data())
    def delete_then_write(self, data: st.DataObject) -> None:
        """COMPANION.md "Versions": a deleted conversation is gone; an
        unconditional append starts a new one at version 1, a conditional
        one fails ABORTED (if-version: 0 creates it)."""
        conv = data.draw(st.sampled_from(self._known()))
        old = conv.version
        if self._delete_conversation(self._spell(data, conv.id), old) is None:
            return
        inputs = data.draw(st.lists(message_inputs(), min_size=1, max_size=2))
        how = data.draw(st.sampled_from(["append", "if-old", "if-0", "with-state", "create"]))
        if how == "append":
            self._append(conv.id, inputs)
        elif how == "if-old":
            self._append(conv.id, inputs, old)
        elif how == "if-0":
            self._append(conv.id, inputs, 0)
        elif how == "with-state":
            update = StateUpdate(f"conversation/{conv.id}", '{"again": true}', {"again": True})
            expected = data.draw(st.sampled_from([0, old]))
            self._append_with_state(conv.id, inputs, [update], expected)
        else:
            self._create(conv.id, "again", {}, None)
        self.companion.seen[f"deleted, then {how}"] += 1

    @precondition(lambda self: bool(self._known()))
    @rule(data=st.data())
    def keyed_append_then_delete(self, data: st.DataObject) -> None:
        """An idempotency key replays its append (the original answer,
        whatever the version is now) until DeleteConversation erases it with
        the conversation: the same call then appends again, to a new
        conversation (COMPANION.md "DeleteConversation", "Versions")."""
        conv = data.draw(st.sampled_from(self._known()))
        inputs = data.draw(st.lists(message_inputs(), min_size=1, max_size=2))
        key = f"{self.run}-{new_uuid()}"
        first = self._keyed_append(conv.id, inputs, key)
        if first is None:
            return
        if data.draw(st.booleans()):  # the version moves on meanwhile
            self._append(conv.id, data.draw(st.lists(message_inputs(), min_size=1, max_size=2)))

        def same_answer(response: pb.AppendConversationMessagesResponse) -> None:
            assert response == first, "the replay is not the original answer"

        self._keyed_append(conv.id, inputs, key, Expected(succeeds("replay"), same_answer))
        if self._delete_conversation(conv.id, 0) is not None:
            self._keyed_append(conv.id, inputs, key)

    def _keyed_append(
        self,
        cid: str,
        inputs: Sequence[pb.AppendMessageInput],
        key: str,
        expected: Expected[pb.AppendConversationMessagesResponse] | None = None,
    ) -> pb.AppendConversationMessagesResponse | None:
        """An append with an idempotency key; `expected` None: a new append."""
        request = pb.AppendConversationMessagesRequest(conversation_id=cid, messages=inputs)
        return self._call(
            "AppendConversationMessages",
            lambda: self.client.AppendConversationMessages.with_call(
                request, timeout=RPC_TIMEOUT_S, metadata=(("idempotency-key", key),)
            ),
            expected or self.model.append(cid, inputs, request.ByteSize()),
            cid,
        )

    # --- rules: listing ---------------------------------------------------------------------

    @rule(data=st.data())
    def list_conversations(self, data: st.DataObject) -> None:
        labels, after, before, order_by = self._listing_filter(data)
        size = data.draw(SMALL_PAGES if not rarely(data, 30) else PAGE_SIZES)
        self._list_conversations(labels, after, before, order_by, size, "")

    @precondition(
        lambda self: any(isinstance(t, ListingToken) for t in self.companion.listing_tokens)
    )
    @rule(data=st.data())
    def continue_listing(self, data: st.DataObject) -> None:
        """Follow a token, maybe issued before changes, to the end; now and
        then a conversation changes between two pages."""
        tokens = [t for t in self.companion.listing_tokens if isinstance(t, ListingToken)]
        record: ListingToken = data.draw(st.sampled_from(tokens))
        size = data.draw(SMALL_PAGES)
        for _ in range(1000):
            chosen = record.filter
            self.companion.last_listing = None
            page = self._list_conversations(
                dict(chosen.labels),
                None if chosen.after is None else ns_timestamp(chosen.after),
                None if chosen.before is None else ns_timestamp(chosen.before),
                "" if chosen.newest_first else "updated_at",
                size,
                record,
            )
            following = self.companion.last_listing
            if page is None or not isinstance(following, ListingToken) or rarely(data, 20):
                return
            if rarely(data, 30):
                self._touch(data)
            record = following

    @precondition(lambda self: len(self._known()) > 1)
    @rule(data=st.data(), newest_first=st.booleans())
    def page_through_changes(self, data: st.DataObject, newest_first: bool) -> None:
        """The run's listing one conversation a page, with a change between
        every two pages (COMPANION.md: "no duplicates while others write,
        and none skipped that did not move")."""
        token: CompanionToken = ""
        floor, order_by = ns_timestamp(self.floor_ns), "" if newest_first else "updated_at"
        for _ in range(1000):
            self.companion.last_listing = None
            page = self._list_conversations({}, floor, None, order_by, 1, token)
            following = self.companion.last_listing
            if page is None or not isinstance(following, ListingToken):
                return
            self._touch(data)
            token = following

    def _touch(self, data: st.DataObject) -> None:
        """A change between two pages: an append (the conversation moves),
        new labels, a new conversation, or one deleted."""
        how = data.draw(st.sampled_from(["append", "append", "labels", "create", "delete"]))
        known = self._known()
        if how == "create" or not known:
            self._create(new_uuid(), "", self._labels(data), None)
            return
        conv = data.draw(st.sampled_from(known))
        if how == "append":
            self._append(conv.id, data.draw(st.lists(message_inputs(), min_size=1, max_size=2)))
            return
        if how == "delete":
            self._delete_conversation(conv.id, 0)
            return
        given = cpb.Conversation(conversation_id=conv.id, labels=self._labels(data))
        request = cpb.UpdateConversationRequest(
            conversation=given, update_mask=FieldMask(paths=["labels"])
        )
        self._send(
            request,
            self.companion.update_conversation(given, ["labels"], 0),
            conv.id,
        )

    @precondition(lambda self: bool(self.companion.listing_tokens))
    @rule(data=st.data())
    def misuse_listing_token(self, data: st.DataObject) -> None:
        """A token with other filters or order, of the other list, altered or
        never issued (the proto: "another one: INVALID_ARGUMENT")."""
        token = self._listing_token(data, ListingToken)
        labels, after, before, order_by = self._listing_filter(data)
        self._list_conversations(labels, after, before, order_by, data.draw(SMALL_PAGES), token)

    # --- rules: reading the ordering, forks ----------------------------------------------------

    @rule(data=st.data())
    def tail(self, data: st.DataObject) -> None:
        raw_cid, _ = self._conversation(data)
        count = data.draw(st.integers(1, 5))
        if rarely(data, 8):
            count = data.draw(st.sampled_from([0, -1, 1000, 1001, 2**31 - 1]))
        self._tail(raw_cid, count, *self._filters(data))

    def _tail(self, raw_cid: str, count: int, roles: list[int], kinds: list[str]) -> None:
        request = cpb.TailConversationMessagesRequest(
            conversation_id=raw_cid, count=count, roles=[as_role(r) for r in roles], kinds=kinds
        )
        self._send(
            request,
            self.companion.tail(raw_cid, count, roles, kinds),
            raw_cid,
        )

    @rule(data=st.data())
    def get_messages(self, data: st.DataObject) -> None:
        raw_cid, conv = self._with_messages(data)
        if conv is not None and conv.ordering and not rarely(data, 25):
            ordering = st.sampled_from(conv.ordering)
            ids = [self._spell(data, i) for i in data.draw(st.lists(ordering, min_size=1))]
        else:  # detached, deleted, of another conversation, unknown, malformed...
            ids = self._messages(data, conv, 4, unique=False)
        repeat = data.draw(st.booleans())
        if ids and repeat:
            ids.append(data.draw(st.sampled_from(ids)))  # repeats are allowed
        if rarely(data, 3):
            ids = [new_uuid() for _ in range(1001)]
        request = cpb.GetMessagesRequest(conversation_id=raw_cid, message_ids=ids)
        self._send(
            request,
            self.companion.get_messages(raw_cid, ids),
            raw_cid,
        )

    def _with_messages(self, data: st.DataObject) -> tuple[str, Conversation | None]:
        """Mostly a conversation with messages; else as _conversation."""
        filled = [c for c in self._known() if c.ordering]
        if not filled or rarely(data, 25):
            return self._conversation(data)
        conv = data.draw(st.sampled_from(filled))
        return self._spell(data, conv.id), conv

    @precondition(lambda self: any(c.ordering for c in self._known()))
    @rule(data=st.data())
    def snapshot(self, data: st.DataObject) -> None:
        """Snapshots of a conversation's messages (ListConversationSnapshots
        lists them, DeleteConversation erases them, a fork leaves them)."""
        conv = data.draw(st.sampled_from([c for c in self._known() if c.ordering]))
        for _ in range(data.draw(st.integers(1, 3))):
            ids = data.draw(st.lists(st.sampled_from(list(conv.messages)), min_size=1, max_size=4))
            self._snapshot(conv.id, ids)

    def _snapshot(self, cid: str, ids: list[str]) -> None:
        request = pb.CreateSnapshotRequest(conversation_id=cid, message_ids=ids)
        self._call(
            "CreateSnapshot",
            lambda: self.client.CreateSnapshot.with_call(request, timeout=RPC_TIMEOUT_S),
            self.model.create_snapshot(cid, ids),
            cid,
        )

    @rule(data=st.data())
    def list_snapshots(self, data: st.DataObject) -> None:
        token: CompanionToken = ""
        raw_cid, _ = self._conversation(data)
        if data.draw(st.booleans()):
            token = self._listing_token(data, SnapshotsToken)
            of = token.of if isinstance(token, AlteredToken) else token
            if isinstance(of, SnapshotsToken) and not rarely(data, 15):
                raw_cid = self._spell(data, of.conversation)
        for _ in range(1000):
            self.companion.last_listing = None
            page = self._list_snapshots(raw_cid, data.draw(PAGE_SIZES), token)
            following = self.companion.last_listing
            if page is None or not isinstance(following, SnapshotsToken) or rarely(data, 30):
                return
            token = following

    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        raw_cid, conv = self._with_messages(data)
        up_to = ""
        if data.draw(st.booleans()):  # mostly in the ordering
            up_to = self._message(data, conv, detached_ok=False)
        choice = data.draw(st.sampled_from(["fresh", "fresh", "fresh", "made", "made", "other"]))
        if choice == "other":
            choice = data.draw(st.sampled_from(["existing", "source", "bad"]))
        raw_new = ""
        if choice == "fresh":
            raw_new = self._spell(data, new_uuid())
        elif choice == "existing" and self._known():
            raw_new = self._spell(data, data.draw(st.sampled_from(self._known())).id)
        elif choice == "source":
            raw_new = self._spell(data, canonical_id(raw_cid) or raw_cid)
        elif choice == "bad":
            raw_new = self._malformed(data, allow_empty=False)
        title, labels = self._title(data), self._labels(data)
        request = cpb.ForkConversationRequest(
            conversation_id=raw_cid,
            up_to_message_id=up_to,
            new_conversation_id=raw_new,
            title=title,
            labels=labels,
        )
        forked = self._send(
            request,
            self.companion.fork(raw_cid, up_to, raw_new, title, labels),
            raw_new,
        )
        if forked is not None:
            self._adopt(forked.conversation.conversation_id)

    # --- rules: scoped state -------------------------------------------------------------------

    @rule(data=st.data())
    def get_state(self, data: st.DataObject) -> None:
        self._get_state(self._scope(data))

    @rule(data=st.data())
    def update_state(self, data: st.DataObject) -> None:
        scope = self._scope(data)
        update = self._state_update(data, scope)
        name = parse_scope(scope)
        state = None if name is None else self.companion.states.get(name.key)
        self._update_state(update, self._version(data, 0 if state is None else state.version))

    @rule(data=st.data())
    def append_with_state(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.pool))
        raw_cid = self._spell(data, cid)
        if rarely(data, 3):
            raw_cid = self._malformed(data)
        inputs = data.draw(st.lists(message_inputs(), min_size=1, max_size=3))
        if rarely(data, 3):
            inputs = []
        scopes = data.draw(st.lists(st.sampled_from(self.scopes), max_size=2, unique=True))
        if data.draw(st.booleans()):  # its own scope, or another conversation's
            other = cid if data.draw(st.booleans()) else data.draw(st.sampled_from(self.pool))
            scopes.append(f"conversation/{self._spell(data, other)}")
        if scopes and rarely(data, 5):
            scopes.append(scopes[0])  # a scope twice
        if rarely(data, 10):
            scopes.append(self._scope(data))
        updates = [self._state_update(data, scope) for scope in scopes]
        conv = self.companion.conversations.get(cid)
        expected = self._version(data, 0 if conv is None else conv.version)
        self._append_with_state(raw_cid, inputs, updates, expected)

    @precondition(lambda self: not self.past_the_limit)
    @rule(data=st.data())
    def state_past_the_limit(self, data: st.DataObject) -> None:
        """1 MiB per scope as stored: past it by itself, or once merged with
        what the scope holds; nothing changes. Once a run: it is costly."""
        self.past_the_limit = True
        scope = data.draw(st.sampled_from(self.scopes))
        half = "x" * (MAX_STATE_BYTES // 2 + 10)
        alone = data.draw(st.booleans())
        if alone:
            big = "y" * (MAX_STATE_BYTES + 1)
            self._update_state(StateUpdate(scope, json.dumps({"big": big}), {"big": big}), 0)
            return
        for key in ("h1", "h2"):  # the second passes the limit
            self._update_state(StateUpdate(scope, json.dumps({key: half}), {key: half}), 0)
        self._update_state(StateUpdate(scope, "", {}, ("h1", "h2")), 0)

    # --- the end ---------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Everything reads back as the model holds it: each conversation
        (described, and its ordering through the agynio lists and a tail),
        the whole listing of the run in both orders, each conversation's
        snapshots, and every scope."""
        for cid in self.pool:
            self._describe(cid)
            if (conv := self.companion.conversations.get(cid)) is not None:
                self._read_conversation(cid, 1000)
                self._tail(cid, 1000, [], [])
                self._all_snapshots(conv)
        for order_by in ORDER_BYS[1:]:
            self._whole_listing(order_by)
        for scope in [*self.scopes, *self.companion.states]:
            self._get_state(scope)
        self.stats.seen.update(self.companion.seen)

    def _all_snapshots(self, conv: Conversation) -> None:
        token: CompanionToken = ""
        for _ in range(1000):
            self.companion.last_listing = None
            page = self._list_snapshots(conv.id, 2, token)
            following = self.companion.last_listing
            if page is None or not isinstance(following, SnapshotsToken):
                return
            token = following

    def _whole_listing(self, order_by: str) -> None:
        token: CompanionToken = ""
        floor = ns_timestamp(self.floor_ns)
        listed: list[str] = []
        for _ in range(1000):
            self.companion.last_listing = None
            page = self._list_conversations({}, floor, None, order_by, 3, token)
            following = self.companion.last_listing
            assert page is not None
            listed += [c.conversation_id for c in page.conversations]
            if not isinstance(following, ListingToken):
                break
            token = following
        assert sorted(listed) == sorted(self.companion.conversations), "the listing of the run"


# --- the test --------------------------------------------------------------------------------


@pytest.mark.timeout(max(300, EXAMPLES * STEPS))
def test_random_companion_sequences_match_the_model(
    stub: Stub, channel: grpc.Channel, backend: str
) -> None:
    stats = CallStats()
    companion = make_companion_stub(channel)
    started = time.monotonic()

    class OnThisServer(CompanionMachine):
        def __init__(self) -> None:
            super().__init__(stub, companion, stats)

    try:
        run_state_machine_as_test(
            OnThisServer,
            settings=settings(AGAINST_A_SERVER, max_examples=EXAMPLES, stateful_step_count=STEPS),
        )
    finally:
        elapsed = time.monotonic() - started
        print(f"\ncompanion model test [{backend}] in {elapsed:.1f} s: {stats.summary()}")
        situations = ", ".join(f"{name}={n}" for name, n in sorted(stats.seen.items()))
        print(f"companion model test [{backend}] situations: {situations}")
