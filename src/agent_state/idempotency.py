"""Idempotency keys of mutating calls, for every service: what a retry
with the same key replays.

Most calls change one existing conversation: their keys are checked and
recorded under its lock, and kept with it (`recall`, `remember`). The
others keep their keys with what they were about, their subject
(`recall_of`, `keep_for`): DeleteConversation (its conversation goes, keys
and all), UpdateState (a scope), and CreateConversation and
ForkConversation when the server makes the new id (there is no
conversation to lock before). Such a call recalls its key first, so that a
replay answers whatever changed since, and keeps it last; where a
concurrent duplicate kept it first, the call gives way (`Superseded`): the
caller rolls back and replays the duplicate's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from .errors import FailedPrecondition, StorageUnavailable
from .model import EncodedResponse, RememberedCall
from .storage.base import StateWriter, WriteTransaction


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An idempotency key sent with a mutating call.

    `fingerprint` identifies the method and request exactly; a retry with
    the same key and fingerprint gets the first call's response again.
    """

    key: str
    fingerprint: bytes


def key_of(idempotency: Idempotency | None) -> str | None:
    """The key to read with the conversation's lock (Store.write's recall)."""
    return None if idempotency is None else idempotency.key


async def recall(
    tx: WriteTransaction, idempotency: Idempotency | None, now: int, window_us: int
) -> RememberedCall | None:
    """The earlier call with this key, if it is recent enough. Runs under
    the conversation's lock, so concurrent duplicates see each other: the
    first applies, the rest replay it. The same key with another request is
    FAILED_PRECONDITION."""
    if idempotency is None:
        return None
    earlier = await tx.recall(idempotency.key)
    return _fresh(earlier, idempotency, now, window_us, "on this conversation")


async def remember(
    tx: WriteTransaction, idempotency: Idempotency | None, now: int, response: EncodedResponse
) -> None:
    """Keep `response` under the call's key, if it sent one, for retries."""
    if idempotency is not None:
        await tx.remember(idempotency.key, RememberedCall(idempotency.fingerprint, response, now))


class Superseded(Exception):
    """A concurrent call with the same key kept it first (`keep_for`): roll
    back, and answer with what that call answered."""

    def __init__(self, call: RememberedCall) -> None:
        super().__init__("a concurrent call with the same idempotency key went first")
        self.call = call


async def recall_of(
    tx: StateWriter, subject: str, idempotency: Idempotency | None, now: int, window_us: int
) -> RememberedCall | None:
    """The earlier call with this key of `subject`, if it is recent enough;
    the same key with another request is FAILED_PRECONDITION."""
    if idempotency is None:
        return None
    earlier = await tx.recall_call(subject, idempotency.key)
    return _fresh(earlier, idempotency, now, window_us, "")


async def keep_for(
    tx: StateWriter,
    subject: str,
    idempotency: Idempotency | None,
    now: int,
    window_us: int,
    response: bytes,
    owner: UUID | None = None,
) -> None:
    """Keep `response` under the call's key of `subject`, if it sent one;
    `owner`: the conversation whose erasure takes the key with it. Raises
    Superseded when a concurrent call kept the key first."""
    if idempotency is None:
        return
    call = RememberedCall(idempotency.fingerprint, response, now, owner=owner)
    if await tx.keep_call(subject, idempotency.key, call, now - window_us):
        return
    earlier = await recall_of(tx, subject, idempotency, now, window_us)
    if earlier is None:
        # keep_call gave way to a fresh call, which holds its row until
        # this transaction ends: not expected to happen; safe to retry.
        raise StorageUnavailable("the idempotency key changed under the call; retry it")
    raise Superseded(earlier)


def _fresh(
    earlier: RememberedCall | None,
    idempotency: Idempotency,
    now: int,
    window_us: int,
    where: str,
) -> RememberedCall | None:
    """`earlier` while within the window (None after it); refused when its
    request was another."""
    if earlier is None or earlier.created_at <= now - window_us:
        return None
    if earlier.fingerprint != idempotency.fingerprint:
        raise FailedPrecondition(
            "idempotency-key", f"was already used with a different request {where}".rstrip()
        )
    return earlier
