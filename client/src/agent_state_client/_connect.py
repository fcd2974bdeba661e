"""Where the server is and how to reach it: the address forms the client
takes, TLS and mTLS credentials, the bearer token. No I/O but reading the
certificate files named; the channel is made on first use."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import grpc

DEFAULT_PORT = 50051
PLAINTEXT_SCHEME = "agent-state://"
TLS_SCHEME = "agent-states://"
# Targets gRPC resolves itself, passed through unchanged.
_GRPC_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:", "vsock:")

Pem = bytes | str | os.PathLike[str]
"""PEM data (bytes), or the path of a file holding it (str or Path)."""

_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


@dataclass(frozen=True, slots=True)
class Target:
    """What gRPC dials, and whether the address itself asks for TLS
    (True: ``agent-states://``; None: it does not say)."""

    target: str
    tls: bool | None


def parse_address(address: str) -> Target:
    """The gRPC target for an address in one of these forms:

    - ``host:port``, ``host`` (port 50051), ``[::1]:50051``;
    - ``agent-state://host[:port]`` (plaintext unless TLS is asked for),
      ``agent-states://host[:port]`` (TLS);
    - ``unix:/path/to.sock`` or ``unix:///path/to.sock``, and the other
      targets gRPC resolves itself (``dns:``, ``ipv4:``, ``ipv6:``,
      ``unix-abstract:``, ``vsock:``), unchanged.
    """
    text = address.strip()
    if not text:
        raise ValueError("address: is empty")
    if text.startswith(_GRPC_SCHEMES):
        return Target(text, None)
    tls: bool | None = None
    for scheme, secure in ((PLAINTEXT_SCHEME, None), (TLS_SCHEME, True)):
        if text.startswith(scheme):
            text, tls = text[len(scheme) :].removesuffix("/"), secure
            break
    else:
        if "://" in text:
            raise ValueError(
                f"address: unknown scheme in {address!r}; use host:port, "
                f"{PLAINTEXT_SCHEME}host:port, {TLS_SCHEME}host:port or unix:/path"
            )
    return Target(_host_port(text, address), tls)


def _host_port(text: str, address: str) -> str:
    if not text or "/" in text or "@" in text:
        raise ValueError(f"address: {address!r} is not host:port")
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"address: {address!r} is not [ipv6]:port")
        port = rest[1:] if rest else ""
        host += "]"
    elif text.count(":") > 1:
        # A bare IPv6 address: it cannot carry a port without brackets.
        host, port = f"[{text}]", ""
    else:
        host, _, port = text.partition(":")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"address: {address!r} has no valid port")
    if not host or host == "[]":
        raise ValueError(f"address: {address!r} has no host")
    return f"{host}:{port or DEFAULT_PORT}"


def _pem(value: Pem, block: re.Pattern[bytes], what: str) -> bytes:
    data = value if isinstance(value, bytes) else Path(value).read_bytes()
    if not block.search(data):
        source = "the data given" if isinstance(value, bytes) else os.fspath(value)
        # gRPC would only fail the handshake later, with a vaguer message.
        raise ValueError(f"{what}: no PEM {what.replace('_', ' ')} in {source}")
    return data


def system_roots() -> bytes | None:
    """The operating system's CA bundle, as OpenSSL finds it (SSL_CERT_FILE
    included); None lets gRPC use its bundled roots where there is none."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    return None


@dataclass(frozen=True)
class Connection:
    """How the client reaches the server; checked when made. The token is
    kept out of repr, so that it never lands in a log."""

    target: str
    credentials: grpc.ChannelCredentials | None = field(default=None, repr=False)
    options: tuple[tuple[str, int | str], ...] = ()
    token: str | None = field(default=None, repr=False)

    def auth_metadata(self) -> tuple[tuple[str, str], ...]:
        """Sent on every call rather than as call credentials, which gRPC
        attaches only over TLS: a token also reaches a plaintext server
        (one behind a TLS-terminating proxy, or on a unix socket)."""
        return () if self.token is None else (("authorization", f"Bearer {self.token}"),)

    def channel(self) -> grpc.aio.Channel:
        """A new channel (it connects on its first call)."""
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self.options)
        return grpc.aio.secure_channel(self.target, self.credentials, options=self.options)


def connection(
    address: str,
    *,
    token: str | None,
    tls: bool | None,
    ca_certificates: Pem | None,
    client_certificate: Pem | None,
    client_key: Pem | None,
    tls_server_name: str | None,
    channel_options: tuple[tuple[str, int | str], ...],
    user_agent: str,
) -> Connection:
    """Check the settings and make the Connection (see AsyncClient)."""
    target = parse_address(address)
    if token is not None and not (token and all(" " < char <= "~" for char in token)):
        raise ValueError("token: must be non-empty printable ASCII without spaces")
    if (client_certificate is None) != (client_key is None):
        raise ValueError("client_certificate: mTLS needs both the certificate and its key")
    wants_tls = target.tls or any(
        value is not None for value in (ca_certificates, client_certificate, tls_server_name)
    )
    if tls is False and (wants_tls or target.tls):
        raise ValueError("tls: False, but the address or the certificates given ask for TLS")
    options: list[tuple[str, int | str]] = [
        # A page may hold one message larger than gRPC's default 4 MiB
        # receive limit (the server bounds pages itself).
        ("grpc.max_receive_message_length", -1),
        ("grpc.primary_user_agent", user_agent),
    ]
    credentials = None
    if tls or wants_tls:
        roots = (
            _pem(ca_certificates, _CERTIFICATE, "ca_certificates")
            if ca_certificates is not None
            else system_roots()
        )
        chain = key = None
        if client_certificate is not None and client_key is not None:
            chain = _pem(client_certificate, _CERTIFICATE, "client_certificate")
            key = _pem(client_key, _PRIVATE_KEY, "client_key")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=chain
        )
        if tls_server_name:
            # Lets an address by IP verify a certificate issued for a name.
            options.append(("grpc.ssl_target_name_override", tls_server_name))
    options.extend(channel_options)
    return Connection(target.target, credentials, tuple(options), token)
