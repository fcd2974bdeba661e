"""The conversation rules that need no database: request validation, page
sizes, timestamps, and the checks a range operation makes on what storage
found. Pure functions, table-tested in tests/unit.

Errors come in the order the API promises: what the request alone shows
first (INVALID_ARGUMENT), then what must exist (NOT_FOUND), then the order
of the range ends, then the other named ids.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from . import exact_json
from .errors import InvalidArgument, MessageNotFound, VersionMismatch
from .ids import parse_optional_uuid, parse_uuid, shorten
from .model import (
    ConversationDetails,
    ConversationInput,
    ExpectedVersion,
    MessageInput,
    Moment,
    Retention,
    RetentionInput,
    Role,
    Scope,
    StateUpdateInput,
)

_ROLES = frozenset(role.value for role in Role)
_ROLE_NAMES = ", ".join(f"ROLE_{role.name}" for role in Role)


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits; the defaults are the documented ones."""

    max_append_messages: int = 1000
    max_kind_length: int = 256
    default_page_size: int = 100
    max_page_size: int = 1000
    max_response_bytes: int = 3 * 1024 * 1024
    # How long a mutating call's idempotency key replays its response.
    idempotency_window_seconds: int = 24 * 3600

    @property
    def idempotency_window_us(self) -> int:
        return self.idempotency_window_seconds * 1_000_000


def next_updated_at(previous: int, now: int) -> int:
    """updated_at strictly increases on every change, even if the clock
    stands still or steps back (another replica's clock, say)."""
    return max(now, previous + 1)


def check_version(current: int, expected: ExpectedVersion | None) -> None:
    """A conditional write goes ahead only on the version it names (`current`
    is 0 for a conversation that does not exist)."""
    if expected is not None and expected.version != current:
        raise VersionMismatch(expected.field, expected.version, current)


def validate_append(messages: Sequence[MessageInput], limits: Limits) -> None:
    if not messages:
        raise InvalidArgument("messages", "must hold at least one message")
    if len(messages) > limits.max_append_messages:
        raise InvalidArgument(
            "messages",
            f"holds {len(messages)} messages; at most {limits.max_append_messages} per append",
        )
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if message.role not in _ROLES:
            raise InvalidArgument(
                f"{field}.role", f"is {message.role}; it must be one of {_ROLE_NAMES}"
            )
        if len(message.kind) > limits.max_kind_length:
            raise InvalidArgument(
                f"{field}.kind",
                f"has {len(message.kind)} characters; at most {limits.max_kind_length}",
            )
        if message.body_variant is None:
            raise InvalidArgument(f"{field}.body", "must have text or tool_output set")
        if message.body_variant == "tool_output" and message.tool_output_variant is None:
            raise InvalidArgument(
                f"{field}.body.tool_output", "must have its text or image output set"
            )


def page_size(requested: int, limits: Limits) -> int:
    """0 or less: the default; above the cap: the cap."""
    if requested <= 0:
        return limits.default_page_size
    return min(requested, limits.max_page_size)


def fitting(sizes: Sequence[int], room: int) -> int:
    """How many of the leading entries of these sizes a response can hold
    while it stays under `room` bytes (responses stay under the limit, never
    reach it): at least one, as a message larger than the whole limit still
    goes out alone."""
    # Usually all of them: one sum, not a step per entry (a page of 1,000).
    if sum(sizes) < room:
        return len(sizes)
    taken = 0
    for size in sizes:
        room -= size
        if taken and room <= 0:
            break
        taken += 1
    return taken


def role_filter(roles: Sequence[int]) -> frozenset[int]:
    for index, role in enumerate(roles):
        if role not in _ROLES:
            raise InvalidArgument(
                f"roles[{index}]", f"is {role}; a filter takes only {_ROLE_NAMES}"
            )
    return frozenset(roles)


def parse_ids(values: Sequence[str], field: str) -> list[UUID]:
    return [parse_uuid(value, f"{field}[{index}]") for index, value in enumerate(values)]


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """A validated Replace or Delete request: which ends are set, and for
    Replace the ids to put in."""

    conversation_id: UUID
    from_id: UUID | None
    to_id: UUID | None
    new_ids: tuple[UUID, ...] = ()

    @property
    def named(self) -> list[UUID]:
        """Every id the request names, for one storage lookup."""
        ends = [end for end in (self.from_id, self.to_id) if end is not None]
        return ends + list(self.new_ids)


def parse_range(
    conversation_id: str, from_id: str, to_id: str, new_ids: Sequence[str] | None
) -> RangeRequest:
    """Validate a range request; `new_ids` is None for Delete."""
    request = RangeRequest(
        conversation_id=parse_uuid(conversation_id, "conversation_id"),
        from_id=parse_optional_uuid(from_id, "from_message_id"),
        to_id=parse_optional_uuid(to_id, "to_message_id"),
        new_ids=tuple(parse_ids(new_ids or (), "new_message_ids")),
    )
    if request.from_id is None and request.to_id is None:
        raise InvalidArgument(
            "from_message_id", "from_message_id, to_message_id or both must be set"
        )
    if new_ids is None:
        return request
    seen: dict[UUID, int] = {}
    for index, new_id in enumerate(request.new_ids):
        if new_id in seen:
            raise InvalidArgument(
                f"new_message_ids[{index}]",
                f"repeats new_message_ids[{seen[new_id]}]; an id can be inserted only once",
            )
        seen[new_id] = index
    if request.from_id is None or request.to_id is None:
        if not request.new_ids:
            raise InvalidArgument(
                "new_message_ids", "must not be empty when only one end of the range is set"
            )
        anchor, anchor_field = (
            (request.from_id, "from_message_id")
            if request.from_id is not None
            else (request.to_id, "to_message_id")
        )
        if anchor in seen:
            raise InvalidArgument(
                f"new_message_ids[{seen[anchor]}]",
                f"names the anchor {anchor_field} itself; it cannot be inserted next to itself",
            )
    return request


@dataclass(frozen=True, slots=True)
class RangeEnds:
    """Positions of the ends that are set."""

    from_position: int | None
    to_position: int | None


def check_range(request: RangeRequest, places: dict[UUID, int | None]) -> RangeEnds:
    """Check what storage found for the named ids, in the promised order.

    `places` maps each named id that is a message of the conversation to its
    position (None when detached).
    """
    from_position = _ordering_position(request.from_id, "from_message_id", places)
    to_position = _ordering_position(request.to_id, "to_message_id", places)
    if from_position is not None and to_position is not None and from_position > to_position:
        raise InvalidArgument(
            "from_message_id", "comes after to_message_id in the conversation's ordering"
        )
    for index, new_id in enumerate(request.new_ids):
        if new_id not in places:
            raise MessageNotFound(
                f"new_message_ids[{index}]",
                f"message {new_id} is not a message of conversation {request.conversation_id}",
            )
    return RangeEnds(from_position, to_position)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """An edge of a gap that storage must find: the nearest entry below
    `anchor` (for the lower edge) or above it (for the upper edge)."""

    anchor: int


def gap_edges(ends: RangeEnds) -> tuple[int | Neighbour, int | Neighbour]:
    """The free interval a Replace puts its new entries into, once the
    range's own entries are out of the ordering.

    Its lower edge is the entry before the range (0 when none: the head),
    its upper edge the entry after it (None when none: the open tail). An
    anchor that stays in the ordering is itself an edge, known without a
    lookup: with only from_message_id set the entries go right after it,
    with only to_message_id set right before it.
    """
    if ends.to_position is None:
        assert ends.from_position is not None
        return ends.from_position, Neighbour(ends.from_position)
    if ends.from_position is None:
        return Neighbour(ends.to_position), ends.to_position
    return Neighbour(ends.from_position), Neighbour(ends.to_position)


def _ordering_position(
    message_id: UUID | None, field: str, places: dict[UUID, int | None]
) -> int | None:
    return None if message_id is None else ordering_position(message_id, field, places)


def ordering_position(message_id: UUID, field: str, places: Mapping[UUID, int | None]) -> int:
    """The position of `message_id` among `places` (storage's lookup of
    it), or NOT_FOUND naming `field` when it is not in the ordering."""
    position = places.get(message_id)
    if position is None:
        raise MessageNotFound(field, f"message {message_id} is not in the conversation's ordering")
    return position


def check_snapshot_ids(
    conversation_id: UUID, message_ids: Sequence[UUID], existing: dict[UUID, int | None]
) -> None:
    for index, message_id in enumerate(message_ids):
        if message_id not in existing:
            raise MessageNotFound(
                f"message_ids[{index}]",
                f"message {message_id} is not a message of conversation {conversation_id}",
            )


# --- The companion API: conversations as a whole ------------------------------------

MAX_TITLE_LENGTH = 1000
MAX_LABELS = 64
MAX_LABEL_VALUE_LENGTH = 256
# Lowercase letters, digits and _ . - / (the spec's [a-z0-9_.-/], the hyphen
# taken literally).
_LABEL_KEY = re.compile(r"[a-z0-9_.\-/]{1,63}")
_LABEL_KEY_RULE = "1 to 63 of a-z, 0-9, _ . - /"

UPDATABLE_FIELDS = ("title", "labels", "retention")

ORDERS = {"": True, "updated_at desc": True, "updated_at": False}
"""ListConversations' order_by values: whether each lists newest first."""

# Timestamps run from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z
# and durations up to 10,000 years, as protobuf defines them.
_MIN_TIMESTAMP_SECONDS = -62_135_596_800
_MAX_TIMESTAMP_SECONDS = 253_402_300_799
_MAX_DURATION_SECONDS = 315_576_000_000
_NANOS = 1_000_000_000

MIN_TIME = _MIN_TIMESTAMP_SECONDS * 1_000_000 - 1
"""Below every time a timestamp can name, in microseconds."""
MAX_TIME = (_MAX_TIMESTAMP_SECONDS + 1) * 1_000_000
"""Above every time a timestamp can name, in microseconds."""


def conversation_details(given: ConversationInput, prefix: str = "") -> ConversationDetails:
    """The checked title, labels and retention of a conversation; errors
    name the field under `prefix` (``conversation.`` in an update)."""
    return ConversationDetails(
        title=title(given.title, f"{prefix}title"),
        labels=labels(given.labels, f"{prefix}labels"),
        retention=retention(given.retention, f"{prefix}retention"),
    )


def title(value: str, field: str) -> str:
    if len(value) > MAX_TITLE_LENGTH:
        raise InvalidArgument(field, f"has {len(value)} characters; at most {MAX_TITLE_LENGTH}")
    return value


def labels(values: Mapping[str, str], field: str) -> dict[str, str]:
    """Labels as a conversation carries them, or as a filter names them."""
    if len(values) > MAX_LABELS:
        raise InvalidArgument(field, f"holds {len(values)} labels; at most {MAX_LABELS}")
    for key in sorted(values):
        entry = f"{field}[{shorten(key)!r}]"
        if _LABEL_KEY.fullmatch(key) is None:
            raise InvalidArgument(entry, f"the key must be {_LABEL_KEY_RULE}")
        if len(values[key]) > MAX_LABEL_VALUE_LENGTH:
            raise InvalidArgument(
                entry,
                f"the value has {len(values[key])} characters; at most {MAX_LABEL_VALUE_LENGTH}",
            )
    return dict(values)


def retention(given: RetentionInput | None, field: str) -> Retention | None:
    if given is None:
        return None
    max_idle = 0 if given.max_idle is None else duration(given.max_idle, f"{field}.max_idle")
    if given.max_messages < 0:
        raise InvalidArgument(
            f"{field}.max_messages", f"is {given.max_messages}; it must not be negative"
        )
    return Retention(max_idle=max_idle, max_messages=given.max_messages)


def duration(moment: Moment, field: str) -> int:
    """A non-negative Duration in whole microseconds (stored exactly)."""
    seconds, nanos = moment.seconds, moment.nanos
    if seconds < 0 or nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    if nanos >= _NANOS or seconds > _MAX_DURATION_SECONDS:
        raise InvalidArgument(field, "is not a valid duration (at most 10,000 years)")
    if nanos % 1000:
        raise InvalidArgument(field, "must be a whole number of microseconds")
    return seconds * 1_000_000 + nanos // 1000


def timestamp(moment: Moment, field: str) -> tuple[int, int]:
    """A valid Timestamp as (microseconds, the nanoseconds past them)."""
    seconds, nanos = moment.seconds, moment.nanos
    if not (0 <= nanos < _NANOS and _MIN_TIMESTAMP_SECONDS <= seconds <= _MAX_TIMESTAMP_SECONDS):
        raise InvalidArgument(
            field, "is not a valid timestamp (0001-01-01 to 9999-12-31 UTC, nanos 0 to 999999999)"
        )
    return seconds * 1_000_000 + nanos // 1000, nanos % 1000


def expected_version(value: int) -> int:
    """`expected_version`: 0 (no check) or a version."""
    if value < 0:
        raise InvalidArgument(
            "expected_version", f"is {value}; it must be 0 (no check) or a version (1 or more)"
        )
    return value


@dataclass(frozen=True, slots=True)
class ConversationUpdate:
    """An UpdateConversation, checked: the fields it changes, and their new
    values in `details` (its other fields are placeholders)."""

    fields: frozenset[str]
    details: ConversationDetails

    def applied_to(self, current: ConversationDetails) -> ConversationDetails:
        new = self.details
        return ConversationDetails(
            title=new.title if "title" in self.fields else current.title,
            labels=new.labels if "labels" in self.fields else current.labels,
            retention=new.retention if "retention" in self.fields else current.retention,
        )


def conversation_update(paths: Sequence[str], given: ConversationInput) -> ConversationUpdate:
    """The update_mask's paths, then the values of the fields they name (the
    others are ignored, as the API says)."""
    if not paths:
        raise InvalidArgument("update_mask", "must name at least one of title, labels, retention")
    for index, path in enumerate(paths):
        if path not in UPDATABLE_FIELDS:
            raise InvalidArgument(
                f"update_mask.paths[{index}]",
                f"{shorten(path)!r} is not a field to update; use title, labels or retention",
            )
    fields = frozenset(paths)
    prefix = "conversation."
    return ConversationUpdate(
        fields,
        ConversationDetails(
            title=title(given.title, f"{prefix}title") if "title" in fields else "",
            labels=labels(given.labels, f"{prefix}labels") if "labels" in fields else {},
            retention=(
                retention(given.retention, f"{prefix}retention") if "retention" in fields else None
            ),
        ),
    )


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    """ListConversations' filters and order, checked. The bounds are in
    whole microseconds, both exclusive (None: none): updated_at, itself
    whole microseconds, is above a bound of X.5 exactly when it is above
    X, and below one exactly when it is below X + 1."""

    labels: dict[str, str]
    updated_after: int | None
    updated_before: int | None
    newest_first: bool


def conversation_filter(
    label_filter: Mapping[str, str],
    updated_after: Moment | None,
    updated_before: Moment | None,
    order_by: str,
) -> ConversationFilter:
    checked_labels = labels(label_filter, "labels")
    after = None
    if updated_after is not None:
        after = timestamp(updated_after, "updated_after")[0]
    before = None
    if updated_before is not None:
        micros, rest = timestamp(updated_before, "updated_before")
        before = micros + (1 if rest else 0)
    if order_by not in ORDERS:
        raise InvalidArgument(
            "order_by",
            f'{shorten(order_by)!r} is not an order; use "updated_at desc" (newest first,'
            ' also ""), or "updated_at" (oldest first)',
        )
    return ConversationFilter(checked_labels, after, before, ORDERS[order_by])


# --- The companion API: reading and forking the ordering ----------------------------

MAX_TAIL = 1000
"""The most messages TailConversationMessages returns."""
MAX_MESSAGE_IDS = 1000
"""The most ids GetMessages takes."""


def tail_count(count: int) -> int:
    if not 1 <= count <= MAX_TAIL:
        raise InvalidArgument("count", f"is {count}; it must be 1 to {MAX_TAIL}")
    return count


def wanted_ids(values: Sequence[str]) -> list[UUID]:
    """GetMessages' message_ids: 1 to MAX_MESSAGE_IDS ids, repeats allowed."""
    field = "message_ids"
    if not values:
        raise InvalidArgument(field, "must name at least one message")
    if len(values) > MAX_MESSAGE_IDS:
        raise InvalidArgument(field, f"names {len(values)} ids; at most {MAX_MESSAGE_IDS}")
    return parse_ids(values, field)


def check_in_ordering(
    conversation_id: UUID, message_ids: Sequence[UUID], found: Collection[UUID]
) -> None:
    """Every one of `message_ids` is among those `found` in the ordering,
    else NOT_FOUND naming the first that is not."""
    for index, message_id in enumerate(message_ids):
        if message_id not in found:
            raise MessageNotFound(
                f"message_ids[{index}]",
                f"message {message_id} is not in the ordering of conversation {conversation_id}",
            )


@dataclass(frozen=True, slots=True)
class ForkRequest:
    """A ForkConversation, checked: the source, the last message to copy
    (None: all), the new conversation's id (None: to be made) and details."""

    source: UUID
    up_to: UUID | None
    new_conversation_id: UUID | None
    details: ConversationDetails


def fork_request(
    conversation_id: str,
    up_to_message_id: str,
    new_conversation_id: str,
    title: str,
    labels: Mapping[str, str],
) -> ForkRequest:
    source = parse_uuid(conversation_id, "conversation_id")
    up_to = parse_optional_uuid(up_to_message_id, "up_to_message_id")
    new = parse_optional_uuid(new_conversation_id, "new_conversation_id")
    details = conversation_details(ConversationInput(title, labels, None))
    return ForkRequest(source, up_to, new, details)


# --- The companion API: scoped state ------------------------------------------------

MAX_STATE_BYTES = 1024 * 1024
"""A scope's state, as its canonical UTF-8 text, is at most this long."""
MAX_SCOPE_PART_LENGTH = 256
"""Code points in the app or user part of a scope."""
MAX_STATE_UPDATES = 100
"""Scopes one AppendMessagesWithState may change."""

_SCOPE_FORMS = "app/{app}, user/{app}/{user} or conversation/{uuid}"
# The parts each form has after its kind.
_SCOPE_PARTS = {"app": 1, "user": 2, "conversation": 1}


def scope(value: str, field: str) -> Scope:
    """A scope in one of the three forms, each part non-empty and free of
    `/`; a conversation's id in any spelling parse_uuid takes (its key uses
    the canonical one)."""
    kind, *parts = value.split("/")
    if _SCOPE_PARTS.get(kind) != len(parts) or not all(parts):
        raise InvalidArgument(
            field,
            f"{shorten(value)!r} is not a scope; use {_SCOPE_FORMS},"
            " each part non-empty and without '/'",
        )
    if kind == "conversation":
        conversation_id = parse_uuid(parts[0], field)
        return Scope(f"conversation/{conversation_id}", conversation_id)
    for part in parts:
        if len(part) > MAX_SCOPE_PART_LENGTH:
            raise InvalidArgument(
                field,
                f"has a part of {len(part)} characters; at most {MAX_SCOPE_PART_LENGTH}",
            )
        if "\x00" in part:
            raise InvalidArgument(field, "must not hold U+0000")
    return Scope(value)


@dataclass(frozen=True, slots=True)
class StateChange:
    """One scope's change, checked: the keys to set with their values, and
    the keys to remove (none of them set). `sent` is the scope as the
    request spelled it, which keys the versions AppendMessagesWithState
    answers with; `prefix` is where the request holds it, for errors
    (``state_updates[2].``)."""

    scope: Scope
    sent: str
    values: dict[str, exact_json.Value]
    remove: frozenset[str]
    prefix: str = ""

    def applied_to(self, current: dict[str, exact_json.Value]) -> dict[str, exact_json.Value]:
        """`current` with this change made."""
        kept = {key: value for key, value in current.items() if key not in self.remove}
        return kept | self.values


def state_change(given: StateUpdateInput, prefix: str = "") -> StateChange:
    """A scope's change as sent, checked; errors name the field under
    `prefix` (``state_updates[2].`` in AppendMessagesWithState). The keys
    set must fit in a scope's state by themselves."""
    checked_scope = scope(given.scope, f"{prefix}scope")
    values: dict[str, exact_json.Value] = {}
    if given.set_json:
        try:
            values = exact_json.parse_object(given.set_json)
        except exact_json.JsonError as error:
            raise InvalidArgument(f"{prefix}set_json", str(error)) from None
        state_text(values, f"{prefix}set_json")
    for index, key in enumerate(given.remove_keys):
        if key in values:
            raise InvalidArgument(
                f"{prefix}remove_keys[{index}]",
                f"{shorten(key)!r} is set by set_json too; a key is either set or removed",
            )
    return StateChange(checked_scope, given.scope, values, frozenset(given.remove_keys), prefix)


def state_text(values: dict[str, exact_json.Value], field: str) -> bytes:
    """The state's canonical UTF-8 text, at most MAX_STATE_BYTES long."""
    text = exact_json.dump_utf8(values)
    if len(text) > MAX_STATE_BYTES:
        raise InvalidArgument(
            field,
            f"makes the state {len(text)} bytes as stored (canonical JSON);"
            f" a scope holds at most {MAX_STATE_BYTES} (1 MiB)",
        )
    return text


def state_updates(updates: Sequence[StateUpdateInput]) -> list[StateChange]:
    """AppendMessagesWithState's state_updates, checked: each scope at
    most once (whatever the spelling of a conversation's id)."""
    if len(updates) > MAX_STATE_UPDATES:
        raise InvalidArgument(
            "state_updates", f"holds {len(updates)} updates; at most {MAX_STATE_UPDATES}"
        )
    changes: list[StateChange] = []
    seen: dict[str, int] = {}
    for index, given in enumerate(updates):
        change = state_change(given, f"state_updates[{index}].")
        earlier = seen.setdefault(change.scope.key, index)
        if earlier != index:
            raise InvalidArgument(
                f"state_updates[{index}].scope",
                f"names the scope of state_updates[{earlier}] again; each scope at most once",
            )
        changes.append(change)
    return changes
