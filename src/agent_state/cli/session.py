"""What every client command shares: the options that say where the server
is and how to reach it, the client made from them, and how a failure ends
(one line on stderr naming the status and the request id, exit code 1,
and nothing on stdout).

gRPC's core writes log lines of its own to stderr (a failed TLS handshake,
say), at the level GRPC_VERBOSITY has when grpc is first imported. Every
failure already ends as one status line here, so grpc (and the parts of
agent_state_client that import it) is imported only when a client command
runs, after GRPC_VERBOSITY is defaulted to NONE; `serve`, which shares the
process's imports, keeps gRPC's default.
"""

from __future__ import annotations

import functools
import os
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .render import JsonText, dumps, escape_controls

if TYPE_CHECKING:
    from agent_state_client import Client
    from agent_state_client.errors import AgentStateError

DEFAULT_ADDRESS = "127.0.0.1:50051"
TLS_SCHEME = "agent-states://"
DEFAULT_TIMEOUT_S = 10.0
EXIT_FAILURE = 1


@dataclass(frozen=True)
class Session:
    """What a client command gets: the client's settings, and how to print.
    Commands print only once every call has succeeded, so that a failure
    leaves stdout empty."""

    settings: dict[str, Any]
    json_output: bool

    def client(self) -> Client:
        """A client of the server (use it in a `with` block); a setting the
        library refuses (an address, a file without PEM) is a usage error."""
        from agent_state_client import Client

        try:
            return Client(**self.settings)
        except ValueError as exc:  # its messages never include the token
            raise click.UsageError(str(exc)) from None

    @property
    def request_id(self) -> str:
        """The x-request-id of every call the command makes."""
        request_id: str = self.settings["request_id"]
        return request_id

    def fail(self, message: str) -> NoReturn:
        """`fail` for what the command finds wrong in an answer: the calls
        succeeded, and the server logged them under the command's request id."""
        fail(f"{message} (request id {self.request_id})")

    def output(self, document: object, lines: Iterable[str]) -> None:
        """With --json, `document` as one JSON document (a `JsonText` as it
        is); else the text `lines`."""
        if self.json_output:
            click.echo(document if isinstance(document, JsonText) else dumps(document))
            return
        for line in lines:
            click.echo(line)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit 1: how every runtime failure of a client command ends."""
    click.echo(f"agent-state: {escape_controls(message).replace(chr(10), ' ')}", err=True)
    sys.exit(EXIT_FAILURE)


# What gRPC says when a connection fails, and what it means to a user.
_TRANSPORT = [
    ("WRONG_VERSION_NUMBER", "{target} does not speak TLS: connect without --tls and --tls-*"),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the certificate of {target} is not signed by a CA this client trusts"
        " (give the CA with --tls-ca-file)",
    ),
    (
        "Hostname Verification Check failed",
        "the certificate of {target} is for another name"
        " (give the name it carries with --tls-server-name)",
    ),
    ("Connection refused", "nothing listens at {target} (connection refused)"),
    ("Domain name not found", "cannot resolve the host of {target}"),
]


def describe_failure(error: AgentStateError, target: str, tls: bool) -> str:
    """``CODE: what went wrong (request id ...)``; a connection that failed
    is told in words rather than in gRPC's transport log."""
    import grpc

    details = error.details
    if error.code is grpc.StatusCode.UNAVAILABLE:
        for marker, meaning in _TRANSPORT:
            if marker in details:
                details = meaning.format(target=target)
                break
        else:
            if "Socket closed" in details and not tls:
                details = f"{target} closed the connection (a TLS server? try --tls)"
    text = f"{error.code.name}: {details}"
    return f"{text} (request id {error.request_id})" if error.request_id else text


def _settings(params: dict[str, Any]) -> dict[str, Any]:
    """The client's settings from the shared options, which it takes out of ``params``."""
    from agent_state_client import RetryPolicy

    tls: bool | None = params.pop("tls")
    ca_file: Path | None = params.pop("tls_ca_file")
    cert_file: Path | None = params.pop("tls_cert_file")
    key_file: Path | None = params.pop("tls_key_file")
    if (cert_file is None) != (key_file is None):
        given, missing = (
            ("--tls-cert-file", "--tls-key-file")
            if key_file is None
            else ("--tls-key-file", "--tls-cert-file")
        )
        raise click.UsageError(f"{given} needs {missing} as well (a client certificate and key).")
    if tls is False and (ca_file or cert_file):
        raise click.UsageError("--no-tls contradicts --tls-ca-file/--tls-cert-file.")
    timeout: float = params.pop("timeout")
    return {
        "address": params.pop("address"),
        "token": params.pop("token") or None,
        "tls": True if (tls or ca_file or cert_file) else tls,
        "ca_certificates": ca_file,
        "client_certificate": cert_file,
        "client_key": key_file,
        "tls_server_name": params.pop("tls_server_name") or None,
        "timeout": timeout,
        # Each command's calls retry UNAVAILABLE within the one --timeout.
        "retry": RetryPolicy(total_timeout=timeout),
        # One id for every call of the command, so that the one a failure
        # shows finds all of them in the server's log.
        "request_id": params.pop("request_id") or uuid.uuid4().hex,
    }


_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
_COMMON_OPTIONS = [
    click.option(
        "--address",
        envvar="AGENT_STATE_ADDRESS",
        show_envvar=True,
        default=DEFAULT_ADDRESS,
        show_default=True,
        help="Server host:port, agent-state[s]://host:port or unix:/path (any gRPC target).",
    ),
    click.option(
        "--token",
        envvar="AGENT_STATE_TOKEN",
        show_envvar=True,
        help="Sent as 'authorization: Bearer <token>' on every call.",
    ),
    click.option(
        "--tls/--no-tls",
        default=None,
        help="Use TLS, verifying the server with the system's CA roots [default: off].",
    ),
    click.option(
        "--tls-ca-file", type=_FILE, help="PEM CA roots to verify the server (implies TLS)."
    ),
    click.option(
        "--tls-cert-file", type=_FILE, help="PEM client certificate for mTLS (implies TLS)."
    ),
    click.option("--tls-key-file", type=_FILE, help="PEM key of --tls-cert-file."),
    click.option(
        "--tls-server-name",
        help="Name to verify the server certificate against, when it differs from the address.",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT_S,
        show_default=True,
        help="Seconds each call may take, retries included.",
    ),
    click.option(
        "--request-id",
        help="Sent as x-request-id on every call of the command [default: a new one].",
    ),
    click.option("--json", "json_output", is_flag=True, help="Print one JSON document instead."),
    click.option(
        "--color/--no-color",
        default=None,
        help="Force colour on or off [default: on when stdout is a terminal].",
    ),
]


def client_options(command: Callable[..., None]) -> Callable[..., None]:
    """The shared options, turned into a `Session` passed first; failed
    calls become one line on stderr and exit code 1."""

    @functools.wraps(command)
    def run(**params: Any) -> None:
        color: bool | None = params.pop("color")
        if color is not None:
            click.get_current_context().color = color
        json_output: bool = params.pop("json_output")
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        from agent_state_client import AgentStateError, ContextChanged, PagingError

        settings = _settings(params)
        try:
            command(Session(settings, json_output), **params)
        except AgentStateError as exc:
            address: str = settings["address"]
            tls = settings["tls"] is True or address.startswith(TLS_SCHEME)
            fail(describe_failure(exc, address, tls))
        except (PagingError, ContextChanged) as exc:
            fail(str(exc))
        except ValueError as exc:
            # The library refuses an argument before any call, naming it.
            raise click.UsageError(str(exc)) from None
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, without a traceback at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_FAILURE)
        except OSError as exc:  # reading an input file
            fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))

    for option in reversed(_COMMON_OPTIONS):
        run = option(run)
    return run
