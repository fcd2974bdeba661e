"""ReplaceConversationMessagesRange: the three modes, moves, detach/re-insert, errors, atomicity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.e2e.helpers import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    expect_error,
    expect_range_change,
    micros,
    new_id,
    texts,
)
from tests.support import calls
from tests.support.calls import Stub, text_message


def _letters(stub: Stub, cid: str, n: int = 5) -> list[str]:
    return calls.seed(stub, cid, n)


# --- [from..to] mode -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rng", "new", "result"),
    [
        # indexes into [a, b, c, d, e]
        ((1, 2), [], [0, 3, 4]),  # detach
        ((0, 4), [], []),  # detach everything
        ((1, 3), [3, 2, 1], [0, 3, 2, 1, 4]),  # reorder inside the range
        ((1, 3), [2], [0, 2, 4]),  # keep one, detach the rest
        ((1, 1), [1], [0, 1, 2, 3, 4]),  # no change at all
        ((1, 3), [1, 2, 3], [0, 1, 2, 3, 4]),  # no change at all
        ((1, 2), [4], [0, 4, 3]),  # move from the right
        ((2, 3), [0], [1, 0, 4]),  # move from the left
        ((2, 2), [4, 0], [1, 4, 0, 3]),  # move from both sides
        ((1, 3), [3, 0, 1], [3, 0, 1, 4]),  # mix of inside and outside
        ((0, 0), [4, 3, 2, 1, 0], [4, 3, 2, 1, 0]),  # everything moves in front of a
        ((4, 4), [0], [1, 2, 3, 0]),  # tail replaced by the head
    ],
)
def test_range_mode(stub: Stub, rng: tuple[int, int], new: list[int], result: list[int]) -> None:
    cid = new_id()
    ids = _letters(stub, cid)
    before = calls.get(stub, cid)
    response = calls.replace(
        stub, cid, from_id=ids[rng[0]], to_id=ids[rng[1]], new_ids=[ids[i] for i in new]
    )
    assert list(response.replaced_message_ids) == ids[rng[0] : rng[1] + 1]
    assert list(response.inserted_message_ids) == [ids[i] for i in new]
    expect_range_change(stub, cid, ids, result, response.metadata, before)


# --- insert-only modes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "new", "result"),
    [
        (0, [4], [0, 4, 1, 2, 3]),
        (4, [0], [1, 2, 3, 4, 0]),  # after the tail
        (1, [0, 2], [1, 0, 2, 3, 4]),  # neighbours on both sides move around the anchor
        (0, [1], [0, 1, 2, 3, 4]),  # already there: a move to the same place
        (2, [4, 3, 1, 0], [2, 4, 3, 1, 0]),
    ],
)
def test_insert_after_from(stub: Stub, anchor: int, new: list[int], result: list[int]) -> None:
    cid = new_id()
    ids = _letters(stub, cid)
    before = calls.get(stub, cid)
    response = calls.replace(stub, cid, from_id=ids[anchor], new_ids=[ids[i] for i in new])
    assert list(response.replaced_message_ids) == []
    assert list(response.inserted_message_ids) == [ids[i] for i in new]
    assert calls.all_ids(stub, cid) == [ids[i] for i in result]
    assert response.metadata.message_count == 5
    assert micros(calls.get(stub, cid).updated_at) > micros(before.updated_at)


@pytest.mark.parametrize(
    ("anchor", "new", "result"),
    [
        (4, [0], [1, 2, 3, 0, 4]),
        (0, [4], [4, 0, 1, 2, 3]),  # before the head
        (1, [3, 0], [3, 0, 1, 2, 4]),
        (2, [1], [0, 1, 2, 3, 4]),  # already there
        (2, [4, 3, 1, 0], [4, 3, 1, 0, 2]),
    ],
)
def test_insert_before_to(stub: Stub, anchor: int, new: list[int], result: list[int]) -> None:
    cid = new_id()
    ids = _letters(stub, cid)
    response = calls.replace(stub, cid, to_id=ids[anchor], new_ids=[ids[i] for i in new])
    assert list(response.replaced_message_ids) == []
    assert list(response.inserted_message_ids) == [ids[i] for i in new]
    assert calls.all_ids(stub, cid) == [ids[i] for i in result]
    assert response.metadata.message_count == 5


# --- detach and re-insert ----------------------------------------------------------------


def test_detach_then_reinsert(stub: Stub) -> None:
    cid = new_id()
    a, b, c, d, e = _letters(stub, cid)
    detached = calls.replace(stub, cid, from_id=b, to_id=c)
    assert list(detached.replaced_message_ids) == [b, c]
    assert list(detached.inserted_message_ids) == []
    assert detached.metadata.message_count == 3
    assert calls.all_ids(stub, cid) == [a, d, e]
    assert calls.get(stub, cid).message_count == 3

    # Detached messages can be snapshotted, and put back by every mode.
    snap = calls.snapshot(stub, cid, [c, b])
    assert calls.snapshot_ids(stub, snap.snapshot_id) == [c, b]
    back = calls.replace(stub, cid, from_id=d, new_ids=[c])
    assert back.metadata.message_count == 4
    assert calls.all_ids(stub, cid) == [a, d, c, e]
    calls.replace(stub, cid, to_id=a, new_ids=[b])
    assert calls.all_ids(stub, cid) == [b, a, d, c, e]
    calls.replace(stub, cid, from_id=a, to_id=d)  # detach a, d
    assert calls.all_ids(stub, cid) == [b, c, e]
    calls.replace(stub, cid, from_id=c, to_id=c, new_ids=[d, c, a])
    assert calls.all_ids(stub, cid) == [b, d, c, a, e]
    assert calls.get(stub, cid).message_count == 5
    # The re-inserted messages are the same messages.
    assert texts(calls.list_all(stub, cid)) == ["m1", "m3", "m2", "m0", "m4"]


def test_detached_messages_are_not_anchors(stub: Stub) -> None:
    cid = new_id()
    a, b, c = _letters(stub, cid, 3)
    calls.replace(stub, cid, from_id=b, to_id=b)
    expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=b, new_ids=[a]))
    expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, to_id=b, new_ids=[a]))
    expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=a, to_id=b))
    expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=b, to_id=c))
    assert calls.all_ids(stub, cid) == [a, c]


def test_detach_everything_then_build_again(stub: Stub) -> None:
    cid = new_id()
    a, b = _letters(stub, cid, 2)
    calls.replace(stub, cid, from_id=a, to_id=b)
    assert calls.get(stub, cid).message_count == 0
    assert calls.all_ids(stub, cid) == []
    (c,) = calls.seed(stub, cid, 1, prefix="n")
    calls.replace(stub, cid, to_id=c, new_ids=[b, a])
    assert calls.all_ids(stub, cid) == [b, a, c]


def test_summarisation_is_one_atomic_replace(stub: Stub) -> None:
    cid = new_id()
    history = calls.seed(stub, cid, 10)
    summary = calls.append(stub, cid, [text_message("summary of m0..m5", kind="summary")]).appended[
        0
    ]
    response = calls.replace(stub, cid, from_id=history[0], to_id=history[5], new_ids=[summary.id])
    assert list(response.replaced_message_ids) == history[:6]
    assert list(response.inserted_message_ids) == [summary.id]
    assert calls.all_ids(stub, cid) == [summary.id, *history[6:]]
    assert response.metadata.message_count == 5
    # Whole history summarised.
    final = calls.append(stub, cid, [text_message("summary of all", kind="summary")]).appended[0]
    calls.replace(stub, cid, from_id=summary.id, to_id=history[9], new_ids=[final.id])
    assert calls.all_ids(stub, cid) == [final.id]
    assert calls.get(stub, cid).message_count == 1
    # The summarised messages still exist (detached): a snapshot can name them.
    snap = calls.snapshot(stub, cid, [history[0], summary.id, final.id])
    assert calls.snapshot_ids(stub, snap.snapshot_id) == [history[0], summary.id, final.id]


def test_ordering_never_holds_an_id_twice(stub: Stub) -> None:
    cid = new_id()
    ids = _letters(stub, cid, 6)
    steps: list[Callable[[], object]] = [
        lambda: calls.replace(stub, cid, from_id=ids[0], new_ids=[ids[5], ids[4]]),
        lambda: calls.replace(stub, cid, to_id=ids[5], new_ids=[ids[0], ids[3]]),
        lambda: calls.replace(stub, cid, from_id=ids[1], to_id=ids[2], new_ids=ids[::-1][:4]),
    ]
    for step in steps:
        step()
        current = calls.all_ids(stub, cid)
        assert len(current) == len(set(current))
        assert calls.get(stub, cid).message_count == len(current)


# --- errors --------------------------------------------------------------------------------


@dataclass
class World:
    """A conversation a..e plus messages in every other state."""

    cid: str
    ids: list[str]
    detached: str
    deleted: str
    foreign: str
    random: str


@pytest.fixture
def world(stub: Stub) -> World:
    cid = new_id()
    ids = calls.seed(stub, cid, 7)
    calls.replace(stub, cid, from_id=ids[5], to_id=ids[5])
    calls.delete(stub, cid, from_id=ids[6])
    other = new_id()
    foreign = calls.seed(stub, other, 1)[0]
    return World(cid, ids[:5], ids[5], ids[6], foreign, new_id())


def _unchanged(stub: Stub, world: World, check: Callable[[], object]) -> None:
    before = calls.get(stub, world.cid)
    check()
    assert calls.all_ids(stub, world.cid) == world.ids
    assert calls.get(stub, world.cid) == before
    # The detached message is still there to be re-inserted.
    calls.replace(stub, world.cid, from_id=world.ids[4], new_ids=[world.detached])
    assert calls.all_ids(stub, world.cid) == [*world.ids, world.detached]


def test_neither_from_nor_to_is_invalid(stub: Stub, world: World) -> None:
    def check() -> None:
        expect_error(
            INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid, new_ids=[world.ids[0]])
        )
        expect_error(INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid))
        expect_error(
            INVALID_ARGUMENT, lambda: calls.replace(stub, new_id(), new_ids=[world.ids[0]])
        )

    _unchanged(stub, world, check)


def test_from_after_to_is_invalid(stub: Stub, world: World) -> None:
    a, b, _, d, _ = world.ids

    def check() -> None:
        expect_error(INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid, from_id=d, to_id=b))
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, world.cid, from_id=b, to_id=a, new_ids=[a]),
        )

    _unchanged(stub, world, check)


@pytest.mark.parametrize("which", ["random", "detached", "deleted", "foreign"])
def test_range_ends_not_in_the_ordering_are_not_found(stub: Stub, world: World, which: str) -> None:
    missing: str = getattr(world, which)
    a, _, c, _, e = world.ids

    def check() -> None:
        cid = world.cid
        expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=missing, to_id=c))
        expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=a, to_id=missing))
        expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=missing, to_id=missing))
        expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, from_id=missing, new_ids=[e]))
        expect_error(NOT_FOUND, lambda: calls.replace(stub, cid, to_id=missing, new_ids=[e]))
        expect_error(
            NOT_FOUND, lambda: calls.replace(stub, cid, from_id=missing, to_id=c, new_ids=[a])
        )

    _unchanged(stub, world, check)


def test_insert_only_with_no_ids_is_invalid(stub: Stub, world: World) -> None:
    a = world.ids[0]

    def check() -> None:
        expect_error(INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid, from_id=a))
        expect_error(INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid, to_id=a))
        expect_error(INVALID_ARGUMENT, lambda: calls.replace(stub, new_id(), from_id=a))

    _unchanged(stub, world, check)


def test_anchor_named_in_new_ids_is_invalid(stub: Stub, world: World) -> None:
    a, b, c, _, _ = world.ids

    def check() -> None:
        expect_error(
            INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid, from_id=a, new_ids=[a])
        )
        expect_error(
            INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid, from_id=a, new_ids=[b, a])
        )
        expect_error(
            INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid, to_id=c, new_ids=[c, b])
        )
        # Another spelling of the anchor is still the anchor.
        expect_error(
            INVALID_ARGUMENT, lambda: calls.replace(stub, world.cid, to_id=c, new_ids=[c.upper()])
        )
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(
                stub, world.cid, from_id="{" + a + "}", new_ids=[a.replace("-", "")]
            ),
        )

    _unchanged(stub, world, check)


def test_duplicate_new_ids_are_invalid(stub: Stub, world: World) -> None:
    a, b, c, d, _ = world.ids

    def check() -> None:
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, world.cid, from_id=b, to_id=c, new_ids=[b, b]),
            "new_message_ids",
        )
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, world.cid, from_id=a, new_ids=[d, world.detached, d]),
            "new_message_ids",
        )
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(
                stub, world.cid, to_id=a, new_ids=[world.detached, world.detached.upper()]
            ),
            "new_message_ids",
        )

    _unchanged(stub, world, check)


@pytest.mark.parametrize("which", ["random", "deleted", "foreign"])
def test_new_ids_must_be_messages_of_the_conversation(stub: Stub, world: World, which: str) -> None:
    missing: str = getattr(world, which)
    a, b, c, _, _ = world.ids

    def check() -> None:
        expect_error(
            NOT_FOUND,
            lambda: calls.replace(stub, world.cid, from_id=b, to_id=c, new_ids=[c, missing]),
        )
        expect_error(
            NOT_FOUND, lambda: calls.replace(stub, world.cid, from_id=a, new_ids=[missing])
        )
        expect_error(
            NOT_FOUND,
            lambda: calls.replace(stub, world.cid, to_id=a, new_ids=[world.detached, missing]),
        )

    _unchanged(stub, world, check)


def test_unknown_conversation_is_not_found(stub: Stub, world: World) -> None:
    expect_error(
        NOT_FOUND,
        lambda: calls.replace(stub, new_id(), from_id=world.ids[0], to_id=world.ids[1]),
    )
    expect_error(
        NOT_FOUND, lambda: calls.replace(stub, new_id(), from_id=new_id(), new_ids=[new_id()])
    )


def test_check_order(stub: Stub, world: World) -> None:
    a, b, c, d, _ = world.ids
    unknown = new_id()

    def check() -> None:
        # (1) what the request alone shows beats (2) an unknown conversation.
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, unknown, from_id=a, to_id=b, new_ids=[c, "bad"]),
            "new_message_ids[1]",
        )
        expect_error(
            INVALID_ARGUMENT, lambda: calls.replace(stub, unknown, from_id="bad", to_id=b), "from"
        )
        expect_error(INVALID_ARGUMENT, lambda: calls.replace(stub, unknown, to_id=a, new_ids=[a]))
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, unknown, from_id=a, to_id=b, new_ids=[c, c]),
        )
        # (1) beats (3) ends not in the ordering.
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, world.cid, from_id=new_id(), to_id=b, new_ids=[c, c]),
        )
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, world.cid, from_id=world.random, new_ids=[world.random]),
        )
        # (1) beats (5) the other named ids exist.
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, world.cid, from_id=a, new_ids=[world.random, "bad"]),
            "new_message_ids[1]",
        )
        # (2) an unknown conversation beats (5).
        expect_error(NOT_FOUND, lambda: calls.replace(stub, unknown, from_id=a, new_ids=[new_id()]))
        # (4) from after to beats (5) the other ids exist.
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, world.cid, from_id=d, to_id=b, new_ids=[world.random]),
        )
        expect_error(
            INVALID_ARGUMENT,
            lambda: calls.replace(stub, world.cid, from_id=c, to_id=a, new_ids=[world.deleted]),
        )

    _unchanged(stub, world, check)
