from __future__ import annotations

import uuid

import pytest

from agent_state.errors import InvalidArgument
from agent_state.ids import new_id, parse_optional_uuid, parse_uuid

CANONICAL = "0191c6a4-1234-7abc-8def-0123456789ab"


@pytest.mark.parametrize(
    "spelling",
    [
        CANONICAL,
        CANONICAL.upper(),
        "{" + CANONICAL + "}",
        "{" + CANONICAL.upper() + "}",
        "urn:uuid:" + CANONICAL,
        "URN:UUID:" + CANONICAL.upper(),
        CANONICAL.replace("-", ""),
        CANONICAL.replace("-", "").upper(),
    ],
)
def test_accepted_spellings_name_one_id(spelling: str) -> None:
    assert str(parse_uuid(spelling, "conversation_id")) == CANONICAL


@pytest.mark.parametrize(
    "spelling",
    [
        "not-a-uuid",
        CANONICAL[:-1],
        CANONICAL + "0",
        "{" + CANONICAL,
        CANONICAL + "}",
        "{" + CANONICAL.replace("-", "") + "}",
        "urn:uuid:" + CANONICAL.replace("-", ""),
        "0191c6a41234-7abc-8def-0123456789ab",
        "0191c6a4-1234-7abc-8def-0123456789ag",
        " " + CANONICAL,
        CANONICAL + "\n",
        "urn:" + CANONICAL,
    ],
)
def test_other_spellings_are_invalid_and_name_the_field(spelling: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_uuid(spelling, "new_message_ids[2]")
    assert caught.value.field == "new_message_ids[2]"


def test_empty_is_required_or_unset() -> None:
    with pytest.raises(InvalidArgument, match="required"):
        parse_uuid("", "conversation_id")
    assert parse_optional_uuid("", "from_message_id") is None


def test_new_ids_are_version_7_and_sort_by_creation() -> None:
    ids = [new_id() for _ in range(200)]
    assert all(isinstance(value, uuid.UUID) and value.version == 7 for value in ids)
    timestamps = [value.int >> 80 for value in ids]
    assert timestamps == sorted(timestamps)
    assert len(set(ids)) == len(ids)
