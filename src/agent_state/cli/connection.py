"""A small synchronous client for a running server, used by the CLI's client commands.

`Connection` holds what an operator types (address, token, TLS files,
timeout); `Client` turns it into one gRPC channel and exposes the calls the
commands need, following page tokens so callers see whole lists.

The CLI imports this module only when a client command runs (see
client_commands), because importing grpc fixes its core's log level.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
from google.protobuf.message import Message as ProtoMessage
from grpc_health.v1 import health_pb2

from agent_state_client._connect import system_roots
from agent_state_client._gen import agent_state_pb2 as pb

_SERVICE = pb.DESCRIPTOR.services_by_name["AgentStateService"].full_name
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"

# A page may hold one message larger than gRPC's default 4 MiB receive
# limit (the server bounds pages itself), so the client does not cap it.
_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [("grpc.max_receive_message_length", -1)]


class PagingError(Exception):
    """The server returned a page token that would make paging loop forever."""


class TlsFileError(ValueError):
    """A TLS file holds no PEM block of the expected kind. Checked here because
    gRPC would only fail the handshake later, with a vaguer message."""


@dataclass(frozen=True)
class Connection:
    """How to reach the server. The token is kept out of repr so it never lands in logs."""

    address: str
    timeout: float
    token: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("a client certificate needs both the certificate and its key file")
        if self.timeout <= 0:
            raise ValueError("the timeout must be positive")
        if self.token is not None and not _valid_header_value(self.token):
            # gRPC would refuse it later with a less helpful message.
            raise ValueError("the token must be non-empty printable ASCII")

    @property
    def uses_tls(self) -> bool:
        """CA, certificate and key files only make sense over TLS, so they imply it."""
        return self.tls or any(
            path is not None for path in (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata. Sent on every call rather than as call credentials,
        which gRPC only attaches over TLS, so a token also reaches a plaintext
        server (for example one behind a TLS-terminating proxy)."""
        if self.token is None:
            return ()
        return (("authorization", f"Bearer {self.token}"),)

    def credentials(self) -> grpc.ChannelCredentials:
        """Server verification roots (the given CA file, else the system's) and
        the client certificate, if any."""
        root: bytes | None
        if self.tls_ca_file is not None:
            root = read_pem(self.tls_ca_file, _CERTIFICATE)
        else:
            root = system_roots()
        key = chain = None
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            chain = read_pem(self.tls_cert_file, _CERTIFICATE)
            key = read_pem(self.tls_key_file, _PRIVATE_KEY)
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=chain
        )

    def channel(self) -> grpc.Channel:
        if not self.uses_tls:
            return grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        options = list(_CHANNEL_OPTIONS)
        if self.tls_server_name:
            # Lets `--address 127.0.0.1:...` verify a certificate issued for a name.
            options.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return grpc.secure_channel(self.address, self.credentials(), options=options)


def _valid_header_value(value: str) -> bool:
    return bool(value) and all(" " <= char <= "~" for char in value)


_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


def read_pem(path: Path, block: re.Pattern[bytes]) -> bytes:
    data = path.read_bytes()
    if not block.search(data):
        kind = "certificate" if block is _CERTIFICATE else "private key"
        raise TlsFileError(f"{path}: no PEM {kind} in it")
    return data


class _Paged(Protocol):
    @property
    def next_page_token(self) -> str: ...


PageT = TypeVar("PageT", bound=_Paged)
RequestT = TypeVar("RequestT", bound=ProtoMessage)
ResponseT = TypeVar("ResponseT")


def pages(fetch: Callable[[str], PageT]) -> Iterator[PageT]:
    """Every page of a list, from the first, following next_page_token to its empty end."""
    token = ""
    seen: set[str] = set()
    while True:
        page = fetch(token)
        yield page
        token = page.next_page_token
        if not token:
            return
        if token in seen:
            raise PagingError("the server repeated a page token; paging would not end")
        seen.add(token)


class Client:
    """One channel to the server; close it when done (`contextlib.closing`)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._channel = connection.channel()
        self._metadata = connection.metadata()

    def close(self) -> None:
        self._channel.close()

    def _call(
        self, path: str, request: RequestT, response_type: Callable[[bytes], ResponseT]
    ) -> ResponseT:
        method: grpc.UnaryUnaryMultiCallable[RequestT, ResponseT] = self._channel.unary_unary(
            path,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_type,
        )
        return method(request, timeout=self.connection.timeout, metadata=self._metadata)

    def _rpc(
        self, name: str, request: RequestT, response_type: Callable[[bytes], ResponseT]
    ) -> ResponseT:
        return self._call(f"/{_SERVICE}/{name}", request, response_type)

    def _pages(
        self,
        name: str,
        request: Callable[[str], RequestT],
        response_type: Callable[[bytes], PageT],
    ) -> Iterator[PageT]:
        """Every page of the list method `name`; `request` makes the request
        for a page token."""
        return pages(lambda token: self._rpc(name, request(token), response_type))

    def get_conversation(self, conversation_id: str) -> pb.GetConversationResponse:
        return self._rpc(
            "GetConversation",
            pb.GetConversationRequest(conversation_id=conversation_id),
            pb.GetConversationResponse.FromString,
        )

    def append_text(
        self, conversation_id: str, text: str, *, role: pb.Role, kind: str
    ) -> pb.AppendConversationMessagesResponse:
        message = pb.AppendMessageInput(
            role=role, kind=kind, body=pb.MessageBody(text=pb.TextBody(text=text))
        )
        return self._rpc(
            "AppendConversationMessages",
            pb.AppendConversationMessagesRequest(
                conversation_id=conversation_id, messages=[message]
            ),
            pb.AppendConversationMessagesResponse.FromString,
        )

    def message_pages(
        self,
        conversation_id: str,
        *,
        roles: Sequence[pb.Role] = (),
        kinds: Sequence[str] = (),
        page_size: int = 0,
    ) -> Iterator[pb.ListConversationMessagesResponse]:
        return self._pages(
            "ListConversationMessages",
            lambda token: pb.ListConversationMessagesRequest(
                conversation_id=conversation_id,
                roles=list(roles),
                kinds=list(kinds),
                page_size=page_size,
                page_token=token,
            ),
            pb.ListConversationMessagesResponse.FromString,
        )

    def message_ids(self, conversation_id: str, *, page_size: int = 0) -> Iterator[str]:
        for page in self._pages(
            "ListConversationMessageIds",
            lambda token: pb.ListConversationMessageIdsRequest(
                conversation_id=conversation_id, page_size=page_size, page_token=token
            ),
            pb.ListConversationMessageIdsResponse.FromString,
        ):
            yield from page.message_ids

    def snapshot_messages(self, snapshot_id: str, *, page_size: int = 0) -> Iterator[pb.Message]:
        for page in self._pages(
            "ListSnapshotMessages",
            lambda token: pb.ListSnapshotMessagesRequest(
                snapshot_id=snapshot_id, page_size=page_size, page_token=token
            ),
            pb.ListSnapshotMessagesResponse.FromString,
        ):
            yield from page.messages

    def health(self, service: str = "") -> health_pb2.HealthCheckResponse:
        return self._call(
            _HEALTH_CHECK,
            health_pb2.HealthCheckRequest(service=service),
            health_pb2.HealthCheckResponse.FromString,
        )
