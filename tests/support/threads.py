"""Coroutines run at once, each by asyncio.run in a thread of its own: for
what must work from several event loops (a client, a framework session)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any


def run_each_in_a_thread(
    works: Iterable[Callable[[], Coroutine[Any, Any, Any]]],
) -> list[BaseException]:
    """Start every work in a thread of its own (its own event loop), wait
    for all, and return what they raised."""
    failures: list[BaseException] = []

    def run(work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        try:
            asyncio.run(work())
        except BaseException as failure:
            failures.append(failure)

    threads = [threading.Thread(target=run, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures
