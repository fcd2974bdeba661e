"""Identifiers: accepted UUID spellings, canonical responses, malformed ids named by field."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.helpers import (
    INVALID_ARGUMENT,
    expect_error,
    is_canonical_uuid,
    malformed_uuids,
    new_id,
    spellings,
)
from tests.support import calls
from tests.support.calls import Stub, text_message

MALFORMED = malformed_uuids()
SOME_MALFORMED = ["", "not-a-uuid", MALFORMED[3], "{" + new_id(), "0x" + "0" * 30]


def test_conversation_id_spellings_name_one_conversation(stub: Stub) -> None:
    cid = new_id()
    forms = spellings(cid)
    for i, form in enumerate(forms):
        response = calls.append(stub, form, [text_message(f"via {i}")])
        assert response.metadata.conversation_id == cid
        assert response.appended[0].conversation_id == cid
        assert response.metadata.message_count == i + 1
    for form in forms:
        metadata = calls.get(stub, form)
        assert metadata.conversation_id == cid
        assert metadata.message_count == len(forms)
        page = calls.list_page(stub, form, page_size=1000)
        assert page.metadata.conversation_id == cid
        assert [m.body.text.text for m in page.messages] == [f"via {i}" for i in range(len(forms))]
        assert all(m.conversation_id == cid for m in page.messages)
        assert len(calls.ids_page(stub, form, page_size=1000).message_ids) == len(forms)


def test_message_id_spellings_are_accepted_and_answered_canonically(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 6)
    a, b, c, d, e, f = ids
    response = calls.replace(
        stub,
        cid.upper(),
        from_id=b.upper(),
        to_id="{" + c + "}",
        new_ids=["urn:uuid:" + c, b.replace("-", "").upper()],
    )
    assert response.metadata.conversation_id == cid
    assert list(response.replaced_message_ids) == [b, c]
    assert list(response.inserted_message_ids) == [c, b]
    assert calls.all_ids(stub, cid) == [a, c, b, d, e, f]

    inserted = calls.replace(stub, cid, from_id=a.replace("-", ""), new_ids=["{" + f.upper() + "}"])
    assert list(inserted.inserted_message_ids) == [f]
    assert calls.all_ids(stub, cid) == [a, f, c, b, d, e]

    deleted = calls.delete(stub, "{" + cid + "}", from_id="urn:uuid:" + d.upper(), to_id=e.upper())
    assert deleted.metadata.conversation_id == cid
    assert list(deleted.deleted_message_ids) == [d, e]

    snap = calls.snapshot(
        stub, "urn:uuid:" + cid, [a.upper(), "{" + b + "}", b, f.replace("-", "")]
    )
    assert is_canonical_uuid(snap.snapshot_id)
    assert snap.conversation_id == cid
    for form in spellings(snap.snapshot_id):
        assert calls.snapshot_ids(stub, form) == [a, b, b, f]
        assert [m.id for m in calls.snapshot_messages(stub, form)] == [a, b, b, f]


def test_snapshot_ids_are_unique_uuids(stub: Stub) -> None:
    cid = new_id()
    ids = calls.seed(stub, cid, 2)
    snapshot_ids_seen = {calls.snapshot(stub, cid, ids).snapshot_id for _ in range(20)}
    assert len(snapshot_ids_seen) == 20
    assert all(is_canonical_uuid(s) for s in snapshot_ids_seen)


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_conversation_id_in_get(stub: Stub, bad: str) -> None:
    expect_error(INVALID_ARGUMENT, lambda: calls.get(stub, bad), "conversation_id")


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_conversation_id_in_append(stub: Stub, bad: str) -> None:
    expect_error(
        INVALID_ARGUMENT,
        lambda: calls.append(stub, bad, [text_message("x")]),
        "conversation_id",
    )


CONVERSATION_CALLS: dict[str, Callable[[Stub, str], object]] = {
    "ListConversationMessages": lambda s, c: calls.list_page(s, c),
    "ListConversationMessageIds": lambda s, c: calls.ids_page(s, c),
    "ReplaceConversationMessagesRange": lambda s, c: calls.replace(
        s, c, from_id=new_id(), to_id=new_id()
    ),
    "DeleteConversationMessagesRange": lambda s, c: calls.delete(s, c, from_id=new_id()),
    "CreateSnapshot": lambda s, c: calls.snapshot(s, c, [new_id()]),
}


@pytest.mark.parametrize("bad", SOME_MALFORMED)
@pytest.mark.parametrize("rpc", sorted(CONVERSATION_CALLS))
def test_malformed_conversation_id_elsewhere(stub: Stub, rpc: str, bad: str) -> None:
    call = CONVERSATION_CALLS[rpc]
    expect_error(INVALID_ARGUMENT, lambda: call(stub, bad), "conversation_id")


@pytest.mark.parametrize("bad", [m for m in MALFORMED if m])
def test_malformed_range_ids_are_named(stub: Stub, bad: str) -> None:
    cid = new_id()
    a, b, c = calls.seed(stub, cid, 3)
    before = calls.get(stub, cid)
    expect_error(
        INVALID_ARGUMENT, lambda: calls.replace(stub, cid, from_id=bad, to_id=c), "from_message_id"
    )
    expect_error(
        INVALID_ARGUMENT, lambda: calls.replace(stub, cid, from_id=a, to_id=bad), "to_message_id"
    )
    expect_error(
        INVALID_ARGUMENT,
        lambda: calls.replace(stub, cid, from_id=bad, new_ids=[b]),
        "from_message_id",
    )
    expect_error(
        INVALID_ARGUMENT, lambda: calls.replace(stub, cid, to_id=bad, new_ids=[b]), "to_message_id"
    )
    expect_error(INVALID_ARGUMENT, lambda: calls.delete(stub, cid, from_id=bad), "from_message_id")
    expect_error(INVALID_ARGUMENT, lambda: calls.delete(stub, cid, to_id=bad), "to_message_id")
    expect_error(
        INVALID_ARGUMENT, lambda: calls.delete(stub, cid, from_id=a, to_id=bad), "to_message_id"
    )
    assert calls.all_ids(stub, cid) == [a, b, c]
    assert calls.get(stub, cid) == before


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_new_message_id_is_named_with_its_index(stub: Stub, bad: str) -> None:
    cid = new_id()
    a, b, c = calls.seed(stub, cid, 3)
    expect_error(
        INVALID_ARGUMENT,
        lambda: calls.replace(stub, cid, from_id=a, to_id=b, new_ids=[a, b, bad]),
        "new_message_ids[2]",
    )
    expect_error(
        INVALID_ARGUMENT,
        lambda: calls.replace(stub, cid, from_id=c, new_ids=[bad]),
        "new_message_ids[0]",
    )
    assert calls.all_ids(stub, cid) == [a, b, c]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_snapshot_message_id_is_named_with_its_index(stub: Stub, bad: str) -> None:
    cid = new_id()
    a, b = calls.seed(stub, cid, 2)
    expect_error(INVALID_ARGUMENT, lambda: calls.snapshot(stub, cid, [a, bad, b]), "message_ids[1]")


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_snapshot_id_is_named(stub: Stub, bad: str) -> None:
    expect_error(INVALID_ARGUMENT, lambda: calls.snapshot_page(stub, bad), "snapshot_id")
    expect_error(INVALID_ARGUMENT, lambda: calls.snapshot_ids_page(stub, bad), "snapshot_id")


def test_conversation_ids_in_listed_messages_are_canonical(stub: Stub) -> None:
    cid = new_id()
    calls.append(stub, cid.upper(), [text_message("x")])
    assert [m.conversation_id for m in calls.list_all(stub, cid.replace("-", ""))] == [cid]
