"""Client commands of the CLI: read and append conversations on a running server.

Text output is for people at a terminal, colour only on a TTY unless
forced; ``--json`` prints one JSON document per command, the exact form to
script against (render.py prints both).

gRPC's core writes log lines of its own to stderr (a failed TLS handshake,
say), at the level GRPC_VERBOSITY has when grpc is first imported. Every
failure already ends as one status line here, so the commands import grpc
(and .connection) only when they run, after defaulting GRPC_VERBOSITY to NONE;
`serve`, which shares the process's imports, keeps gRPC's default.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from agent_state_client._gen import agent_state_pb2 as pb

from .render import (
    ROLE_BY_NAME,
    SERVING,
    escape_controls,
    message_json,
    render_appended,
    render_conversation_header,
    render_health,
    render_messages,
    render_metadata,
    render_snapshot_header,
    to_json,
)

if TYPE_CHECKING:
    from .connection import Client, Connection

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 10.0
EXIT_FAILURE = 1
# Large pages mean few round trips; the server lowers it to its own cap.
DEFAULT_PAGE_SIZE = 1000


# --- common options ---------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """What every client command gets: where the server is, and how to print."""

    connection: Connection
    json_output: bool

    def client(self) -> closing[Client]:
        """A client for the server, closed at the end of the `with` block."""
        from .connection import Client

        return closing(Client(self.connection))

    def echo_json(self, document: object) -> None:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))

    def echo_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            click.echo(line)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit 1: how every runtime failure of a client command ends."""
    click.echo(f"agent-state: {escape_controls(message).replace(chr(10), ' ')}", err=True)
    sys.exit(EXIT_FAILURE)


def _connection(params: dict[str, Any]) -> Connection:
    """A Connection from the shared options, which it takes out of ``params``."""
    from .connection import Connection

    token: str | None = params.pop("token")
    tls: bool | None = params.pop("tls")
    tls_ca_file: Path | None = params.pop("tls_ca_file")
    tls_cert_file: Path | None = params.pop("tls_cert_file")
    tls_key_file: Path | None = params.pop("tls_key_file")
    if (tls_cert_file is None) != (tls_key_file is None):
        given, missing = (
            ("--tls-cert-file", "--tls-key-file")
            if tls_key_file is None
            else ("--tls-key-file", "--tls-cert-file")
        )
        raise click.UsageError(f"{given} needs {missing} as well (a client certificate and key).")
    files = tls_ca_file or tls_cert_file
    if tls is False and files:
        raise click.UsageError("--no-tls contradicts --tls-ca-file/--tls-cert-file.")
    try:
        return Connection(
            address=params.pop("address"),
            token=token or None,
            tls=bool(tls),
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_server_name=params.pop("tls_server_name") or None,
            timeout=params.pop("timeout"),
        )
    except ValueError as exc:  # its messages never include the token
        raise click.UsageError(str(exc)) from None


_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
_COMMON_OPTIONS = [
    click.option(
        "--address",
        envvar="AGENT_STATE_ADDRESS",
        show_envvar=True,
        default=DEFAULT_ADDRESS,
        show_default=True,
        help="Server host:port (any gRPC target).",
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
        help="Deadline of each call, in seconds.",
    ),
    click.option("--json", "json_output", is_flag=True, help="Print one JSON document instead."),
    click.option(
        "--color/--no-color",
        default=None,
        help="Force colour on or off [default: on when stdout is a terminal].",
    ),
]


def client_options(command: Callable[..., None]) -> Callable[..., None]:
    """The shared options, turned into a `Session` passed first; gRPC failures become
    one line on stderr and exit code 1."""

    @functools.wraps(command)
    def run(**params: Any) -> None:
        color: bool | None = params.pop("color")
        if color is not None:
            click.get_current_context().color = color
        json_output: bool = params.pop("json_output")
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc

        from .connection import PagingError, TlsFileError

        connection = _connection(params)
        try:
            command(Session(connection, json_output), **params)
        except TlsFileError as exc:
            raise click.UsageError(str(exc)) from None
        except grpc.RpcError as exc:
            code = exc.code()
            fail(f"{code.name if code is not None else 'UNKNOWN'}: {exc.details() or ''}")
        except PagingError as exc:
            fail(str(exc))
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, without a traceback at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_FAILURE)
        except OSError as exc:  # reading the TLS files
            fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))

    for option in reversed(_COMMON_OPTIONS):
        run = option(run)
    return run


_PAGE_SIZE = click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=DEFAULT_PAGE_SIZE,
    show_default=True,
    help="Messages per call; every page is read (the server caps the size).",
)


# --- commands -----------------------------------------------------------------------


@click.command()
@click.argument("conversation_id")
@client_options
def get(session: Session, conversation_id: str) -> None:
    """Print a conversation's metadata: message count and last update.

    With --json: the GetConversation response.
    """
    with session.client() as client:
        response = client.get_conversation(conversation_id)
    if session.json_output:
        session.echo_json(to_json(response))
    else:
        session.echo_lines(render_metadata(response.metadata))


@click.command()
@click.argument("conversation_id")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(list(ROLE_BY_NAME)),
    help="Only messages of this role (repeatable).",
)
@click.option(
    "--kind", "kinds", multiple=True, help="Only messages of this kind (repeatable; '' is none)."
)
@_PAGE_SIZE
@client_options
def show(
    session: Session,
    conversation_id: str,
    roles: tuple[str, ...],
    kinds: tuple[str, ...],
    page_size: int,
) -> None:
    """Print the conversation's ordering, every page, oldest first.

    Each message shows its index in the whole ordering (0-based; with
    filters, found by also listing the ids), id, role, kind, creation time
    and body. With --json: {"metadata", "messages"}, each message as the API
    returns it plus "index".
    """
    with session.client() as client:
        positions: dict[str, int] | None = None
        if roles or kinds:
            positions = {
                message_id: index
                for index, message_id in enumerate(
                    client.message_ids(conversation_id, page_size=DEFAULT_PAGE_SIZE)
                )
            }
        pages = client.message_pages(
            conversation_id,
            roles=[ROLE_BY_NAME[name] for name in roles],
            kinds=list(kinds),
            page_size=page_size,
        )
        first = next(pages)

        def indexed() -> Iterator[tuple[int | None, pb.Message]]:
            listed = (m for page in itertools.chain([first], pages) for m in page.messages)
            for count, message in enumerate(listed):
                # Filtered, a message appended after the ids were listed has no index.
                yield (count if positions is None else positions.get(message.id)), message

        if session.json_output:
            session.echo_json(
                {
                    "metadata": to_json(first.metadata),
                    "messages": [message_json(m, index) for index, m in indexed()],
                }
            )
            return
        click.echo(render_conversation_header(first.metadata))
        session.echo_lines(render_messages(indexed()))


@click.command()
@click.argument("conversation_id")
@click.argument("text")
@click.option(
    "--role",
    type=click.Choice(list(ROLE_BY_NAME)),
    default="user",
    show_default=True,
    help="Role of the new message.",
)
@click.option("--kind", default="", help="Kind of the new message [default: empty].")
@client_options
def append(session: Session, conversation_id: str, text: str, role: str, kind: str) -> None:
    """Append one text message; print its id and the conversation's metadata.

    TEXT '-' reads the text from stdin. The conversation is created by its
    first append. With --json: the AppendConversationMessages response.
    """
    if text == "-":
        text = sys.stdin.read()
    with session.client() as client:
        response = client.append_text(conversation_id, text, role=ROLE_BY_NAME[role], kind=kind)
    if session.json_output:
        session.echo_json(to_json(response))
        return
    session.echo_lines(render_appended(response))


@click.command()
@click.argument("conversation_id")
@_PAGE_SIZE
@client_options
def ids(session: Session, conversation_id: str, page_size: int) -> None:
    """Print the ordered message ids, one per line (every page).

    With --json: {"conversationId", "messageIds"}.
    """
    with session.client() as client:
        message_ids = client.message_ids(conversation_id, page_size=page_size)
        if session.json_output:
            session.echo_json({"conversationId": conversation_id, "messageIds": list(message_ids)})
            return
        for message_id in message_ids:
            click.echo(escape_controls(message_id))


@click.command()
@click.argument("snapshot_id")
@_PAGE_SIZE
@client_options
def snapshot(session: Session, snapshot_id: str, page_size: int) -> None:
    """Print a snapshot's messages, every page, like `show`.

    The index is the position in the snapshot. With --json:
    {"snapshotId", "messages"}.
    """
    with session.client() as client:
        messages = client.snapshot_messages(snapshot_id, page_size=page_size)
        if session.json_output:
            session.echo_json(
                {
                    "snapshotId": snapshot_id,
                    "messages": [message_json(m, index) for index, m in enumerate(messages)],
                }
            )
            return
        click.echo(render_snapshot_header(snapshot_id))
        session.echo_lines(render_messages(enumerate(messages)))


@click.command()
@client_options
def health(session: Session) -> None:
    """Print the server's health status; exit 0 only when SERVING.

    Asks grpc.health.v1.Health/Check for the service "" (the whole server),
    so it can serve as a container health check.
    """
    with session.client() as client:
        response = client.health("")
    if session.json_output:
        session.echo_json(to_json(response))
    else:
        click.echo(render_health(response.status))
    if response.status != SERVING:
        sys.exit(EXIT_FAILURE)


COMMANDS = [get, show, append, ids, snapshot, health]
