"""What AsyncClient and Client share: how they are made (one constructor)
and how a view with other call options is derived."""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterable
from dataclasses import replace
from typing import Self

from . import __version__, _connect
from ._call import Caller, CallOptions, Metadata, RetryPolicy
from ._connect import Pem

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0
USER_AGENT = f"agent-state-client/{__version__}"


class Keep(enum.Enum):
    """Stands for "as it is" where None means something else."""

    KEEP = enum.auto()


KEEP = Keep.KEEP


def _extra_metadata(metadata: Iterable[tuple[str, str]]) -> Metadata:
    entries = tuple((key.lower(), value) for key, value in metadata)
    for key, _ in entries:
        if key == "authorization":
            raise ValueError("metadata: pass the bearer token as token=..., not as metadata")
    return entries


class Configured:
    """The settings of a client: where the server is, how to reach it, and
    the options of its calls."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        token: str | None = None,
        tls: bool | None = None,
        ca_certificates: Pem | None = None,
        client_certificate: Pem | None = None,
        client_key: Pem | None = None,
        tls_server_name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        request_id: str | None = None,
        metadata: Iterable[tuple[str, str]] = (),
        channel_options: Iterable[tuple[str, int | str]] = (),
    ) -> None:
        """Settings only: nothing connects until the first call.

        - `address`: ``host:port`` (``host`` alone: port 50051),
          ``agent-state://host:port``, ``agent-states://host:port`` (TLS),
          ``unix:/path/to.sock``, or any other gRPC target
          (``dns:``, ``ipv4:``, ``ipv6:``...).
        - `token`: sent as ``authorization: Bearer <token>`` on every call.
        - `tls`: True speaks TLS (verified against `ca_certificates`, else
          the system's CA bundle); None: TLS when the address is
          ``agent-states://`` or any certificate or `tls_server_name` is
          given; False refuses those.
        - `ca_certificates`, `client_certificate`, `client_key` (mTLS: both
          of the last two): PEM bytes, or the path of a PEM file.
        - `tls_server_name`: the name the server's certificate must carry,
          when it is not the address's host.
        - `timeout`: seconds each attempt of a call may take (None: no
          deadline). `retry`: how UNAVAILABLE and DEADLINE_EXCEEDED are
          retried (`RetryPolicy`; `NO_RETRY` to turn retries off).
        - `request_id`: sent as ``x-request-id`` on every call (None: a new
          one per call, kept across its retries); errors carry the id the
          server logged the call under.
        - `metadata`: more request metadata for every call.
        - `channel_options`: extra gRPC channel arguments.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout: must be positive (None: no deadline)")
        self._connection = _connect.connection(
            address,
            token=token,
            tls=tls,
            ca_certificates=ca_certificates,
            client_certificate=client_certificate,
            client_key=client_key,
            tls_server_name=tls_server_name,
            channel_options=tuple(channel_options),
            user_agent=USER_AGENT,
        )
        self._options = CallOptions(
            timeout=timeout,
            retry=RetryPolicy() if retry is None else retry,
            request_id=request_id,
            metadata=self._connection.auth_metadata() + _extra_metadata(metadata),
        )
        self._caller = Caller(self._connection.channel)
        self._owner = True
        self._configured()

    def _configured(self) -> None:
        """Called at the end of __init__; subclasses start what they need."""

    def _share(self, source: Configured) -> None:
        """Become a view of `source`: its connection and options, not owning them."""
        self._connection = source._connection
        self._options = source._options
        self._caller = source._caller
        self._owner = False

    @property
    def target(self) -> str:
        """The gRPC target the client dials."""
        return self._connection.target

    def with_options(
        self,
        *,
        timeout: float | Keep | None = KEEP,
        retry: RetryPolicy | Keep = KEEP,
        request_id: str | Keep | None = KEEP,
        metadata: Iterable[tuple[str, str]] | Keep = KEEP,
    ) -> Self:
        """A view of this client whose calls use other options; it shares
        the connection, which the original client owns and closes
        (closing the view does nothing). `metadata` replaces the extra
        metadata given before; the token stays."""
        view = copy.copy(self)
        options = self._options
        if not isinstance(timeout, Keep):
            if timeout is not None and timeout <= 0:
                raise ValueError("timeout: must be positive (None: no deadline)")
            options = replace(options, timeout=timeout)
        if not isinstance(retry, Keep):
            options = replace(options, retry=retry)
        if not isinstance(request_id, Keep):
            options = replace(options, request_id=request_id)
        if not isinstance(metadata, Keep):
            extra = _extra_metadata(metadata)
            options = replace(options, metadata=self._connection.auth_metadata() + extra)
        view._options = options
        view._owner = False
        return view
