"""The checkpoint store over every backend, through its rules
(CheckpointService) and the storage it runs on: checkpoints read back
whole, newest first; values stored once per distinct item and a growing
list by what it gained; pending writes in LangGraph's order with the
special writes' replacement; erasure that leaves no row and refuses the
erased history's late writes; copies; pruning and deleting by run that
keep whatever a kept checkpoint still reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from uuid import uuid4

import pytest

from agent_state import checkpoints
from agent_state.checkpoints import (
    BlobInput,
    ChannelValueInput,
    CheckpointInput,
    CheckpointService,
    CheckpointTuple,
    PruneStrategy,
    ValueInput,
    WriteInput,
)
from agent_state.errors import FailedPrecondition, InvalidArgument, NotFound
from agent_state.model import Value
from agent_state.storage.base import Store


def thread() -> str:
    return f"thread-{uuid4()}"


def whole(data: bytes, kind: str = "bytes") -> ValueInput:
    return ValueInput([BlobInput(kind, data)], is_list=False)


def listed(*items: bytes) -> ValueInput:
    return ValueInput([BlobInput("msgpack", item) for item in items], is_list=True)


def data(value: Value) -> bytes | list[bytes]:
    """A value's bytes, as the client would see them."""
    if value.is_list:
        return [blob.data for blob in value.items]
    (blob,) = value.items
    return blob.data


def values_of(found: CheckpointTuple) -> dict[str, bytes | list[bytes]]:
    return {channel: data(value) for channel, _, value in found.values}


async def put(
    service: CheckpointService,
    thread_id: str,
    checkpoint_id: str,
    *,
    parent: str = "",
    ns: str = "",
    versions: dict[str, str] | None = None,
    values: dict[str, ValueInput] | None = None,
    metadata: dict[str, object] | None = None,
) -> None:
    given = values or {}
    channel_versions = versions if versions is not None else dict.fromkeys(given, "1")
    await service.put_checkpoint(
        CheckpointInput(
            thread_id=thread_id,
            checkpoint_ns=ns,
            checkpoint_id=checkpoint_id,
            parent_checkpoint_id=parent,
            checkpoint=BlobInput("json", f'{{"id": "{checkpoint_id}"}}'.encode()),
            metadata_json=json.dumps(metadata or {}),
            channel_versions=channel_versions,
            values=[
                ChannelValueInput(channel, channel_versions[channel], value)
                for channel, value in given.items()
            ],
        )
    )


async def write(
    service: CheckpointService,
    thread_id: str,
    checkpoint_id: str,
    task_id: str,
    writes: Sequence[tuple[int, str, bytes]],
    *,
    task_path: str = "",
    ns: str = "",
) -> None:
    await service.put_writes(
        thread_id,
        ns,
        checkpoint_id,
        task_id,
        task_path,
        [WriteInput(idx, channel, whole(value)) for idx, channel, value in writes],
    )


async def ids(service: CheckpointService, thread_id: str, ns: str | None = "") -> list[str]:
    page = await service.list_checkpoints(thread_id, ns, "", "", 100, "")
    return [found.key.checkpoint_id for found in page.checkpoints]


async def test_a_checkpoint_reads_back_whole(store: Store) -> None:
    service = CheckpointService(store)
    t = thread()
    await put(service, t, "0001", values={"a": whole(b"A"), "m": listed(b"x", b"y")})
    await put(
        service,
        t,
        "0002",
        parent="0001",
        versions={"a": "1", "m": "2", "empty": "1"},
        values={"m": listed(b"x", b"y", b"z")},
        metadata={"source": "loop", "step": 1, "run_id": "r1", "big": 12345678901234567890},
    )
    found = await service.get_checkpoint(t, "", "")
    assert found.key.checkpoint_id == "0002"
    assert found.parent_id == "0001"
    assert found.checkpoint == ("json", b'{"id": "0002"}')
    assert json.loads(found.metadata_json)["big"] == 12345678901234567890
    # Unchanged channels come from their version; one put without a value has none.
    assert values_of(found) == {"a": b"A", "m": [b"x", b"y", b"z"]}
    first = await service.get_checkpoint(t, "", "0001")
    assert first.parent_id is None
    assert values_of(first) == {"a": b"A", "m": [b"x", b"y"]}
    with pytest.raises(NotFound) as missing:
        await service.get_checkpoint(t, "", "0003")
    assert missing.value.field == "checkpoint_id"
    with pytest.raises(NotFound):
        await service.get_checkpoint(t, "child", "")


async def test_namespaces_and_threads_are_apart(store: Store) -> None:
    service = CheckpointService(store)
    t, other = thread(), thread()
    await put(service, t, "0001", values={"a": whole(b"root")})
    await put(service, t, "0002", ns="child:1", values={"a": whole(b"child")})
    await put(service, other, "0003", values={"a": whole(b"other")})
    assert values_of(await service.get_checkpoint(t, "", "")) == {"a": b"root"}
    assert values_of(await service.get_checkpoint(t, "child:1", "")) == {"a": b"child"}
    assert await ids(service, t) == ["0001"]
    assert await ids(service, t, None) == ["0002", "0001"]
    assert await ids(service, other) == ["0003"]


async def test_a_growing_list_stores_each_item_once(store: Store) -> None:
    service = CheckpointService(store)
    t = thread()
    items: list[bytes] = []
    parent = ""
    for step in range(1, 31):
        items.append(f"message {step}".encode())
        checkpoint_id = f"{step:04}"
        await put(
            service,
            t,
            checkpoint_id,
            parent=parent,
            versions={"messages": str(step)},
            values={"messages": listed(*items)},
        )
        # The node's write: a list of the one new message.
        new_message = WriteInput(0, "messages", listed(items[-1]))
        await service.put_writes(t, "", checkpoint_id, "task", "", [new_message])
        parent = checkpoint_id
    async with store.write_checkpoints() as tx:
        blobs = await tx.thread_blob_digests(t)
        stored = await tx.thread_values(t)
    # One blob per message: the writes name the same items as the lists.
    assert len(blobs) == 30
    # Each version holds the one digest it gained over its parent's list.
    assert sorted(len(value.digests) for value in stored) == [1] * 30
    assert all(value.base_version is not None for value in stored if value.key.version != "1")
    latest = await service.get_checkpoint(t, "", "")
    assert values_of(latest) == {"messages": items}
    middle = await service.get_checkpoint(t, "", "0015")
    assert values_of(middle) == {"messages": items[:15]}


async def test_a_long_chain_of_lists_starts_again_whole(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "MAX_CHAIN", 4)
    service = CheckpointService(store)
    t = thread()
    items: list[bytes] = []
    parent = ""
    for step in range(1, 13):
        items.append(f"item {step}".encode())
        await put(
            service,
            t,
            f"{step:04}",
            parent=parent,
            versions={"m": str(step)},
            values={"m": listed(*items)},
        )
        parent = f"{step:04}"
    async with store.write_checkpoints() as tx:
        stored = await tx.thread_values(t)
    assert sorted(int(v.key.version) for v in stored if v.base_version is None) == [1, 6, 11]
    for step in (5, 6, 12):
        found = await service.get_checkpoint(t, "", f"{step:04}")
        assert values_of(found) == {"m": items[:step]}


async def test_a_list_that_does_not_extend_its_parents_is_stored_whole(store: Store) -> None:
    service = CheckpointService(store)
    t = thread()
    await put(service, t, "0001", versions={"m": "1"}, values={"m": listed(b"a", b"b")})
    await put(
        service, t, "0002", parent="0001", versions={"m": "2"}, values={"m": listed(b"b", b"c")}
    )
    async with store.write_checkpoints() as tx:
        stored = {value.key.version: value for value in await tx.thread_values(t)}
    assert stored["2"].base_version is None
    assert len(stored["2"].digests) == 2
    assert values_of(await service.get_checkpoint(t, "", "")) == {"m": [b"b", b"c"]}


async def test_pending_writes_follow_langgraphs_rules(store: Store) -> None:
    service = CheckpointService(store)
    t = thread()
    await put(service, t, "0001")
    await write(service, t, "0001", "task-b", [(0, "ch", b"b0"), (1, "ch", b"b1")], task_path="1")
    await write(service, t, "0001", "task-a", [(0, "ch", b"a0"), (-1, "__error__", b"first")])
    # A retry keeps what is stored; a special write replaces it.
    await write(service, t, "0001", "task-a", [(0, "ch", b"again"), (-1, "__error__", b"last")])
    found = await service.get_checkpoint(t, "", "0001")
    assert [(w.task_path, w.task_id, w.idx, data(w.value)) for w in found.pending_writes] == [
        ("", "task-a", -1, b"last"),
        ("", "task-a", 0, b"a0"),
        ("1", "task-b", 0, b"b0"),
        ("1", "task-b", 1, b"b1"),
    ]
    # Writes may come before their checkpoint, and the next one has none.
    await write(service, t, "0002", "task-c", [(0, "ch", b"early")])
    await put(service, t, "0002", parent="0001")
    assert [w.task_id for w in (await service.get_checkpoint(t, "", "")).pending_writes] == [
        "task-c"
    ]
    await put(service, t, "0003", parent="0002")
    assert (await service.get_checkpoint(t, "", "")).pending_writes == []


async def test_listing_pages_filters_and_bounds(store: Store) -> None:
    service = CheckpointService(store)
    t = thread()
    for step in range(12):
        source = "input" if step % 2 == 0 else "loop"
        await put(service, t, f"{step:04}", metadata={"source": source, "step": step})
    seen: list[str] = []
    token = ""
    while True:
        page = await service.list_checkpoints(t, "", "", "", 5, token)
        assert len(page.checkpoints) <= 5
        seen += [found.key.checkpoint_id for found in page.checkpoints]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"{step:04}" for step in reversed(range(12))]
    loops = await service.list_checkpoints(t, "", "", '{"source": "loop"}', 100, "")
    assert [c.key.checkpoint_id for c in loops.checkpoints] == [
        f"{step:04}" for step in (11, 9, 7, 5, 3, 1)
    ]
    step_one = await service.list_checkpoints(t, "", "", '{"step": 1, "source": "loop"}', 0, "")
    assert [c.key.checkpoint_id for c in step_one.checkpoints] == ["0001"]
    # Numbers are compared by their text: 1.0 is not 1.
    assert (await service.list_checkpoints(t, "", "", '{"step": 1.0}', 0, "")).checkpoints == []
    before = await service.list_checkpoints(t, "", "0003", "", 2, "")
    assert [c.key.checkpoint_id for c in before.checkpoints] == ["0002", "0001"]
    assert before.next_page_token
    rest = await service.list_checkpoints(t, "", "0003", "", 2, before.next_page_token)
    assert [c.key.checkpoint_id for c in rest.checkpoints] == ["0000"]
    assert rest.next_page_token == ""
    with pytest.raises(InvalidArgument) as other_filter:
        await service.list_checkpoints(t, "", "", "", 2, before.next_page_token)
    assert other_filter.value.field == "page_token"


async def test_listing_every_thread_orders_by_id_then_namespace_then_thread(
    store: Store,
) -> None:
    service = CheckpointService(store)
    marker = str(uuid4())
    first, second = sorted((thread(), thread()))
    for t in (first, second):
        await put(service, t, "0001", metadata={"marker": marker})
        await put(service, t, "0001", ns="child", metadata={"marker": marker})
    page = await service.list_checkpoints("", None, "", json.dumps({"marker": marker}), 100, "")
    assert [(c.key.checkpoint_ns, c.key.thread_id) for c in page.checkpoints] == [
        ("child", second),
        ("child", first),
        ("", second),
        ("", first),
    ]


async def test_delete_thread_erases_and_refuses_the_erased_history(store: Store) -> None:
    service = CheckpointService(store)
    t, kept = thread(), thread()
    await put(service, t, "0001", values={"a": whole(b"A")})
    await put(service, t, "0002", parent="0001", ns="child")
    await write(service, t, "0003", "task", [(0, "ch", b"early")])
    await put(service, kept, "0001", values={"a": whole(b"A")})
    assert await service.delete_thread(t) == 2
    assert await service.delete_thread(t) == 0
    assert await service.delete_thread(thread()) == 0
    async with store.write_checkpoints() as tx:
        assert await tx.thread_checkpoints(t) == []
        assert await tx.thread_values(t) == []
        assert await tx.thread_blob_digests(t) == set()
        assert await tx.thread_write_digests(t) == set()
        assert len(await tx.thread_blob_digests(kept)) == 1
    # A run still going cannot bring the thread back...
    for late in (
        put(service, t, "0004", parent="0002", ns="child"),
        put(service, t, "0003"),
        write(service, t, "0002", "task", [(0, "ch", b"late")], ns="child"),
    ):
        with pytest.raises(FailedPrecondition):
            await late
    with pytest.raises(NotFound):
        await service.get_checkpoint(t, "", "")
    # ...while a new run starts fresh.
    await put(service, t, "0005")
    await put(service, t, "0006", parent="0005")
    await write(service, t, "0006", "task", [(0, "ch", b"new")])
    assert await ids(service, t) == ["0006", "0005"]


async def test_copy_thread_copies_everything_and_replaces_the_target(store: Store) -> None:
    service = CheckpointService(store)
    source, target = thread(), thread()
    await put(service, source, "0001", versions={"m": "1"}, values={"m": listed(b"a")})
    await put(
        service,
        source,
        "0002",
        parent="0001",
        versions={"m": "2"},
        values={"m": listed(b"a", b"b")},
    )
    await put(service, source, "0001", ns="child", values={"c": whole(b"C")})
    await write(service, source, "0002", "task", [(0, "ch", b"w")])
    await put(service, target, "0009", values={"old": whole(b"old")})
    assert await service.copy_thread(source, target) == 3
    assert await ids(service, target, None) == ["0002", "0001", "0001"]
    copied = await service.get_checkpoint(target, "", "")
    assert values_of(copied) == {"m": [b"a", b"b"]}
    assert [data(w.value) for w in copied.pending_writes] == [b"w"]
    assert copied.parent_id == "0001"
    # A run of the copy goes on from a copied checkpoint (with a newer id
    # than any the target's erased content had, as time-ordered ids are).
    await put(service, target, "0010", parent="0002")
    assert await ids(service, source, None) == ["0002", "0001", "0001"]
    with pytest.raises(NotFound):
        await service.copy_thread(thread(), target)
    with pytest.raises(InvalidArgument):
        await service.copy_thread(source, source)


async def test_prune_keeps_the_newest_of_each_namespace_and_what_it_reads(store: Store) -> None:
    service = CheckpointService(store)
    t, other = thread(), thread()
    items: list[bytes] = []
    parent = ""
    for step in range(1, 5):
        items.append(f"item {step}".encode())
        await put(
            service,
            t,
            f"{step:04}",
            parent=parent,
            versions={"m": str(step), "gone": str(step)},
            values={"m": listed(*items), "gone": whole(f"gone {step}".encode())},
        )
        await write(service, t, f"{step:04}", "task", [(0, "ch", f"write {step}".encode())])
        parent = f"{step:04}"
    await put(service, t, "0001", ns="child")
    await put(service, t, "0002", ns="child", parent="0001")
    await put(service, other, "0001")
    await put(service, other, "0002", parent="0001")
    assert await service.prune([t, thread()], PruneStrategy.KEEP_LATEST) == 4
    assert await ids(service, t, None) == ["0004", "0002"]
    kept = await service.get_checkpoint(t, "", "")
    assert kept.parent_id is None
    assert values_of(kept) == {"m": items, "gone": b"gone 4"}
    assert [data(w.value) for w in kept.pending_writes] == [b"write 4"]
    async with store.write_checkpoints() as tx:
        # The kept list's chain stays; the other channel's old versions go.
        versions = {(v.key.channel, v.key.version) for v in await tx.thread_values(t)}
        assert versions == {("m", "1"), ("m", "2"), ("m", "3"), ("m", "4"), ("gone", "4")}
        assert len(await tx.thread_blob_digests(t)) == 4 + 1 + 1
    assert await ids(service, other) == ["0002", "0001"]
    assert await service.prune([t], PruneStrategy.DELETE) == 2
    assert await ids(service, t, None) == []
    with pytest.raises(InvalidArgument) as no_strategy:
        await service.prune([t], 0)
    assert no_strategy.value.field == "strategy"


async def test_delete_for_runs_deletes_in_every_thread(store: Store) -> None:
    service = CheckpointService(store)
    t, other = thread(), thread()
    run, kept_run = str(uuid4()), str(uuid4())
    await put(service, t, "0001", metadata={"run_id": run}, values={"a": whole(b"1")})
    await write(service, t, "0001", "task", [(0, "ch", b"w")])
    await put(service, t, "0002", parent="0001", metadata={"run_id": kept_run})
    await put(service, t, "0001", ns="child", metadata={"run_id": run})
    await put(service, other, "0001", metadata={"run_id": run})
    assert await service.delete_for_runs([run, str(uuid4())]) == 3
    assert await service.delete_for_runs([]) == 0
    assert await ids(service, t, None) == ["0002"]
    assert (await service.get_checkpoint(t, "", "")).parent_id is None
    assert await ids(service, other) == []
    async with store.write_checkpoints() as tx:
        assert await tx.thread_blob_digests(t) == set()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: put(s, "", "0001"), "thread_id"),
        (lambda s: put(s, "t", ""), "checkpoint_id"),
        (lambda s: put(s, "t\0", "0001"), "thread_id"),
        (lambda s: put(s, "t", "x" * 257), "checkpoint_id"),
        (lambda s: put(s, "t", "0001", ns="n" * 2049), "checkpoint_ns"),
        (lambda s: put(s, "t", "0001", parent="0001"), "parent_checkpoint_id"),
        (
            lambda s: s.put_checkpoint(
                CheckpointInput(
                    "t",
                    "",
                    "1",
                    "",
                    BlobInput("json", b"{}"),
                    "{}",
                    {"a": "2"},
                    [ChannelValueInput("a", "1", whole(b""))],
                )
            ),
            "values[0].version",
        ),
        (
            lambda s: put(s, "t", "1", values={"a": ValueInput([], is_list=False)}),
            "values[0].value.items",
        ),
        (lambda s: write(s, "t", "1", "task", [(0, "a", b""), (0, "b", b"")]), "writes[1].idx"),
        (lambda s: write(s, "t", "1", "", [(0, "a", b"")]), "task_id"),
        (lambda s: s.list_checkpoints("t", "", "", "[1]", 0, ""), "metadata_filter_json"),
        (lambda s: s.list_checkpoints("t", "", "", "", 0, "nonsense"), "page_token"),
        (lambda s: s.prune(["t"] * 1001, PruneStrategy.DELETE), "thread_ids"),
    ],
)
async def test_malformed_requests_name_their_field(store: Store, call: object, field: str) -> None:
    service = CheckpointService(store)
    with pytest.raises(InvalidArgument) as refused:
        await call(service)  # type: ignore[operator]
    assert refused.value.field.endswith(field)


async def test_metadata_must_be_a_json_object(store: Store) -> None:
    service = CheckpointService(store)
    given = CheckpointInput(thread(), "", "0001", "", BlobInput("json", b"{}"), "[]", {}, [])
    with pytest.raises(InvalidArgument) as refused:
        await service.put_checkpoint(given)
    assert refused.value.field == "metadata_json"
    assert checkpoints.MAX_METADATA_BYTES == 64 * 1024


async def test_a_filtered_listing_reads_a_bounded_number_of_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "SCAN_LIMIT", 20)
    monkeypatch.setattr(checkpoints, "_SCAN_BATCH", 7)
    service = CheckpointService(store)
    t = thread()
    for step in range(25):
        await put(service, t, f"{step:04}", metadata={"step": step})
    page = await service.list_checkpoints(t, "", "", '{"step": 0}', 10, "")
    assert page.checkpoints == []
    assert page.next_page_token
    rest = await service.list_checkpoints(t, "", "", '{"step": 0}', 10, page.next_page_token)
    assert [c.key.checkpoint_id for c in rest.checkpoints] == ["0000"]
    assert rest.next_page_token == ""
