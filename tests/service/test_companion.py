"""The companion API's rules in process, over every backend: conversations
as a whole (create, describe, update, list, delete), versions and
conditional writes, idempotent retries, and paging that stays stable while
others write. Each test labels its conversations with a run id of its own,
so that lists see only them (databases are shared)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import TypeVar
from uuid import UUID, uuid4

import pytest

from agent_state import paging, rules
from agent_state.clock import now_micros
from agent_state.companion import (
    AppendedWithState,
    CompanionService,
    ConversationPage,
    DeletedConversation,
    Replayed,
)
from agent_state.errors import (
    AlreadyExists,
    ConversationNotFound,
    FailedPrecondition,
    InvalidArgument,
    SnapshotNotFound,
    VersionMismatch,
)
from agent_state.idempotency import Idempotency
from agent_state.model import (
    ConversationDetails,
    ConversationInput,
    ConversationRecord,
    ConversationState,
    EncodedResponse,
    Erased,
    ExpectedVersion,
    MessageHeader,
    MessageInput,
    Moment,
    Retention,
    RetentionInput,
)
from agent_state.service import ConversationService, Replay
from agent_state.storage.base import Store

from .._gen_helpers import text_body
from .test_service import ReadableCodec

T = TypeVar("T")

PLAIN = ConversationInput("", {}, None)


class RecordCodec:
    """A CompanionCodec whose bytes name the record they stand for. A
    message's entry is its id's 16 bytes and its body (as ReadableCodec's);
    a fork's response is the fork's serial number and its copies' ids."""

    def __init__(self) -> None:
        self.records: dict[EncodedResponse, ConversationRecord] = {}
        self.appends: dict[EncodedResponse, AppendedWithState] = {}

    def conversation(self, record: ConversationRecord) -> EncodedResponse:
        response = EncodedResponse(b"record %d" % len(self.records))
        self.records[response] = record
        return response

    def forked(self, record: ConversationRecord, message_ids: Sequence[UUID]) -> EncodedResponse:
        response = EncodedResponse(
            b"fork %d:" % len(self.records) + b"".join(i.bytes for i in message_ids)
        )
        self.records[response] = record
        return response

    def frame(self, conversation_id: UUID, message: MessageHeader) -> tuple[bytes, bytes]:
        return message.id.bytes, b""

    def tail_header_size(self, state: ConversationState) -> int:
        return 0

    def message_id_size(self) -> int:
        return 16

    def listed_conversation_size(self, record: ConversationRecord) -> int:
        return len(record.details.title.encode())

    def token_field_size(self, token_length: int) -> int:
        return token_length

    def appended_with_state(self, result: AppendedWithState) -> EncodedResponse:
        response = EncodedResponse(b"appended with state %d" % len(self.appends))
        self.appends[response] = result
        return response


class Clock:
    """A clock that moves on by one microsecond a reading."""

    def __init__(self) -> None:
        self._readings = itertools.count(now_micros())

    def __call__(self) -> int:
        return next(self._readings)


@dataclasses.dataclass
class Services:
    companion: CompanionService
    conversations: ConversationService
    codec: RecordCodec

    async def append(self, conversation: str, count: int = 1) -> None:
        inputs = [
            MessageInput(role=1, kind="", body=text_body(str(i)), body_variant="text")
            for i in range(count)
        ]
        await self.conversations.append(conversation, inputs)


def services(store: Store, clock: Callable[[], int] = now_micros) -> Services:
    codec = RecordCodec()
    conversations = ConversationService(store, ReadableCodec(), clock=clock)
    return Services(
        CompanionService(store, codec, clock=clock, messages=conversations),
        conversations,
        codec,
    )


def applied(result: T | Replayed) -> T:
    assert not isinstance(result, Replayed)
    return result


def labelled(run: str, **labels: str) -> ConversationInput:
    return ConversationInput("", {"run": run, **labels}, None)


def key(name: str, request: bytes = b"request") -> Idempotency:
    return Idempotency(name, request)


# --- create and describe ---------------------------------------------------------


async def test_create_makes_an_empty_conversation_at_version_1(store: Store) -> None:
    clock = Clock()
    s = services(store, clock)
    conversation = uuid4()
    given = ConversationInput(
        "a title \x00", {"user": "alice"}, RetentionInput(Moment(3600, 5000), 20)
    )
    # Any accepted spelling of the id.
    record = applied(await s.companion.create_conversation(str(conversation).upper(), given))
    assert record.state.id == conversation
    assert (record.state.version, record.state.message_count) == (1, 0)
    assert record.created_at == record.state.updated_at
    assert record.details == ConversationDetails(
        "a title \x00", {"user": "alice"}, Retention(3_600_000_005, 20)
    )
    assert await s.companion.describe_conversation(str(conversation)) == record
    # The agynio side sees it too.
    assert await s.conversations.get_conversation(str(conversation)) == record.state


async def test_create_without_an_id_makes_one(store: Store) -> None:
    s = services(store)
    record = applied(await s.companion.create_conversation("", PLAIN))
    assert record.state.id.version == 7
    assert (await s.companion.describe_conversation(str(record.state.id))).state.version == 1


async def test_create_refuses_an_existing_conversation_and_changes_nothing(store: Store) -> None:
    s = services(store)
    conversation = str(uuid4())
    await s.append(conversation, 2)
    before = await s.companion.describe_conversation(conversation)
    with pytest.raises(AlreadyExists) as raised:
        await s.companion.create_conversation(conversation, ConversationInput("t", {}, None))
    assert raised.value.field == "conversation_id"
    assert await s.companion.describe_conversation(conversation) == before
    assert before.state.version == 1
    assert before.created_at == before.state.updated_at  # created by its first append


@pytest.mark.parametrize(
    ("conversation", "given", "field"),
    [
        ("not-a-uuid", PLAIN, "conversation_id"),
        ("", ConversationInput("x" * 1001, {}, None), "title"),
        ("", ConversationInput("", {"Bad": ""}, None), "labels['Bad']"),
        ("", ConversationInput("", {}, RetentionInput(Moment(-1, 0), 0)), "retention.max_idle"),
    ],
)
async def test_create_refuses_bad_requests(
    store: Store, conversation: str, given: ConversationInput, field: str
) -> None:
    s = services(store)
    with pytest.raises(InvalidArgument) as raised:
        await s.companion.create_conversation(conversation, given)
    assert raised.value.field == field


async def test_describe_names_what_is_wrong_before_what_is_missing(store: Store) -> None:
    s = services(store)
    with pytest.raises(InvalidArgument):
        await s.companion.describe_conversation("")
    with pytest.raises(ConversationNotFound):
        await s.companion.describe_conversation(str(uuid4()))


# --- versions ------------------------------------------------------------------------


async def test_every_change_adds_one_to_the_version_and_a_snapshot_none(store: Store) -> None:
    s = services(store)
    conversation = str(applied(await s.companion.create_conversation("", PLAIN)).state.id)

    async def version() -> int:
        return (await s.companion.describe_conversation(conversation)).state.version

    assert await version() == 1
    await s.append(conversation, 3)
    assert await version() == 2
    await s.companion.update_conversation(conversation, ["title"], labelled("x"), 0)
    assert await version() == 3
    ids = (await s.conversations.list_message_ids(conversation, 10, "")).message_ids
    await s.conversations.replace_range(conversation, str(ids[0]), str(ids[0]), [])
    assert await version() == 4
    await s.conversations.delete_range(conversation, str(ids[1]), "")
    assert await version() == 5
    await s.conversations.create_snapshot(conversation, [str(ids[0])])
    assert await version() == 5


# --- update --------------------------------------------------------------------------


async def test_update_changes_the_fields_named_and_the_version_not_updated_at(
    store: Store,
) -> None:
    s = services(store)
    given = ConversationInput("old", {"a": "1", "b": "2"}, RetentionInput(None, 5))
    created = applied(await s.companion.create_conversation("", given))
    conversation = str(created.state.id)
    await s.append(conversation)
    appended = await s.companion.describe_conversation(conversation)

    change = ConversationInput("new", {"c": "3"}, None)
    labels_only = applied(
        await s.companion.update_conversation(conversation, ["labels"], change, 0)
    )
    assert labels_only.details == ConversationDetails("old", {"c": "3"}, Retention(0, 5))
    assert labels_only.state == dataclasses.replace(appended.state, version=3)
    assert labels_only.created_at == created.created_at
    everything = applied(
        await s.companion.update_conversation(
            conversation, ["title", "retention"], change, labels_only.state.version
        )
    )
    # Retention named but unset: back to the server's default.
    assert everything.details == ConversationDetails("new", {"c": "3"}, None)
    assert everything.state.version == 4
    assert everything.state.updated_at == appended.state.updated_at
    assert await s.companion.describe_conversation(conversation) == everything


async def test_update_with_another_version_changes_nothing(store: Store) -> None:
    s = services(store)
    created = applied(await s.companion.create_conversation("", labelled("v")))
    conversation = str(created.state.id)
    for expected in (2, 7):
        with pytest.raises(VersionMismatch) as raised:
            await s.companion.update_conversation(
                conversation, ["title"], ConversationInput("t", {}, None), expected
            )
        assert (raised.value.field, raised.value.current, raised.value.expected) == (
            "expected_version",
            1,
            expected,
        )
        assert "at version 1, not" in raised.value.reason
    assert await s.companion.describe_conversation(conversation) == created


@pytest.mark.parametrize(
    ("conversation", "paths", "expected", "field"),
    [
        ("", ["title"], 0, "conversation.conversation_id"),
        (None, [], 0, "update_mask"),
        (None, ["nope"], 0, "update_mask.paths[0]"),
        (None, ["title"], -1, "expected_version"),
    ],
)
async def test_update_refuses_bad_requests_before_looking(
    store: Store, conversation: str | None, paths: list[str], expected: int, field: str
) -> None:
    """The conversation does not exist: the request's own mistakes come first."""
    s = services(store)
    with pytest.raises(InvalidArgument) as raised:
        await s.companion.update_conversation(
            str(uuid4()) if conversation is None else conversation, paths, PLAIN, expected
        )
    assert raised.value.field == field
    with pytest.raises(ConversationNotFound):
        await s.companion.update_conversation(str(uuid4()), ["title"], PLAIN, 0)


async def test_concurrent_conditional_updates_let_one_through(store: Store) -> None:
    s = services(store)
    for _ in range(10):
        created = applied(await s.companion.create_conversation("", PLAIN))
        conversation = str(created.state.id)

        async def update(title: str, conversation: str = conversation) -> int | None:
            """None when it lands, else the version it was refused at."""
            try:
                await s.companion.update_conversation(
                    conversation, ["title"], ConversationInput(title, {}, None), 1
                )
            except VersionMismatch as mismatch:
                return mismatch.current
            return None

        outcomes = await asyncio.gather(update("a"), update("b"))
        assert sorted(outcomes, key=str) == [2, None]
        after = await s.companion.describe_conversation(conversation)
        assert after.state.version == 2
        assert after.details.title == ("a" if outcomes[0] is None else "b")


# --- idempotency keys -------------------------------------------------------------------


async def test_create_and_update_replay_their_first_answer(store: Store) -> None:
    s = services(store)
    conversation = str(uuid4())
    first = await s.companion.create_conversation(conversation, PLAIN, key("c"))
    record = applied(first)
    again = await s.companion.create_conversation(conversation, PLAIN, key("c"))
    assert isinstance(again, Replayed)
    assert s.codec.records[again.response] == record
    assert again.version == 1

    change = ConversationInput("t", {}, None)
    updated = applied(
        await s.companion.update_conversation(conversation, ["title"], change, 1, key("u"))
    )
    await s.append(conversation)
    # The original answer, whatever the version is now; nothing applied twice.
    replay = await s.companion.update_conversation(conversation, ["title"], change, 1, key("u"))
    assert isinstance(replay, Replayed)
    assert s.codec.records[replay.response] == updated
    assert replay.version == 3
    assert (await s.companion.describe_conversation(conversation)).state.version == 3
    with pytest.raises(FailedPrecondition):
        await s.companion.update_conversation(
            conversation, ["title"], change, 1, key("u", b"another")
        )
    # Another key on an existing conversation: it exists.
    with pytest.raises(AlreadyExists):
        await s.companion.create_conversation(conversation, PLAIN, key("other"))


def fresh_key(request: bytes = b"request") -> Idempotency:
    """A key no other test uses: the keys of calls that name no conversation
    are shared by the whole database."""
    return key(f"k-{uuid4()}", request)


async def test_a_create_that_names_no_id_replays_under_its_key(store: Store) -> None:
    s = services(store)
    made = fresh_key()
    first = applied(await s.companion.create_conversation("", PLAIN, made))
    again = await s.companion.create_conversation("", PLAIN, made)
    assert isinstance(again, Replayed)
    assert s.codec.records[again.response] == first
    assert again.version == 1
    await s.append(str(first.state.id))
    # The original answer, with the version now.
    later = await s.companion.create_conversation("", PLAIN, made)
    assert isinstance(later, Replayed)
    assert (s.codec.records[later.response], later.version) == (first, 2)
    with pytest.raises(FailedPrecondition) as raised:
        await s.companion.create_conversation("", PLAIN, key(made.key, b"another"))
    assert raised.value.field == "idempotency-key"
    # Concurrent duplicates make one conversation; the others answer with it.
    racing = fresh_key()
    outcomes = await asyncio.gather(
        *(s.companion.create_conversation("", PLAIN, racing) for _ in range(4))
    )
    made_ones = [outcome for outcome in outcomes if not isinstance(outcome, Replayed)]
    assert len(made_ones) == 1
    replays = [outcome for outcome in outcomes if isinstance(outcome, Replayed)]
    assert [s.codec.records[replay.response] for replay in replays] == made_ones * 3


async def test_a_fork_that_names_no_id_replays_under_its_key(store: Store) -> None:
    s = services(store)
    source = str(uuid4())
    await s.append(source, 3)
    forking = fresh_key()
    first = await s.companion.fork_conversation(source, "", "", "", {}, forking)
    assert not isinstance(first, Replayed)
    again = await s.companion.fork_conversation(source, "", "", "", {}, forking)
    assert isinstance(again, Replayed)
    assert (again.response, again.version) == (first.response, 1)
    assert s.codec.records[again.response] == first.record
    # The key is the source's: forking another conversation is another call.
    other = str(uuid4())
    await s.append(other)
    elsewhere = await s.companion.fork_conversation(other, "", "", "", {}, forking)
    assert not isinstance(elsewhere, Replayed)
    # Erasing the fork takes its key along: the same call then forks again.
    await s.companion.delete_conversation(str(first.record.state.id), 0, False)
    anew = await s.companion.fork_conversation(source, "", "", "", {}, forking)
    assert not isinstance(anew, Replayed)
    assert anew.record.state.id != first.record.state.id


async def test_a_delete_replays_under_its_key(store: Store) -> None:
    s = services(store)
    conversation = str(uuid4())
    await s.append(conversation, 3)
    deleting = fresh_key()
    assert await s.companion.delete_conversation(
        conversation, 0, False, deleting
    ) == DeletedConversation(Erased(3, 0))
    # A retry answers as the first call did, not NOT_FOUND...
    assert await s.companion.delete_conversation(
        conversation, 0, False, deleting
    ) == DeletedConversation(Erased(3, 0))
    # ...and does not erase a conversation made under that id since (at
    # version 1 after the call).
    await s.append(conversation)
    replay = await s.companion.delete_conversation(conversation, 0, False, deleting)
    assert replay == DeletedConversation(Erased(3, 0), 1)
    assert (await s.companion.describe_conversation(conversation)).state.message_count == 1
    with pytest.raises(FailedPrecondition):
        await s.companion.delete_conversation(conversation, 0, True, key(deleting.key, b"other"))
    # Without a key, a delete of an absent conversation is NOT_FOUND as ever.
    with pytest.raises(ConversationNotFound):
        await s.companion.delete_conversation(str(uuid4()), 0, False)
    absent, missing = str(uuid4()), fresh_key()
    assert await s.companion.delete_conversation(absent, 0, True, missing) == DeletedConversation(
        Erased(0, 0)
    )
    await s.append(absent)
    again = await s.companion.delete_conversation(absent, 0, True, missing)
    assert again == DeletedConversation(Erased(0, 0), 1)
    assert (await s.companion.describe_conversation(absent)).state.version == 1
    # Concurrent duplicates erase once, and all answer what was erased.
    racing, raced = str(uuid4()), fresh_key()
    await s.append(racing, 2)
    outcomes = await asyncio.gather(
        *(s.companion.delete_conversation(racing, 0, False, raced) for _ in range(4))
    )
    assert outcomes == [DeletedConversation(Erased(2, 0))] * 4


# --- delete --------------------------------------------------------------------------


async def test_delete_erases_and_a_later_append_starts_again_at_version_1(store: Store) -> None:
    s = services(store)
    conversation = str(
        applied(
            await s.companion.create_conversation("", ConversationInput("t", {"k": "v"}, None))
        ).state.id
    )
    await s.append(conversation, 3)
    ids = (await s.conversations.list_message_ids(conversation, 10, "")).message_ids
    await s.conversations.replace_range(conversation, str(ids[0]), str(ids[0]), [])  # detaches
    snapshot = await s.conversations.create_snapshot(conversation, [str(ids[1])])
    assert not isinstance(snapshot, Replay)

    assert await s.companion.delete_conversation(conversation, 0, False) == DeletedConversation(
        Erased(3, 1)
    )
    with pytest.raises(ConversationNotFound):
        await s.companion.describe_conversation(conversation)
    with pytest.raises(SnapshotNotFound):
        await s.conversations.list_snapshot_message_ids(str(snapshot.snapshot.id), 10, "")
    assert await s.companion.version_of(conversation) is None

    await s.append(conversation)
    again = await s.companion.describe_conversation(conversation)
    assert (again.state.version, again.state.message_count) == (1, 1)
    assert again.details == ConversationDetails("", {}, None)


async def test_a_conversation_made_by_an_append_was_created_when_first_updated(
    store: Store,
) -> None:
    """Whichever path of the append made it: the common one, the locked one
    (an idempotency key, a version condition) or an append with state."""
    s = services(store, Clock())
    message = MessageInput(role=1, kind="", body=text_body("x"), body_variant="text")
    made = [str(uuid4()) for _ in range(4)]
    await s.conversations.append(made[0], [message])
    await s.conversations.append(made[1], [message], key("k"))
    await s.conversations.append(made[2], [message], None, ExpectedVersion(0, "if-version"))
    await s.companion.append_with_state(made[3], [message], [], 0)
    for conversation in made:
        record = await s.companion.describe_conversation(conversation)
        assert record.created_at == record.state.updated_at, conversation


async def test_delete_of_an_absent_conversation(store: Store) -> None:
    s = services(store)
    absent = str(uuid4())
    with pytest.raises(ConversationNotFound):
        await s.companion.delete_conversation(absent, 0, False)
    for expected in (0, 3):
        assert await s.companion.delete_conversation(absent, expected, True) == DeletedConversation(
            Erased(0, 0)
        )
    with pytest.raises(InvalidArgument):
        await s.companion.delete_conversation("nope", 0, True)
    with pytest.raises(InvalidArgument):
        await s.companion.delete_conversation(absent, -2, True)


async def test_conditional_delete(store: Store) -> None:
    s = services(store)
    conversation = str(applied(await s.companion.create_conversation("", PLAIN)).state.id)
    await s.append(conversation)
    with pytest.raises(VersionMismatch) as raised:
        await s.companion.delete_conversation(conversation, 1, True)
    assert raised.value.current == 2
    assert (await s.companion.describe_conversation(conversation)).state.message_count == 1
    assert await s.companion.delete_conversation(conversation, 2, False) == DeletedConversation(
        Erased(1, 0)
    )


async def test_version_of(store: Store) -> None:
    s = services(store)
    assert await s.companion.version_of("") is None
    assert await s.companion.version_of("x") is None
    assert await s.companion.version_of(str(uuid4())) is None
    conversation = str(applied(await s.companion.create_conversation("", PLAIN)).state.id)
    assert await s.companion.version_of(conversation) == 1


# --- ListConversations ----------------------------------------------------------------


async def _everything(
    s: Services,
    run: str,
    order_by: str = "",
    page_size: int = 3,
    between: Callable[[int], object] | None = None,
    **filters: Moment,
) -> list[ConversationRecord]:
    """Every page of the run's conversations; `between(n)` runs after page n."""
    records: list[ConversationRecord] = []
    token = ""
    number = 0
    while True:
        page: ConversationPage = await s.companion.list_conversations(
            {"run": run},
            filters.get("updated_after"),
            filters.get("updated_before"),
            order_by,
            page_size,
            token,
        )
        records += page.conversations
        token = page.next_page_token
        assert page.conversations or not token, "only the last page may be empty"
        if not token:
            return records
        if between is not None:
            done = between(number)
            if asyncio.iscoroutine(done):
                await done
        number += 1


async def _run_of(s: Services, run: str, count: int) -> list[ConversationRecord]:
    return [applied(await s.companion.create_conversation("", labelled(run))) for _ in range(count)]


def _ids(records: list[ConversationRecord]) -> list[UUID]:
    return [record.state.id for record in records]


async def test_list_pages_newest_or_oldest_first(store: Store) -> None:
    s = services(store, Clock())
    run = uuid4().hex
    records = await _run_of(s, run, 7)
    newest = await _everything(s, run)
    assert newest == records[::-1]
    assert await _everything(s, run, "updated_at desc", 2) == newest
    assert await _everything(s, run, "updated_at", 100) == records
    middle = records[3].state.updated_at
    after = Moment(middle // 1_000_000, middle % 1_000_000 * 1000)
    assert _ids(await _everything(s, run, "updated_at", updated_after=after)) == _ids(records[4:])
    assert _ids(await _everything(s, run, updated_before=after)) == _ids(records[2::-1])
    # Other labels narrow it.
    other = applied(await s.companion.create_conversation("", labelled(run, extra="yes")))
    only = await s.companion.list_conversations(
        {"run": run, "extra": "yes"}, None, None, "", 10, ""
    )
    assert only.conversations == [other]


async def test_list_page_sizes(store: Store) -> None:
    s = services(store, Clock())
    run = uuid4().hex
    await _run_of(s, run, 3)
    for size in (0, -5):
        page = await s.companion.list_conversations({"run": run}, None, None, "", size, "")
        assert len(page.conversations) == 3
        assert not page.next_page_token
    page = await s.companion.list_conversations({"run": run}, None, None, "", 2**31 - 1, "")
    assert len(page.conversations) == 3


async def test_a_list_page_stays_under_the_response_limit(store: Store) -> None:
    """The codec counts a conversation as its title's bytes, and a page
    token as its length: 1,024 bytes hold a token (67) and two titles of
    400, not three; a title past the whole limit still comes alone."""
    s = services(store, Clock())
    smaller = rules.Limits(max_response_bytes=1024)
    s.companion = CompanionService(store, s.codec, smaller, Clock(), s.conversations)
    run = uuid4().hex
    # 1,000 two-byte code points: 2,000 bytes.
    titles = ["a" * 400, "b" * 400, "c" * 400, "d" + "é" * 999, "e" * 400, "f" * 10]
    for title in titles:
        await s.companion.create_conversation("", ConversationInput(title, {"run": run}, None))
    token, pages = "", []
    while True:
        page = await s.companion.list_conversations(
            {"run": run}, None, None, "updated_at", 0, token
        )
        pages.append([record.details.title[0] for record in page.conversations])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["a", "b"], ["c"], ["d"], ["e", "f"]]


async def test_list_tokens_are_bound_to_their_filters(store: Store) -> None:
    s = services(store, Clock())
    run = uuid4().hex
    await _run_of(s, run, 3)
    page = await s.companion.list_conversations({"run": run}, None, None, "", 1, "")
    token = page.next_page_token
    assert token
    for labels, order in (({"run": "other"}, ""), ({"run": run}, "updated_at")):
        with pytest.raises(InvalidArgument) as raised:
            await s.companion.list_conversations(labels, None, None, order, 1, token)
        assert raised.value.field == "page_token"
    with pytest.raises(InvalidArgument) as raised:
        await s.companion.list_conversations({"run": run}, Moment(0, 0), None, "", 1, token)
    assert raised.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        await s.companion.list_conversations({"run": run}, None, None, "", 1, token[:-2])


@pytest.mark.parametrize("order_by", ["", "updated_at"])
async def test_list_paging_is_stable_while_others_write(store: Store, order_by: str) -> None:
    """Between pages, conversations are created, updated by appends and
    by UpdateConversation, and deleted: no conversation is listed twice,
    and every one that did not move (nor go) is listed."""
    s = services(store, Clock())
    run = uuid4().hex
    records = await _run_of(s, run, 20)
    still = {record.state.id for record in records}
    moved: set[UUID] = set()

    async def meddle(number: int) -> None:
        touched = records[(number * 7) % len(records)].state.id
        if touched in still:
            still.discard(touched)
            moved.add(touched)
            await s.append(str(touched))
        gone = records[(number * 11 + 3) % len(records)].state.id
        if gone in still:
            still.discard(gone)
            await s.companion.delete_conversation(str(gone), 0, True)
        await s.companion.create_conversation("", labelled(run))
        renamed = records[(number * 5 + 1) % len(records)].state.id
        # Details only: the conversation does not move.
        if renamed in still:
            await s.companion.update_conversation(
                str(renamed), ["title"], ConversationInput(f"page {number}", {}, None), 0
            )

    listed = _ids(await _everything(s, run, order_by, 2, meddle))
    assert len(listed) == len(set(listed)), "a conversation came twice"
    assert still <= set(listed), "a conversation that did not move was skipped"
    assert moved  # the test moved some


async def test_list_bad_requests(store: Store) -> None:
    s = services(store)
    cases: list[tuple[dict[str, str], Moment | None, str, str, str]] = [
        ({"BAD": "x"}, None, "", "", "labels['BAD']"),
        ({}, Moment(0, -1), "", "", "updated_after"),
        ({}, None, "newest", "", "order_by"),
        ({}, None, "", "garbage", "page_token"),
    ]
    for labels, after, order_by, token, field in cases:
        with pytest.raises(InvalidArgument) as raised:
            await s.companion.list_conversations(labels, after, None, order_by, 10, token)
        assert raised.value.field == field


@pytest.mark.parametrize("updated_at", [-(2**63), 2**63 - 1])
async def test_list_refuses_a_token_with_impossible_times(store: Store, updated_at: int) -> None:
    """A token's check value is no secret: one made by hand may hold any
    number, and is refused, not sent to the database."""
    s = services(store)
    fingerprint = paging.conversation_filter_fingerprint({}, None, None, True)
    token = paging.encode_conversations(
        fingerprint, paging.ConversationCursor(updated_at, uuid4(), 0)
    )
    with pytest.raises(InvalidArgument) as raised:
        await s.companion.list_conversations({}, None, None, "", 10, token)
    assert raised.value.field == "page_token"
