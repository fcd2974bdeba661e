"""Ids the client makes itself."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> str:
    """A new time-ordered UUID (version 7, RFC 9562): 48 bits of Unix
    milliseconds, then random bits. The client names the conversations it
    creates itself, so that a retried create cannot make a second one."""
    millis = time.time_ns() // 1_000_000
    value = (millis & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10)) & (2**80 - 1)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant 10
    return str(uuid.UUID(int=value))


def idempotency_key() -> str:
    """A key for one logical write, kept across its retries."""
    return str(uuid.uuid4())


def request_id() -> str:
    """A request id for one logical call, kept across its retries."""
    return uuid.uuid4().hex
