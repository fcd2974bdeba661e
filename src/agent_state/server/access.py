"""Who may reach the API: bearer tokens and what each may do, and whether a
listen address accepts connections from beyond this host.

Pure and free of gRPC: settings parse their tokens while they load (a bad
entry is a bad setting), and importing grpc there would fix its core's log
level before the CLI's client commands can quiet it.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum


class Access(StrEnum):
    """What a bearer token may do."""

    READ_ONLY = "ro"
    READ_WRITE = "rw"


def parse_tokens(text: str, setting: str) -> dict[str, Access]:
    """Entries `rw:TOKEN` or `ro:TOKEN`, separated by commas or newlines
    (a file may also hold blank lines and `#` comments). Error messages
    name the entry by its number, never by its text."""
    tokens: dict[str, Access] = {}
    entries = [line.split("#", 1)[0] for line in text.replace(",", "\n").splitlines()]
    for number, entry in enumerate((e.strip() for e in entries if e.strip()), start=1):
        access, separator, token = entry.partition(":")
        if not separator or access not in ("ro", "rw"):
            raise ValueError(f"{setting}: entry {number} must be rw:TOKEN or ro:TOKEN")
        if len(token) < 16 or any(c.isspace() for c in token):
            raise ValueError(
                f"{setting}: entry {number}: a token needs at least 16 characters and no spaces"
            )
        if token in tokens:
            raise ValueError(f"{setting}: entry {number} repeats a token")
        tokens[token] = Access(access)
    return tokens


def combined_tokens(inline: str | None, file_text: str | None) -> dict[str, Access]:
    """The tokens of auth_tokens (`inline`) and of the auth_tokens_file's
    text together; a token given in both must grant the same access."""
    tokens: dict[str, Access] = {}
    if inline is not None:
        tokens |= parse_tokens(inline, "auth_tokens")
    if file_text is not None:
        for token, access in parse_tokens(file_text, "auth_tokens_file").items():
            if tokens.get(token, access) is not access:
                raise ValueError("a token appears in auth_tokens and auth_tokens_file")
            tokens[token] = access
    return tokens


def is_loopback(address: str) -> bool:
    """Whether a gRPC listen address only accepts connections from this host."""
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(
    grpc_address: str, tokens: dict[str, Access], *, allow_unauthenticated: bool
) -> str | None:
    """Why serving on `grpc_address` would open the API, unauthenticated,
    beyond this host; None when it would not."""
    if allow_unauthenticated or tokens or is_loopback(grpc_address):
        return None
    return (
        f"grpc_address {grpc_address} is not loopback and no auth tokens"
        " are set; set auth_tokens or auth_tokens_file, or allow_unauthenticated=true"
    )
