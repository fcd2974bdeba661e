"""Sparse positions: where ordering entries go, without touching the rest.

Each entry of an ordering has an integer position; the list is read in
position order. Appends step by GAP, so an insertion between two entries
usually finds free integers between them and changes nothing else. When a
gap is used up, a *window* of neighbouring entries is spread out again
(a renumbering). The window grows from the gap outwards, doubling, until it
is sparse enough for its size; bigger windows must come out sparser, so the
spot that keeps filling up gets room that lasts longer each time. The cost of
an insertion therefore depends on how crowded that one spot is, never on the
conversation's length.

Pure functions only: `plan_room` says which neighbours it needs, the
service fetches them and asks again, and storage applies the plan.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .errors import ResourceExhausted
from .model import Item, Renumbering

GAP = 1 << 32
"""Distance between consecutive appended entries."""

MAX_POSITION = (1 << 62) - 1
"""Highest position handed out; leaves headroom in a signed 64-bit column."""

_MIN_STEP_LOG2 = 6


def required_step(level: int) -> int:
    """The spacing a window of level `level` (2**level entries each side of
    the gap) must reach after spreading to be acceptable."""
    return min(GAP, 1 << (_MIN_STEP_LOG2 + level))


def append_positions(tail_position: int, count: int) -> list[int]:
    """Positions for `count` entries appended after `tail_position`."""
    return spread(tail_position, None, count)  # type: ignore[return-value]


def spread(lower: int, upper: int | None, count: int) -> list[int] | None:
    """`count` increasing positions strictly between `lower` and `upper`
    (None: open-ended), as evenly spaced as possible; None if they do not fit.
    """
    if upper is None:
        last = lower + GAP * count
        if last > MAX_POSITION:
            raise ResourceExhausted(
                "", "the conversation has used up its position space; no more entries fit"
            )
        return [lower + GAP * (i + 1) for i in range(count)]
    step = (upper - lower) // (count + 1)
    if step < 1:
        return None
    return [lower + step * (i + 1) for i in range(count)]


@dataclass(frozen=True, slots=True)
class Room:
    """Where entries being inserted go, and what moves to make room."""

    positions: list[int]
    """Positions for the entries being inserted, in order."""
    renumbering: Renumbering | None
    """How the existing entries of a window move; None when the gap had room."""


@dataclass(frozen=True, slots=True)
class FetchNeighbours:
    """What the planner needs to look at next: up to `limit` entries below
    position `below` and up to `limit` above position `above`, each side
    nearest first."""

    below: int
    above: int
    limit: int


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The entries a FetchNeighbours asked for."""

    asked: FetchNeighbours
    before: list[Item]
    after: list[Item]


FIRST_WINDOW_FETCH = 64
"""How many neighbours on each side are fetched at first when a gap is used
up; every further fetch takes _FETCH_GROWTH times as many."""

_FETCH_GROWTH = 8


def plan_room(
    lower: int,
    upper: int | None,
    count: int,
    layout_version: int,
    neighbours: Neighbours | None = None,
) -> Room | FetchNeighbours:
    """Positions for `count` entries between `lower` and `upper` (None: the
    open tail), or the neighbours to fetch before it can tell.

    The caller starts without neighbours. While the gap has room, the answer
    comes at once. Otherwise the planner asks for the entries around the gap
    and searches windows of 1, 2, 4, ... entries each side of it within what
    was fetched; when none is sparse enough, it asks for more. The window's
    renumbering gets layout version ``layout_version + 1``.
    """
    if neighbours is None:
        slots = spread(lower, upper, count)
        if slots is not None:
            return Room(slots, None)
        reach = FIRST_WINDOW_FETCH
    else:
        # Each side holds up to reach + 1 entries: the window and the bound
        # outside it.
        fetched = neighbours.asked.limit - 1
        level = 0
        while (1 << level) <= fetched:
            plan = plan_window(
                neighbours.before, neighbours.after, 1 << level, count, level, layout_version + 1
            )
            if plan is not None:
                return plan
            level += 1
        reach = fetched * _FETCH_GROWTH
    assert upper is not None  # the open tail always has room
    return FetchNeighbours(below=lower + 1, above=upper - 1, limit=reach + 1)


def plan_window(
    before: list[Item],
    after: list[Item],
    width: int,
    count: int,
    level: int,
    layout_version: int,
) -> Room | None:
    """Spread a window around a used-up gap, or None if it is still too dense.

    `before` holds the entries preceding the gap, nearest first, and `after`
    those following it, nearest first; each has up to ``width + 1`` entries.
    The first `width` on each side form the window; the next one, if any, is
    the fixed bound outside it (none before: the head; none after: the open
    tail, where there is always room).
    """
    window_before = list(reversed(before[:width]))
    window_after = after[:width]
    lower = before[width].position if len(before) > width else 0
    upper = after[width].position if len(after) > width else None
    total = len(window_before) + count + len(window_after)
    if upper is None:
        slots = spread(lower, None, total)
        assert slots is not None
    else:
        step = (upper - lower) // (total + 1)
        if step < required_step(level):
            return None
        slots = [lower + step * (i + 1) for i in range(total)]
    existing = window_before + window_after
    existing_slots = slots[: len(window_before)] + slots[len(window_before) + count :]
    return Room(
        positions=slots[len(window_before) : len(window_before) + count],
        renumbering=Renumbering(
            layout_version=layout_version,
            lower=lower,
            upper=upper,
            old_positions=tuple(item.position for item in existing),
            new_positions=tuple(existing_slots),
        ),
    )


def follow(position: int, renumberings: list[Renumbering]) -> int:
    """Where a cursor that sat right after `position` sits after the given
    renumberings (oldest first): right after the same entries."""
    for change in renumberings:
        if position <= change.lower or (change.upper is not None and position >= change.upper):
            continue
        # Entries of the window at or before the cursor stay before it.
        preceding = bisect.bisect_right(change.old_positions, position)
        position = change.new_positions[preceding - 1] if preceding else change.lower
    return position
