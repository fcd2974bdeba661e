"""Sparse positions: table tests, and the room planner driven over an
in-memory ordering as the service drives it over storage, checking order,
bounds and cursors."""

from __future__ import annotations

import bisect
import random
import uuid

import pytest

from agent_state import positions
from agent_state.errors import ResourceExhausted
from agent_state.model import Item, Renumbering
from agent_state.positions import GAP
from agent_state.service import make_room


def test_appends_step_by_gap() -> None:
    assert positions.append_positions(0, 3) == [GAP, 2 * GAP, 3 * GAP]
    assert positions.append_positions(5 * GAP, 1) == [6 * GAP]


def test_append_past_the_position_space_is_refused() -> None:
    with pytest.raises(ResourceExhausted):
        positions.append_positions(positions.MAX_POSITION - GAP + 1, 1)


@pytest.mark.parametrize(
    ("lower", "upper", "count", "expected"),
    [
        (0, 10, 1, [5]),
        (0, 10, 4, [2, 4, 6, 8]),
        (10, 12, 1, [11]),
        (10, 11, 1, None),
        (10, 13, 2, [11, 12]),
        (10, 13, 3, None),
        (7, None, 2, [7 + GAP, 7 + 2 * GAP]),
    ],
)
def test_spread(lower: int, upper: int | None, count: int, expected: list[int] | None) -> None:
    assert positions.spread(lower, upper, count) == expected


def test_a_gap_with_room_is_planned_without_neighbours() -> None:
    assert positions.plan_room(0, 10, 4, 3) == positions.Room([2, 4, 6, 8], None)
    assert positions.plan_room(7, None, 1, 3) == positions.Room([7 + GAP], None)


def test_a_used_up_gap_asks_for_its_neighbours() -> None:
    first = positions.FIRST_WINDOW_FETCH
    assert positions.plan_room(10, 11, 1, 3) == positions.FetchNeighbours(
        below=11, above=10, limit=first + 1
    )


def test_a_window_spread_from_the_head_to_the_open_tail() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    asked = positions.FetchNeighbours(below=11, above=10, limit=2)
    neighbours = positions.Neighbours(asked, [Item(10, a)], [Item(11, b)])
    assert positions.plan_room(10, 11, 1, 3, neighbours) == positions.Room(
        [2 * GAP], Renumbering(4, 0, None, (10, 11), (GAP, 3 * GAP))
    )


def test_a_window_too_dense_within_what_was_fetched_asks_for_more() -> None:
    ids = [uuid.uuid4() for _ in range(4)]
    asked = positions.FetchNeighbours(below=11, above=10, limit=2)
    before = [Item(10, ids[1]), Item(9, ids[0])]
    after = [Item(11, ids[2]), Item(12, ids[3])]
    neighbours = positions.Neighbours(asked, before, after)
    assert positions.plan_room(10, 11, 1, 3, neighbours) == positions.FetchNeighbours(
        below=11, above=10, limit=9
    )


def test_the_first_window_sparse_enough_for_its_size_wins() -> None:
    ids = [uuid.uuid4() for _ in range(6)]
    asked = positions.FetchNeighbours(below=1001, above=1000, limit=3)
    # One entry each side: 3 slots between 999 and 1002 is too dense; two
    # each side: 5 slots between 0 and 10_000 is sparse enough (step 1666).
    before = [Item(1000, ids[2]), Item(999, ids[1]), Item(0, ids[0])]
    after = [Item(1001, ids[3]), Item(1002, ids[4]), Item(10_000, ids[5])]
    neighbours = positions.Neighbours(asked, before, after)
    assert positions.plan_room(1000, 1001, 1, 0, neighbours) == positions.Room(
        [4998], Renumbering(1, 0, 10_000, (999, 1000, 1001, 1002), (1666, 3332, 6664, 8330))
    )


def test_follow_maps_cursors_through_a_renumbering() -> None:
    change = Renumbering(
        1, lower=100, upper=200, old_positions=(110, 111, 112), new_positions=(120, 150, 180)
    )
    assert positions.follow(100, [change]) == 100  # at the bound: unchanged
    assert positions.follow(250, [change]) == 250  # outside: unchanged
    assert positions.follow(111, [change]) == 150  # an entry of the window follows it
    assert positions.follow(105, [change]) == 100  # before every window entry
    assert positions.follow(1115, [Renumbering(1, 1000, None, (1110, 1120), (2000, 3000))]) == 2000


class _Ordering:
    """An in-memory ordering that the service's own room-making loop
    (service.make_room) reads, as it reads a write transaction."""

    def __init__(self, count: int) -> None:
        self.items = [Item(slot, uuid.uuid4()) for slot in positions.append_positions(0, count)]
        self.layout_version = 0
        self.renumberings: list[Renumbering] = []
        self.moved_rows = 0

    def _positions(self) -> list[int]:
        return [item.position for item in self.items]

    async def items_before(self, position: int, limit: int) -> list[Item]:
        index = bisect.bisect_left(self._positions(), position)
        return list(reversed(self.items[max(0, index - limit) : index]))

    async def items_after(self, position: int, limit: int) -> list[Item]:
        index = bisect.bisect_right(self._positions(), position)
        return self.items[index : index + limit]

    async def insert_after(self, index: int, count: int) -> list[uuid.UUID]:
        """Insert `count` new entries right after entry `index` (-1: head),
        through the service's room-making loop."""
        lower = self.items[index].position if index >= 0 else 0
        upper = self.items[index + 1].position if index + 1 < len(self.items) else None
        room = await make_room(self, lower, upper, count, self.layout_version)
        if room.renumbering is not None:
            self._apply(room.renumbering)
        new = [Item(slot, uuid.uuid4()) for slot in room.positions]
        self.items = sorted(self.items + new, key=lambda item: item.position)
        return [item.message_id for item in new]

    def _apply(self, change: Renumbering) -> None:
        moves = dict(zip(change.old_positions, change.new_positions, strict=True))
        assert all(
            change.lower < old and (change.upper is None or old < change.upper) for old in moves
        )
        self.moved_rows += sum(1 for old, new in moves.items() if old != new)
        self.items = [
            Item(moves.get(item.position, item.position), item.message_id) for item in self.items
        ]
        self.layout_version = change.layout_version
        self.renumberings.append(change)


def _check(ordering: _Ordering, expected: list[uuid.UUID]) -> None:
    found = ordering._positions()
    assert found == sorted(found)
    assert len(set(found)) == len(found)
    assert all(0 < position <= positions.MAX_POSITION for position in found)
    assert [item.message_id for item in ordering.items] == expected


@pytest.mark.parametrize("pattern", ["after_anchor", "before_neighbour", "head", "random"])
async def test_repeated_inserts_keep_order_and_stay_local(pattern: str) -> None:
    rng = random.Random(7)
    ordering = _Ordering(200)
    expected = [item.message_id for item in ordering.items]
    anchor = expected[100]
    neighbour = expected[101]
    for _ in range(600):
        if pattern == "after_anchor":
            index = expected.index(anchor)
        elif pattern == "before_neighbour":
            index = expected.index(neighbour) - 1
        elif pattern == "head":
            index = -1
        else:
            index = rng.randrange(-1, len(expected))
        count = rng.choice([1, 1, 1, 3])
        new = await ordering.insert_after(index, count)
        expected[index + 1 : index + 1] = new
        _check(ordering, expected)
    # Cost stays far below rewriting the ordering on every insert.
    assert ordering.moved_rows < 600 * 40


async def test_cursors_survive_renumberings() -> None:
    rng = random.Random(11)
    ordering = _Ordering(50)
    for _ in range(300):
        version = ordering.layout_version
        snapshot = list(ordering.items)
        cursor_index = rng.randrange(len(snapshot))
        cursor = snapshot[cursor_index].position
        # Insert at a spot that keeps filling, so renumberings happen.
        await ordering.insert_after(10, 1)
        changes = [change for change in ordering.renumberings if change.layout_version > version]
        followed = positions.follow(cursor, changes)
        # Entries listed before the cursor stay at or before it; the rest after it.
        seen = {item.message_id for item in snapshot[: cursor_index + 1]}
        for item in ordering.items:
            if item.message_id in seen:
                assert item.position <= followed
            elif item.message_id in {entry.message_id for entry in snapshot}:
                assert item.position > followed
    assert ordering.layout_version > 0


async def test_cursor_of_a_removed_entry_survives_renumberings() -> None:
    ordering = _Ordering(30)
    listed = list(ordering.items[:16])  # a first page ended on entry 15
    cursor = listed[-1].position
    ordering.items = [item for item in ordering.items if item.message_id != listed[-1].message_id]
    version = ordering.layout_version
    for _ in range(200):
        await ordering.insert_after(12, 1)  # right next to where the cursor was
    changes = [change for change in ordering.renumberings if change.layout_version > version]
    assert changes
    followed = positions.follow(cursor, changes)
    listed_ids = {item.message_id for item in listed}
    for item in ordering.items:
        if item.message_id in listed_ids:
            assert item.position <= followed
    unlisted = [item for item in ordering.items[16:] if item.message_id not in listed_ids]
    assert all(item.position > followed for item in unlisted[-14:])
