"""Who may reach the API: token entries, loopback addresses, exposure."""

from __future__ import annotations

import pytest

from agent_state.server.access import (
    Access,
    combined_tokens,
    exposure,
    is_loopback,
    parse_tokens,
)

TOKEN = "token-0123456789abcdef"


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.1:0", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/agent-state.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.7:50051", False),
        ("agent-state.example:50051", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_entries_are_separated_by_commas_or_lines_with_comments() -> None:
    text = f"rw:{TOKEN}a, ro:{TOKEN}b\n\n# a comment\nro:{TOKEN}c  # trailing\n"
    assert parse_tokens(text, "auth_tokens") == {
        f"{TOKEN}a": Access.READ_WRITE,
        f"{TOKEN}b": Access.READ_ONLY,
        f"{TOKEN}c": Access.READ_ONLY,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"admin:{TOKEN}", "auth_tokens: entry 1 must be rw:TOKEN or ro:TOKEN"),
        (TOKEN, "auth_tokens: entry 1 must be rw:TOKEN or ro:TOKEN"),
        (f"ro:{TOKEN}, rw:short", "auth_tokens: entry 2: a token needs at least 16 characters"),
        ("rw:has a space in it here", "entry 1: a token needs at least 16 characters"),
        (f"ro:{TOKEN}\nrw:{TOKEN}", "auth_tokens: entry 2 repeats a token"),
    ],
)
def test_a_bad_entry_is_named_by_its_number_never_its_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_tokens(text, "auth_tokens")
    assert TOKEN not in str(info.value)


def test_combined_tokens_must_agree_on_access() -> None:
    assert combined_tokens(f"rw:{TOKEN}", f"rw:{TOKEN}") == {TOKEN: Access.READ_WRITE}
    assert combined_tokens(None, None) == {}
    with pytest.raises(ValueError, match="appears in auth_tokens and auth_tokens_file"):
        combined_tokens(f"rw:{TOKEN}", f"ro:{TOKEN}")


def test_exposure_needs_tokens_or_an_explicit_yes_beyond_loopback() -> None:
    assert exposure("127.0.0.1:50051", {}, allow_unauthenticated=False) is None
    assert exposure("0.0.0.0:50051", {TOKEN: Access.READ_ONLY}, allow_unauthenticated=False) is None
    assert exposure("0.0.0.0:50051", {}, allow_unauthenticated=True) is None
    reason = exposure("0.0.0.0:50051", {}, allow_unauthenticated=False)
    assert reason is not None
    assert "grpc_address 0.0.0.0:50051 is not loopback" in reason
