"""An in-memory model of the companion API (agentstate.v1.ConversationsService),
written from COMPANION.md, on top of model.py's model of AgentStateService:
both services change the same conversations, so one model holds them.

As in model.py, every call gets the status codes the spec allows (with the
fields the error details must name) and a success is checked field by field
before the model adopts it: a conversation's title, labels, retention,
message_count, version, created_at and updated_at; the version +1 on every
change and never on a failed call; erasure (messages, snapshots, labels,
the state of the conversation's scope), after which an append starts a new
conversation at version 1; forks (copies under new ids with the originals'
contents and created_at, nothing else); scoped state with exact JSON
(numbers keep their text, null is stored); the keyset paging of
ListConversations and ListConversationSnapshots.

Where COMPANION.md is silent the model follows the proto's comments, the
README or the server, and a comment starting with "Spec silent" says which;
where the spec leaves a choice open it accepts every reading ("Open in the
spec", as in model.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import conversations_pb2 as cpb
from tests.reliability.model import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    UNKNOWN_CONVERSATION,
    VALID_ROLES,
    Conversation,
    Expected,
    Model,
    Outcome,
    StoredMessage,
    aborted,
    canonical_id,
    effective_page_size,
    invalid,
    micros,
    not_found,
    succeeds,
)

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS

# COMPANION.md, "Package and service".
MAX_TITLE_CODE_POINTS = 1000
MAX_LABELS = 64
MAX_LABEL_VALUE_CODE_POINTS = 256
# Spec silent: "[a-z0-9_.-/]" as a regular expression holds no hyphen (".-/"
# is a range); the server takes the hyphen literally, and so does the model.
LABEL_KEY = re.compile(r"[a-z0-9_./-]{1,63}")
MAX_TAIL = 1000
MAX_MESSAGE_IDS = 1000
MAX_STATE_BYTES = 1024 * 1024
# Spec silent; the README's limits: state updates per append, and code
# points in an app or user part of a scope (which holds no U+0000).
MAX_STATE_UPDATES = 100
MAX_SCOPE_PART_CODE_POINTS = 256
# order_by: whether it lists newest first.
ORDERS = {"": True, "updated_at desc": True, "updated_at": False}
UPDATABLE = ("title", "labels", "retention")
# The ranges protobuf gives Timestamp and Duration.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MAX_DURATION_SECONDS = 315_576_000_000

Retention = tuple[int, int]
"""A conversation's own retention: (max_idle in microseconds, max_messages)."""


# --- JSON values -----------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A JSON number, by the text it was sent as (which the state keeps)."""

    text: str


Json = None | bool | str | Number | list["Json"] | dict[str, "Json"]

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def canonical_json(value: Json) -> str:
    """The text a state reads back as (README "Values are exact"): no
    whitespace, keys in code point order, numbers as sent, strings with
    only the escapes JSON requires. Spec silent: how a control character
    is escaped; the model takes JSON's short escapes where there is one,
    else \\u00xx, as the server does."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Number):
        return value.text
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    members = (f"{_json_string(key)}:{canonical_json(value[key])}" for key in sorted(value))
    return "{" + ",".join(members) + "}"


def _json_string(text: str) -> str:
    escaped = (_SHORT_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " else c) for c in text)
    return '"' + "".join(escaped) + '"'


def state_size(values: Mapping[str, Json]) -> int:
    return len(canonical_json(dict(values)).encode())


# --- scopes and their state --------------------------------------------------------------


@dataclass(frozen=True)
class ScopeName:
    """A scope's key (its text, a conversation's id in canonical form) and
    the conversation it belongs to, if any."""

    key: str
    conversation: str | None = None


_SCOPE_PARTS = {"app": 1, "user": 2, "conversation": 1}


def parse_scope(raw: str) -> ScopeName | None:
    """`app/{app}`, `user/{app}/{user}` or `conversation/{uuid}`, each part
    non-empty and free of `/` (the proto); None for anything else."""
    kind, *parts = raw.split("/")
    if _SCOPE_PARTS.get(kind) != len(parts) or not all(parts):
        return None
    if kind == "conversation":
        cid = canonical_id(parts[0])
        return None if cid is None else ScopeName(f"conversation/{cid}", cid)
    if any(len(part) > MAX_SCOPE_PART_CODE_POINTS or "\x00" in part for part in parts):
        return None
    return ScopeName(raw)


@dataclass
class ScopeState:
    values: dict[str, Json] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True)
class StateUpdate:
    """One scope's change as sent: the scope as spelled, the set_json text
    and the object it holds (None: the text is no valid JSON object), and
    the keys to remove."""

    scope: str
    set_json: str = ""
    values: dict[str, Json] | None = field(default_factory=dict)
    remove_keys: tuple[str, ...] = ()

    def applied_to(self, current: Mapping[str, Json]) -> dict[str, Json]:
        assert self.values is not None
        kept = {k: v for k, v in current.items() if k not in self.remove_keys}
        return kept | self.values


# --- paging --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationFilter:
    """ListConversations' filters and order, checked. The bounds are
    exclusive, in nanoseconds; updated_at is in whole microseconds, so
    comparing it to them in nanoseconds is exact."""

    labels: frozenset[tuple[str, str]]
    after: int | None
    before: int | None
    newest_first: bool

    def matches(self, conv: Conversation) -> bool:
        at = conv.updated_at * 1000
        return (
            all(conv.labels.get(key) == value for key, value in self.labels)
            and (self.after is None or at > self.after)
            and (self.before is None or at < self.before)
        )

    def ordered(self, conversations: Sequence[Conversation]) -> list[Conversation]:
        """In the order asked; ties by id (the proto)."""
        return sorted(conversations, key=listing_key, reverse=self.newest_first)

    def beyond(self, key: tuple[int, str], cursor: tuple[int, str]) -> bool:
        """Whether `key` comes after `cursor` in the order asked."""
        return key < cursor if self.newest_first else key > cursor

    def same_listing(self, other: ConversationFilter) -> bool:
        """Spec silent: tokens are bound to the filters; bounds that differ
        within one microsecond select the same conversations, and the
        server takes them as one filter."""
        return (self.labels, self.newest_first, _micro_bounds(self)) == (
            other.labels,
            other.newest_first,
            _micro_bounds(other),
        )


def _micro_bounds(chosen: ConversationFilter) -> tuple[int | None, int | None]:
    after = None if chosen.after is None else chosen.after // 1000
    before = None if chosen.before is None else -(-chosen.before // 1000)
    return after, before


def listing_key(conv: Conversation) -> tuple[int, str]:
    """The keyset of ListConversations: (updated_at, conversation_id)."""
    return conv.updated_at, conv.id


@dataclass(frozen=True)
class ListingToken:
    """A ListConversations next_page_token and the sequence it continues."""

    token: str
    filter: ConversationFilter
    returned: frozenset[str]  # ids the sequence listed so far
    last: tuple[int, str]  # the key of the last of them, when listed
    since: int  # model epoch of the sequence's first page


@dataclass(frozen=True)
class SnapshotsToken:
    """A ListConversationSnapshots next_page_token."""

    token: str
    conversation: str
    last: tuple[int, str]  # (created_at, snapshot_id) of the last listed


@dataclass(frozen=True)
class AlteredToken:
    """An issued token, cut short or with a character changed."""

    of: ListingToken | SnapshotsToken
    token: str


# "" (the first page), a string never issued, an issued token, or an altered one.
CompanionToken = ListingToken | SnapshotsToken | AlteredToken | str


def token_text(token: CompanionToken) -> str:
    return token if isinstance(token, str) else token.token


# --- the model ---------------------------------------------------------------------------


@dataclass
class CompanionModel(Model):
    states: dict[str, ScopeState] = field(default_factory=dict)
    listing_tokens: list[ListingToken | SnapshotsToken] = field(default_factory=list)
    last_listing: ListingToken | SnapshotsToken | None = None
    # The id of the conversation the last create or fork made.
    last_made: str = ""

    # --- conversations as a whole ---------------------------------------------------------

    def check_conversation(self, conv: Conversation, shown: cpb.Conversation, where: str) -> None:
        """`shown` is the conversation as the model holds it, field by field."""
        assert shown.conversation_id == conv.id, f"{where}: conversation_id {shown.conversation_id}"
        assert shown.title == conv.title, f"{where}: title {shown.title!r} != {conv.title!r}"
        assert dict(shown.labels) == conv.labels, f"{where}: labels {dict(shown.labels)}"
        assert shown.message_count == len(conv.ordering), (
            f"{where}: message_count {shown.message_count} != {len(conv.ordering)}"
        )
        assert shown.version == conv.version, f"{where}: version {shown.version} != {conv.version}"
        for name, stamp in (("created_at", conv.created_at), ("updated_at", conv.updated_at)):
            assert shown.HasField(name), f"{where}: no {name}"
            value: Timestamp = getattr(shown, name)
            assert value.nanos % 1000 == 0, f"{where}: {name} finer than microseconds"
            assert micros(value) == stamp, f"{where}: {name} {micros(value)} != {stamp}"
        assert shown.HasField("retention") == (conv.retention is not None), (
            f"{where}: retention {'set' if shown.HasField('retention') else 'unset'},"
            f" model {conv.retention}"
        )
        if conv.retention is not None:
            # Unset and zero durations alike set no limit (the proto).
            got = (micros_of_duration(shown.retention), shown.retention.max_messages)
            assert got == conv.retention, f"{where}: retention {got} != {conv.retention}"

    def _mismatch(self, expected: int, current: int, what: str) -> Outcome | None:
        """ABORTED naming the current version when `expected_version` (0:
        no check) is another (COMPANION.md "Versions")."""
        if not expected or expected == current:
            return None
        self.seen[f"{what}: stale expected_version"] += 1
        return aborted("expected_version", current, f"{what}: expected_version {expected}")

    def _made_id(self, value: str, named: str | None, what: str) -> str:
        """The id of a conversation a call made: the one it named, or a
        new v7 UUID the server made."""
        if named is not None:
            assert value == named, f"{what} {value!r} != {named!r}"
            return value
        self._new_id(value, what)
        assert uuid.UUID(value).version == 7, f"{what} {value} is not a v7 UUID"
        assert value not in self.conversations, f"{what} {value} exists already"
        return value

    def _born(self, conv: Conversation) -> None:
        """Adopts a conversation a call made (at version 1)."""
        self.epoch += 1
        conv.changed = conv.relabelled = self.epoch
        self.conversations[conv.id] = conv
        self.last_made = conv.id

    def create_conversation(
        self,
        raw_cid: str,
        title: str,
        labels: Mapping[str, str],
        retention: cpb.Retention | None,
    ) -> Expected[cpb.Conversation]:
        problems: list[str] = []
        named = canonical_id(raw_cid) if raw_cid else None
        if raw_cid and named is None:
            problems.append("conversation_id")
        problems += title_problems(title, "title") + label_problems(labels, "labels")
        retention_errors, own = retention_of(retention, "retention")
        if problems or retention_errors:
            return Expected(invalid(problems + retention_errors, "the request alone is invalid"))
        if named is not None and named in self.conversations:
            return Expected(Outcome({ALREADY_EXISTS: ("conversation_id",)}, "exists"))

        def accept(response: cpb.Conversation) -> None:
            cid = self._made_id(response.conversation_id, named, "conversation_id")
            stamp = micros(response.updated_at)
            conv = Conversation(
                cid,
                updated_at=stamp,
                version=1,
                title=title,
                labels=dict(labels),
                retention=own,
                # Spec silent: created_at of a new conversation is its
                # updated_at (the creation is its one change so far).
                created_at=stamp,
            )
            self.check_conversation(conv, response, "CreateConversation")
            self._born(conv)
            self.seen["create: id made by the server"] += named is None

        return Expected(succeeds("create"), accept)

    def describe(self, raw_cid: str) -> Expected[cpb.Conversation]:
        conv = self.named(raw_cid)
        if isinstance(conv, Outcome):
            return Expected(conv)

        def accept(response: cpb.Conversation) -> None:
            self.check_conversation(conv, response, "DescribeConversation")

        return Expected(succeeds("describe"), accept)

    def update_conversation(
        self, given: cpb.Conversation, paths: Sequence[str], expected_version: int
    ) -> Expected[cpb.Conversation]:
        cid, problems = checked_id(given.conversation_id, "conversation.conversation_id")
        if not paths or any(path not in UPDATABLE for path in paths):
            problems.append("update_mask")
        # Spec silent: a path named twice is one path (the server's reading).
        fields = set(paths)
        if "title" in fields:
            problems += title_problems(given.title, "conversation.title")
        if "labels" in fields:
            problems += label_problems(given.labels, "conversation.labels")
        retention = given.retention if given.HasField("retention") else None
        retention_errors, own = retention_of(retention, "conversation.retention")
        if "retention" in fields:
            problems += retention_errors
        if expected_version < 0:
            problems.append("expected_version")
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        assert cid is not None
        conv = self.conversations.get(cid)
        if conv is None:
            return Expected(UNKNOWN_CONVERSATION)
        if stale := self._mismatch(expected_version, conv.version, "update"):
            return Expected(stale)
        title = given.title if "title" in fields else conv.title
        labels = dict(given.labels) if "labels" in fields else conv.labels
        kept = own if "retention" in fields else conv.retention

        def accept(response: cpb.Conversation) -> None:
            # Bumps the version, not updated_at (COMPANION.md).
            conv.version += 1
            if labels != conv.labels:
                self.epoch += 1
                conv.relabelled = self.epoch
            conv.title, conv.labels, conv.retention = title, labels, kept
            self.check_conversation(conv, response, "UpdateConversation")
            self.seen["update: labels replaced"] += "labels" in fields

        return Expected(succeeds("update"), accept)

    def delete_conversation(
        self, raw_cid: str, expected_version: int, allow_missing: bool
    ) -> Expected[cpb.DeleteConversationResponse]:
        cid, problems = checked_id(raw_cid, "conversation_id")
        if expected_version < 0:
            problems.append("expected_version")
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        assert cid is not None
        conv = self.conversations.get(cid)
        if conv is None:
            if not allow_missing:
                return Expected(UNKNOWN_CONVERSATION)

            def nothing(response: cpb.DeleteConversationResponse) -> None:
                # The proto: zero counts, whatever expected_version is.
                assert (response.deleted_message_count, response.deleted_snapshot_count) == (0, 0)
                self.seen["delete: absent, allow_missing"] += 1

            return Expected(succeeds("absent, allow_missing"), nothing)
        if stale := self._mismatch(expected_version, conv.version, "delete"):
            return Expected(stale)
        snapshots = [sid for sid, snap in self.snapshots.items() if snap.conversation_id == cid]

        def accept(response: cpb.DeleteConversationResponse) -> None:
            # Detached messages too; deleted ones are gone already.
            counts = (response.deleted_message_count, response.deleted_snapshot_count)
            assert counts == (len(conv.messages), len(snapshots)), (
                f"deleted (messages, snapshots) {counts} != {(len(conv.messages), len(snapshots))}"
            )
            self.seen["delete: with detached messages"] += bool(conv.detached())
            self.seen["delete: with snapshots"] += bool(snapshots)
            self.erase(cid)

        return Expected(succeeds("delete"), accept)

    def erase(self, cid: str) -> None:
        """The conversation and everything of it are gone (COMPANION.md
        "DeleteConversation"): its messages, snapshots, labels and the state
        of its scope; page tokens of its lists are no use any more."""
        del self.conversations[cid]
        gone = {sid for sid, snap in self.snapshots.items() if snap.conversation_id == cid}
        for sid in gone:
            del self.snapshots[sid]
        self.states.pop(f"conversation/{cid}", None)
        self.tokens = [t for t in self.tokens if t.target != cid and t.target not in gone]
        self.listing_tokens = [
            t
            for t in self.listing_tokens
            if not (isinstance(t, SnapshotsToken) and t.conversation == cid)
        ]
        self.last_token = None
        self.epoch += 1

    # --- ListConversations -------------------------------------------------------------------

    def list_conversations(
        self,
        labels: Mapping[str, str],
        after: Timestamp | None,
        before: Timestamp | None,
        order_by: str,
        page_size: int,
        token: CompanionToken,
    ) -> Expected[cpb.ListConversationsResponse]:
        problems = label_problems(labels, "labels")
        bounds: list[int | None] = []
        for name, bound in (("updated_after", after), ("updated_before", before)):
            ns = None if bound is None else timestamp_ns(bound)
            if bound is not None and ns is None:
                problems.append(name)
            bounds.append(ns)
        if order_by not in ORDERS:
            problems.append("order_by")
        cursor: ListingToken | None = None
        loose = False
        if isinstance(token, ListingToken):
            cursor = token
        elif isinstance(token, AlteredToken):
            loose = True
        elif token:  # never issued, or of ListConversationSnapshots
            problems.append("page_token")
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        chosen = ConversationFilter(
            frozenset(labels.items()), bounds[0], bounds[1], ORDERS[order_by]
        )
        if cursor is not None and not cursor.filter.same_listing(chosen):
            return Expected(invalid(["page_token"], "token of other filters or order"))
        size = effective_page_size(page_size)
        matching = chosen.ordered([c for c in self.conversations.values() if chosen.matches(c)])
        since = self.epoch if cursor is None else cursor.since

        def accept(response: cpb.ListConversationsResponse) -> None:
            listed = list(response.conversations)
            for i, shown in enumerate(listed):
                conv = self.conversations.get(shown.conversation_id)
                assert conv is not None, f"conversations[{i}] {shown.conversation_id} is unknown"
                self.check_conversation(conv, shown, f"ListConversations[{i}]")
                assert chosen.matches(conv), f"conversations[{i}] {conv.id} does not match"
            keys = [listing_key(self.conversations[c.conversation_id]) for c in listed]
            next_token = response.next_page_token
            if loose:
                # Open in the spec: a token is opaque, and an altered one may
                # still decode; the page must then be a page of this list.
                assert len(keys) <= size, f"altered token: page of {len(keys)} over {size}"
                in_order = chosen.ordered([self.conversations[k[1]] for k in keys])
                assert keys == [listing_key(c) for c in in_order], f"page {keys} is out of order"
                return
            if cursor is None:
                expected = [listing_key(c) for c in matching[:size]]
                assert keys == expected, f"first page {keys} != {expected}"
                assert bool(next_token) == (len(matching) > size), (
                    f"next_page_token {'set' if next_token else 'empty'} with"
                    f" {len(matching) - len(keys)} conversations left"
                )
            else:
                self._check_continued(chosen, cursor, matching, keys, next_token, size)
            if next_token:
                returned = {k[1] for k in keys} | (set() if cursor is None else cursor.returned)
                record = ListingToken(next_token, chosen, frozenset(returned), keys[-1], since)
                self._remember_listing(record)

        return Expected(_paged(loose, "list"), accept)

    def _check_continued(
        self,
        chosen: ConversationFilter,
        cursor: ListingToken,
        matching: list[Conversation],
        keys: list[tuple[int, str]],
        next_token: str,
        size: int,
    ) -> None:
        """A later page: keyset paging on (updated_at, conversation_id), "no
        duplicates while others write, and none skipped that did not move".

        Listed: conversations that match now, beyond the cursor, in order,
        none listed before. Not skipped: each one that has not moved since
        the first page (its updated_at and labels unchanged, not erased)
        and is not listed yet, up to the page's last key, and all of them
        once the token is empty. Open in the spec: whether a conversation
        that moved (or came) since the first page is listed.
        """
        assert len(keys) <= size, f"page of {len(keys)} over the page size {size}"
        assert len(set(keys)) == len(keys), f"page repeats a conversation: {keys}"
        order = chosen.ordered([self.conversations[k[1]] for k in keys])
        assert keys == [listing_key(c) for c in order], f"page {keys} is out of order"
        for key in keys:
            assert key[1] not in cursor.returned, f"{key[1]} was listed on an earlier page"
            assert chosen.beyond(key, cursor.last), f"{key} is not beyond the cursor {cursor.last}"
        unmoved = [
            listing_key(c)
            for c in matching
            if c.changed <= cursor.since
            and c.relabelled <= cursor.since
            and c.id not in cursor.returned
        ]
        listed = set(keys)
        reached = [k for k in unmoved if not keys or not chosen.beyond(k, keys[-1])]
        skipped = [k for k in (unmoved if not next_token else reached) if k not in listed]
        assert not skipped, f"skipped {skipped} that did not move (page {keys})"
        if next_token:
            assert len(keys) == size, f"short page ({len(keys)} < {size}) with a next_page_token"
        moved = [c.id for c in matching if c.changed > cursor.since or c.relabelled > cursor.since]
        self.seen["list conversations: next page"] += 1
        self.seen["list conversations: next page after moves"] += bool(moved)
        self.seen["list conversations: a moved one listed"] += any(k[1] in moved for k in keys)

    def _remember_listing(self, record: ListingToken | SnapshotsToken) -> None:
        self.last_listing = record
        self.listing_tokens.append(record)
        del self.listing_tokens[: -self.max_tokens]

    # --- reading the ordering --------------------------------------------------------------

    def tail(
        self, raw_cid: str, count: int, roles: Sequence[int], kinds: Sequence[str]
    ) -> Expected[cpb.TailConversationMessagesResponse]:
        cid, problems = checked_id(raw_cid, "conversation_id")
        if not 1 <= count <= MAX_TAIL:
            problems.append("count")
        if any(role not in VALID_ROLES for role in roles):
            problems.append("roles")
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        conv = self.conversations.get(cid or "")
        if conv is None:
            return Expected(UNKNOWN_CONVERSATION)
        expected = conv.filtered(frozenset(roles), frozenset(kinds))[-count:]

        def accept(response: cpb.TailConversationMessagesResponse) -> None:
            self._check_read_metadata(conv, response.metadata)
            got = [m.id for m in response.messages]
            assert got == expected, f"tail {got} != {expected}"
            for i, message in enumerate(response.messages):
                conv.messages[message.id].check(message, conv.id, f"tail messages[{i}]")
            # The model's messages are small: the 3 MiB budget never bites.
            assert not response.truncated, "truncated set on a small tail"

        return Expected(succeeds("tail"), accept)

    def get_messages(
        self, raw_cid: str, raw_ids: Sequence[str]
    ) -> Expected[cpb.GetMessagesResponse]:
        cid, problems = checked_id(raw_cid, "conversation_id")
        if not raw_ids or len(raw_ids) > MAX_MESSAGE_IDS:
            problems.append("message_ids")
        ids = [canonical_id(raw) for raw in raw_ids]
        problems += [f"message_ids[{i}]" for i, value in enumerate(ids) if value is None]
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        conv = self.conversations.get(cid or "")
        if conv is None:
            return Expected(UNKNOWN_CONVERSATION)
        placed = set(conv.ordering)
        absent = [f"message_ids[{i}]" for i, value in enumerate(ids) if value not in placed]
        if absent:
            return Expected(not_found(absent, "id not in the ordering"))

        def accept(response: cpb.GetMessagesResponse) -> None:
            got = [m.id for m in response.messages]
            assert got == ids, f"messages {got} != {ids} (the order asked)"
            for i, message in enumerate(response.messages):
                conv.messages[message.id].check(message, conv.id, f"GetMessages messages[{i}]")

        return Expected(succeeds("get messages"), accept)

    def list_snapshots(
        self, raw_cid: str, page_size: int, token: CompanionToken
    ) -> Expected[cpb.ListConversationSnapshotsResponse]:
        cid, problems = checked_id(raw_cid, "conversation_id")
        conv = None if cid is None else self.conversations.get(cid)
        cursor: SnapshotsToken | None = None
        loose = False
        if isinstance(token, SnapshotsToken):
            if token.conversation == cid:
                cursor = token
            elif conv is None and cid is not None:
                # Open in the spec (as in model.py): a token bound elsewhere
                # may be found before or after that the target is absent.
                why = "token of another conversation, target unknown"
                return Expected(Outcome({INVALID_ARGUMENT: ("page_token",), NOT_FOUND: ()}, why))
            else:
                problems.append("page_token")
        elif isinstance(token, AlteredToken):
            loose = True
        elif token:
            problems.append("page_token")
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        if conv is None:
            if loose:
                why = "altered token, target unknown"
                return Expected(Outcome({INVALID_ARGUMENT: ("page_token",), NOT_FOUND: ()}, why))
            return Expected(UNKNOWN_CONVERSATION)
        snaps = sorted(
            (snap.created_at, snap.id)
            for snap in self.snapshots.values()
            if snap.conversation_id == conv.id
        )
        rest = [key for key in snaps if cursor is None or key > cursor.last]
        size = effective_page_size(page_size)

        def accept(response: cpb.ListConversationSnapshotsResponse) -> None:
            keys = [(micros(s.created_at), s.snapshot_id) for s in response.snapshots]
            for i, shown in enumerate(response.snapshots):
                snap = self.snapshots.get(shown.snapshot_id)
                assert snap is not None, f"snapshots[{i}] {shown.snapshot_id} is unknown"
                assert snap.conversation_id == conv.id, f"snapshots[{i}]: another conversation's"
                assert shown.item_count == len(snap.items), f"snapshots[{i}] item_count"
            if loose:
                assert len(keys) <= size, f"altered token: page of {len(keys)} over {size}"
                assert keys == sorted(keys), f"snapshots {keys} out of order"
                return
            # Snapshots never change or move: the pages are exact.
            assert keys == rest[:size], f"snapshots {keys} != {rest[:size]}"
            more = len(rest) > size
            assert bool(response.next_page_token) == more, (
                f"next_page_token {'set' if response.next_page_token else 'empty'}"
                f" with {len(rest) - len(keys)} snapshots left"
            )
            if response.next_page_token:
                self._remember_listing(SnapshotsToken(response.next_page_token, conv.id, keys[-1]))
            self.seen["list snapshots: next page"] += cursor is not None

        return Expected(_paged(loose, "list snapshots"), accept)

    # --- ForkConversation -----------------------------------------------------------------

    def fork(
        self,
        raw_cid: str,
        raw_up_to: str,
        raw_new: str,
        title: str,
        labels: Mapping[str, str],
    ) -> Expected[cpb.ForkConversationResponse]:
        cid, problems = checked_id(raw_cid, "conversation_id")
        up_to = canonical_id(raw_up_to) if raw_up_to else None
        if raw_up_to and up_to is None:
            problems.append("up_to_message_id")
        named = canonical_id(raw_new) if raw_new else None
        if raw_new and named is None:
            problems.append("new_conversation_id")
        problems += title_problems(title, "title") + label_problems(labels, "labels")
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        source = self.conversations.get(cid or "")
        codes: dict[grpc.StatusCode, tuple[str, ...]] = {}
        if named is not None and named in self.conversations:
            codes[ALREADY_EXISTS] = ("new_conversation_id",)
        if source is None:
            codes[NOT_FOUND] = ("conversation_id",)
        elif up_to is not None and up_to not in source.ordering:
            codes[NOT_FOUND] = ("up_to_message_id",)
        if codes:
            # Open in the spec: which of ALREADY_EXISTS and NOT_FOUND comes
            # first when both apply.
            return Expected(Outcome(codes, "fork refused"))
        assert source is not None
        end = len(source.ordering) if up_to is None else source.ordering.index(up_to) + 1
        originals = [source.messages[i] for i in source.ordering[:end]]

        def accept(response: cpb.ForkConversationResponse) -> None:
            shown = response.conversation
            new_id = self._made_id(shown.conversation_id, named, "conversation.conversation_id")
            copies = list(response.message_ids)
            assert len(copies) == len(originals), f"{len(copies)} copies of {len(originals)}"
            for i, copy_id in enumerate(copies):
                self._new_id(copy_id, f"message_ids[{i}]")
            stamp = micros(shown.updated_at)
            fork = Conversation(
                new_id,
                updated_at=stamp,
                ordering=copies,
                messages={
                    copy_id: StoredMessage(copy_id, new_id, m.role, m.kind, m.body, m.created_at)
                    for copy_id, m in zip(copies, originals, strict=True)
                },
                version=1,
                # The request's title and labels; no retention of its own.
                title=title,
                labels=dict(labels),
                created_at=stamp,
            )
            self.check_conversation(fork, shown, "ForkConversation")
            self._born(fork)
            self.seen["fork: up to a message"] += up_to is not None
            self.seen["fork: of detached messages left out"] += bool(source.detached())
            self.seen["fork: nothing to copy"] += not originals

        return Expected(succeeds("fork"), accept)

    # --- scoped state ------------------------------------------------------------------------

    def _state(self, name: ScopeName) -> ScopeState:
        return self.states.get(name.key) or ScopeState()

    def _check_state(self, values_json: str, version: int, state: ScopeState, where: str) -> None:
        expected = canonical_json(state.values)
        assert values_json == expected, f"{where}: values_json {values_json!r} != {expected!r}"
        assert version == state.version, f"{where}: version {version} != {state.version}"

    def get_state(self, raw_scope: str) -> Expected[cpb.GetStateResponse]:
        name = parse_scope(raw_scope)
        if name is None:
            return Expected(invalid(["scope"], "malformed scope"))
        state = self._state(name)

        def accept(response: cpb.GetStateResponse) -> None:
            self._check_state(response.values_json, response.version, state, "GetState")

        return Expected(succeeds("get state"), accept)

    @staticmethod
    def _update_problems(update: StateUpdate, prefix: str) -> list[str]:
        """What the update alone shows is wrong (fields under `prefix`)."""
        problems: list[str] = []
        if parse_scope(update.scope) is None:
            problems.append(f"{prefix}scope")
        if update.values is None or state_size(update.values) > MAX_STATE_BYTES:
            problems.append(f"{prefix}set_json")
        elif any(key in update.values for key in update.remove_keys):
            problems.append(f"{prefix}remove_keys")
        return problems

    def _absent_owner(self, name: ScopeName, creating: str | None = None) -> bool:
        """A conversation scope whose conversation does not exist (the one
        an append with state creates exists for its scope)."""
        owner = name.conversation
        return owner is not None and owner != creating and owner not in self.conversations

    def _adopt_state(self, name: ScopeName, update: StateUpdate) -> ScopeState:
        current = self._state(name)
        state = ScopeState(update.applied_to(current.values), current.version + 1)
        self.states[name.key] = state
        self.seen["state: null stored"] += None in state.values.values()
        self.seen["state: a key removed"] += any(k in current.values for k in update.remove_keys)
        return state

    def update_state(
        self, update: StateUpdate, expected_version: int
    ) -> Expected[cpb.UpdateStateResponse]:
        problems = self._update_problems(update, "")
        if expected_version < 0:
            problems.append("expected_version")
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        name = parse_scope(update.scope)
        assert name is not None
        if self._absent_owner(name):
            return Expected(not_found(["scope"], "the scope's conversation is absent"))
        current = self._state(name)
        if stale := self._mismatch(expected_version, current.version, "state"):
            return Expected(stale)
        if state_size(update.applied_to(current.values)) > MAX_STATE_BYTES:
            return Expected(invalid(["set_json"], "state past 1 MiB"))

        def accept(response: cpb.UpdateStateResponse) -> None:
            state = self._adopt_state(name, update)
            self._check_state(response.values_json, response.version, state, "UpdateState")

        return Expected(succeeds("update state"), accept)

    def append_with_state(
        self,
        raw_cid: str,
        inputs: Sequence[pb.AppendMessageInput],
        updates: Sequence[StateUpdate],
        expected_version: int,
    ) -> Expected[cpb.AppendMessagesWithStateResponse]:
        problems = self.append_problems(raw_cid, inputs)
        if len(updates) > MAX_STATE_UPDATES:
            problems.append("state_updates")
        names: list[ScopeName] = []
        for i, update in enumerate(updates):
            prefix = f"state_updates[{i}]."
            problems += self._update_problems(update, prefix)
            name = parse_scope(update.scope)
            if name is not None:
                if any(name.key == other.key for other in names):
                    problems.append(f"{prefix}scope")  # each scope at most once
                names.append(name)
        if expected_version < 0:
            problems.append("expected_version")
        if problems:
            return Expected(invalid(problems, "the request alone is invalid"))
        cid = canonical_id(raw_cid)
        assert cid is not None
        missing = [
            f"state_updates[{i}].scope"
            for i, name in enumerate(names)
            if self._absent_owner(name, creating=cid)
        ]
        if missing:
            return Expected(not_found(missing, "a scope's conversation is absent"))
        conv = self.conversations.get(cid)
        current = 0 if conv is None else conv.version
        if stale := self._mismatch(expected_version, current, "append with state"):
            return Expected(stale)
        too_big = [
            f"state_updates[{i}].set_json"
            for i, (name, update) in enumerate(zip(names, updates, strict=True))
            if state_size(update.applied_to(self._state(name).values)) > MAX_STATE_BYTES
        ]
        if too_big:
            return Expected(invalid(too_big, "state past 1 MiB"))
        appending = self._appending(cid, inputs)

        def accept(response: cpb.AppendMessagesWithStateResponse) -> None:
            appending(
                pb.AppendConversationMessagesResponse(
                    metadata=response.metadata, appended=response.appended
                )
            )
            # Keyed by the scope as the request spelled it.
            versions = {
                update.scope: self._adopt_state(name, update).version
                for name, update in zip(names, updates, strict=True)
            }
            assert dict(response.state_versions) == versions, (
                f"state_versions {dict(response.state_versions)} != {versions}"
            )
            self.seen["append with state: created the conversation"] += conv is None
            self.seen["append with state: its own scope"] += any(
                n.conversation == cid for n in names
            )

        return Expected(succeeds("append with state"), accept)


def _paged(altered_token: bool, why: str) -> Outcome:
    """A page's outcome. Open in the spec: an altered token is opaque and
    may still decode (the page is then checked as a page of the list)."""
    if altered_token:
        return Outcome({INVALID_ARGUMENT: ("page_token",), OK: ()}, "altered token")
    return succeeds(why)


# --- request checks --------------------------------------------------------------------------


def checked_id(raw: str, name: str) -> tuple[str | None, list[str]]:
    """The canonical form of an id a request names (None: malformed), and
    the fields at fault so far: `name` when it is malformed."""
    canonical = canonical_id(raw)
    return canonical, [] if canonical is not None else [name]


def title_problems(title: str, name: str) -> list[str]:
    return [name] if len(title) > MAX_TITLE_CODE_POINTS else []


def label_problems(labels: Mapping[str, str], name: str) -> list[str]:
    """Labels as a conversation carries them or a filter names them."""
    if len(labels) > MAX_LABELS:
        return [name]
    bad = (
        not LABEL_KEY.fullmatch(key) or len(value) > MAX_LABEL_VALUE_CODE_POINTS
        for key, value in labels.items()
    )
    return [name] if any(bad) else []


def retention_of(given: cpb.Retention | None, name: str) -> tuple[list[str], Retention | None]:
    """Problems of a Retention as sent, and what it sets. The proto:
    negative values are INVALID_ARGUMENT; unset or zero fields set no
    limit. Spec silent: a max_idle finer than a microsecond is refused
    (the server keeps durations in whole microseconds)."""
    if given is None:
        return [], None
    problems: list[str] = []
    idle = 0
    if given.HasField("max_idle"):
        seconds, nanos = given.max_idle.seconds, given.max_idle.nanos
        negative = seconds < 0 or nanos < 0
        if negative or nanos >= 10**9 or seconds > MAX_DURATION_SECONDS or nanos % 1000:
            problems.append(f"{name}.max_idle")
        else:
            idle = seconds * 1_000_000 + nanos // 1000
    if given.max_messages < 0:
        problems.append(f"{name}.max_messages")
    return problems, (idle, given.max_messages)


def micros_of_duration(retention: cpb.Retention) -> int:
    if not retention.HasField("max_idle"):
        return 0
    return retention.max_idle.seconds * 1_000_000 + retention.max_idle.nanos // 1000


def timestamp_ns(value: Timestamp) -> int | None:
    """A valid Timestamp in nanoseconds; None for an invalid one."""
    if not (0 <= value.nanos < 10**9):
        return None
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        return None
    return value.seconds * 10**9 + value.nanos


def ns_timestamp(ns: int) -> Timestamp:
    seconds, nanos = divmod(ns, 10**9)
    return Timestamp(seconds=seconds, nanos=nanos)
