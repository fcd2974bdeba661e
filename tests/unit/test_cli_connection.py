"""The CLI's connection helper without a server: connection options and paging."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest

from agent_state.cli.connection import Connection, PagingError, pages

ADDRESS = "127.0.0.1:50051"
TIMEOUT = 10.0


# --- connection options ---------------------------------------------------------------


def test_token_goes_into_authorization_metadata_and_never_into_repr() -> None:
    connection = Connection(ADDRESS, TIMEOUT, token="s3cret-token")
    assert connection.metadata() == (("authorization", "Bearer s3cret-token"),)
    assert "s3cret-token" not in repr(connection)
    assert Connection(ADDRESS, TIMEOUT).metadata() == ()


@pytest.mark.parametrize("token", ["", "has\nnewline", "ünicode"])
def test_tokens_grpc_cannot_send_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match="token") as info:
        Connection(ADDRESS, TIMEOUT, token=token)
    assert token not in str(info.value) or not token


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key"):
        Connection(ADDRESS, TIMEOUT, tls_cert_file=tmp_path / "cert.pem")
    with pytest.raises(ValueError, match="certificate"):
        Connection(ADDRESS, TIMEOUT, tls_key_file=tmp_path / "key.pem")


def test_tls_files_imply_tls(tmp_path: Path) -> None:
    assert not Connection(ADDRESS, TIMEOUT).uses_tls
    assert Connection(ADDRESS, TIMEOUT, tls=True).uses_tls
    assert Connection(ADDRESS, TIMEOUT, tls_ca_file=tmp_path / "ca.pem").uses_tls
    both = Connection(
        ADDRESS, TIMEOUT, tls_cert_file=tmp_path / "c.pem", tls_key_file=tmp_path / "k.pem"
    )
    assert both.uses_tls


def test_credentials_carry_roots_certificate_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for name, path in files.items():
        block = "PRIVATE KEY" if name == "key" else "CERTIFICATE"
        path.write_bytes(f"-----BEGIN {block}-----\n{name}\n".encode())
    seen: dict[str, bytes | None] = {}

    def fake(
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> grpc.ChannelCredentials:
        seen.update(root=root_certificates, key=private_key, chain=certificate_chain)
        return cast(grpc.ChannelCredentials, object())

    monkeypatch.setattr(grpc, "ssl_channel_credentials", fake)
    Connection(
        ADDRESS,
        TIMEOUT,
        tls_ca_file=files["ca"],
        tls_cert_file=files["cert"],
        tls_key_file=files["key"],
    ).credentials()
    assert seen == {
        "root": files["ca"].read_bytes(),
        "key": files["key"].read_bytes(),
        "chain": files["cert"].read_bytes(),
    }

    monkeypatch.setenv("SSL_CERT_FILE", str(files["ca"]))
    Connection(ADDRESS, TIMEOUT, tls=True).credentials()
    assert seen == {"root": files["ca"].read_bytes(), "key": None, "chain": None}, "OpenSSL's roots"


# --- paging ------------------------------------------------------------------------------


class Page:
    def __init__(self, items: list[int], next_page_token: str) -> None:
        self.items = items
        self.next_page_token = next_page_token


def test_pages_follow_tokens_to_the_empty_one() -> None:
    book = {"": Page([1, 2], "b"), "b": Page([3], "c"), "c": Page([], "")}
    asked: list[str] = []

    def fetch(token: str) -> Page:
        asked.append(token)
        return book[token]

    assert [i for page in pages(fetch) for i in page.items] == [1, 2, 3]
    assert asked == ["", "b", "c"]


def test_a_repeated_token_stops_paging() -> None:
    book = {"": Page([1], "a"), "a": Page([2], "a")}
    walked: Iterator[Page] = pages(book.__getitem__)
    with pytest.raises(PagingError):
        list(walked)
