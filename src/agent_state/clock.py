"""Wall-clock time in the unit the model uses."""

from __future__ import annotations

import time


def now_micros() -> int:
    """Microseconds since the Unix epoch, UTC."""
    return time.time_ns() // 1000
