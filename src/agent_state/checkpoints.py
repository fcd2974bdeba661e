"""The checkpoint store's rules (agentstate.v1.CheckpointsService), one
method per RPC: LangGraph's checkpoints, their channel values and pending
writes, by thread, namespace and checkpoint id.

As in service.py, each method checks the request before it touches
storage, opens one storage transaction and returns typed results; it knows
nothing of gRPC (server/checkpoints_servicer.py maps values and errors to
the wire).

Values are stored as the client serialized them, never interpreted: each
item of a value (the whole value, or each item of a list) is stored once
per thread under the SHA-256 of its serialization's name, a NUL and its
bytes, and a list that extends the same channel's list in the parent
checkpoint stores only the digests it gained (its base is that list). So a
graph whose state is a growing list stores each item once, and each step
costs what changed.

Deletion is erasure with a tombstone: the thread's row keeps the greatest
checkpoint id erased (`erased_through`). A write that belongs to the
erased history (a checkpoint or write at or before that id, or a
checkpoint whose parent is, that is not stored) is refused
(FailedPrecondition): a run still going when its thread was deleted cannot
bring the thread back, while a new run of it (a first checkpoint without
parent, with a newer id) starts fresh.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import exact_json, paging
from .errors import FailedPrecondition, InvalidArgument, NotFound
from .model import (
    Blob,
    CheckpointKey,
    CheckpointRange,
    CheckpointRow,
    NewValue,
    NewWrite,
    StoredValue,
    Value,
    ValueHead,
    ValueKey,
)
from .storage.base import CheckpointReader, CheckpointWriter, Store

MAX_NAME_LENGTH = 256
"""Code points of a thread id, checkpoint id, task id, channel, version,
run id or serialization name."""
MAX_PATH_LENGTH = 2048
"""Code points of a namespace or task path (nested subgraphs make long ones)."""
MAX_METADATA_BYTES = 64 * 1024
MAX_WRITES = 1000
"""Writes of one PutWrites call."""
MAX_THREADS = 1000
"""Threads of one Prune call, and runs of one DeleteForRuns call."""
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_PAGE_BYTES = 3 * 1024 * 1024
"""A page of ListCheckpoints stops once its values pass this (as the
other lists' 3 MiB)."""
MAX_CHAIN = 128
"""Links from a stored list to the whole value it extends, at most: a
list that grows by one item a step is stored whole every MAX_CHAIN steps,
so that a read follows at most this many links."""
SCAN_LIMIT = 1000
"""Checkpoints one ListCheckpoints call reads at most while a metadata
filter skips them (the page then comes back short, with a token)."""
_SCAN_BATCH = 100

# Sorts after every id of at most MAX_NAME_LENGTH code points (UTF-8 byte
# order): the upper bound of a listing without `before`.
_ABOVE_EVERY_ID = "\U0010ffff" * (MAX_NAME_LENGTH + 1)


class PruneStrategy(enum.IntEnum):
    KEEP_LATEST = 1
    DELETE = 2


@dataclass(frozen=True, slots=True)
class BlobInput:
    """An item as the client serialized it."""

    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ValueInput:
    items: Sequence[BlobInput]
    is_list: bool


@dataclass(frozen=True, slots=True)
class ChannelValueInput:
    channel: str
    version: str
    value: ValueInput


@dataclass(frozen=True, slots=True)
class CheckpointInput:
    """A PutCheckpoint request, as decoded from the wire."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str
    checkpoint: BlobInput
    metadata_json: str
    channel_versions: Mapping[str, str]
    values: Sequence[ChannelValueInput]


@dataclass(frozen=True, slots=True)
class WriteInput:
    idx: int
    channel: str
    value: ValueInput


@dataclass(frozen=True, slots=True)
class PendingWrite:
    task_id: str
    task_path: str
    idx: int
    channel: str
    value: Value


@dataclass(frozen=True, slots=True)
class CheckpointTuple:
    """A stored checkpoint, whole: its values (channel, version, value) and
    its pending writes in writes_sort_key order."""

    key: CheckpointKey
    parent_id: str | None
    checkpoint: tuple[str, bytes]
    metadata_json: str
    values: list[tuple[str, str, Value]]
    pending_writes: list[PendingWrite]

    def size(self) -> int:
        """Bytes of its values and writes, about what it takes on the wire."""
        values = sum(len(blob.data) for _, _, value in self.values for blob in value.items)
        writes = sum(len(blob.data) for write in self.pending_writes for blob in write.value.items)
        return len(self.checkpoint[1]) + len(self.metadata_json) + values + writes


@dataclass(frozen=True, slots=True)
class CheckpointPage:
    checkpoints: list[CheckpointTuple]
    next_page_token: str


# --- Validation ------------------------------------------------------------------------


def _name(text: str, field: str) -> str:
    if not text:
        raise InvalidArgument(field, "must not be empty")
    return _bounded(text, field, MAX_NAME_LENGTH)


def _path(text: str, field: str) -> str:
    return _bounded(text, field, MAX_PATH_LENGTH)


def _bounded(text: str, field: str, limit: int) -> str:
    if len(text) > limit:
        raise InvalidArgument(field, f"has {len(text)} characters; at most {limit}")
    if "\0" in text:
        raise InvalidArgument(field, "must not hold U+0000")
    return text


def _blob(given: BlobInput, field: str) -> Blob:
    kind = _name(given.type, f"{field}.type")
    digest = hashlib.sha256(kind.encode("utf-8") + b"\0" + given.data).digest()
    return Blob(digest, kind, given.data)


def _value(given: ValueInput, field: str) -> Value:
    if not given.is_list and len(given.items) != 1:
        raise InvalidArgument(f"{field}.items", "must hold exactly one item unless is_list")
    items = tuple(_blob(item, f"{field}.items[{i}]") for i, item in enumerate(given.items))
    return Value(items, given.is_list)


def _metadata(text: str) -> tuple[str, str | None]:
    """The metadata's canonical text and its run id."""
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidArgument("metadata_json", f"is larger than {MAX_METADATA_BYTES} bytes")
    try:
        parsed = exact_json.parse_object(text or "{}")
    except exact_json.JsonError as error:
        raise InvalidArgument("metadata_json", str(error)) from None
    run = parsed.get("run_id")
    run_id = run if isinstance(run, str) and not exact_json.is_number(run) else None
    return exact_json.dump(parsed), run_id


def _metadata_filter(text: str) -> dict[str, str]:
    """Each key of a metadata filter with its value's canonical text."""
    if not text:
        return {}
    try:
        parsed = exact_json.parse_object(text)
    except exact_json.JsonError as error:
        raise InvalidArgument("metadata_filter_json", str(error)) from None
    return {key: exact_json.dump(value) for key, value in parsed.items()}


def _matches(metadata_json: str, wanted: Mapping[str, str]) -> bool:
    if not wanted:
        return True
    metadata = exact_json.load_object(metadata_json)
    return all(
        key in metadata and exact_json.dump(metadata[key]) == value for key, value in wanted.items()
    )


def _stored_blobs(values: Sequence[Value]) -> list[Blob]:
    """Every distinct item of the values, once."""
    return list({blob.sha256: blob for value in values for blob in value.items}.values())


def _refuse_erased(field: str, checkpoint_id: str, erased_through: str) -> FailedPrecondition:
    return FailedPrecondition(
        field,
        f"checkpoint {checkpoint_id!r} belongs to the thread's history erased through"
        f" {erased_through!r} (the thread was deleted); start a new run instead",
    )


# --- The service -------------------------------------------------------------------------


class CheckpointService:
    """CheckpointsService's RPCs over `store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def put_checkpoint(self, given: CheckpointInput) -> None:
        thread_id = _name(given.thread_id, "thread_id")
        checkpoint_ns = _path(given.checkpoint_ns, "checkpoint_ns")
        checkpoint_id = _name(given.checkpoint_id, "checkpoint_id")
        parent_id = (
            _name(given.parent_checkpoint_id, "parent_checkpoint_id")
            if given.parent_checkpoint_id
            else None
        )
        if parent_id == checkpoint_id:
            raise InvalidArgument("parent_checkpoint_id", "names the checkpoint itself")
        checkpoint = _blob(given.checkpoint, "checkpoint")
        metadata, run_id = _metadata(given.metadata_json)
        versions = {
            _name(channel, "channel_versions"): _name(version, f"channel_versions[{channel}]")
            for channel, version in given.channel_versions.items()
        }
        values: dict[str, tuple[str, Value]] = {}
        for index, entry in enumerate(given.values):
            field = f"values[{index}]"
            if versions.get(entry.channel) != entry.version:
                raise InvalidArgument(
                    f"{field}.version", "is not the version channel_versions names for its channel"
                )
            if entry.channel in values:
                raise InvalidArgument(f"{field}.channel", "has a value earlier in values")
            values[entry.channel] = (entry.version, _value(entry.value, f"{field}.value"))
        key = CheckpointKey(thread_id, checkpoint_ns, checkpoint_id)
        row = CheckpointRow(
            key, parent_id, (checkpoint.type, checkpoint.data), metadata, versions, run_id
        )
        async with self._store.write_checkpoints() as tx:
            erased = await tx.hold_thread(thread_id)
            await _check_not_erased(tx, key, parent_id, erased)
            bases = await _list_bases(tx, key, parent_id, values)
            new_values = [
                _new_value(channel, version, value, bases.get(channel))
                for channel, (version, value) in values.items()
            ]
            # The items of a list's base are stored already: only what it
            # gained is sent to the database.
            gained = [
                Value(value.items[bases[channel][1].length :], value.is_list)
                if channel in bases
                else value
                for channel, (_, value) in values.items()
            ]
            await tx.put_checkpoint(row, _stored_blobs(gained), new_values)

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        task_id: str,
        task_path: str,
        writes: Sequence[WriteInput],
    ) -> None:
        key = CheckpointKey(
            _name(thread_id, "thread_id"),
            _path(checkpoint_ns, "checkpoint_ns"),
            _name(checkpoint_id, "checkpoint_id"),
        )
        task_id = _name(task_id, "task_id")
        task_path = _path(task_path, "task_path")
        if len(writes) > MAX_WRITES:
            raise InvalidArgument("writes", f"holds {len(writes)} writes; at most {MAX_WRITES}")
        seen: set[int] = set()
        stored: list[tuple[NewWrite, Value]] = []
        for index, write in enumerate(writes):
            field = f"writes[{index}]"
            if write.idx in seen:
                raise InvalidArgument(f"{field}.idx", "is the idx of an earlier write")
            seen.add(write.idx)
            value = _value(write.value, f"{field}.value")
            channel = _name(write.channel, f"{field}.channel")
            digests = tuple(blob.sha256 for blob in value.items)
            stored.append((NewWrite(write.idx, channel, value.is_list, digests), value))
        if not stored:
            return
        async with self._store.write_checkpoints() as tx:
            erased = await tx.hold_thread(key.thread_id)
            await _check_not_erased(tx, key, None, erased)
            blobs = _stored_blobs([value for _, value in stored])
            await tx.put_writes(key, task_id, task_path, blobs, [write for write, _ in stored])

    async def get_checkpoint(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str
    ) -> CheckpointTuple:
        thread_id = _name(thread_id, "thread_id")
        checkpoint_ns = _path(checkpoint_ns, "checkpoint_ns")
        wanted = _name(checkpoint_id, "checkpoint_id") if checkpoint_id else None
        async with self._store.read_checkpoints() as tx:
            row = await tx.checkpoint(thread_id, checkpoint_ns, wanted)
            if row is None:
                if wanted is None:
                    raise NotFound("thread_id", "the thread has no checkpoint in that namespace")
                raise NotFound("checkpoint_id", "no such checkpoint in the thread's namespace")
            (found,) = await _assemble(tx, [row])
            return found

    async def list_checkpoints(
        self,
        thread_id: str,
        checkpoint_ns: str | None,
        before: str,
        metadata_filter_json: str,
        page_size: int,
        page_token: str,
    ) -> CheckpointPage:
        thread = _name(thread_id, "thread_id") if thread_id else None
        namespace = None if checkpoint_ns is None else _path(checkpoint_ns, "checkpoint_ns")
        bound = _name(before, "before_checkpoint_id") if before else None
        wanted = _metadata_filter(metadata_filter_json)
        size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
        fingerprint = paging.checkpoint_filter_fingerprint(
            thread, namespace, bound, exact_json.dump(dict(sorted(wanted.items())))
        )
        cursor = paging.decode_checkpoints(page_token, fingerprint)
        below = cursor or (bound or _ABOVE_EVERY_ID, "", "")
        async with self._store.read_checkpoints() as tx:
            rows, below, more = await _matching(tx, thread, namespace, below, wanted, size)
            page = await _assemble(tx, rows)
        kept = _within_budget(page)
        if len(kept) < len(page):
            last = kept[-1].key
            below, more = (last.checkpoint_id, last.checkpoint_ns, last.thread_id), True
        token = paging.encode_checkpoints(fingerprint, below) if more else ""
        return CheckpointPage(kept, token)

    async def delete_thread(self, thread_id: str) -> int:
        thread_id = _name(thread_id, "thread_id")
        async with self._store.write_checkpoints() as tx:
            locked = await tx.lock_threads([thread_id])
            if thread_id not in locked:
                return 0
            return await _erase(tx, thread_id, locked[thread_id])

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> int:
        source = _name(source_thread_id, "source_thread_id")
        target = _name(target_thread_id, "target_thread_id")
        if source == target:
            raise InvalidArgument("target_thread_id", "is the source thread")
        async with self._store.write_checkpoints() as tx:
            await tx.create_thread(target)
            locked = await tx.lock_threads(sorted((source, target)))
            if source not in locked or not (await tx.greatest_ids(source))[0]:
                raise NotFound("source_thread_id", "the thread has no checkpoint")
            # The target's previous content goes as DeleteThread erases it:
            # a run still writing to it cannot mix into the copy.
            await _erase(tx, target, locked[target])
            return await tx.copy_thread(source, target)

    async def prune(self, thread_ids: Sequence[str], strategy: int) -> int:
        threads = sorted({_name(t, f"thread_ids[{i}]") for i, t in enumerate(thread_ids)})
        if len(thread_ids) > MAX_THREADS:
            raise InvalidArgument("thread_ids", f"names {len(thread_ids)}; at most {MAX_THREADS}")
        try:
            chosen = PruneStrategy(strategy)
        except ValueError:
            raise InvalidArgument("strategy", "must be KEEP_LATEST or DELETE") from None
        deleted = 0
        async with self._store.write_checkpoints() as tx:
            for thread_id, erased in (await tx.lock_threads(threads)).items():
                if chosen is PruneStrategy.DELETE:
                    deleted += await _erase(tx, thread_id, erased)
                    continue
                rows = await tx.thread_checkpoints(thread_id)
                newest: dict[str, str] = {}
                for row in rows:
                    key = row.key
                    newest[key.checkpoint_ns] = max(
                        newest.get(key.checkpoint_ns, ""), key.checkpoint_id
                    )
                gone = [r.key for r in rows if newest[r.key.checkpoint_ns] != r.key.checkpoint_id]
                deleted += await _delete(tx, thread_id, gone)
        return deleted

    async def delete_for_runs(self, run_ids: Sequence[str]) -> int:
        runs = sorted({_name(run, f"run_ids[{i}]") for i, run in enumerate(run_ids)})
        if len(run_ids) > MAX_THREADS:
            raise InvalidArgument("run_ids", f"names {len(run_ids)}; at most {MAX_THREADS}")
        if not runs:
            return 0
        deleted = 0
        async with self._store.write_checkpoints() as tx:
            found = await tx.run_checkpoints(runs)
            locked = await tx.lock_threads(sorted({key.thread_id for key in found}))
            # Read again under the locks: what the threads hold now.
            by_thread: dict[str, list[CheckpointKey]] = {}
            for key in await tx.run_checkpoints(runs):
                if key.thread_id in locked:
                    by_thread.setdefault(key.thread_id, []).append(key)
            for thread_id, keys in sorted(by_thread.items()):
                deleted += await _delete(tx, thread_id, keys)
        return deleted


# --- Steps of the operations ------------------------------------------------------------


async def _check_not_erased(
    tx: CheckpointWriter, key: CheckpointKey, parent_id: str | None, erased_through: str
) -> None:
    """Refuses a write whose checkpoint (or parent) belongs to the thread's
    erased history: at or before erased_through and not stored (stored
    ones were put after the erasure, or copied in)."""
    if not erased_through:
        return
    named = {("checkpoint_id", key.checkpoint_id)}
    if parent_id is not None:
        named.add(("parent_checkpoint_id", parent_id))
    doubtful = sorted((field, i) for field, i in named if i <= erased_through)
    if not doubtful:
        return
    stored = await tx.stored(key.thread_id, key.checkpoint_ns, [i for _, i in doubtful])
    for field, checkpoint_id in doubtful:
        if checkpoint_id not in stored:
            raise _refuse_erased(field, checkpoint_id, erased_through)


async def _list_bases(
    tx: CheckpointReader,
    key: CheckpointKey,
    parent_id: str | None,
    values: Mapping[str, tuple[str, Value]],
) -> dict[str, tuple[str, ValueHead]]:
    """For each list value that extends the same channel's list in the
    parent checkpoint (by the hash of that list's digests, so without
    reading it), that list's version and head."""
    lists = {channel for channel, (_, value) in values.items() if value.is_list}
    if parent_id is None or not lists:
        return {}
    parent = await tx.checkpoint(key.thread_id, key.checkpoint_ns, parent_id)
    if parent is None:
        return {}
    wanted = {
        channel: (key.checkpoint_ns, channel, version)
        for channel, version in parent.channel_versions.items()
        if channel in lists and version != values[channel][0]
    }
    heads = await tx.value_heads(key.thread_id, list(wanted.values()))
    bases: dict[str, tuple[str, ValueHead]] = {}
    for channel, head_key in wanted.items():
        head = heads.get(head_key)
        digests = [blob.sha256 for blob in values[channel][1].items]
        if (
            head is not None
            and head.is_list
            and 0 < head.length <= len(digests)
            and _list_digest(digests[: head.length]) == head.list_sha256
        ):
            bases[channel] = (head_key[2], head)
    return bases


def _list_digest(digests: Sequence[bytes]) -> bytes:
    return hashlib.sha256(b"".join(digests)).digest()


def _new_value(
    channel: str, version: str, value: Value, base: tuple[str, ValueHead] | None
) -> NewValue:
    digests = tuple(blob.sha256 for blob in value.items)
    whole = _list_digest(digests)
    if base is None or base[1].depth >= MAX_CHAIN:
        # A whole value; a long chain starts again, so that reads stay short.
        return NewValue(channel, version, value.is_list, None, 0, len(digests), whole, digests)
    base_version, head = base
    return NewValue(
        channel,
        version,
        True,
        base_version,
        head.depth + 1,
        len(digests),
        whole,
        digests[head.length :],
    )


async def _erase(tx: CheckpointWriter, thread_id: str, erased_through: str) -> int:
    """Erases a locked thread, its tombstone moved to its greatest id."""
    greatest = await tx.greatest_ids(thread_id)
    return await tx.erase_thread(thread_id, max(erased_through, *greatest))


async def _delete(tx: CheckpointWriter, thread_id: str, keys: Sequence[CheckpointKey]) -> int:
    """Deletes checkpoints of a locked thread and what only they used."""
    if not keys:
        return 0
    await tx.delete_checkpoints(thread_id, keys)
    await _collect_garbage(tx, thread_id)
    return len(keys)


async def _collect_garbage(tx: CheckpointWriter, thread_id: str) -> None:
    """Deletes the values no checkpoint reads (directly or as a base of
    one it reads), then the blobs no value or write names."""
    reachable = {
        ValueKey(thread_id, row.key.checkpoint_ns, channel, version)
        for row in await tx.thread_checkpoints(thread_id)
        for channel, version in row.channel_versions.items()
    }
    values = {value.key: value for value in await tx.thread_values(thread_id)}
    pending = list(reachable)
    while pending:
        found = values.get(pending.pop())
        if found is not None and found.base_version is not None:
            base = ValueKey(
                thread_id, found.key.checkpoint_ns, found.key.channel, found.base_version
            )
            if base not in reachable:
                reachable.add(base)
                pending.append(base)
    await tx.delete_values([key for key in values if key not in reachable])
    named = await tx.thread_write_digests(thread_id)
    for key in reachable:
        if key in values:
            named.update(values[key].digests)
    unnamed = (await tx.thread_blob_digests(thread_id)) - named
    await tx.delete_blobs(thread_id, sorted(unnamed))


async def _matching(
    tx: CheckpointReader,
    thread_id: str | None,
    checkpoint_ns: str | None,
    below: tuple[str, str, str],
    wanted: Mapping[str, str],
    size: int,
) -> tuple[list[CheckpointRow], tuple[str, str, str], bool]:
    """Up to `size` checkpoints below `below` whose metadata matches, the
    key the next page starts below, and whether there may be more."""
    rows: list[CheckpointRow] = []
    scanned = 0
    while True:
        # Unfiltered: one row more than the page tells whether more exist.
        limit = size - len(rows) + 1 if not wanted else _SCAN_BATCH
        batch = await tx.checkpoint_page(CheckpointRange(thread_id, checkpoint_ns, below, limit))
        for row in batch:
            if len(rows) == size:
                return rows, below, True
            scanned += 1
            key = row.key
            below = (key.checkpoint_id, key.checkpoint_ns, key.thread_id)
            if _matches(row.metadata_json, wanted):
                rows.append(row)
        if len(batch) < limit:
            return rows, below, False
        if len(rows) == size or scanned >= SCAN_LIMIT:
            return rows, below, True


async def _assemble(tx: CheckpointReader, rows: Sequence[CheckpointRow]) -> list[CheckpointTuple]:
    """The rows with their values and pending writes, their items read."""
    value_keys = [
        ValueKey(row.key.thread_id, row.key.checkpoint_ns, channel, version)
        for row in rows
        for channel, version in row.channel_versions.items()
    ]
    values = await tx.values(value_keys)
    writes = await tx.pending_writes([row.key for row in rows])
    digests: dict[str, set[bytes]] = {}
    for value_key, stored_value in values.items():
        digests.setdefault(value_key.thread_id, set()).update(stored_value.digests)
    for checkpoint, stored_writes in writes.items():
        for write in stored_writes:
            digests.setdefault(checkpoint.thread_id, set()).update(write.value.digests)
    blobs: dict[str, dict[bytes, Blob]] = {}
    for thread_id, wanted in digests.items():
        blobs[thread_id] = await tx.blobs(thread_id, sorted(wanted))

    def value(thread_id: str, stored: StoredValue) -> Value:
        held = blobs[thread_id]
        return Value(tuple(held[digest] for digest in stored.digests), stored.is_list)

    found: list[CheckpointTuple] = []
    for row in rows:
        key = row.key
        channel_values: list[tuple[str, str, Value]] = []
        for channel, version in sorted(row.channel_versions.items()):
            stored = values.get(ValueKey(key.thread_id, key.checkpoint_ns, channel, version))
            if stored is not None:
                channel_values.append((channel, version, value(key.thread_id, stored)))
        pending = [
            PendingWrite(w.task_id, w.task_path, w.idx, w.channel, value(key.thread_id, w.value))
            for w in writes.get(key, [])
        ]
        found.append(
            CheckpointTuple(
                key, row.parent_id, row.checkpoint, row.metadata_json, channel_values, pending
            )
        )
    return found


def _within_budget(page: Sequence[CheckpointTuple]) -> list[CheckpointTuple]:
    """The page's first checkpoints that fit MAX_PAGE_BYTES (the first
    always)."""
    kept: list[CheckpointTuple] = []
    total = 0
    for checkpoint in page:
        total += checkpoint.size()
        if kept and total > MAX_PAGE_BYTES:
            break
        kept.append(checkpoint)
    return kept
