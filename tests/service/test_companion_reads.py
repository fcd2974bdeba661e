"""The companion API's reads and forks in process, over every backend:
TailConversationMessages, GetMessages, ListConversationSnapshots and
ForkConversation, with their limits, the order of their errors and their
idempotent retries. Entries are as ReadableCodec frames them: a message's
id (16 bytes), then its body."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from agent_state import companion, paging, rules
from agent_state.companion import Forked, Replayed
from agent_state.errors import (
    AlreadyExists,
    ConversationNotFound,
    FailedPrecondition,
    InvalidArgument,
    MessageNotFound,
)
from agent_state.model import (
    ConversationDetails,
    ConversationInput,
    EncodedMessage,
    MessageInput,
    Role,
)
from agent_state.service import Replay
from agent_state.storage.base import Store

from .._gen_helpers import text_body
from .test_companion import PLAIN, Clock, Services, applied, key, services


def message_input(text: str, role: int = Role.USER, kind: str = "") -> MessageInput:
    return MessageInput(role=role, kind=kind, body=text_body(text), body_variant="text")


async def conversation_of(s: Services, texts: list[str], role: int = Role.USER) -> str:
    """A new conversation holding a message per text (appended 1,000 at a
    time)."""
    conversation = str(uuid4())
    for start in range(0, len(texts), 1000):
        inputs = [message_input(text, role) for text in texts[start : start + 1000]]
        await s.conversations.append(conversation, inputs)
    return conversation


async def ids_of(s: Services, conversation: str) -> list[UUID]:
    ids: list[UUID] = []
    token = ""
    while True:
        page = await s.conversations.list_message_ids(conversation, 1000, token)
        ids += page.message_ids
        token = page.next_page_token
        if not token:
            return ids


def id_of(entry: EncodedMessage) -> UUID:
    return UUID(bytes=entry[:16])


def body_of(entry: EncodedMessage) -> bytes:
    return entry[16:]


async def absent(s: Services, conversation: str) -> None:
    """Nothing was made under this id."""
    with pytest.raises(ConversationNotFound):
        await s.companion.describe_conversation(conversation)


def limited(store: Store, max_response_bytes: int) -> Services:
    s = services(store)
    smaller = rules.Limits(max_response_bytes=max_response_bytes)
    s.companion = companion.CompanionService(store, s.codec, smaller)
    return s


# --- TailConversationMessages ----------------------------------------------------------


async def test_tail_is_the_last_messages_oldest_first(store: Store) -> None:
    s = services(store)
    conversation = await conversation_of(s, [f"m{i}" for i in range(10)])
    ids = await ids_of(s, conversation)
    result = await s.companion.tail_messages(conversation, 3, [], [])
    assert [id_of(e) for e in result.entries] == ids[7:]
    assert [body_of(e) for e in result.entries] == [text_body(f"m{i}") for i in range(7, 10)]
    assert not result.truncated
    assert result.state == await s.conversations.get_conversation(conversation)
    everything = await s.companion.tail_messages(conversation, 1000, [], [])
    assert [id_of(e) for e in everything.entries] == ids
    # What left the ordering is not in its tail.
    await s.conversations.replace_range(conversation, str(ids[9]), str(ids[9]), [])
    await s.conversations.delete_range(conversation, str(ids[8]), str(ids[8]))
    after = await s.companion.tail_messages(conversation, 2, [], [])
    assert [id_of(e) for e in after.entries] == ids[6:8]
    assert after.state.version == 3


async def test_tail_of_ten_thousand_messages(store: Store) -> None:
    s = services(store)
    conversation = await conversation_of(s, [f"m{i}" for i in range(10_000)])
    result = await s.companion.tail_messages(conversation, 5, [], [])
    assert [body_of(e) for e in result.entries] == [text_body(f"m{i}") for i in range(9995, 10_000)]
    assert result.state.message_count == 10_000


async def test_tail_filters(store: Store) -> None:
    s = services(store)
    conversation = str(uuid4())
    inputs = [
        message_input("u1", Role.USER, "a"),
        message_input("t1", Role.TOOL, "b"),
        message_input("a1", Role.ASSISTANT, "a"),
        message_input("u2", Role.USER, ""),
        message_input("t2", Role.TOOL, "a"),
    ]
    await s.conversations.append(conversation, inputs)

    async def texts(count: int, roles: list[int], kinds: list[str]) -> list[bytes]:
        result = await s.companion.tail_messages(conversation, count, roles, kinds)
        return [body_of(e) for e in result.entries]

    assert await texts(2, [Role.USER], []) == [text_body("u1"), text_body("u2")]
    assert await texts(1, [Role.USER, Role.USER], []) == [text_body("u2")]
    assert await texts(5, [], ["a"]) == [text_body(t) for t in ("u1", "a1", "t2")]
    assert await texts(5, [Role.TOOL], ["a", ""]) == [text_body("t2")]
    assert await texts(5, [], [""]) == [text_body("u2")]
    assert await texts(5, [Role.ASSISTANT], ["b"]) == []


async def test_tail_cuts_the_oldest_past_the_response_limit(store: Store) -> None:
    entry = 16 + len(text_body("x" * 100))
    s = limited(store, 3 * entry + entry // 2)
    conversation = await conversation_of(s, ["x" * 100] * 6)
    ids = await ids_of(s, conversation)
    result = await s.companion.tail_messages(conversation, 5, [], [])
    assert [id_of(e) for e in result.entries] == ids[3:]
    assert result.truncated
    exact = await s.companion.tail_messages(conversation, 3, [], [])
    assert [id_of(e) for e in exact.entries] == ids[3:]
    assert not exact.truncated
    # The newest comes alone, however large.
    tiny = limited(store, 10)
    alone = await tiny.companion.tail_messages(conversation, 5, [], [])
    assert ([id_of(e) for e in alone.entries], alone.truncated) == ([ids[-1]], True)
    one = await tiny.companion.tail_messages(conversation, 1, [], [])
    assert ([id_of(e) for e in one.entries], one.truncated) == ([ids[-1]], False)


@pytest.mark.parametrize(
    ("conversation", "count", "roles", "field"),
    [
        ("nope", 5, [], "conversation_id"),
        ("", 5, [], "conversation_id"),
        (None, 0, [], "count"),
        (None, -1, [], "count"),
        (None, 1001, [], "count"),
        (None, 5, [0], "roles[0]"),
        (None, 5, [1, 9], "roles[1]"),
    ],
)
async def test_tail_refuses_bad_requests_before_looking(
    store: Store, conversation: str | None, count: int, roles: list[int], field: str
) -> None:
    s = services(store)
    with pytest.raises(InvalidArgument) as raised:
        await s.companion.tail_messages(
            str(uuid4()) if conversation is None else conversation, count, roles, []
        )
    assert raised.value.field == field
    with pytest.raises(ConversationNotFound):
        await s.companion.tail_messages(str(uuid4()), 1000, [3], ["x"])


# --- GetMessages ------------------------------------------------------------------------


async def test_get_messages_in_the_order_asked_with_repeats(store: Store) -> None:
    s = services(store)
    conversation = await conversation_of(s, ["a", "b", "c"])
    a, b, c = await ids_of(s, conversation)
    asked = [str(c), str(a).upper(), str(c), "{" + str(b) + "}"]
    result = await s.companion.get_messages(conversation, asked)
    assert [id_of(e) for e in result.entries] == [c, a, c, b]
    assert [body_of(e) for e in result.entries] == [text_body(t) for t in "cacb"]
    assert result.state == await s.conversations.get_conversation(conversation)


async def test_get_messages_finds_only_the_ordering(store: Store) -> None:
    s = services(store)
    conversation = await conversation_of(s, ["a", "b", "c", "d"])
    other = await conversation_of(s, ["elsewhere"])
    a, b, c, d = await ids_of(s, conversation)
    (elsewhere,) = await ids_of(s, other)
    await s.conversations.replace_range(conversation, str(b), str(b), [])  # detaches b
    await s.conversations.delete_range(conversation, str(c), str(c))  # deletes c
    for missing in (b, c, elsewhere, uuid4()):
        with pytest.raises(MessageNotFound) as raised:
            await s.companion.get_messages(conversation, [str(a), str(d), str(missing), str(a)])
        assert raised.value.field == "message_ids[2]"
        assert str(missing) in raised.value.reason
    # A malformed id comes first, wherever it is.
    with pytest.raises(InvalidArgument) as bad:
        await s.companion.get_messages(conversation, [str(b), str(a), "x"])
    assert bad.value.field == "message_ids[2]"
    # The conversation before its messages.
    with pytest.raises(ConversationNotFound):
        await s.companion.get_messages(str(uuid4()), [str(a)])


@pytest.mark.parametrize(
    ("conversation", "count", "field"),
    [
        ("nope", 1, "conversation_id"),
        (None, 0, "message_ids"),
        (None, 1001, "message_ids"),
    ],
)
async def test_get_messages_refuses_bad_requests(
    store: Store, conversation: str | None, count: int, field: str
) -> None:
    s = services(store)
    with pytest.raises(InvalidArgument) as raised:
        await s.companion.get_messages(
            str(uuid4()) if conversation is None else conversation,
            [str(uuid4()) for _ in range(count)],
        )
    assert raised.value.field == field


async def test_get_messages_past_the_response_limit_is_refused(store: Store) -> None:
    entry = 16 + len(text_body("y" * 50))
    s = limited(store, 3 * entry + 1)
    conversation = await conversation_of(s, ["y" * 50] * 2)
    first, second = (str(i) for i in await ids_of(s, conversation))
    # A byte under the limit: sent.
    assert len((await s.companion.get_messages(conversation, [first, second, first])).entries) == 3
    # Exactly the limit, and past it: refused (a response stays under it).
    for asked in ([first, second, first], [first, second, first, second]):
        with pytest.raises(InvalidArgument) as raised:
            await limited(store, 3 * entry).companion.get_messages(conversation, asked)
        assert raised.value.field == "message_ids"
        assert f"{len(asked) * entry} bytes" in raised.value.reason
    # Found before measured.
    with pytest.raises(MessageNotFound):
        await s.companion.get_messages(conversation, [first] * 4 + [str(uuid4())])
    # One message comes alone however large, as on a list's page.
    tiny = limited(store, entry - 1).companion
    assert len((await tiny.get_messages(conversation, [first])).entries) == 1
    with pytest.raises(InvalidArgument):
        await tiny.get_messages(conversation, [first, first])


async def test_get_a_thousand_messages(store: Store) -> None:
    s = services(store)
    conversation = await conversation_of(s, [f"m{i}" for i in range(1000)])
    ids = await ids_of(s, conversation)
    asked = ids[::-1]
    result = await s.companion.get_messages(conversation, [str(i) for i in asked])
    assert [id_of(e) for e in result.entries] == asked


# --- ListConversationSnapshots ----------------------------------------------------------


async def test_snapshots_page_oldest_first_and_stay_stable(store: Store) -> None:
    s = services(store, Clock())
    conversation = await conversation_of(s, ["a"])
    (a,) = await ids_of(s, conversation)
    made = []
    for count in range(1, 6):
        snapshot = await s.conversations.create_snapshot(conversation, [str(a)] * count)
        assert not isinstance(snapshot, Replay)
        made.append(snapshot.snapshot)
    other = await conversation_of(s, ["b"])
    await s.conversations.create_snapshot(other, [str((await ids_of(s, other))[0])])

    first = await s.companion.list_snapshots(conversation, 2, "")
    assert first.snapshots == made[:2]
    assert first.state == await s.conversations.get_conversation(conversation)
    # A snapshot made meanwhile comes at the end.
    created = await s.conversations.create_snapshot(conversation, [str(a)])
    assert not isinstance(created, Replay)
    late = created.snapshot
    second = await s.companion.list_snapshots(conversation, 2, first.next_page_token)
    assert second.snapshots == made[2:4]
    third = await s.companion.list_snapshots(conversation, 2, second.next_page_token)
    assert (third.snapshots, third.next_page_token) == ([made[4], late], "")
    everything = await s.companion.list_snapshots(conversation, 0, "")
    assert (everything.snapshots, everything.next_page_token) == ([*made, late], "")
    assert [s.item_count for s in everything.snapshots] == [1, 2, 3, 4, 5, 1]


async def test_snapshot_page_sizes(store: Store) -> None:
    s = services(store, Clock())
    conversation = await conversation_of(s, ["a"])
    (a,) = await ids_of(s, conversation)
    for _ in range(101):
        await s.conversations.create_snapshot(conversation, [str(a)])
    for asked, size in [(0, 100), (-5, 100), (101, 101), (5000, 101)]:
        page = await s.companion.list_snapshots(conversation, asked, "")
        assert len(page.snapshots) == size
        assert bool(page.next_page_token) == (size == 100)


async def test_snapshot_tokens_are_bound_to_their_conversation(store: Store) -> None:
    s = services(store, Clock())
    conversation = await conversation_of(s, ["a"])
    other = await conversation_of(s, ["b"])
    (a,) = await ids_of(s, conversation)
    for _ in range(2):
        await s.conversations.create_snapshot(conversation, [str(a)])
    token = (await s.companion.list_snapshots(conversation, 1, "")).next_page_token
    cases = {
        "another conversation": (other, token),
        "not a page token": (conversation, token[:-2]),
        "another list method": (
            conversation,
            paging.encode_conversations(b"\0" * 8, paging.ConversationCursor(0, a, 0)),
        ),
        "issued by this service": (
            conversation,
            paging.encode_snapshots(UUID(conversation), paging.SnapshotCursor(2**62, a)),
        ),
    }
    for words, (target, bad) in cases.items():
        with pytest.raises(InvalidArgument) as raised:
            await s.companion.list_snapshots(target, 1, bad)
        assert raised.value.field == "page_token"
        assert words in raised.value.reason
    # The request's mistakes before the conversation's absence.
    with pytest.raises(InvalidArgument):
        await s.companion.list_snapshots(str(uuid4()), 1, token)
    with pytest.raises(InvalidArgument):
        await s.companion.list_snapshots("x", 1, "")
    with pytest.raises(ConversationNotFound):
        await s.companion.list_snapshots(str(uuid4()), 1, "")


# --- ForkConversation ---------------------------------------------------------------------


async def _listed(s: Services, conversation: str) -> list[EncodedMessage]:
    entries: list[EncodedMessage] = []
    token = ""
    while True:
        page = await s.conversations.list_messages(conversation, [], [], 1000, token)
        entries += page.entries
        token = page.next_page_token
        if not token:
            return entries


async def test_fork_copies_the_ordering_under_new_ids(store: Store) -> None:
    clock = Clock()
    s = services(store, clock)
    source = str(uuid4())
    inputs = [
        message_input("a", Role.USER, "text"),
        message_input("b", Role.ASSISTANT, "\x00"),
        message_input("c", Role.TOOL, "tool"),
    ]
    await s.conversations.append(source, inputs)
    await s.conversations.append(source, [message_input("d")])
    ids = await ids_of(s, source)
    await s.conversations.replace_range(source, str(ids[1]), str(ids[1]), [])  # detaches b
    await s.conversations.create_snapshot(source, [str(ids[0])])
    before = await s.companion.describe_conversation(source)

    fork = applied(await s.companion.fork_conversation(source, "", "", "the fork", {"from": "a"}))
    assert isinstance(fork, Forked)
    record = fork.record
    assert record.state.id.version == 7
    assert (record.state.version, record.state.message_count) == (1, 3)
    assert record.details == ConversationDetails("the fork", {"from": "a"}, None)
    assert record.created_at == record.state.updated_at
    assert await s.companion.describe_conversation(str(record.state.id)) == record
    # New ids, the same bodies, in the same order.
    copies = await _listed(s, str(record.state.id))
    assert [id_of(e) for e in copies] == fork.message_ids
    assert not set(fork.message_ids) & set(ids)
    assert [body_of(e) for e in copies] == [text_body(t) for t in "acd"]
    # Snapshots are not copied; the source did not change.
    assert (await s.companion.list_snapshots(str(record.state.id), 10, "")).snapshots == []
    assert await s.companion.describe_conversation(source) == before
    # The fork is a conversation like any other: it grows on.
    await s.conversations.append(str(record.state.id), [message_input("e")])
    await s.conversations.delete_range(
        str(record.state.id), str(fork.message_ids[0]), str(fork.message_ids[0])
    )
    grown = await s.companion.tail_messages(str(record.state.id), 10, [], [])
    assert [body_of(e) for e in grown.entries] == [text_body(t) for t in "cde"]
    assert grown.state.version == 3


async def test_fork_keeps_roles_and_kinds(store: Store) -> None:
    s = services(store)
    source = str(uuid4())
    inputs = [message_input("a", Role.USER, "k\x00"), message_input("b", Role.TOOL, "")]
    await s.conversations.append(source, inputs)
    fork = applied(await s.companion.fork_conversation(source, "", "", "", {}))
    new = str(fork.record.state.id)
    for index, (role, kind) in enumerate([(Role.USER, "k\x00"), (Role.TOOL, "")]):
        found = await s.companion.tail_messages(new, 5, [role], [kind])
        assert [id_of(e) for e in found.entries] == [fork.message_ids[index]]


async def test_fork_up_to_a_message(store: Store) -> None:
    s = services(store)
    source = await conversation_of(s, ["a", "b", "c", "d"])
    a, b, c, d = await ids_of(s, source)
    fork = applied(await s.companion.fork_conversation(source, str(b).upper(), "", "", {}))
    assert [body_of(e) for e in await _listed(s, str(fork.record.state.id))] == [
        text_body("a"),
        text_body("b"),
    ]
    first = applied(await s.companion.fork_conversation(source, str(a), "", "", {}))
    assert len(first.message_ids) == 1
    last = applied(await s.companion.fork_conversation(source, str(d), "", "", {}))
    assert len(last.message_ids) == 4

    other = await conversation_of(s, ["x"])
    (elsewhere,) = await ids_of(s, other)
    await s.conversations.replace_range(source, str(c), str(c), [])  # detaches c
    for missing in (c, elsewhere, uuid4()):
        target = str(uuid4())
        with pytest.raises(MessageNotFound) as raised:
            await s.companion.fork_conversation(source, str(missing), target, "", {})
        assert raised.value.field == "up_to_message_id"
        await absent(s, target)


async def test_fork_of_an_empty_conversation(store: Store) -> None:
    s = services(store)
    source = str(applied(await s.companion.create_conversation("", PLAIN)).state.id)
    fork = applied(await s.companion.fork_conversation(source, "", "", "", {}))
    assert (fork.message_ids, fork.record.state.message_count) == ([], 0)
    assert fork.record.state.version == 1


async def test_fork_of_ten_thousand_messages(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    s = services(store)
    source = await conversation_of(s, [f"m{i}" for i in range(10_000)])
    fork = applied(await s.companion.fork_conversation(source, "", "", "", {}))
    new = str(fork.record.state.id)
    assert fork.record.state.message_count == 10_000
    copies = await _listed(s, new)
    assert [id_of(e) for e in copies] == fork.message_ids
    assert [body_of(e) for e in copies] == [text_body(f"m{i}") for i in range(10_000)]
    tail = await s.companion.tail_messages(new, 5, [], [])
    assert [id_of(e) for e in tail.entries] == fork.message_ids[-5:]
    # Batches that do not divide the ordering evenly.
    monkeypatch.setattr(companion, "FORK_BATCH", 7)
    up_to = (await ids_of(s, source))[99]
    part = applied(await s.companion.fork_conversation(source, str(up_to), "", "", {}))
    assert [body_of(e) for e in await _listed(s, str(part.record.state.id))] == [
        text_body(f"m{i}") for i in range(100)
    ]


async def test_fork_into_an_existing_conversation_changes_nothing(store: Store) -> None:
    s = services(store)
    source = await conversation_of(s, ["a"])
    existing = await conversation_of(s, ["b"])
    before = await s.companion.describe_conversation(existing)
    with pytest.raises(AlreadyExists) as raised:
        await s.companion.fork_conversation(source, "", existing.upper(), "", {})
    assert raised.value.field == "new_conversation_id"
    assert await s.companion.describe_conversation(existing) == before
    # Into the source itself: it exists too.
    source_before = await s.companion.describe_conversation(source)
    with pytest.raises(AlreadyExists) as raised:
        await s.companion.fork_conversation(source, "", source, "", {})
    assert raised.value.field == "new_conversation_id"
    assert await s.companion.describe_conversation(source) == source_before
    # Into an absent source itself: the source is absent, and nothing is made.
    nowhere = str(uuid4())
    with pytest.raises(ConversationNotFound) as missing:
        await s.companion.fork_conversation(nowhere, "", nowhere, "", {})
    assert missing.value.field == "conversation_id"
    await absent(s, nowhere)
    # Named: it is used.
    named = str(uuid4())
    fork = applied(await s.companion.fork_conversation(source, "", named, "", {}))
    assert str(fork.record.state.id) == named


async def test_fork_of_an_absent_source_makes_nothing(store: Store) -> None:
    s = services(store)
    target = str(uuid4())
    with pytest.raises(ConversationNotFound) as raised:
        await s.companion.fork_conversation(str(uuid4()), "", target, "", {})
    assert raised.value.field == "conversation_id"
    await absent(s, target)


@pytest.mark.parametrize(
    ("source", "up_to", "new", "given", "field"),
    [
        ("nope", "", "", PLAIN, "conversation_id"),
        ("", "", "", PLAIN, "conversation_id"),
        (None, "x", "", PLAIN, "up_to_message_id"),
        (None, "", "x", PLAIN, "new_conversation_id"),
        (None, "", "", ConversationInput("t" * 1001, {}, None), "title"),
        (None, "", "", ConversationInput("", {"K": ""}, None), "labels['K']"),
    ],
)
async def test_fork_refuses_bad_requests_before_looking(
    store: Store, source: str | None, up_to: str, new: str, given: ConversationInput, field: str
) -> None:
    s = services(store)
    absent = str(uuid4())
    source_id = absent if source is None else source
    with pytest.raises(InvalidArgument) as raised:
        await s.companion.fork_conversation(source_id, up_to, new, given.title, given.labels)
    assert raised.value.field == field


async def test_fork_replays_with_an_idempotency_key(store: Store) -> None:
    s = services(store)
    source = await conversation_of(s, ["a", "b"])
    target = str(uuid4())
    first = applied(await s.companion.fork_conversation(source, "", target, "t", {}, key("f")))
    await s.conversations.append(target, [message_input("later")])
    await s.conversations.append(source, [message_input("later")])
    again = await s.companion.fork_conversation(source, "", target, "t", {}, key("f"))
    assert isinstance(again, Replayed)
    assert again.response == first.response
    assert again.version == 2
    assert (await s.companion.describe_conversation(target)).state.message_count == 3
    with pytest.raises(FailedPrecondition):
        await s.companion.fork_conversation(source, "", target, "", {}, key("f", b"another"))
    with pytest.raises(AlreadyExists):
        await s.companion.fork_conversation(source, "", target, "t", {}, key("g"))


async def test_fork_past_the_response_limit_makes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(companion, "FORK_BATCH", 2)
    # RecordCodec: 16 bytes an id, and a response of "fork N:" and the ids.
    s = limited(store, 5 * 16 + 3)
    source = await conversation_of(s, [str(i) for i in range(6)])
    ids = await ids_of(s, source)
    for up_to in (ids[-1], ids[5]):
        target = str(uuid4())
        with pytest.raises(InvalidArgument) as raised:
            await s.companion.fork_conversation(source, str(up_to), target, "", {})
        assert raised.value.field == "up_to_message_id"
        await absent(s, target)
    # Five ids fit the ids' share, not the whole response.
    with pytest.raises(InvalidArgument):
        await s.companion.fork_conversation(source, str(ids[4]), "", "", {})
    fork = applied(await s.companion.fork_conversation(source, str(ids[3]), "", "", {}))
    assert len(fork.message_ids) == 4


async def test_a_fork_copies_one_state_of_its_source(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers of the source during a fork of it land before or after
    it, never in the middle: every fork holds the ordering as it was at
    one moment (read in many batches here)."""
    monkeypatch.setattr(companion, "FORK_BATCH", 7)
    s = services(store)
    source = await conversation_of(s, [f"m{i}" for i in range(300)])
    ids = await ids_of(s, source)

    async def fork() -> list[bytes]:
        made = applied(await s.companion.fork_conversation(source, "", "", "", {}))
        return [body_of(e) for e in await _listed(s, str(made.record.state.id))]

    async def write() -> None:
        await s.conversations.append(source, [message_input("late")])
        await s.conversations.delete_range(source, str(ids[0]), str(ids[149]))

    results = await asyncio.gather(fork(), write(), fork())
    everything = [text_body(f"m{i}") for i in range(300)]
    states = [everything, [*everything, text_body("late")], [*everything[150:], text_body("late")]]
    for copied in (results[0], results[2]):
        assert copied in states


async def test_forks_of_forks(store: Store) -> None:
    s = services(store)
    source = await conversation_of(s, ["a", "b"])
    first = applied(await s.companion.fork_conversation(source, "", "", "", {}))
    second = applied(
        await s.companion.fork_conversation(str(first.record.state.id), "", "", "", {})
    )
    assert [body_of(e) for e in await _listed(s, str(second.record.state.id))] == [
        text_body("a"),
        text_body("b"),
    ]
    assert (second.record.state.message_count, second.record.state.version) == (2, 1)
