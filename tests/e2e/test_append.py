"""AppendConversationMessages: creation, validation, contiguity, whole responses, concurrency."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from agent_state_client._gen import agent_state_pb2 as pb
from tests.e2e.helpers import (
    ASSISTANT,
    INVALID_ARGUMENT,
    NOT_FOUND,
    ROLE_UNSPECIFIED,
    TOOL,
    USER,
    content,
    expect_error,
    input_content,
    is_canonical_uuid,
    micros,
    new_id,
    role,
    texts,
    tool_image_message,
    tool_text_message,
)
from tests.support import calls
from tests.support.calls import Stub, text_message


def test_append_creates_the_conversation(stub: Stub) -> None:
    cid = new_id()
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid))
    response = calls.append(stub, cid, [text_message("hello")])
    assert response.metadata.conversation_id == cid
    assert response.metadata.message_count == 1
    metadata = calls.get(stub, cid)
    assert metadata.conversation_id == cid
    assert metadata.message_count == 1


def test_appended_messages_are_returned_whole_and_in_order(stub: Stub) -> None:
    cid = new_id()
    inputs = [
        text_message("first", USER, "question"),
        text_message("second", ASSISTANT, ""),
        tool_text_message("result", metadata={"k": "v"}),
        tool_image_message(
            pb.ToolImageOutput(
                external_url="https://example.com/a.png",
                mime_type="image/png",
                detail=pb.IMAGE_DETAIL_HIGH,
                width_px=640,
                height_px=480,
                sha256="ab" * 32,
            )
        ),
    ]
    response = calls.append(stub, cid, inputs)
    appended = list(response.appended)
    assert [content(m) for m in appended] == [input_content(i) for i in inputs]
    assert all(is_canonical_uuid(m.id) for m in appended)
    assert len({m.id for m in appended}) == len(inputs)
    assert all(m.conversation_id == cid for m in appended)
    assert all(m.HasField("created_at") for m in appended)
    assert all(m.created_at.seconds > 0 for m in appended)
    assert response.metadata.message_count == len(inputs)
    # What the response says is what is stored.
    assert calls.list_all(stub, cid) == appended


def test_batches_land_contiguously_at_the_tail(stub: Stub) -> None:
    cid = new_id()
    first = calls.seed(stub, cid, 3, prefix="a")
    second = calls.seed(stub, cid, 4, prefix="b")
    third = calls.seed(stub, cid, 1, prefix="c")
    assert calls.all_ids(stub, cid) == first + second + third
    assert texts(calls.list_all(stub, cid)) == ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "c0"]
    assert calls.get(stub, cid).message_count == 8


def test_append_after_replace_and_delete_goes_to_the_tail(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 4)
    calls.replace(stub, cid, from_id=ids[0], to_id=ids[1])
    calls.delete(stub, cid, from_id=ids[3])
    new = calls.seed(stub, cid, 2, prefix="n")
    assert calls.all_ids(stub, cid) == [ids[2], *new]


def test_message_ids_are_unique_uuids(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 300)
    ids += calls.seed(stub, new_id(), 300)
    assert len(set(ids)) == 600
    assert all(is_canonical_uuid(i) for i in ids)


def test_empty_batch_is_invalid_and_creates_nothing(stub: Stub) -> None:
    cid = new_id()
    expect_error(INVALID_ARGUMENT, lambda: calls.append(stub, cid, []), "messages")
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid))


def _no_body(msg_role: pb.Role = USER) -> pb.AppendMessageInput:
    return pb.AppendMessageInput(role=msg_role, kind="k")


def _empty_body() -> pb.AppendMessageInput:
    message = pb.AppendMessageInput(role=USER, kind="k")
    message.body.SetInParent()
    return message


def _tool_output_without_variant() -> pb.AppendMessageInput:
    message = pb.AppendMessageInput(role=TOOL, kind="tool_output")
    message.body.tool_output.tool_name = "search"
    message.body.tool_output.tool_call_id = "call_9"
    message.body.tool_output.metadata["a"] = "b"
    return message


def _tool_output_bare() -> pb.AppendMessageInput:
    message = pb.AppendMessageInput(role=TOOL)
    message.body.tool_output.SetInParent()
    return message


INVALID_MESSAGES: dict[str, tuple[Callable[[], pb.AppendMessageInput], str]] = {
    "role unspecified": (lambda: text_message("x", ROLE_UNSPECIFIED), "role"),
    "unknown role 4": (lambda: text_message("x", role(4)), "role"),
    "unknown role 99": (lambda: text_message("x", role(99)), "role"),
    "negative role": (lambda: text_message("x", role(-1)), "role"),
    "no body": (_no_body, "body"),
    "body without variant": (_empty_body, "body"),
    "tool output without text or image": (_tool_output_without_variant, "body"),
    "empty tool output": (_tool_output_bare, "body"),
}


@pytest.mark.parametrize("case", sorted(INVALID_MESSAGES))
@pytest.mark.parametrize("index", [0, 1, 3])
def test_invalid_message_is_rejected_naming_its_index(stub: Stub, case: str, index: int) -> None:
    make, field = INVALID_MESSAGES[case]
    batch = [text_message(f"ok{i}") for i in range(4)]
    batch[index] = make()
    cid = new_id()
    expect_error(
        INVALID_ARGUMENT, lambda: calls.append(stub, cid, batch), f"messages[{index}].{field}"
    )
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid))


def test_rejected_append_stores_nothing_in_an_existing_conversation(stub: Stub) -> None:
    cid = new_id()
    existing = calls.seed(stub, cid, 2)
    before = calls.get(stub, cid)
    batch = [text_message("fine"), text_message("also fine"), _no_body()]
    expect_error(INVALID_ARGUMENT, lambda: calls.append(stub, cid, batch), "messages[2].body")
    assert calls.all_ids(stub, cid) == existing
    assert calls.get(stub, cid) == before


def test_first_invalid_message_is_reported_for_a_batch_with_several(stub: Stub) -> None:
    cid = new_id()
    batch = [text_message("ok"), text_message("x", ROLE_UNSPECIFIED), _no_body()]
    error = expect_error(INVALID_ARGUMENT, lambda: calls.append(stub, cid, batch))
    details = error.details() or ""
    assert "messages[1]" in details or "messages[2]" in details, details
    expect_error(NOT_FOUND, lambda: calls.get(stub, cid))


def test_every_role_is_accepted(stub: Stub) -> None:
    cid = new_id()
    roles = [USER, ASSISTANT, TOOL]
    response = calls.append(stub, cid, [text_message(str(r), r) for r in roles])
    assert [m.role for m in response.appended] == roles
    assert [m.role for m in calls.list_all(stub, cid)] == roles


def test_concurrent_appenders_lose_nothing_and_keep_batches_contiguous(stub: Stub) -> None:
    cid = new_id()  # new: the first batches also race to create the conversation
    workers, batches, size = 32, 3, 4
    barrier = threading.Barrier(workers)

    stamps: dict[str, int] = {}  # first id of a batch -> updated_at returned with it

    def work(worker: int) -> list[list[str]]:
        barrier.wait(timeout=30)
        out: list[list[str]] = []
        for b in range(batches):
            batch = [text_message(f"w{worker}-b{b}-{k}") for k in range(size)]
            response = calls.append(stub, cid, batch)
            assert texts(response.appended) == [f"w{worker}-b{b}-{k}" for k in range(size)]
            out.append([m.id for m in response.appended])
            stamps[response.appended[0].id] = micros(response.metadata.updated_at)
        return out

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, range(workers)))

    messages = calls.list_all(stub, cid)
    ids = [m.id for m in messages]
    assert len(ids) == workers * batches * size
    assert len(set(ids)) == len(ids), "duplicated messages"
    assert calls.get(stub, cid).message_count == len(ids)
    position = {message_id: i for i, message_id in enumerate(ids)}
    for worker, worker_batches in enumerate(results):
        starts = []
        for b, batch_ids in enumerate(worker_batches):
            start = position[batch_ids[0]]
            assert ids[start : start + size] == batch_ids, f"batch w{worker}-b{b} interleaved"
            assert texts(messages[start : start + size]) == [
                f"w{worker}-b{b}-{k}" for k in range(size)
            ]
            starts.append(start)
        # One client's batches, sent one after another, land in that order.
        assert starts == sorted(starts)
    # Every append moved updated_at forward: in ordering order, strictly increasing.
    in_order = [stamps[ids[i]] for i in range(0, len(ids), size)]
    assert all(b > a for a, b in itertools.pairwise(in_order)), in_order


def test_concurrent_replaces_keep_the_ordering_consistent(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 30)
    workers, rounds = 16, 8
    barrier = threading.Barrier(workers)
    codes: list[str] = []

    def work(worker: int) -> None:
        rng = random.Random(worker)
        barrier.wait(timeout=30)
        for _ in range(rounds):
            a, b, c = rng.sample(ids, 3)
            operation = rng.randrange(5)
            try:
                if operation == 0:
                    calls.replace(stub, cid, from_id=a, new_ids=[b, c])
                elif operation == 1:
                    calls.replace(stub, cid, to_id=a, new_ids=[b])
                elif operation == 2:
                    calls.replace(stub, cid, from_id=a, to_id=a, new_ids=[c, a])
                elif operation == 3:
                    calls.replace(stub, cid, from_id=a, to_id=a)  # detach
                else:
                    calls.append(stub, cid, [text_message(f"w{worker}")])
            except grpc.RpcError as exc:
                codes.append(exc.code().name)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(workers)))
    current = calls.all_ids(stub, cid)
    assert len(current) == len(set(current)), "the ordering holds an id twice"
    assert calls.get(stub, cid).message_count == len(current)
    # Anchors detached or reordered by another writer are ordinary outcomes; nothing else.
    assert set(codes) <= {"NOT_FOUND", "INVALID_ARGUMENT"}, codes
