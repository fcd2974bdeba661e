"""Client: the same methods as AsyncClient, blocking.

It runs AsyncClient's code on an event loop of its own, in a daemon thread
started with the client, so both share one implementation (retries,
errors, conversions). Each call runs in a copy of the caller's context
(contextvars), so an OpenTelemetry span active in the calling thread is
the parent of the call there too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._async import AsyncClient
from ._base import Configured

P = ParamSpec("P")
R = TypeVar("R")


class _LoopThread:
    """An event loop running in a daemon thread, for one client and its views."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="agent-state-client", daemon=True
        )
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, R]) -> concurrent.futures.Future[R]:
        """Start `coroutine` on the loop, in a copy of the caller's context;
        its outcome comes in the future, and cancelling the future cancels
        it (an asyncio caller awaits it with asyncio.wrap_future)."""
        context = contextvars.copy_context()
        outcome: concurrent.futures.Future[R] = concurrent.futures.Future()
        started: list[asyncio.Task[R]] = []

        def finish(task: asyncio.Task[R]) -> None:
            if task.cancelled():
                outcome.cancel()
                return
            # The caller may have cancelled the future meanwhile.
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                if (error := task.exception()) is not None:
                    outcome.set_exception(error)
                else:
                    outcome.set_result(task.result())

        def start() -> None:
            task = self.loop.create_task(coroutine, context=context)
            task.add_done_callback(finish)
            started.append(task)
            if outcome.cancelled():
                task.cancel()

        def cancel() -> None:
            for task in started:
                task.cancel()

        def cancelled(future: concurrent.futures.Future[R]) -> None:
            if future.cancelled():
                self.loop.call_soon_threadsafe(cancel)

        self.loop.call_soon_threadsafe(start)
        outcome.add_done_callback(cancelled)
        return outcome

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run `coroutine` on the loop, in a copy of the caller's context,
        and wait for its outcome; an interrupt of the wait cancels it."""
        outcome = self.submit(coroutine)
        try:
            return outcome.result()
        except BaseException:
            # KeyboardInterrupt in the caller: do not leave the call running.
            outcome.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], R]:
    """AsyncClient's `method` as a blocking method of Client."""

    @functools.wraps(method)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._loop.run(method(self._async(), *args, **kwargs))

    return call


_END = object()


def _blocking_iterator(
    method: Callable[Concatenate[AsyncClient, P], AsyncIterator[R]],
) -> Callable[Concatenate[Client, P], Iterator[R]]:
    """AsyncClient's async iterator `method` as an iterator method of Client."""

    @functools.wraps(method)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        items = method(self._async(), *args, **kwargs)

        async def step() -> object:
            try:
                return await anext(items)
            except StopAsyncIteration:
                return _END

        def iterate() -> Iterator[R]:
            try:
                while (item := self._loop.run(step())) is not _END:
                    yield item  # type: ignore[misc]
            finally:
                # Stopping early (break, an error) ends the async one too.
                if isinstance(items, AsyncGenerator):
                    self._loop.run(items.aclose())

        return iterate()

    return call


class Client(Configured):
    """A blocking client of an agent-state server: AsyncClient's methods,
    with the same arguments and answers, and iterators where it has async
    ones. Use it as a context manager, or call `close` when done::

        with Client("127.0.0.1:50051") as client:
            client.append(conversation_id, MessageInput.user("hi"))
            for message in client.messages(conversation_id):
                ...

    A Client may be used from several threads at once.
    """

    _loop: _LoopThread

    def _configured(self) -> None:
        self._loop = _LoopThread()

    def _async(self) -> AsyncClient:
        """An AsyncClient over this client's connection, with its options."""
        view = AsyncClient.__new__(AsyncClient)
        view._share(self)
        return view

    def close(self) -> None:
        """Close the connection and stop the client's thread (a view made
        by `with_options` leaves them)."""
        if self._owner:
            self._loop.run(self._caller.close())
            self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    call_unary = _blocking(AsyncClient.call_unary)
    append = _blocking(AsyncClient.append)
    get_conversation = _blocking(AsyncClient.get_conversation)
    list_messages = _blocking(AsyncClient.list_messages)
    messages = _blocking_iterator(AsyncClient.messages)
    context = _blocking(AsyncClient.context)
    list_message_ids = _blocking(AsyncClient.list_message_ids)
    message_ids = _blocking_iterator(AsyncClient.message_ids)
    replace_range = _blocking(AsyncClient.replace_range)
    delete_range = _blocking(AsyncClient.delete_range)
    create_snapshot = _blocking(AsyncClient.create_snapshot)
    list_snapshot_messages = _blocking(AsyncClient.list_snapshot_messages)
    snapshot_messages = _blocking_iterator(AsyncClient.snapshot_messages)
    list_snapshot_message_ids = _blocking(AsyncClient.list_snapshot_message_ids)
    snapshot_message_ids = _blocking_iterator(AsyncClient.snapshot_message_ids)
    create_conversation = _blocking(AsyncClient.create_conversation)
    describe_conversation = _blocking(AsyncClient.describe_conversation)
    update_conversation = _blocking(AsyncClient.update_conversation)
    list_conversations = _blocking(AsyncClient.list_conversations)
    conversations = _blocking_iterator(AsyncClient.conversations)
    delete_conversation = _blocking(AsyncClient.delete_conversation)
    tail = _blocking(AsyncClient.tail)
    get_messages = _blocking(AsyncClient.get_messages)
    fork_conversation = _blocking(AsyncClient.fork_conversation)
    list_snapshots = _blocking(AsyncClient.list_snapshots)
    snapshots = _blocking_iterator(AsyncClient.snapshots)
    get_state = _blocking(AsyncClient.get_state)
    update_state = _blocking(AsyncClient.update_state)
    append_with_state = _blocking(AsyncClient.append_with_state)
    put_checkpoint = _blocking(AsyncClient.put_checkpoint)
    put_writes = _blocking(AsyncClient.put_writes)
    get_checkpoint = _blocking(AsyncClient.get_checkpoint)
    list_checkpoints = _blocking(AsyncClient.list_checkpoints)
    checkpoints = _blocking_iterator(AsyncClient.checkpoints)
    delete_thread = _blocking(AsyncClient.delete_thread)
    copy_thread = _blocking(AsyncClient.copy_thread)
    prune = _blocking(AsyncClient.prune)
    delete_for_runs = _blocking(AsyncClient.delete_for_runs)
