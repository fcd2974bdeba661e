"""An in-memory model of AgentStateService, written from SEMANTICS.md alone.

For every call the model predicts the status codes the spec allows (with the
field names the error details must mention) and, for a success, checks the
response against its state before adopting it. Values the server chooses
(message and snapshot ids, timestamps, page tokens) are learnt from the
responses and then held to the spec: ids are new canonical UUIDs, updated_at
strictly increases on every change and is read back exactly, created_at and
contents never change, snapshots read back identically forever.

Where SEMANTICS.md leaves a point open the model accepts every reading, and a
comment starting with "Open in the spec" says so; everywhere else it is exact.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state_client._gen import agent_state_pb2 as pb

OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
ABORTED = grpc.StatusCode.ABORTED

# SEMANTICS.md, "RPCs" and "Content" (the defaults of a fresh server).
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH = 1000
MAX_KIND_CODE_POINTS = 256
MAX_REQUEST_BYTES = 3 * 1024 * 1024
VALID_ROLES = frozenset({pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL})

# --- identifiers ---------------------------------------------------------------

_HEX = "[0-9a-fA-F]"
_HYPHENATED = re.compile(f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")
_HEX32 = re.compile(f"{_HEX}{{32}}")
_URN = "urn:uuid:"


def canonical_id(raw: str) -> str | None:
    """The lowercase hyphenated form of an accepted UUID spelling, else None.

    Accepted (SEMANTICS "Identifiers"): 8-4-4-4-12 hex digits in any case, the
    same in braces or after ``urn:uuid:``, or 32 hex digits.
    """
    core, wrapped = raw, True
    if raw.startswith("{") and raw.endswith("}"):
        core = raw[1:-1]
    elif raw.startswith(_URN):
        core = raw[len(_URN) :]
    else:
        wrapped = False
    if _HYPHENATED.fullmatch(core) or (not wrapped and _HEX32.fullmatch(core)):
        return str(uuid.UUID(core.replace("-", "")))
    return None


def is_ambiguous_id(raw: str) -> bool:
    """Spellings on which the spec is open; tests never send them.

    Open in the spec: "the same in braces or after urn:uuid:" follows the
    8-4-4-4-12 form, so whether ``{<32 hex>}``, ``urn:uuid:<32 hex>``, an
    upper-case ``URN:UUID:`` or braces and prefix together are accepted is
    not said.
    """
    if canonical_id(raw) is not None:
        return False
    core, stripped = raw, True
    while stripped:
        stripped = False
        if core.lower().startswith(_URN):
            core, stripped = core[len(_URN) :], True
        if len(core) >= 2 and core.startswith("{") and core.endswith("}"):
            core, stripped = core[1:-1], True
    return core != raw and bool(_HYPHENATED.fullmatch(core) or _HEX32.fullmatch(core))


def micros(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def effective_page_size(page_size: int) -> int:
    """0 or less means the default; the cap applies above it."""
    return DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)


def body_bytes(body: pb.MessageBody) -> bytes:
    return body.SerializeToString(deterministic=True)


# --- expected outcomes -----------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """The status codes the spec allows for one call.

    Each allowed code maps to the field names of which the error details must
    mention one (empty: not checked, as for OK or gRPC's own size error).
    An error's details must also hold each of ``mentions`` as a word (the
    current version an ABORTED call names).
    """

    codes: Mapping[grpc.StatusCode, tuple[str, ...]]
    why: str
    mentions: tuple[str, ...] = ()

    def check(self, code: grpc.StatusCode, details: str) -> None:
        names = "/".join(c.name for c in self.codes)
        assert code in self.codes, f"expected {names} ({self.why}), got {code.name}: {details!r}"
        fields = self.codes[code]
        assert not fields or any(f in details for f in fields), (
            f"{code.name} details should name one of {list(fields)} ({self.why}): {details!r}"
        )
        if code is not OK:
            for word in self.mentions:
                assert re.search(rf"(?<!\w){re.escape(word)}(?!\w)", details), (
                    f"{code.name} details should mention {word!r} ({self.why}): {details!r}"
                )


def succeeds(why: str = "valid") -> Outcome:
    return Outcome({OK: ()}, why)


def invalid(fields: Iterable[str], why: str) -> Outcome:
    return Outcome({INVALID_ARGUMENT: tuple(dict.fromkeys(fields))}, why)


def not_found(fields: Iterable[str], why: str) -> Outcome:
    return Outcome({NOT_FOUND: tuple(dict.fromkeys(fields))}, why)


# The answer to any call naming a conversation that does not exist.
UNKNOWN_CONVERSATION = not_found(["conversation_id"], "unknown conversation")


def aborted(field: str, current: int, why: str) -> Outcome:
    """A version mismatch: it names the field and the current version."""
    return Outcome({ABORTED: (field,)}, why, mentions=(str(current),))


R = TypeVar("R")


def _rejected(_: object) -> None:
    raise AssertionError("the model allowed no success here")


@dataclass(frozen=True)
class Expected(Generic[R]):
    """What one call may return; ``accept`` checks a success and adopts it."""

    outcome: Outcome
    accept: Callable[[R], None] = _rejected


# --- state -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredMessage:
    id: str
    conversation_id: str
    role: int
    kind: str
    body: bytes
    created_at: int

    def check(self, message: pb.Message, conversation_id: str, where: str) -> None:
        """``message`` as read back: the stored content, under ``conversation_id``."""
        assert message.id == self.id, f"{where}: id {message.id} != {self.id}"
        assert message.conversation_id == conversation_id, (
            f"{where}: conversation_id {message.conversation_id!r} != {conversation_id!r}"
        )
        assert int(message.role) == self.role, f"{where}: role of {self.id} changed"
        assert message.kind == self.kind, f"{where}: kind of {self.id} changed"
        assert body_bytes(message.body) == self.body, f"{where}: body of {self.id} changed"
        assert message.HasField("created_at"), f"{where}: {self.id} has no created_at"
        assert micros(message.created_at) == self.created_at, (
            f"{where}: created_at of {self.id} changed"
        )


@dataclass
class Conversation:
    id: str
    updated_at: int
    ordering: list[str] = field(default_factory=list)
    # Messages that exist: in the ordering or detached (deleted ones are gone).
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    # Ids removed for good, in deletion order (dicts keep draws reproducible).
    deleted: dict[str, None] = field(default_factory=dict)
    # (model epoch, ids a Replace named in new_message_ids): the "moved" messages.
    moves: list[tuple[int, frozenset[str]]] = field(default_factory=list)
    # Model epoch of the last change.
    changed: int = 0
    # Changes so far (COMPANION.md "Versions": 1 when created, +1 a change).
    version: int = 0
    # What the companion API shows of it besides the ordering: the title,
    # labels, own retention ((max_idle in microseconds, max_messages); None:
    # the server's default), and when it was created (an append that
    # creates it: the updated_at it gives it).
    title: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    retention: tuple[int, int] | None = None
    created_at: int = 0
    # Model epoch of the last change of its labels.
    relabelled: int = 0

    def detached(self) -> list[str]:
        placed = set(self.ordering)
        return [i for i in self.messages if i not in placed]

    def filtered(self, roles: frozenset[int], kinds: frozenset[str]) -> list[str]:
        return [
            i
            for i in self.ordering
            if (not roles or self.messages[i].role in roles)
            and (not kinds or self.messages[i].kind in kinds)
        ]

    def moved_since(self, epoch: int) -> set[str]:
        return {i for at, ids in self.moves if at > epoch for i in ids}


@dataclass(frozen=True)
class Snapshot:
    id: str
    conversation_id: str
    items: tuple[StoredMessage, ...]
    created_at: int = 0


class Rpc(enum.Enum):
    MESSAGES = "ListConversationMessages"
    IDS = "ListConversationMessageIds"
    SNAPSHOT_MESSAGES = "ListSnapshotMessages"
    SNAPSHOT_IDS = "ListSnapshotMessageIds"

    @property
    def of_snapshot(self) -> bool:
        return self in (Rpc.SNAPSHOT_MESSAGES, Rpc.SNAPSHOT_IDS)


@dataclass(frozen=True)
class TokenRecord:
    """A next_page_token and the paging sequence it continues."""

    token: str
    rpc: Rpc
    target: str  # conversation or snapshot id
    roles: frozenset[int]
    kinds: frozenset[str]
    # Conversation lists: ids the sequence returned so far, the last of them,
    # and the model epoch at which the sequence began.
    returned: frozenset[str] = frozenset()
    last_id: str = ""
    since: int = 0
    # Model epoch when this token was issued.
    issued: int = 0
    # Snapshot lists: items read so far.
    offset: int = 0


@dataclass(frozen=True)
class Tampered:
    """An issued token, cut short or with a character changed."""

    of: TokenRecord
    token: str


# A list request carries one of these: "" (first page), a string the server
# never issued (malformed), an issued token, or an altered one.
TokenChoice = TokenRecord | Tampered | str


@dataclass
class Model:
    conversations: dict[str, Conversation] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    tokens: list[TokenRecord] = field(default_factory=list)
    # Every id the server handed out, to check that none comes twice.
    issued_ids: set[str] = field(default_factory=set)
    # Counts successful changes; paging sequences remember when they began.
    epoch: int = 0
    last_token: TokenRecord | None = None
    max_tokens: int = 40
    # How often each interesting situation came up, to report coverage.
    seen: Counter[str] = field(default_factory=Counter)

    # --- learning server-chosen values ---------------------------------------------

    def _new_id(self, value: str, what: str) -> None:
        assert canonical_id(value) == value, f"{what} {value!r} is not a canonical UUID"
        assert value not in self.issued_ids, f"{what} {value} was handed out before"
        self.issued_ids.add(value)

    @staticmethod
    def _metadata(conv_id: str, metadata: pb.ConversationMetadata, count: int) -> int:
        assert metadata.conversation_id == conv_id, (
            f"metadata.conversation_id {metadata.conversation_id!r} != {conv_id!r}"
        )
        assert metadata.message_count == count, (
            f"message_count {metadata.message_count} != {count} (length of the ordering)"
        )
        assert metadata.HasField("updated_at"), "metadata without updated_at"
        assert metadata.updated_at.nanos % 1000 == 0, "updated_at finer than microseconds"
        return micros(metadata.updated_at)

    def _check_read_metadata(self, conv: Conversation, metadata: pb.ConversationMetadata) -> None:
        stamp = self._metadata(conv.id, metadata, len(conv.ordering))
        # Reads return exactly the stored value; nothing but a change moves it.
        assert stamp == conv.updated_at, (
            f"updated_at read back as {stamp}, stored {conv.updated_at}"
        )

    def _advance(self, conv: Conversation, metadata: pb.ConversationMetadata, count: int) -> None:
        stamp = self._metadata(conv.id, metadata, count)
        assert stamp > conv.updated_at, (
            f"updated_at did not strictly increase: {stamp} after {conv.updated_at}"
        )
        conv.updated_at = stamp
        conv.version += 1
        self.epoch += 1
        conv.changed = self.epoch

    def _stale(self, cid: str, if_version: int | None) -> Outcome | None:
        """ABORTED when the write names another version than the
        conversation's (0: it does not exist), checked after what the
        request alone shows and before anything must exist."""
        conv = self.conversations.get(cid)
        current = 0 if conv is None else conv.version
        if if_version is None or if_version == current:
            return None
        self.seen["if-version: stale"] += 1
        return aborted("if-version", current, f"if-version {if_version}, at {current}")

    def _remember(self, record: TokenRecord) -> None:
        self.last_token = record
        self.tokens.append(record)
        del self.tokens[: -self.max_tokens]

    # --- AppendConversationMessages -------------------------------------------------

    def append(
        self,
        raw_cid: str,
        inputs: Sequence[pb.AppendMessageInput],
        request_bytes: int,
        if_version: int | None = None,
    ) -> Expected[pb.AppendConversationMessagesResponse]:
        problems = self.append_problems(raw_cid, inputs)
        cid = canonical_id(raw_cid)
        if request_bytes > MAX_REQUEST_BYTES:
            # gRPC's own limit gives RESOURCE_EXHAUSTED with its own text;
            # the service's check gives INVALID_ARGUMENT.
            return Expected(
                Outcome({RESOURCE_EXHAUSTED: (), INVALID_ARGUMENT: ()}, "request over 3 MiB")
            )
        if problems:
            return Expected(invalid(problems, "malformed append"))
        assert cid is not None
        if stale := self._stale(cid, if_version):
            return Expected(stale)
        return Expected(succeeds("append"), self._appending(cid, inputs))

    def append_problems(self, raw_cid: str, inputs: Sequence[pb.AppendMessageInput]) -> list[str]:
        """The fields of an append that the request alone shows are wrong."""
        problems: list[str] = []
        if canonical_id(raw_cid) is None:
            problems.append("conversation_id")
        if not inputs or len(inputs) > MAX_BATCH:
            problems.append("messages")
        for i, item in enumerate(inputs):
            body = item.body
            if (
                item.role not in VALID_ROLES
                or not item.HasField("body")
                or body.WhichOneof("body") is None
                or (
                    body.WhichOneof("body") == "tool_output"
                    and body.tool_output.WhichOneof("output") is None
                )
                or len(item.kind) > MAX_KIND_CODE_POINTS
            ):
                problems.append(f"messages[{i}]")
        return problems

    def _appending(
        self, cid: str, inputs: Sequence[pb.AppendMessageInput]
    ) -> Callable[[pb.AppendConversationMessagesResponse], None]:
        """Checks and adopts the answer of an append of ``inputs`` that the
        model expects to succeed (creating the conversation if absent)."""
        conv = self.conversations.get(cid)
        before = 0 if conv is None else len(conv.ordering)

        def accept(response: pb.AppendConversationMessagesResponse) -> None:
            target = conv or Conversation(cid, updated_at=-1)
            assert len(response.appended) == len(inputs), "appended is not the whole batch"
            stored: list[StoredMessage] = []
            for i, (message, item) in enumerate(zip(response.appended, inputs, strict=True)):
                self._new_id(message.id, f"appended[{i}].id")
                assert message.HasField("created_at"), f"appended[{i}] has no created_at"
                copy = StoredMessage(
                    message.id,
                    cid,
                    int(item.role),
                    item.kind,
                    body_bytes(item.body),
                    micros(message.created_at),
                )
                copy.check(message, cid, f"appended[{i}]")
                stored.append(copy)
            self._advance(target, response.metadata, before + len(inputs))
            if conv is None:
                # Open in the spec: created_at of a conversation an append
                # creates; the server gives it the append's updated_at.
                target.created_at = target.updated_at
            for copy in stored:
                target.messages[copy.id] = copy
                target.ordering.append(copy.id)
            self.conversations[cid] = target

        return accept

    # --- GetConversation -------------------------------------------------------------

    def named(self, raw_cid: str) -> Conversation | Outcome:
        """The conversation a call names by `conversation_id` alone, or why
        there is none: a malformed id, or an unknown conversation."""
        cid = canonical_id(raw_cid)
        if cid is None:
            return invalid(["conversation_id"], "malformed conversation_id")
        conv = self.conversations.get(cid)
        if conv is None:
            return UNKNOWN_CONVERSATION
        return conv

    def get(self, raw_cid: str) -> Expected[pb.GetConversationResponse]:
        conv = self.named(raw_cid)
        if isinstance(conv, Outcome):
            return Expected(conv)

        def accept(response: pb.GetConversationResponse) -> None:
            self._check_read_metadata(conv, response.metadata)

        return Expected(succeeds(), accept)

    # --- ReplaceConversationMessagesRange / DeleteConversationMessagesRange ---------

    def _range(
        self,
        raw_cid: str,
        raw_from: str,
        raw_to: str,
        raw_new: Sequence[str] | None,
        if_version: int | None = None,
    ) -> tuple[Outcome | None, Conversation | None, list[str]]:
        """Checks (1) to (5) of SEMANTICS "Errors" for a range request.

        Returns the failure, or the conversation and the canonical new ids.
        """
        problems: list[str] = []
        cid = canonical_id(raw_cid)
        if cid is None:
            problems.append("conversation_id")
        has_from, has_to = raw_from != "", raw_to != ""
        from_id = canonical_id(raw_from) if has_from else None
        to_id = canonical_id(raw_to) if has_to else None
        if has_from and from_id is None:
            problems.append("from_message_id")
        if has_to and to_id is None:
            problems.append("to_message_id")
        if not has_from and not has_to:
            problems += ["from_message_id", "to_message_id"]
        new: list[str] = []
        if raw_new is not None:
            first_at: dict[str, int] = {}
            for i, raw in enumerate(raw_new):
                canonical = canonical_id(raw)
                if canonical is None:
                    problems.append(f"new_message_ids[{i}]")
                    continue
                if canonical in first_at:
                    # Open in the spec: which of the two indexes is named.
                    problems += [f"new_message_ids[{first_at[canonical]}]", f"new_message_ids[{i}]"]
                first_at.setdefault(canonical, i)
                new.append(canonical)
            if has_from != has_to:
                if not raw_new:
                    problems.append("new_message_ids")
                anchor = from_id if has_from else to_id
                if anchor is not None and anchor in first_at:
                    problems += [
                        f"new_message_ids[{first_at[anchor]}]",
                        "from_message_id" if has_from else "to_message_id",
                    ]
        if problems:
            return invalid(problems, "the request alone is invalid"), None, []
        assert cid is not None
        if stale := self._stale(cid, if_version):
            return stale, None, []
        conv = self.conversations.get(cid)
        if conv is None:
            return UNKNOWN_CONVERSATION, None, []
        missing = [
            name
            for name, value in (("from_message_id", from_id), ("to_message_id", to_id))
            if value is not None and value not in conv.ordering
        ]
        if missing:
            return not_found(missing, "range end not in the ordering"), None, []
        if (
            from_id is not None
            and to_id is not None
            and conv.ordering.index(from_id) > conv.ordering.index(to_id)
        ):
            return invalid(["from_message_id", "to_message_id"], "from after to"), None, []
        absent = [f"new_message_ids[{i}]" for i, n in enumerate(new) if n not in conv.messages]
        if absent:
            return not_found(absent, "new id is no message of the conversation"), None, []
        return None, conv, new

    @staticmethod
    def _span(conv: Conversation, raw_from: str, raw_to: str) -> tuple[int, int]:
        """[start, end) of the ordering the request covers (Delete's modes)."""
        start = conv.ordering.index(canonical_id(raw_from) or "") if raw_from else 0
        end = conv.ordering.index(canonical_id(raw_to) or "") + 1 if raw_to else len(conv.ordering)
        return start, end

    def replace(
        self,
        raw_cid: str,
        raw_from: str,
        raw_to: str,
        raw_new: Sequence[str],
        if_version: int | None = None,
    ) -> Expected[pb.ReplaceConversationMessagesRangeResponse]:
        failure, conv, new = self._range(raw_cid, raw_from, raw_to, raw_new, if_version)
        if failure is not None:
            return Expected(failure)
        assert conv is not None
        ordering = conv.ordering
        if raw_from and raw_to:
            start, end = self._span(conv, raw_from, raw_to)
        elif raw_from:  # right after from; nothing removed
            start = end = ordering.index(canonical_id(raw_from) or "") + 1
        else:  # right before to; nothing removed
            start = end = ordering.index(canonical_id(raw_to) or "")
        replaced = ordering[start:end]
        moving = set(new)
        # Named ids leave their old place: the ordering never holds an id twice.
        result = (
            [i for i in ordering[:start] if i not in moving]
            + new
            + [i for i in ordering[end:] if i not in moving]
        )

        def accept(response: pb.ReplaceConversationMessagesRangeResponse) -> None:
            assert list(response.replaced_message_ids) == replaced, (
                f"replaced_message_ids {list(response.replaced_message_ids)} != {replaced}"
            )
            assert list(response.inserted_message_ids) == new, (
                f"inserted_message_ids {list(response.inserted_message_ids)} != {new}"
            )
            self._advance(conv, response.metadata, len(result))
            placed, inside = set(ordering), set(replaced)
            self.seen["replace: an id moved from outside the range"] += any(
                i in placed and i not in inside for i in new
            )
            self.seen["replace: a detached id put back"] += any(i not in placed for i in new)
            self.seen["replace: ids detached"] += any(i not in moving for i in replaced)
            self.seen["replace: nothing changed"] += result == ordering
            conv.ordering = result
            conv.moves.append((self.epoch, frozenset(new)))

        return Expected(succeeds("replace"), accept)

    def delete(
        self, raw_cid: str, raw_from: str, raw_to: str
    ) -> Expected[pb.DeleteConversationMessagesRangeResponse]:
        failure, conv, _ = self._range(raw_cid, raw_from, raw_to, None)
        if failure is not None:
            return Expected(failure)
        assert conv is not None
        start, end = self._span(conv, raw_from, raw_to)
        doomed = conv.ordering[start:end]

        def accept(response: pb.DeleteConversationMessagesRangeResponse) -> None:
            assert list(response.deleted_message_ids) == doomed, (
                f"deleted_message_ids {list(response.deleted_message_ids)} != {doomed}"
            )
            self._advance(conv, response.metadata, len(conv.ordering) - len(doomed))
            del conv.ordering[start:end]
            for i in doomed:
                del conv.messages[i]
                conv.deleted[i] = None

        return Expected(succeeds("delete"), accept)

    # --- CreateSnapshot ----------------------------------------------------------------

    def create_snapshot(
        self, raw_cid: str, raw_ids: Sequence[str]
    ) -> Expected[pb.CreateSnapshotResponse]:
        problems: list[str] = []
        cid = canonical_id(raw_cid)
        if cid is None:
            problems.append("conversation_id")
        if not raw_ids:
            problems.append("message_ids")
        ids = [canonical_id(raw) for raw in raw_ids]
        problems += [f"message_ids[{i}]" for i, value in enumerate(ids) if value is None]
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        assert cid is not None
        conv = self.conversations.get(cid)
        if conv is None:
            return Expected(UNKNOWN_CONVERSATION)
        absent = [f"message_ids[{i}]" for i, value in enumerate(ids) if value not in conv.messages]
        if absent:
            return Expected(not_found(absent, "id is no message of the conversation"))
        items = tuple(conv.messages[value or ""] for value in ids)

        def accept(response: pb.CreateSnapshotResponse) -> None:
            snap = response.snapshot
            self._new_id(snap.snapshot_id, "snapshot_id")
            assert snap.conversation_id == cid, f"snapshot.conversation_id {snap.conversation_id!r}"
            assert snap.HasField("created_at"), "snapshot without created_at"
            # A snapshot is no change: updated_at stays (checked by later reads).
            self.snapshots[snap.snapshot_id] = Snapshot(
                snap.snapshot_id, cid, items, micros(snap.created_at)
            )
            placed = set(conv.ordering)
            self.seen["snapshot: of a detached message"] += any(i not in placed for i in ids)
            self.seen["snapshot: an id repeated"] += len(set(ids)) < len(ids)

        return Expected(succeeds("snapshot"), accept)

    # --- page tokens ---------------------------------------------------------------------

    def _token_verdict(
        self,
        rpc: Rpc,
        target: str | None,
        roles: frozenset[int],
        kinds: frozenset[str],
        token: TokenChoice,
        target_known: bool,
    ) -> tuple[list[str], Outcome | None, TokenRecord | None]:
        """What the token makes of a list request.

        Returns request-alone problems, an outcome that replaces the usual
        one (tokens of another RPC), and the sequence continued (if any).
        """
        if isinstance(token, str):
            return (["page_token"] if token else []), None, None
        if isinstance(token, Tampered):
            problems, outcome, cursor = self._token_verdict(
                rpc, target, roles, kinds, token.of, target_known
            )
            if cursor is None:
                return problems, outcome, None
            # Open in the spec: a token is opaque, and the spec does not
            # promise that an altered one is detected; it may still decode to
            # a cursor of this list. Either way it must not break the list.
            why = "altered token"
            return [], Outcome({INVALID_ARGUMENT: ("page_token",), OK: ()}, why), None
        if target is None:
            return ["page_token"], None, None
        if token.target != target or token.rpc.of_snapshot != rpc.of_snapshot:
            if not target_known:
                # Open in the spec: whether a token bound to something else is
                # "what the request alone shows" (check 1) or comes after the
                # existence check (2) depends on what the opaque token holds.
                why = "token bound elsewhere, target unknown"
                return [], Outcome({INVALID_ARGUMENT: ("page_token",), NOT_FOUND: ()}, why), None
            return ["page_token"], None, None
        if token.rpc != rpc:
            # "Tokens of one RPC need not work with another."
            why = "token of another RPC"
            return [], Outcome({INVALID_ARGUMENT: ("page_token",), OK: ()}, why), None
        if token.roles != roles or token.kinds != kinds:
            return ["page_token"], None, None
        return [], None, token

    # --- ListConversationMessages / ListConversationMessageIds ------------------------------

    def list_messages(
        self,
        raw_cid: str,
        raw_roles: Sequence[int],
        raw_kinds: Sequence[str],
        page_size: int,
        token: TokenChoice,
    ) -> Expected[pb.ListConversationMessagesResponse]:
        outcome, check = self._conversation_page(
            Rpc.MESSAGES, raw_cid, raw_roles, raw_kinds, page_size, token
        )

        def accept(response: pb.ListConversationMessagesResponse) -> None:
            assert check is not None
            conv = self.conversations[canonical_id(raw_cid) or ""]
            self._check_read_metadata(conv, response.metadata)
            for i, message in enumerate(response.messages):
                stored = conv.messages.get(message.id)
                assert stored is not None, f"messages[{i}]: {message.id} is no live message"
                stored.check(message, conv.id, f"messages[{i}]")
            check([m.id for m in response.messages], response.next_page_token)

        return Expected(outcome, accept)

    def list_ids(
        self, raw_cid: str, page_size: int, token: TokenChoice
    ) -> Expected[pb.ListConversationMessageIdsResponse]:
        outcome, check = self._conversation_page(Rpc.IDS, raw_cid, [], [], page_size, token)

        def accept(response: pb.ListConversationMessageIdsResponse) -> None:
            assert check is not None
            check(list(response.message_ids), response.next_page_token)

        return Expected(outcome, accept)

    def _conversation_page(
        self,
        rpc: Rpc,
        raw_cid: str,
        raw_roles: Sequence[int],
        raw_kinds: Sequence[str],
        page_size: int,
        token: TokenChoice,
    ) -> tuple[Outcome, Callable[[list[str], str], None] | None]:
        problems: list[str] = []
        cid = canonical_id(raw_cid)
        if cid is None:
            problems.append("conversation_id")
        if any(r not in VALID_ROLES for r in raw_roles):
            problems.append("roles")
        roles, kinds = frozenset(raw_roles), frozenset(raw_kinds)
        conv = None if cid is None else self.conversations.get(cid)
        token_problems, token_outcome, cursor = self._token_verdict(
            rpc, cid, roles, kinds, token, conv is not None
        )
        problems += token_problems
        if problems:
            return invalid(problems, "the request alone is invalid"), None
        if token_outcome is not None and OK not in token_outcome.codes:
            return token_outcome, None
        if conv is None:
            return UNKNOWN_CONVERSATION, None
        size = effective_page_size(page_size)
        order = conv.filtered(roles, kinds)
        since = self.epoch if cursor is None else cursor.since

        def check(page: list[str], next_token: str) -> None:
            if token_outcome is not None:
                _check_loose_page(order, page, next_token, size)
                return
            _check_conversation_page(conv, order, page, next_token, size, cursor)
            self._note_page(conv, page, page_size, cursor)
            if next_token:
                returned = frozenset(page) | (frozenset() if cursor is None else cursor.returned)
                self._remember(
                    TokenRecord(
                        next_token,
                        rpc,
                        conv.id,
                        roles,
                        kinds,
                        returned,
                        page[-1],
                        since,
                        issued=self.epoch,
                    )
                )

        return (token_outcome or succeeds("list")), check

    def _note_page(
        self, conv: Conversation, page: list[str], page_size: int, cursor: TokenRecord | None
    ) -> None:
        if page_size <= 0 and len(page) == DEFAULT_PAGE_SIZE:
            self.seen["list: a full page of the default size"] += 1
        if page_size > MAX_PAGE_SIZE and len(page) == MAX_PAGE_SIZE:
            self.seen["list: a full page at the cap"] += 1
        if cursor is None:
            return
        self.seen["list: next page"] += 1
        if conv.changed > cursor.issued:
            self.seen["list: next page after a change"] += 1
        moved = conv.moved_since(cursor.since)
        if moved:
            self.seen["list: next page after moves"] += 1
            self.seen["list: moved message listed again"] += bool(cursor.returned & set(page))

    # --- ListSnapshotMessages / ListSnapshotMessageIds ------------------------------------

    def _snapshot_page(
        self, rpc: Rpc, raw_sid: str, page_size: int, token: TokenChoice
    ) -> tuple[Outcome, Callable[[list[str], str], Snapshot] | None]:
        problems: list[str] = []
        sid = canonical_id(raw_sid)
        if sid is None:
            problems.append("snapshot_id")
        snap = None if sid is None else self.snapshots.get(sid)
        token_problems, token_outcome, cursor = self._token_verdict(
            rpc, sid, frozenset(), frozenset(), token, snap is not None
        )
        problems += token_problems
        if problems:
            return invalid(problems, "the request alone is invalid"), None
        if token_outcome is not None and OK not in token_outcome.codes:
            return token_outcome, None
        if snap is None:
            return not_found(["snapshot_id"], "unknown snapshot"), None
        size = effective_page_size(page_size)
        ids = [item.id for item in snap.items]
        offset = 0 if cursor is None else cursor.offset

        def check(page: list[str], next_token: str) -> Snapshot:
            if token_outcome is not None:
                _check_loose_page(ids, page, next_token, size, repeats=True)
                return snap
            # A snapshot never changes, so its pages are exact.
            expected = ids[offset : offset + size]
            assert page == expected, f"snapshot page {page} != {expected} (offset {offset})"
            more = offset + len(page) < len(ids)
            assert bool(next_token) == more, (
                f"next_page_token {'set' if next_token else 'empty'} with "
                f"{len(ids) - offset - len(page)} items left"
            )
            if next_token:
                self._remember(
                    TokenRecord(
                        next_token,
                        rpc,
                        snap.id,
                        frozenset(),
                        frozenset(),
                        offset=offset + len(page),
                    )
                )
            return snap

        return (token_outcome or succeeds("list")), check

    def list_snapshot_messages(
        self, raw_sid: str, page_size: int, token: TokenChoice
    ) -> Expected[pb.ListSnapshotMessagesResponse]:
        outcome, check = self._snapshot_page(Rpc.SNAPSHOT_MESSAGES, raw_sid, page_size, token)

        def accept(response: pb.ListSnapshotMessagesResponse) -> None:
            assert check is not None
            ids = [m.id for m in response.messages]
            snap = check(ids, response.next_page_token)
            by_id = {item.id: item for item in snap.items}
            for i, message in enumerate(response.messages):
                by_id[message.id].check(message, snap.conversation_id, f"snapshot messages[{i}]")

        return Expected(outcome, accept)

    def list_snapshot_ids(
        self, raw_sid: str, page_size: int, token: TokenChoice
    ) -> Expected[pb.ListSnapshotMessageIdsResponse]:
        outcome, check = self._snapshot_page(Rpc.SNAPSHOT_IDS, raw_sid, page_size, token)

        def accept(response: pb.ListSnapshotMessageIdsResponse) -> None:
            assert check is not None
            check(list(response.message_ids), response.next_page_token)

        return Expected(outcome, accept)


# --- page rules ------------------------------------------------------------------------


def _check_loose_page(
    order: list[str], page: list[str], next_token: str, size: int, *, repeats: bool = False
) -> None:
    """A page from a token of another RPC: the spec only says it need not
    work, so when it does, the page must at least be a page of this list."""
    assert len(page) <= size, f"page of {len(page)} over the page size {size}"
    if next_token:
        assert len(page) == size, f"short page ({len(page)} < {size}) with a next_page_token"
    if not repeats:
        assert len(set(page)) == len(page), f"page repeats an id: {page}"
        where = [order.index(i) if i in order else -1 for i in page]
        assert -1 not in where, f"page {page} lists ids not in {order}"
        assert where == sorted(where), f"page {page} is not in the order of {order}"
    elif page:
        assert any(order[s : s + len(page)] == page for s in range(len(order))), (
            f"page {page} is no run of {order}"
        )


def _check_conversation_page(
    conv: Conversation,
    order: list[str],
    page: list[str],
    next_token: str,
    size: int,
    cursor: TokenRecord | None,
) -> None:
    """SEMANTICS "ListConversationMessages": page size, next_page_token, and
    stable paging across appends, deletes and replaces.

    ``order`` is the filtered ordering now. Without a cursor the page is
    exactly its first ``size`` ids. With one, let R be what the sequence has
    returned and M the ids a Replace named since it began ("moved"):
    - the page is in ordering order and holds no id twice;
    - an id of R comes back only if it was moved, and (when the cursor's last
      id still stands unmoved) only from after that id;
    - no id outside R and M is skipped: each one up to the page's last id is
      on the page, and when the token is empty all of them are;
    - a next_page_token means a full page with something after it.
    Open in the spec: where a moved message lands relative to a cursor (it
    may or may not be listed); the model lets it be either.
    """
    if cursor is None:
        expected = order[:size]
        assert page == expected, f"first page {page} != {expected}"
        more = len(order) > size
        assert bool(next_token) == more, (
            f"next_page_token {'set' if next_token else 'empty'} with "
            f"{len(order) - len(page)} messages left"
        )
        return
    assert len(set(page)) == len(page), f"page repeats an id: {page}"
    index = {value: i for i, value in enumerate(order)}
    positions = [index.get(value, -1) for value in page]
    assert -1 not in positions, f"page {page} lists ids not in the ordering {order}"
    assert positions == sorted(positions), f"page {page} is not in ordering order {order}"
    moved = conv.moved_since(cursor.since)
    anchor = index.get(cursor.last_id) if cursor.last_id not in moved else None
    for value, at in zip(page, positions, strict=True):
        if value in cursor.returned:
            assert value in moved, f"{value} was on an earlier page and was not moved"
        if anchor is not None:
            assert at > anchor, f"{value} listed from before the cursor ({cursor.last_id})"
    must = [value for value in order if value not in cursor.returned and value not in moved]
    last = positions[-1] if positions else -1
    on_page = set(page)
    skipped = [v for v in must if index[v] <= last and v not in on_page]
    assert not skipped, f"page {page} skipped {skipped} (order {order})"
    assert len(page) <= size, f"page of {len(page)} over the page size {size}"
    if next_token:
        assert len(page) == size, f"short page ({len(page)} < {size}) with a next_page_token"
        assert last < len(order) - 1, "next_page_token set with nothing after the page"
    else:
        left = [v for v in must if v not in on_page]
        assert not left, f"next_page_token empty, but {left} were never listed (order {order})"
