"""Retention: the server's default and each conversation's own, applied
in the background by a sweeper, in small batches.

A conversation whose own Retention is set follows it whole; the others
follow the server's default (settings `retention_max_idle_seconds` and
`retention_max_messages`). Zero sets no limit of its kind.

- `max_idle`: a conversation not updated (its `updated_at`) for longer is
  erased, as DeleteConversation erases it.
- `max_messages`: a conversation holding more messages in its ordering
  loses the oldest, deleted as DeleteConversationMessagesRange deletes
  them (snapshots that hold them still read them back). A trim changes
  the ordering, so the conversation's version gains 1; no client updated
  it, so `updated_at` stays and its idleness goes on.

Every batch is one short transaction that locks the conversations it
works on, skipping those others hold (storage.base.SweepTransaction): many
servers may sweep one database at once, and none deletes or trims a
conversation another has. A batch trims at most MESSAGES_PER_BATCH
messages, so no transaction is long however long a conversation is; what
is left over goes in the next batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .clock import now_micros
from .model import Retention, Trim
from .storage.base import Store

CONVERSATIONS_PER_BATCH = 100
MESSAGES_PER_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Swept:
    """What a sweep removed: conversations erased, messages trimmed."""

    conversations: int = 0
    messages: int = 0


class RetentionSweeper:
    """Applies retention over `store`, with `default` for conversations
    without a retention of their own."""

    def __init__(
        self,
        store: Store,
        default: Retention,
        clock: Callable[[], int] = now_micros,
        batch: int = CONVERSATIONS_PER_BATCH,
        messages_per_batch: int = MESSAGES_PER_BATCH,
    ) -> None:
        self._store = store
        self._default = default
        self._clock = clock
        self._batch = batch
        self._messages_per_batch = messages_per_batch

    async def sweep(self) -> Swept:
        """Batches until nothing is left to do that no one else holds."""
        erased = 0
        while True:
            count = await self.erase_idle()
            erased += count
            if count < self._batch:
                break
        trimmed = 0
        while True:
            count, complete = await self.trim_overlong()
            trimmed += count
            if complete:
                break
        return Swept(erased, trimmed)

    async def erase_idle(self) -> int:
        """One batch of erasures; how many conversations went."""
        async with self._store.sweep() as tx:
            idle = await tx.lock_idle(self._clock(), self._default.max_idle, self._batch)
            await tx.erase(idle)
        return len(idle)

    async def trim_overlong(self) -> tuple[int, bool]:
        """One batch of trims: how many messages went, and whether the
        batch found all there was to do (none over their limit left but
        those others hold)."""
        budget = self._messages_per_batch
        trims: list[Trim] = []
        async with self._store.sweep() as tx:
            overlong = await tx.lock_overlong(self._default.max_messages, self._batch)
            for found in overlong:
                count = min(found.message_count - found.max_messages, budget)
                if count <= 0:
                    break
                trims.append(Trim(found.conversation_id, count))
                budget -= count
            await tx.trim(trims)
        complete = len(overlong) < self._batch and budget > 0
        return self._messages_per_batch - budget, complete
