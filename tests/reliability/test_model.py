"""Model-based test: random sequences of all nine RPCs against the real server.

A Hypothesis state machine mixes valid and invalid calls (unknown and
malformed ids, empty and reversed ranges, moves, deletes, snapshots of
detached messages, paging with small pages and stale, foreign or altered
tokens, filters, odd page sizes) and checks every status code and response
field against tests/reliability/model.py, a model of SEMANTICS.md.

Runs once per backend on the shared e2e server, in conversations with fresh
random ids. AGENT_STATE_MODEL_EXAMPLES (default 25) and AGENT_STATE_MODEL_STEPS
(default 30) make a longer search; ``pytest -s`` shows the call counts.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

import grpc
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import spellings as e2e_spellings
from tests.reliability.hypothesis_settings import AGAINST_A_SERVER
from tests.reliability.model import (
    DEFAULT_PAGE_SIZE,
    MAX_BATCH,
    MAX_KIND_CODE_POINTS,
    MAX_PAGE_SIZE,
    MAX_REQUEST_BYTES,
    OK,
    Conversation,
    Expected,
    Model,
    Rpc,
    Tampered,
    TokenChoice,
    TokenRecord,
    canonical_id,
    is_ambiguous_id,
)
from tests.support.calls import Stub

EXAMPLES = int(os.environ.get("AGENT_STATE_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("AGENT_STATE_MODEL_STEPS", "30"))
RPC_TIMEOUT_S = 60.0
R = TypeVar("R")

# --- data ------------------------------------------------------------------------

USER, ASSISTANT, TOOL = pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL
ROLES = [USER, ASSISTANT, TOOL]
BAD_ROLES = [0, 4, 99, -1]
# Few kinds, so that kind filters match something.
KINDS = ["", "question", "answer", "summary", "tool_output", "\u00fcber", "\x00"]
TEXT = st.text(max_size=12)


def _if_version(version: int | None) -> tuple[tuple[str, str], ...]:
    return () if version is None else (("if-version", str(version)),)


def as_role(value: int) -> pb.Role:
    return cast(pb.Role, value)


@st.composite
def bodies(draw: st.DrawFn) -> pb.MessageBody:
    body = pb.MessageBody()
    variant = draw(st.sampled_from(["text", "text", "tool_text", "tool_image"]))
    if variant == "text":
        body.text.text = draw(TEXT)
        body.text.SetInParent()
        return body
    out = body.tool_output
    out.tool_name = draw(TEXT)
    out.tool_call_id = draw(TEXT)
    out.metadata.update(draw(st.dictionaries(TEXT, TEXT, max_size=2)))
    if variant == "tool_text":
        out.text.text = draw(TEXT)
        out.text.SetInParent()
    else:
        image = out.image
        image.external_url = draw(TEXT)
        image.mime_type = draw(st.sampled_from(["", "image/png"]))
        # An unknown enum number is valid protobuf and must round-trip too.
        image.detail = cast(pb.ImageDetail, draw(st.sampled_from([0, 1, 2, 3, 9])))
        image.width_px = draw(st.integers(-(2**31), 2**31 - 1))
        image.height_px = draw(st.integers(0, 4096))
        image.sha256 = draw(st.sampled_from(["", "a" * 64]))
        image.SetInParent()
    return body


KIND_VALUES = st.one_of(
    st.sampled_from(KINDS),
    st.sampled_from(KINDS),
    st.sampled_from(KINDS),
    st.text(max_size=8),
    # At the limit in code points, not bytes.
    st.sampled_from(["\u00e9" * MAX_KIND_CODE_POINTS, "\U0001f600" * MAX_KIND_CODE_POINTS]),
)


@st.composite
def message_inputs(draw: st.DrawFn) -> pb.AppendMessageInput:
    return pb.AppendMessageInput(
        role=draw(st.sampled_from(ROLES)), kind=draw(KIND_VALUES), body=draw(bodies())
    )


SMALL_PAGES = st.integers(1, 4)
PAGE_SIZES = st.one_of(
    SMALL_PAGES,
    SMALL_PAGES,
    SMALL_PAGES,
    st.integers(5, 40),
    st.sampled_from([0, -1, 100, 1000, 1001]),
    st.integers(-(2**31), -1),
    st.integers(1001, 2**31 - 1),
)


def spellings(canonical: str) -> list[str]:
    """Accepted spellings of one UUID, the canonical one weighted double."""
    return [canonical, *e2e_spellings(canonical)]


def malformed_ids(canonical: str) -> list[str]:
    hex32 = canonical.replace("-", "")
    return [
        "not-a-uuid",
        canonical[:-1],
        canonical + "0",
        " " + canonical,
        canonical + "\n",
        "{" + canonical,
        "urn:" + canonical,
        "0x" + hex32[2:],
        "g" + canonical[1:],
        "\uff10" + hex32[1:],
        hex32[:8] + "-" + hex32[8:],
    ]


ODD_TEXT = st.text(max_size=40).filter(lambda s: canonical_id(s) is None and not is_ambiguous_id(s))
REPLACE_MODES = ["range", "after", "range", "before", "range"]
DELETE_MODES = ["range", "from", "range", "to", "range"]
NEVER_ISSUED_TOKENS = ["x", "not a token", "%%%", "\u00e9\u00e9", "AAAA", "0", "=="]


# --- counting --------------------------------------------------------------------


@dataclass
class CallStats:
    """RPC calls made and status codes seen, over every run of one test."""

    runs: int = 0
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Situations the model noted (moves, stale tokens, open points...).
    seen: Counter[str] = field(default_factory=Counter)

    def record(self, method: str, code: grpc.StatusCode) -> None:
        self.calls[method, code.name] += 1
        event(f"{method}: {code.name}")

    def summary(self) -> str:
        methods: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        for (method, status), n in self.calls.items():
            methods[method] += n
            statuses[status] += n
        per_method = ", ".join(
            f"{method}={n} ("
            + " ".join(f"{s}:{c}" for (m, s), c in sorted(self.calls.items()) if m == method)
            + ")"
            for method, n in sorted(methods.items())
        )
        by_status = ", ".join(f"{status}={n}" for status, n in statuses.most_common())
        return (
            f"{self.runs} runs, {methods.total()} calls; statuses: {by_status}; calls: {per_method}"
        )


# --- the state machine -------------------------------------------------------------


class CallingMachine(RuleBasedStateMachine):
    """No rules: calls checked against the model, and draws of ids, for
    the machines of this file and of test_model_companion.py."""

    def __init__(self, client: Stub, stats: CallStats) -> None:
        super().__init__()
        self.client = client
        self.stats = stats
        stats.runs += 1
        self.model = Model()
        # Fresh ids per run: runs share the server and must not meet.
        self.pool = [new_uuid() for _ in range(3)]

    # --- calling ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        send: Callable[[], tuple[R, grpc.Call]],
        expected: Expected[R],
        raw_cid: str | None,
    ) -> R | None:
        """Make the call `send` (a with_call), check its outcome against the
        model and adopt it; then check the conversation version it reports
        (`raw_cid`: the conversation it names, None for a snapshot list)."""
        try:
            response, call = send()
        except grpc.RpcError as exc:
            self._record(method, exc.code(), expected)
            expected.outcome.check(exc.code(), exc.details() or "")
            # The errors of a call are its grpc.Call too.
            self._check_version(method, cast(grpc.Call, exc), raw_cid, failed=True)
            return None
        self._record(method, OK, expected)
        expected.outcome.check(OK, "")
        expected.accept(response)
        self._check_version(method, call, raw_cid, failed=False)
        return response

    def _check_version(
        self, method: str, call: grpc.Call, raw_cid: str | None, failed: bool
    ) -> None:
        """x-conversation-version: the named conversation's version after a
        success; after a failure, that or nothing (an error found before the
        conversation was read reports none); never a version of a
        conversation that does not exist."""
        reported = reported_versions(call)
        cid = None if raw_cid is None else canonical_id(raw_cid)
        conv = None if cid is None else self.model.conversations.get(cid)
        version = None if conv is None else str(conv.version)
        allowed = [[]] if version is None else [[], [version]] if failed else [[version]]
        assert reported in allowed, f"{method}: x-conversation-version {reported}, model {version}"

    def _record(self, method: str, code: grpc.StatusCode, expected: Expected[R]) -> None:
        self.stats.record(method, code)
        if len(expected.outcome.codes) > 1:
            # Where the spec is open: which reading the server takes.
            self.model.seen[f"open: {expected.outcome.why} -> {code.name}"] += 1

    def _append(
        self,
        raw_cid: str,
        inputs: Sequence[pb.AppendMessageInput],
        if_version: int | None = None,
    ) -> pb.AppendConversationMessagesResponse | None:
        request = pb.AppendConversationMessagesRequest(
            conversation_id=raw_cid, messages=list(inputs)
        )
        return self._call(
            "AppendConversationMessages",
            lambda: self.client.AppendConversationMessages.with_call(
                request, timeout=RPC_TIMEOUT_S, metadata=_if_version(if_version)
            ),
            self.model.append(raw_cid, inputs, request.ByteSize(), if_version),
            raw_cid,
        )

    def _replace(
        self,
        raw_cid: str,
        raw_from: str,
        raw_to: str,
        raw_new: Sequence[str],
        if_version: int | None = None,
    ) -> pb.ReplaceConversationMessagesRangeResponse | None:
        request = pb.ReplaceConversationMessagesRangeRequest(
            conversation_id=raw_cid,
            from_message_id=raw_from,
            to_message_id=raw_to,
            new_message_ids=list(raw_new),
        )
        return self._call(
            "ReplaceConversationMessagesRange",
            lambda: self.client.ReplaceConversationMessagesRange.with_call(
                request, timeout=RPC_TIMEOUT_S, metadata=_if_version(if_version)
            ),
            self.model.replace(raw_cid, raw_from, raw_to, raw_new, if_version),
            raw_cid,
        )

    def _get(self, raw_cid: str) -> None:
        request = pb.GetConversationRequest(conversation_id=raw_cid)
        self._call(
            "GetConversation",
            lambda: self.client.GetConversation.with_call(request, timeout=RPC_TIMEOUT_S),
            self.model.get(raw_cid),
            raw_cid,
        )

    def _list_messages(
        self,
        raw_cid: str,
        roles: Sequence[int],
        kinds: Sequence[str],
        page_size: int,
        token: TokenChoice,
    ) -> pb.ListConversationMessagesResponse | None:
        request = pb.ListConversationMessagesRequest(
            conversation_id=raw_cid,
            roles=[as_role(r) for r in roles],
            kinds=list(kinds),
            page_size=page_size,
            page_token=_token_text(token),
        )
        return self._call(
            Rpc.MESSAGES.value,
            lambda: self.client.ListConversationMessages.with_call(request, timeout=RPC_TIMEOUT_S),
            self.model.list_messages(raw_cid, roles, kinds, page_size, token),
            raw_cid,
        )

    def _list_ids(
        self, raw_cid: str, page_size: int, token: TokenChoice
    ) -> pb.ListConversationMessageIdsResponse | None:
        request = pb.ListConversationMessageIdsRequest(
            conversation_id=raw_cid, page_size=page_size, page_token=_token_text(token)
        )
        return self._call(
            Rpc.IDS.value,
            lambda: self.client.ListConversationMessageIds.with_call(
                request, timeout=RPC_TIMEOUT_S
            ),
            self.model.list_ids(raw_cid, page_size, token),
            raw_cid,
        )

    def _list_snapshot(
        self, rpc: Rpc, raw_sid: str, page_size: int, token: TokenChoice
    ) -> str | None:
        """One page of a snapshot list; its next_page_token, None on an error."""
        if rpc is Rpc.SNAPSHOT_MESSAGES:
            messages_request = pb.ListSnapshotMessagesRequest(
                snapshot_id=raw_sid, page_size=page_size, page_token=_token_text(token)
            )
            messages = self._call(
                rpc.value,
                lambda: self.client.ListSnapshotMessages.with_call(
                    messages_request, timeout=RPC_TIMEOUT_S
                ),
                self.model.list_snapshot_messages(raw_sid, page_size, token),
                None,
            )
            return None if messages is None else messages.next_page_token
        ids_request = pb.ListSnapshotMessageIdsRequest(
            snapshot_id=raw_sid, page_size=page_size, page_token=_token_text(token)
        )
        ids = self._call(
            rpc.value,
            lambda: self.client.ListSnapshotMessageIds.with_call(
                ids_request, timeout=RPC_TIMEOUT_S
            ),
            self.model.list_snapshot_ids(raw_sid, page_size, token),
            None,
        )
        return None if ids is None else ids.next_page_token

    def _read_conversation(self, cid: str, page_size: int) -> None:
        """The whole conversation through both lists, token after token."""
        self._get(cid)
        for rpc in (Rpc.MESSAGES, Rpc.IDS):
            token: TokenChoice = ""
            for _ in range(10_000):
                self.model.last_token = None
                if rpc is Rpc.MESSAGES:
                    page = self._list_messages(cid, [], [], page_size, token)
                    next_token = "" if page is None else page.next_page_token
                else:
                    ids = self._list_ids(cid, page_size, token)
                    next_token = "" if ids is None else ids.next_page_token
                if not next_token:
                    break
                assert self.model.last_token is not None
                token = self.model.last_token

    def _read_snapshot(self, sid: str) -> None:
        """The whole snapshot through both lists: small pages unless it is long."""
        size = 3 if len(self.model.snapshots[sid].items) <= 30 else MAX_PAGE_SIZE
        for rpc in (Rpc.SNAPSHOT_MESSAGES, Rpc.SNAPSHOT_IDS):
            token: TokenChoice = ""
            for _ in range(10_000):
                self.model.last_token = None
                if not self._list_snapshot(rpc, sid, size, token):
                    break
                assert self.model.last_token is not None
                token = self.model.last_token

    # --- drawing ids ---------------------------------------------------------------------

    def _known(self) -> list[Conversation]:
        return [c for cid in self.pool if (c := self.model.conversations.get(cid)) is not None]

    def _spell(self, data: st.DataObject, canonical: str) -> str:
        return data.draw(st.sampled_from(spellings(canonical)))

    def _malformed(self, data: st.DataObject, *, allow_empty: bool = True) -> str:
        fixed = malformed_ids(str(uuid.UUID(int=data.draw(st.integers(0, 2**128 - 1)))))
        raw = data.draw(st.one_of(st.sampled_from(fixed), ODD_TEXT))
        return raw if raw or allow_empty else "not-a-uuid"

    def _conversation(self, data: st.DataObject) -> tuple[str, Conversation | None]:
        """A conversation id to send: mostly a live one, else unknown or malformed."""
        known = self._known()
        choice = "known"
        if not known or rarely(data, 15):
            choice = data.draw(st.sampled_from(["pool", "fresh", "malformed"]))
        if choice == "known":
            conv = data.draw(st.sampled_from(known))
            return self._spell(data, conv.id), conv
        if choice == "pool":
            cid = data.draw(st.sampled_from(self.pool))
            return self._spell(data, cid), self.model.conversations.get(cid)
        if choice == "fresh":
            return self._spell(data, new_uuid()), None
        return self._malformed(data), None

    def _message(
        self,
        data: st.DataObject,
        conv: Conversation | None,
        *,
        detached_ok: bool,
        valid: bool | None = None,
    ) -> str:
        """A message id to send for ``conv``. Valid (mostly): one of its
        ordering, or detached where ``detached_ok``. Otherwise detached,
        deleted, of another conversation, unknown or malformed."""
        good: list[list[str]] = []
        bad: list[list[str]] = []
        others = [i for c in self._known() if c is not conv for i in c.ordering]
        if conv is not None:
            detached = conv.detached()
            good.append(conv.ordering)
            (good if detached_ok else bad).append(detached)
            bad.append(list(conv.deleted))
        bad.append(others)
        good = [g for g in good if g]
        bad = [b for b in bad if b]
        if valid is None:
            valid = not rarely(data, 25)
        if valid and good:
            return self._spell(data, data.draw(st.sampled_from(data.draw(st.sampled_from(good)))))
        choice = data.draw(st.integers(0, len(bad) + 1))
        if choice == len(bad):
            return self._spell(data, new_uuid())
        if choice == len(bad) + 1:
            return self._malformed(data, allow_empty=False)
        return self._spell(data, data.draw(st.sampled_from(bad[choice])))

    def _messages(
        self, data: st.DataObject, conv: Conversation | None, most: int, *, unique: bool
    ) -> list[str]:
        """Ids that name existing messages of ``conv`` (mostly all of them);
        with ``unique`` each at most once, else repeats may occur."""
        valid = None if rarely(data, 30) else True
        count = 0 if rarely(data, 5) else data.draw(st.integers(1, most))
        ids: list[str] = []
        seen: set[str] = set()
        for _ in range(count):
            raw = self._message(data, conv, detached_ok=True, valid=valid)
            key = canonical_id(raw) or raw
            if not (unique and key in seen):
                seen.add(key)
                ids.append(raw)
        return ids

    def _ends(self, data: st.DataObject, conv: Conversation | None) -> tuple[str, str]:
        """from and to of a two-ended range: mostly in order, sometimes not."""
        if conv is not None and conv.ordering and not rarely(data, 20):
            i = data.draw(st.integers(0, len(conv.ordering) - 1))
            j = data.draw(st.integers(i, len(conv.ordering) - 1))
            return self._spell(data, conv.ordering[i]), self._spell(data, conv.ordering[j])
        return (
            self._message(data, conv, detached_ok=False),
            self._message(data, conv, detached_ok=False),
        )

    def _filters(self, data: st.DataObject) -> tuple[list[int], list[str]]:
        roles = data.draw(st.lists(st.sampled_from([int(r) for r in ROLES]), max_size=3))
        if rarely(data, 8):
            roles.append(data.draw(st.sampled_from(BAD_ROLES)))
        kinds = data.draw(st.lists(st.sampled_from([*KINDS, "never-used"]), max_size=3))
        return roles, kinds

    def _token(self, data: st.DataObject, rpc: Rpc) -> TokenChoice:
        """Mostly a token of this RPC (stale ones included), else one of
        another RPC, an altered one, or a string never issued."""
        tokens = self.model.tokens
        same = [t for t in tokens if t.rpc is rpc]
        choice = "same"
        if not same or rarely(data, 30):
            choice = data.draw(
                st.sampled_from(
                    ["never"] + (["other"] if tokens else []) + (["altered"] if same else [])
                )
            )
        if choice == "same":
            return data.draw(st.sampled_from(same))
        if choice == "other":
            return data.draw(st.sampled_from(tokens))
        if choice == "altered":
            record = data.draw(st.sampled_from(same))
            return Tampered(record, _alter(data, record.token))
        return data.draw(st.sampled_from(NEVER_ISSUED_TOKENS))

    def _target_for(
        self, data: st.DataObject, token: TokenChoice, kind: str
    ) -> tuple[str, TokenRecord | None]:
        """Mostly the id the token belongs to (respelled), else a random one."""
        record = token.of if isinstance(token, Tampered) else token
        if isinstance(record, TokenRecord) and not rarely(data, 15):
            return self._spell(data, record.target), record
        if kind == "snapshot":
            return self._snapshot_id(data), None
        return self._conversation(data)[0], None

    def _snapshot_id(self, data: st.DataObject) -> str:
        snaps = list(self.model.snapshots)
        choice = "known"
        if not snaps or rarely(data, 20):
            choice = data.draw(st.sampled_from(["fresh", "bad"]))
        if choice == "known":
            return self._spell(data, data.draw(st.sampled_from(snaps)))
        if choice == "fresh":
            return self._spell(data, new_uuid())
        return self._malformed(data)


class AgynioWrites(CallingMachine):
    """The agynio writes as rules: appends (valid and not), replaces,
    deletes of a range and snapshots, some with if-version."""

    # --- rules: changes ------------------------------------------------------------------

    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.pool))
        inputs = data.draw(st.lists(message_inputs(), min_size=1, max_size=4))
        self._append(self._spell(data, cid), inputs)

    @rule(data=st.data())
    def append_invalid(self, data: st.DataObject) -> None:
        raw_cid = data.draw(st.sampled_from(self.pool))
        inputs = data.draw(st.lists(message_inputs(), min_size=1, max_size=4))
        flaws = ["role", "no_body", "empty_body", "no_output", "long_kind", "empty", "malformed_id"]
        if rarely(data, 10):  # the costly ones
            flaws = ["too_many", "too_big"]
        flaw = data.draw(st.sampled_from(flaws))
        at = data.draw(st.integers(0, len(inputs) - 1))
        item = inputs[at]
        if flaw == "role":
            item.role = as_role(data.draw(st.sampled_from(BAD_ROLES)))
        elif flaw == "no_body":
            item.ClearField("body")
        elif flaw == "empty_body":
            item.body.Clear()
            item.body.SetInParent()
        elif flaw == "no_output":
            item.body.tool_output.tool_name = "t"
            item.body.tool_output.ClearField("output")
        elif flaw == "long_kind":
            item.kind = data.draw(st.sampled_from(["k", "\u00e9", "\U0001f600"])) * (
                MAX_KIND_CODE_POINTS + 1
            )
        elif flaw == "empty":
            inputs = []
        elif flaw == "malformed_id":
            raw_cid = self._malformed(data)
        elif flaw == "too_many":
            inputs = [_bulk_input(i) for i in range(MAX_BATCH + 1)]
        else:
            item.body.text.text = "x" * (MAX_REQUEST_BYTES + 4096)
        self._append(self._spell(data, raw_cid) if canonical_id(raw_cid) else raw_cid, inputs)

    @rule(data=st.data())
    def replace(self, data: st.DataObject) -> None:
        raw_cid, conv = self._conversation(data)
        if conv is None and data.draw(st.booleans()) and self._known():
            conv = data.draw(st.sampled_from(self._known()))  # its ids, wrong conversation
        mode = "neither" if rarely(data, 5) else data.draw(st.sampled_from(REPLACE_MODES))
        raw_from, raw_to = self._ends(data, conv) if mode == "range" else ("", "")
        if mode == "after":
            raw_from = self._message(data, conv, detached_ok=False)
        elif mode == "before":
            raw_to = self._message(data, conv, detached_ok=False)
        new = self._messages(data, conv, 4, unique=True)
        if new and rarely(data, 10):
            new.append(self._spell(data, canonical_id(new[0]) or new[0]))  # listed twice
        if mode in ("after", "before") and rarely(data, 20):
            anchor = raw_from or raw_to
            new.append(self._spell(data, canonical_id(anchor) or anchor))  # the anchor itself
        if mode == "range" and conv is not None and rarely(data, 10):
            # The range by itself: no change, and still a change of updated_at.
            start, end = canonical_id(raw_from), canonical_id(raw_to)
            if start in conv.ordering and end in conv.ordering:
                i, j = conv.ordering.index(start), conv.ordering.index(end)
                new = conv.ordering[i : j + 1]
        self._replace(raw_cid, raw_from, raw_to, new)

    @precondition(lambda self: any(c.ordering and c.detached() for c in self._known()))
    @rule(data=st.data())
    def reattach(self, data: st.DataObject) -> None:
        """Put detached messages back (SEMANTICS "Model": a later Replace can)."""
        conv = data.draw(st.sampled_from([c for c in self._known() if c.ordering and c.detached()]))
        detached = conv.detached()
        new = data.draw(st.lists(st.sampled_from(detached), min_size=1, unique=True))
        if data.draw(st.booleans()):  # and move one from the ordering too
            new.insert(
                data.draw(st.integers(0, len(new))), data.draw(st.sampled_from(conv.ordering))
            )
        i = data.draw(st.integers(0, len(conv.ordering) - 1))
        j = data.draw(st.integers(i, len(conv.ordering) - 1))
        mode = data.draw(st.sampled_from(REPLACE_MODES))
        raw_from = self._spell(data, conv.ordering[i]) if mode in ("range", "after") else ""
        raw_to = self._spell(data, conv.ordering[j]) if mode in ("range", "before") else ""
        self._replace(
            self._spell(data, conv.id), raw_from, raw_to, [self._spell(data, n) for n in new]
        )

    @precondition(lambda self: any(c.ordering for c in self._known()))
    @rule(data=st.data())
    def summarise(self, data: st.DataObject) -> None:
        """The documented summarisation: append a summary, replace a range by
        it; sometimes each step names the version it expects (if-version),
        sometimes a stale one, as if another writer had come between."""
        conv = data.draw(st.sampled_from([c for c in self._known() if c.ordering]))
        i = data.draw(st.integers(0, len(conv.ordering) - 1))
        j = data.draw(st.integers(i, len(conv.ordering) - 1))
        first, last = conv.ordering[i], conv.ordering[j]
        summary = pb.AppendMessageInput(role=ASSISTANT, kind="summary", body=data.draw(bodies()))
        appended = self._append(conv.id, [summary], self._expected_version(data, conv))
        if appended is None:  # a stale version: nothing to summarise with
            return
        replacing = self._expected_version(data, conv)
        self._replace(conv.id, first, last, [appended.appended[0].id], replacing)

    def _expected_version(self, data: st.DataObject, conv: Conversation) -> int | None:
        """No if-version, the conversation's version, or another one."""
        choice = data.draw(st.sampled_from(["none", "current", "current", "stale"]))
        if choice == "none":
            return None
        if choice == "current":
            return conv.version
        return data.draw(st.sampled_from([0, conv.version - 1, conv.version + 1]))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        raw_cid, conv = self._conversation(data)
        mode = "neither" if rarely(data, 5) else data.draw(st.sampled_from(DELETE_MODES))
        raw_from, raw_to = self._ends(data, conv) if mode == "range" else ("", "")
        if mode == "from":
            raw_from = self._message(data, conv, detached_ok=False)
        elif mode == "to":
            raw_to = self._message(data, conv, detached_ok=False)
        request = pb.DeleteConversationMessagesRangeRequest(
            conversation_id=raw_cid, from_message_id=raw_from, to_message_id=raw_to
        )
        self._call(
            "DeleteConversationMessagesRange",
            lambda: self.client.DeleteConversationMessagesRange.with_call(
                request, timeout=RPC_TIMEOUT_S
            ),
            self.model.delete(raw_cid, raw_from, raw_to),
            raw_cid,
        )

    # --- rules: snapshots --------------------------------------------------------------

    @rule(data=st.data())
    def create_snapshot(self, data: st.DataObject) -> None:
        raw_cid, conv = self._conversation(data)
        ids = self._messages(data, conv, 5, unique=False)
        repeat = data.draw(st.booleans())
        if ids and repeat:  # ids may repeat
            ids.insert(data.draw(st.integers(0, len(ids))), data.draw(st.sampled_from(ids)))
        if conv is not None and len(conv.ordering) > DEFAULT_PAGE_SIZE and rarely(data, 20):
            # Long enough for the default page size and the cap to show.
            ids = conv.ordering + conv.ordering[: data.draw(st.integers(0, 150))]
        request = pb.CreateSnapshotRequest(conversation_id=raw_cid, message_ids=ids)
        self._call(
            "CreateSnapshot",
            lambda: self.client.CreateSnapshot.with_call(request, timeout=RPC_TIMEOUT_S),
            self.model.create_snapshot(raw_cid, ids),
            raw_cid,
        )


class AgentStateMachine(AgynioWrites):
    """All nine RPCs: the writes, long conversations, and every read and
    paging sequence."""

    def _can_grow(self) -> bool:
        sizes = [len(c.ordering) for c in self.model.conversations.values()]
        return sum(sizes) < 2500 and max(sizes, default=0) <= MAX_PAGE_SIZE

    @precondition(_can_grow)
    @rule(data=st.data())
    def append_bulk(self, data: st.DataObject) -> None:
        """Enough messages to see the default page size and the cap at work."""
        cid = data.draw(st.sampled_from(self.pool))
        count = data.draw(st.sampled_from([150, MAX_BATCH]))
        self._append(cid, [_bulk_input(i) for i in range(count)])

    @rule(data=st.data(), rpc=st.sampled_from([Rpc.SNAPSHOT_MESSAGES, Rpc.SNAPSHOT_IDS]))
    def list_snapshot(self, data: st.DataObject, rpc: Rpc) -> None:
        token: TokenChoice = self._token(data, rpc) if data.draw(st.booleans()) else ""
        raw_sid, _ = self._target_for(data, token, "snapshot")
        self._list_snapshot(rpc, raw_sid, data.draw(PAGE_SIZES), token)

    # --- rules: reads ----------------------------------------------------------------------

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        self._get(self._conversation(data)[0])

    @rule(data=st.data())
    def list_messages(self, data: st.DataObject) -> None:
        token: TokenChoice = self._token(data, Rpc.MESSAGES) if data.draw(st.booleans()) else ""
        raw_cid, record = self._target_for(data, token, "conversation")
        roles, kinds = self._filters(data)
        if record is not None and record.rpc is Rpc.MESSAGES:
            # The token's own filter, as a set (any order, repeats allowed),
            # or one half of it changed; other filters are drawn above.
            own_roles = data.draw(st.permutations(sorted(record.roles)))
            own_kinds = data.draw(st.permutations(sorted(record.kinds)))
            if own_roles and rarely(data, 25):
                own_roles = [*own_roles, own_roles[0]]
            if own_kinds and rarely(data, 25):
                own_kinds = [own_kinds[-1], *own_kinds]
            if not rarely(data, 30):
                roles, kinds = own_roles, own_kinds
            elif data.draw(st.booleans()):
                roles, kinds = own_roles, _other(kinds, record.kinds, "never-used")
            else:
                roles, kinds = _other(roles, record.roles, int(USER)), own_kinds
        self._list_messages(raw_cid, roles, kinds, self._page_size(data, token), token)

    @rule(data=st.data())
    def list_ids(self, data: st.DataObject) -> None:
        token: TokenChoice = self._token(data, Rpc.IDS) if data.draw(st.booleans()) else ""
        raw_cid, _ = self._target_for(data, token, "conversation")
        self._list_ids(raw_cid, self._page_size(data, token), token)

    @staticmethod
    def _page_size(data: st.DataObject, token: TokenChoice) -> int:
        """Small first pages (mostly), so that paging sequences stay open
        while the conversation changes; any size otherwise."""
        first = token == "" and not rarely(data, 40)
        size: int = data.draw(SMALL_PAGES if first else PAGE_SIZES)
        return size

    def _stale(self) -> list[TokenRecord]:
        """Tokens of the conversation lists whose conversation changed since."""
        conversations = self.model.conversations
        return [
            t
            for t in self.model.tokens
            if t.rpc in (Rpc.MESSAGES, Rpc.IDS) and conversations[t.target].changed > t.issued
        ]

    @precondition(lambda self: any(len(c.ordering) > 1 for c in self._known()))
    @rule(data=st.data(), rpc=st.sampled_from([Rpc.MESSAGES, Rpc.IDS]))
    def start_paging(self, data: st.DataObject, rpc: Rpc) -> None:
        """A first small page, so that later changes meet an open paging sequence."""
        conv = data.draw(st.sampled_from([c for c in self._known() if len(c.ordering) > 1]))
        size = data.draw(st.integers(1, len(conv.ordering) - 1))
        if rpc is Rpc.IDS:
            self._list_ids(conv.id, size, "")
            return
        roles, kinds = ([], []) if data.draw(st.booleans()) else self._filters(data)
        self._list_messages(conv.id, roles, kinds, size, "")

    @precondition(lambda self: bool(self._stale()))
    @rule(data=st.data())
    def continue_after_change(self, data: st.DataObject) -> None:
        """Follow a token issued before appends, deletes or replaces, as SEMANTICS
        "Paging is stable" describes, to its end."""
        record = data.draw(st.sampled_from(self._stale()))
        size = data.draw(SMALL_PAGES)
        token: TokenChoice = record
        for _ in range(10_000):
            self.model.last_token = None
            cid = self._spell(data, record.target)
            if record.rpc is Rpc.MESSAGES:
                roles, kinds = sorted(record.roles), sorted(record.kinds)
                page = self._list_messages(cid, roles, kinds, size, token)
                next_token = "" if page is None else page.next_page_token
            else:
                ids = self._list_ids(cid, size, token)
                next_token = "" if ids is None else ids.next_page_token
            if not next_token or rarely(data, 30):
                break
            assert self.model.last_token is not None
            token = self.model.last_token

    @precondition(lambda self: bool(self.model.tokens))
    @rule(data=st.data())
    def misuse_token(self, data: st.DataObject) -> None:
        """An issued token sent with another filter, conversation, snapshot or
        RPC, or altered: SEMANTICS "a token is ... bound to its conversation
        and to the filter it was issued with"."""
        how = data.draw(st.sampled_from(["kinds", "roles", "target", "rpc", "altered"]))
        filtered = [t for t in self.model.tokens if t.rpc is Rpc.MESSAGES]
        if how not in ("kinds", "roles") or not filtered:
            filtered = self.model.tokens
        record = data.draw(st.sampled_from(filtered))
        token: TokenChoice = record
        if how == "altered":
            token = Tampered(record, _alter(data, record.token))
        size = data.draw(SMALL_PAGES)
        rpc = record.rpc
        if how == "rpc":
            rpc = {
                Rpc.MESSAGES: Rpc.IDS,
                Rpc.IDS: Rpc.MESSAGES,
                Rpc.SNAPSHOT_MESSAGES: Rpc.SNAPSHOT_IDS,
                Rpc.SNAPSHOT_IDS: Rpc.SNAPSHOT_MESSAGES,
            }[rpc]
        target = self._spell(data, record.target)
        if rpc.of_snapshot:
            if how == "target":
                others = [sid for sid in self.model.snapshots if sid != record.target]
                target = self._spell(data, data.draw(st.sampled_from(others or [new_uuid()])))
            self._list_snapshot(rpc, target, size, token)
            return
        if how == "target":
            others = [c.id for c in self._known() if c.id != record.target]
            target = self._spell(data, data.draw(st.sampled_from(others or [new_uuid()])))
        roles, kinds = sorted(record.roles), sorted(record.kinds)
        if how == "kinds":
            rpc, kinds = Rpc.MESSAGES, _other(kinds, record.kinds, "never-used")
        elif how == "roles":
            rpc, roles = Rpc.MESSAGES, _other(roles, record.roles, int(USER))
        if rpc is Rpc.IDS:
            self._list_ids(target, size, token)
        else:
            self._list_messages(target, roles, kinds, size, token)

    @precondition(lambda self: any(len(c.ordering) > DEFAULT_PAGE_SIZE for c in self._known()))
    @rule(data=st.data(), rpc=st.sampled_from([Rpc.MESSAGES, Rpc.IDS]))
    def list_long(self, data: st.DataObject, rpc: Rpc) -> None:
        """Page sizes of 0 or less (the default) and above the cap, where it shows."""
        conv = data.draw(
            st.sampled_from([c for c in self._known() if len(c.ordering) > DEFAULT_PAGE_SIZE])
        )
        size = data.draw(
            st.one_of(
                st.sampled_from([0, -1, MAX_PAGE_SIZE + 1]),
                st.integers(-(2**31), -1),
                st.integers(MAX_PAGE_SIZE + 1, 2**31 - 1),
            )
        )
        # The bulk messages' roles and kinds, so that filters keep pages full.
        roles = data.draw(st.sampled_from([[], [int(USER)], [int(ASSISTANT), int(TOOL)]]))
        kinds = data.draw(st.sampled_from([[], [""], ["question", "answer"]]))
        token: TokenChoice = ""
        for _ in range(data.draw(st.integers(1, 3))):
            self.model.last_token = None
            if rpc is Rpc.IDS:
                ids = self._list_ids(conv.id, size, token)
                next_token = "" if ids is None else ids.next_page_token
            else:
                page = self._list_messages(conv.id, roles, kinds, size, token)
                next_token = "" if page is None else page.next_page_token
            if not next_token or self.model.last_token is None:
                break
            token = self.model.last_token

    @precondition(lambda self: bool(self._known()))
    @rule(data=st.data())
    def read_back(self, data: st.DataObject) -> None:
        conv = data.draw(st.sampled_from(self._known()))
        # Small pages on small conversations only, to keep the run short.
        sizes = [1, 7, 1000] if len(conv.ordering) < 50 else [250, 1000]
        self._read_conversation(conv.id, data.draw(st.sampled_from(sizes)))

    def teardown(self) -> None:
        """Everything reads back as the model says; snapshots unchanged; the
        conversations that only saw failed appends were never created."""
        for cid in self.pool:
            if cid in self.model.conversations:
                self._read_conversation(cid, 1000)
            else:
                self._get(cid)
        for sid in self.model.snapshots:
            self._read_snapshot(sid)
        self.stats.seen.update(self.model.seen)


def reported_versions(call: grpc.Call) -> list[str | bytes]:
    """The x-conversation-version values of a call's trailing metadata."""
    return [v for k, v in call.trailing_metadata() or () if k == "x-conversation-version"]


def rarely(data: st.DataObject, percent: int) -> bool:
    """True in about ``percent`` % of draws. Hypothesis favours the ends of a
    range and shrinks towards 0, so the rare case sits in the middle."""
    return 40 <= data.draw(st.integers(0, 99)) < 40 + percent


T = TypeVar("T")


def new_uuid() -> str:
    return str(uuid.uuid4())


def _other(values: list[T], issued: frozenset[T], toggle: T) -> list[T]:
    """``values``, unless that is the ``issued`` filter: then toggle one item."""
    if frozenset(values) != issued:
        return values
    return [v for v in values if v != toggle] if toggle in values else [*values, toggle]


def _token_text(token: TokenChoice) -> str:
    if isinstance(token, str):
        return token
    return token.token


def _alter(data: st.DataObject, token: str) -> str:
    how = data.draw(st.sampled_from(["half", "chop", "flip", "extend"]))
    if how == "half":
        return token[: len(token) // 2]
    if how == "chop":
        return token[:-1]
    if how == "extend":
        return token + "A"
    at = data.draw(st.integers(0, len(token) - 1))
    return token[:at] + ("B" if token[at] == "A" else "A") + token[at + 1 :]


def _bulk_input(i: int) -> pb.AppendMessageInput:
    body = pb.MessageBody(text=pb.TextBody(text=f"bulk {i}"))
    return pb.AppendMessageInput(role=ROLES[i % 3], kind=KINDS[i % 3], body=body)


# --- the test ------------------------------------------------------------------------


@pytest.mark.timeout(max(300, EXAMPLES * STEPS))
def test_random_call_sequences_match_the_model(stub: Stub, backend: str) -> None:
    stats = CallStats()
    started = time.monotonic()

    class OnThisServer(AgentStateMachine):
        def __init__(self) -> None:
            super().__init__(stub, stats)

    try:
        run_state_machine_as_test(
            OnThisServer,
            settings=settings(AGAINST_A_SERVER, max_examples=EXAMPLES, stateful_step_count=STEPS),
        )
    finally:
        elapsed = time.monotonic() - started
        print(f"\nmodel test [{backend}] in {elapsed:.1f} s: {stats.summary()}")
        situations = ", ".join(f"{name}={n}" for name, n in sorted(stats.seen.items()))
        print(f"model test [{backend}] situations: {situations}")
