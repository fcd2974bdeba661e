"""Idempotency keys of mutating calls, for every service: what a retry
with the same key replays, checked and recorded under the lock of the
conversation the call changes (storage keeps keys per conversation)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FailedPrecondition
from .model import EncodedResponse, RememberedCall
from .storage.base import WriteTransaction


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
    if earlier is None or earlier.created_at <= now - window_us:
        return None
    if earlier.fingerprint != idempotency.fingerprint:
        raise FailedPrecondition(
            "idempotency-key",
            "was already used with a different request on this conversation",
        )
    return earlier


async def remember(
    tx: WriteTransaction, idempotency: Idempotency | None, now: int, response: EncodedResponse
) -> None:
    """Keep `response` under the call's key, if it sent one, for retries."""
    if idempotency is not None:
        await tx.remember(idempotency.key, RememberedCall(idempotency.fingerprint, response, now))
