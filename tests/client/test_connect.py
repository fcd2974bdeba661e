"""How the client reaches a server: the address forms, TLS, mutual TLS and
unix sockets against real servers, and settings refused before any call."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import trustme

from agent_state_client import NO_RETRY, AsyncClient, Client, MessageInput, Unavailable
from agent_state_client._connect import Target, parse_address
from tests.support.server import ServerProcess, sqlite_url
from tests.support.threads import run_each_in_a_thread


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50051", Target("127.0.0.1:50051", None)),
        ("db.example", Target("db.example:50051", None)),
        ("  db.example:7000 ", Target("db.example:7000", None)),
        ("agent-state://db.example:7000", Target("db.example:7000", None)),
        ("agent-state://db.example/", Target("db.example:50051", None)),
        ("agent-states://db.example", Target("db.example:50051", True)),
        ("agent-states://db.example:443", Target("db.example:443", True)),
        ("[::1]:7000", Target("[::1]:7000", None)),
        ("[::1]", Target("[::1]:50051", None)),
        ("::1", Target("[::1]:50051", None)),
        ("agent-state://[::1]:7000", Target("[::1]:7000", None)),
        ("unix:/run/agent-state.sock", Target("unix:/run/agent-state.sock", None)),
        ("unix:///run/agent-state.sock", Target("unix:///run/agent-state.sock", None)),
        ("dns:///db.example:7000", Target("dns:///db.example:7000", None)),
    ],
)
def test_address_forms(address: str, expected: Target) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "",
        "http://db.example:80",
        "agent-state://",
        "agent-state://db.example:7000/path",
        "db.example:port",
        "db.example:0",
        "db.example:70000",
        "[::1:7000",
        "user@db.example:7000",
    ],
)
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_address(address)


def test_settings_refused_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls"):
        AsyncClient("agent-states://db.example", tls=False)
    with pytest.raises(ValueError, match="tls"):
        AsyncClient("db.example", tls=False, ca_certificates=b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="client_certificate"):
        AsyncClient("db.example", client_certificate=b"-----BEGIN CERTIFICATE-----")
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello")
    with pytest.raises(ValueError, match=r"ca_certificates: no PEM .* in .*ca\.pem"):
        AsyncClient("db.example", ca_certificates=not_pem)
    with pytest.raises(ValueError, match="token"):
        AsyncClient("db.example", token="has space")
    with pytest.raises(ValueError, match="timeout"):
        AsyncClient("db.example", timeout=0)
    with pytest.raises(ValueError, match="token="):
        AsyncClient("db.example", metadata=[("Authorization", "Bearer x")])


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass(frozen=True)
class Pems:
    server_cert: Path
    server_key: Path
    ca: Path


def _server_files(ca: trustme.CA, directory: Path) -> Pems:
    issued = ca.issue_cert("127.0.0.1", "localhost", "agent-state.internal")
    pems = Pems(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    issued.private_key_pem.write_to_path(str(pems.server_key))
    issued.cert_chain_pems[0].write_to_path(str(pems.server_cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(pems.server_cert), append=True)
    ca.cert_pem.write_to_path(str(pems.ca))
    return pems


def _tls_args(pems: Pems) -> list[str]:
    return ["--tls-cert-file", str(pems.server_cert), "--tls-key-file", str(pems.server_key)]


async def test_tls(serve: Callable[..., ServerProcess], ca: trustme.CA, tmp_path: Path) -> None:
    pems = _server_files(ca, tmp_path)
    server = serve(
        *_tls_args(pems),
        credentials=grpc.ssl_channel_credentials(root_certificates=pems.ca.read_bytes()),
    )
    port = server.port
    async with AsyncClient(f"agent-states://localhost:{port}", ca_certificates=pems.ca) as client:
        conversation = new_id()
        await client.append(conversation, MessageInput.user("over TLS"))
        assert (await client.get_conversation(conversation)).message_count == 1
    # The name the certificate must carry, when the address does not say it.
    async with AsyncClient(
        f"127.0.0.1:{port}", ca_certificates=str(pems.ca), tls_server_name="agent-state.internal"
    ) as by_name:
        await by_name.create_conversation()
    async with AsyncClient(
        f"127.0.0.1:{port}",
        ca_certificates=pems.ca.read_bytes(),
        tls_server_name="elsewhere.example",
        retry=NO_RETRY,
    ) as wrong_name:
        with pytest.raises(Unavailable):
            await wrong_name.create_conversation()
    async with AsyncClient(f"localhost:{port}", retry=NO_RETRY) as plaintext:
        with pytest.raises(Unavailable):
            await plaintext.create_conversation()
    stranger = trustme.CA().cert_pem.bytes()
    async with AsyncClient(
        f"localhost:{port}", tls=True, ca_certificates=stranger, retry=NO_RETRY
    ) as unverified:
        with pytest.raises(Unavailable):
            await unverified.create_conversation()


async def test_mutual_tls(
    serve: Callable[..., ServerProcess], ca: trustme.CA, tmp_path: Path
) -> None:
    pems = _server_files(ca, tmp_path)
    runtime = ca.issue_cert("agent-runtime@example.test")
    chain, key = runtime.cert_chain_pems[0].bytes(), runtime.private_key_pem.bytes()
    server = serve(
        *_tls_args(pems),
        "--tls-client-ca-file",
        str(pems.ca),
        credentials=grpc.ssl_channel_credentials(
            root_certificates=pems.ca.read_bytes(), private_key=key, certificate_chain=chain
        ),
    )
    address = f"agent-states://localhost:{server.port}"
    async with AsyncClient(
        address, ca_certificates=pems.ca, client_certificate=chain, client_key=key
    ) as client:
        conversation = new_id()
        await client.append(conversation, MessageInput.user("mtls"))
        assert (await client.get_conversation(conversation)).message_count == 1
    async with AsyncClient(address, ca_certificates=pems.ca, retry=NO_RETRY) as no_certificate:
        with pytest.raises(Unavailable):
            await no_certificate.get_conversation(conversation)


@dataclass
class UnixSocketServer(ServerProcess):
    """A server listening on a unix socket instead of a TCP port."""

    socket_path: Path | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"


def test_unix_socket(tmp_path: Path) -> None:
    process = UnixSocketServer(
        sqlite_url(tmp_path / "db.sqlite"), tmp_path / "server.log", socket_path=tmp_path / "s"
    )
    with process, Client(process.address) as client:
        conversation = new_id()
        client.append(conversation, MessageInput.user("over a socket"))
        assert [message.text for message in client.messages(conversation)] == ["over a socket"]


def test_one_async_client_serves_several_event_loops(live_server: ServerProcess) -> None:
    """A channel per event loop: a client outlives the loops that used it
    (asyncio.run per request) and serves loops of several threads at once."""
    conversation = new_id()
    client = AsyncClient(live_server.address)

    async def append(text: str) -> None:
        await client.append(conversation, MessageInput.user(text))

    asyncio.run(append("first loop"))
    asyncio.run(append("second loop"))
    appends = [functools.partial(append, f"thread {i}") for i in range(3)]
    assert run_each_in_a_thread(appends) == []

    async def read_and_close() -> list[str | None]:
        texts = [message.text async for message in client.messages(conversation)]
        await client.close()
        return texts

    texts = asyncio.run(read_and_close())
    assert texts[:2] == ["first loop", "second loop"]
    assert sorted(texts[2:]) == [f"thread {i}" for i in range(3)]  # type: ignore[type-var]
