"""A LangGraph checkpointer served by agent-state: `AgentStateSaver`.

Install with ``pip install 'agent-state-client[langgraph]'``::

    from agent_state_client import Client
    from agent_state_client.integrations.langgraph import AgentStateSaver

    with Client("127.0.0.1:50051", token=...) as client:
        graph = builder.compile(checkpointer=AgentStateSaver(client))
        graph.invoke(inputs, {"configurable": {"thread_id": "thread-1"}})

Values are serialized by LangGraph's own serializer (the saver's `serde`,
JsonPlusSerializer unless another is given) and stored by the server as
they are. A channel value that is a list (a message history) is
serialized item by item: the server stores each distinct item once per
thread, and a list that extends the one of the parent checkpoint costs
only the items it gained, so a thread grows with what changed, not with
steps times state size.

Every method has its blocking form (for ``graph.invoke``) and its async
one (``graph.ainvoke``); both go through the same `Client`: the async ones
run on its event loop thread, so one saver serves any event loop.

Deleting a thread (`delete_thread`, `prune` with "delete") is erasure:
a run still going when its thread was deleted cannot bring it back (its
later writes fail `FailedPrecondition`), while a new run of the thread
starts fresh.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from .._async import AsyncClient
from .._sync import Client
from ..types import (
    ChannelValue,
    ChannelWrite,
    CheckpointPage,
    PruneStrategy,
    Serialized,
    StoredCheckpoint,
    Value,
)

__all__ = ["AgentStateSaver"]

R = TypeVar("R")

_STRATEGIES = {"keep_latest": PruneStrategy.KEEP_LATEST, "delete": PruneStrategy.DELETE}
_LIST_PAGE = 100
"""Checkpoints a listing asks the server for at a time (its largest page)."""


class AgentStateSaver(BaseCheckpointSaver[str]):
    """A `BaseCheckpointSaver` over an agent-state server's
    CheckpointsService, reached through `client` (which the caller keeps
    and closes; `connect` makes a saver that owns its client)."""

    def __init__(self, client: Client, *, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        self._client = client
        self._owns_client = False

    @classmethod
    def connect(
        cls, address: str, *, serde: SerializerProtocol | None = None, **options: Any
    ) -> AgentStateSaver:
        """A saver with a `Client(address, **options)` of its own, closed by
        `close` (or by leaving a ``with`` block)."""
        saver = cls(Client(address, **options), serde=serde)
        saver._owns_client = True
        return saver

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> AgentStateSaver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- running the client's calls

    def _blocking(self, coroutine: Coroutine[Any, Any, R]) -> R:
        return self._client._loop.run(coroutine)

    async def _awaiting(self, coroutine: Coroutine[Any, Any, R]) -> R:
        return await asyncio.wrap_future(self._client._loop.submit(coroutine))

    def _calls(self) -> AsyncClient:
        return self._client._async()

    # --- values

    def _value(self, value: Any) -> Value:
        """A value as stored: a list item by item, anything else whole."""
        if type(value) is list:
            return Value.of_list(Serialized(*self.serde.dumps_typed(item)) for item in value)
        return Value.whole(Serialized(*self.serde.dumps_typed(value)))

    def _loaded(self, value: Value) -> Any:
        items = [self.serde.loads_typed((item.type, item.data)) for item in value.items]
        return items if value.is_list else items[0]

    def _tuple(self, stored: StoredCheckpoint) -> CheckpointTuple:
        checkpoint: Checkpoint = self.serde.loads_typed(
            (stored.checkpoint.type, stored.checkpoint.data)
        )
        checkpoint["channel_values"] = {
            found.channel: self._loaded(found.value) for found in stored.values
        }
        keys = {"thread_id": stored.thread_id, "checkpoint_ns": stored.checkpoint_ns}
        parent: RunnableConfig | None = None
        if stored.parent_checkpoint_id is not None:
            parent = {"configurable": {**keys, "checkpoint_id": stored.parent_checkpoint_id}}
        return CheckpointTuple(
            config={"configurable": {**keys, "checkpoint_id": stored.checkpoint_id}},
            checkpoint=checkpoint,
            metadata=json.loads(stored.metadata_json),
            parent_config=parent,
            pending_writes=[
                (write.task_id, write.channel, self._loaded(write.value))
                for write in stored.pending_writes
            ],
        )

    # --- the operations, written once for both forms

    async def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        without_values = {**checkpoint, "channel_values": {}}
        current = checkpoint["channel_values"]
        await self._calls().put_checkpoint(
            thread_id,
            checkpoint["id"],
            Serialized(*self.serde.dumps_typed(without_values)),
            checkpoint_ns=checkpoint_ns,
            parent_checkpoint_id=configurable.get("checkpoint_id"),
            metadata=dict(get_serializable_checkpoint_metadata(config, metadata)),
            channel_versions={
                channel: str(version) for channel, version in checkpoint["channel_versions"].items()
            },
            values=[
                ChannelValue(channel, str(version), self._value(current[channel]))
                for channel, version in new_versions.items()
                if channel in current
            ],
        )
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> None:
        configurable = config["configurable"]
        await self._calls().put_writes(
            str(configurable["thread_id"]),
            configurable["checkpoint_id"],
            task_id,
            [
                ChannelWrite(WRITES_IDX_MAP.get(channel, idx), channel, self._value(value))
                for idx, (channel, value) in enumerate(writes)
            ],
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
            task_path=task_path,
        )

    async def _get(self, config: RunnableConfig) -> StoredCheckpoint | None:
        configurable = config["configurable"]
        return await self._calls().get_checkpoint(
            str(configurable["thread_id"]),
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
            checkpoint_id=get_checkpoint_id(config),
        )

    def _page(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
        token: str,
    ) -> Coroutine[Any, Any, CheckpointPage]:
        configurable = config["configurable"] if config else {}
        thread_id = configurable.get("thread_id")
        return self._calls().list_checkpoints(
            None if thread_id is None else str(thread_id),
            checkpoint_ns=configurable.get("checkpoint_ns"),
            before=get_checkpoint_id(before) if before else None,
            metadata_filter=filter or None,
            page_size=min(limit, _LIST_PAGE) if limit else _LIST_PAGE,
            page_token=token,
        )

    @staticmethod
    def _named(
        found: CheckpointTuple | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
    ) -> list[CheckpointTuple]:
        """The checkpoint a listing's config names by id, if it passes the
        listing's filter and bound."""
        bound = get_checkpoint_id(before) if before else None
        if found is None or (bound is not None and found.checkpoint["id"] >= bound):
            return []
        metadata: dict[str, Any] = dict(found.metadata)
        if any(metadata.get(key) != value for key, value in (filter or {}).items()):
            return []
        return [found]

    async def _listing(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> AsyncGenerator[CheckpointTuple, None]:
        """What `list` yields, page by page (run on the client's loop)."""
        if config and get_checkpoint_id(config):
            stored = await self._get(config)
            named = None if stored is None else self._tuple(stored)
            for found in self._named(named, filter, before)[:limit]:
                yield found
            return
        token, left = "", limit
        while left is None or left > 0:
            page = await self._page(config, filter, before, left, token)
            listed = [self._tuple(stored) for stored in page.checkpoints][:left]
            for found in listed:
                yield found
            left = None if left is None else left - len(listed)
            token = page.next_page_token
            if not token:
                return

    async def _prune(self, thread_ids: Sequence[str], strategy: str) -> None:
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
        if strategy not in _STRATEGIES:
            raise ValueError(f"Unknown prune strategy: {strategy!r}")
        await self._calls().prune([str(t) for t in thread_ids], _STRATEGIES[strategy])

    # --- BaseCheckpointSaver: blocking

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        stored = self._blocking(self._get(config))
        return None if stored is None else self._tuple(stored)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        listing = self._listing(config, filter, before, limit)
        try:
            while (found := self._blocking(_next(listing))) is not None:
                yield found
        finally:
            self._blocking(listing.aclose())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._blocking(self._put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._blocking(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._blocking(self._calls().delete_thread(str(thread_id)))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._blocking(self._calls().delete_for_runs([str(run) for run in run_ids]))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._blocking(self._calls().copy_thread(str(source_thread_id), str(target_thread_id)))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._blocking(self._prune(thread_ids, strategy))

    # --- BaseCheckpointSaver: async

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        stored = await self._awaiting(self._get(config))
        return None if stored is None else self._tuple(stored)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        listing = self._listing(config, filter, before, limit)
        try:
            while (found := await self._awaiting(_next(listing))) is not None:
                yield found
        finally:
            await self._awaiting(listing.aclose())

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._awaiting(self._put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._awaiting(self._put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._awaiting(self._calls().delete_thread(str(thread_id)))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._awaiting(self._calls().delete_for_runs([str(run) for run in run_ids]))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._awaiting(
            self._calls().copy_thread(str(source_thread_id), str(target_thread_id))
        )

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._awaiting(self._prune(thread_ids, strategy))

    # --- versions

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The next version of a channel: its count, zero-padded so that
        versions sort as text, and a random fraction, so that two forks of
        one checkpoint never name different values by the same version (a
        version names one value for good in a thread)."""
        if current is None:
            count = 0
        elif isinstance(current, int):
            count = current
        else:
            count = int(current.split(".")[0])
        return f"{count + 1:032}.{random.random():016}"


async def _next(items: AsyncIterator[R]) -> R | None:
    """The next item (None at the end)."""
    return await anext(items, None)
