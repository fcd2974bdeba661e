"""Client commands of the CLI: the whole API of a running server, through
the client library's blocking `agent_state_client.Client`.

Text output is for people at a terminal, colour only on a TTY unless
forced; ``--json`` prints one JSON document per command, the exact form to
script against (render.py prints both). Every write that the API lets be
conditional takes ``--if-version`` and prints the conversation's version
after it. Output is printed once every call has succeeded: a failure
leaves stdout empty and ends with one line on stderr (session.py).

Nothing here imports grpc when the module is imported (see session.py).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import inputs
from .render import (
    SERVING,
    escape_controls,
    messages_json,
    note,
    render_appended,
    render_conversation,
    render_conversation_header,
    render_conversations,
    render_deleted_conversation,
    render_deleted_range,
    render_fork,
    render_health,
    render_messages,
    render_metadata,
    render_replaced,
    render_snapshot,
    render_snapshot_header,
    render_snapshots,
    render_state,
    state_json,
    to_json,
    version_text,
)
from .session import EXIT_FAILURE, Session, client_options

if TYPE_CHECKING:
    from agent_state_client import Client
    from agent_state_client.types import (
        AppendResult,
        AppendWithStateResult,
        Message,
        MessageInput,
        Retention,
        Role,
        State,
    )

T = TypeVar("T")
CommandT = TypeVar("CommandT", bound=Callable[..., Any])

# The server caps pages at 1,000: reading everything, ask for that many.
LARGEST_PAGE = 1000
DEFAULT_LIST_LIMIT = 100
# A whole-context snapshot reads the ids, then names them with if-version:
# another writer in between makes it read again, this many times at most.
SNAPSHOT_ATTEMPTS = 3


# --- option types --------------------------------------------------------------------


class _Parsed(click.ParamType[Any]):
    """An option value parsed by one of inputs.py's functions."""

    def __init__(self, name: str, parse: Callable[[str], object]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


LABEL = _Parsed("key=value", inputs.label)
DURATION = _Parsed("duration", inputs.duration)
TIME = _Parsed("time", inputs.moment)


def _if_version(minimum: int, what: str) -> Callable[[CommandT], CommandT]:
    return click.option(
        "--if-version",
        "if_version",
        type=click.IntRange(min=minimum),
        help=f"Only if the conversation is at this version ({what}); else ABORTED, no change.",
    )


_ROLE_FILTER = click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(list(inputs.ROLES)),
    help="Only messages of this role (repeatable).",
)
_KIND_FILTER = click.option(
    "--kind", "kinds", multiple=True, help="Only messages of this kind (repeatable; '' is none)."
)
_PAGE_SIZE = click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=LARGEST_PAGE,
    show_default=True,
    help="Items per call; every page is read (the server caps the size).",
)
_LABELS = click.option(
    "--label", "labels", multiple=True, type=LABEL, help="A label key=value (repeatable)."
)
_TITLE = click.option("--title", help="The conversation's title.")


def _roles(names: Iterable[str]) -> list[Role]:
    return [inputs.ROLES[name] for name in names]


def _read_text(text: str) -> str:
    """TEXT, or stdin for ``-``."""
    return sys.stdin.read() if text == "-" else text


def _retention(
    max_idle: timedelta | None, max_messages: int | None, default: bool
) -> Retention | None:
    from agent_state_client.types import Retention

    if default:
        if max_idle is not None or max_messages is not None:
            raise click.UsageError("--default-retention contradicts --max-idle/--max-messages.")
        return None
    return Retention(max_idle=max_idle, max_messages=max_messages)


_RETENTION_OPTIONS = [
    click.option(
        "--max-idle",
        type=DURATION,
        help="Delete the conversation when idle this long (90s, 15m, 12h, 30d).",
    ),
    click.option(
        "--max-messages",
        type=click.IntRange(min=1),
        help="Keep at most this many messages (the oldest leave first).",
    ),
]


def _with(options: list[Callable[[CommandT], CommandT]]) -> Callable[[CommandT], CommandT]:
    """The options of `options`, in that order, as one decorator."""

    def decorate(command: CommandT) -> CommandT:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# --- conversations as a whole --------------------------------------------------------


@click.group(short_help="Conversations: create, describe, list, update, delete, fork.")
def conversation() -> None:
    """Create, describe, list, update, delete and fork conversations."""


@conversation.command("create")
@click.argument("conversation_id", required=False)
@_TITLE
@_LABELS
@_with(_RETENTION_OPTIONS)
@client_options
def create_conversation(
    session: Session,
    conversation_id: str | None,
    title: str | None,
    labels: tuple[tuple[str, str], ...],
    max_idle: timedelta | None,
    max_messages: int | None,
) -> None:
    """Create an empty conversation (version 1) and print it.

    Without CONVERSATION_ID a new time-ordered UUID names it.
    """
    retention = None
    if max_idle is not None or max_messages is not None:
        retention = _retention(max_idle, max_messages, default=False)
    with session.client() as client:
        created = client.create_conversation(
            conversation_id, title=title or "", labels=dict(labels), retention=retention
        )
    session.output(to_json(created), render_conversation(created))


@conversation.command(
    "describe", short_help="Print a conversation: title, labels, counts, version, retention."
)
@click.argument("conversation_id")
@client_options
def describe_conversation(session: Session, conversation_id: str) -> None:
    """Print a conversation: title, labels, counts, version, times, retention."""
    with session.client() as client:
        found = client.describe_conversation(conversation_id)
    session.output(to_json(found), render_conversation(found))


@conversation.command("list", short_help="List conversations by labels, newest first.")
@_LABELS
@click.option("--updated-after", type=TIME, help="Only those updated after this time.")
@click.option("--updated-before", type=TIME, help="Only those updated before this time.")
@click.option("--oldest-first", is_flag=True, help="Oldest update first [default: newest].")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIST_LIMIT,
    show_default=True,
    help="Print at most this many; 0: all of them.",
)
@_PAGE_SIZE
@client_options
def list_conversations(
    session: Session,
    labels: tuple[tuple[str, str], ...],
    updated_after: datetime | None,
    updated_before: datetime | None,
    oldest_first: bool,
    limit: int,
    page_size: int,
) -> None:
    """List conversations that carry every --label, one per line, newest
    update first, reading page after page.

    With --json: {"conversations": [...], "more": true when --limit cut the list}.
    """
    with session.client() as client:
        found = client.conversations(
            labels=dict(labels),
            updated_after=updated_after,
            updated_before=updated_before,
            oldest_first=oldest_first,
            # One more than the limit tells whether there are more.
            page_size=min(page_size, limit + 1) if limit else page_size,
        )
        listed, more = _at_most(found, limit)
    session.output({"conversations": to_json(listed), "more": more}, render_conversations(listed))
    if more and not session.json_output:
        click.echo(note(f"the first {limit}; --limit 0 lists all"), err=True)


def _at_most(items: Iterator[T], limit: int) -> tuple[list[T], bool]:
    """The first `limit` items (0: all), and whether there were more.

    `items` is one of the client's iterators: it is closed here, while the
    client is open, rather than whenever it is collected.
    """
    try:
        taken = list(itertools.islice(items, limit + 1) if limit else items)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
    if limit and len(taken) > limit:
        return taken[:limit], True
    return taken, False


@conversation.command("update", short_help="Change title, labels or retention.")
@click.argument("conversation_id")
@_TITLE
@_LABELS
@click.option("--no-labels", is_flag=True, help="Remove every label.")
@_with(_RETENTION_OPTIONS)
@click.option(
    "--default-retention",
    is_flag=True,
    help="Drop its own retention: the server's default applies.",
)
@_if_version(1, "versions start at 1")
@client_options
def update_conversation(
    session: Session,
    conversation_id: str,
    title: str | None,
    labels: tuple[tuple[str, str], ...],
    no_labels: bool,
    max_idle: timedelta | None,
    max_messages: int | None,
    default_retention: bool,
    if_version: int | None,
) -> None:
    """Change a conversation's title, labels (replaced whole) or retention
    (replaced whole); print it with its new version."""
    from agent_state_client import UNCHANGED

    if labels and no_labels:
        raise click.UsageError("--no-labels contradicts --label.")
    changes: dict[str, Any] = {}
    if title is not None:
        changes["title"] = title
    if labels or no_labels:
        changes["labels"] = dict(labels)
    if max_idle is not None or max_messages is not None or default_retention:
        changes["retention"] = _retention(max_idle, max_messages, default_retention)
    if not changes:
        raise click.UsageError(
            "Nothing to change: give --title, --label, --no-labels or retention."
        )
    with session.client() as client:
        updated = client.update_conversation(
            conversation_id,
            title=changes.get("title", UNCHANGED),
            labels=changes.get("labels", UNCHANGED),
            retention=changes.get("retention", UNCHANGED),
            expected_version=if_version,
        )
    session.output(to_json(updated), render_conversation(updated))


@conversation.command("delete", short_help="Erase a conversation and everything of it.")
@click.argument("conversation_id")
@_if_version(1, "versions start at 1")
@click.option("--allow-missing", is_flag=True, help="Succeed when it does not exist.")
@client_options
def delete_conversation(
    session: Session, conversation_id: str, if_version: int | None, allow_missing: bool
) -> None:
    """Erase a conversation and everything of it: messages, snapshots,
    labels, its scope's state. Prints what went (version 0: gone)."""
    with session.client() as client:
        deleted = client.delete_conversation(
            conversation_id, expected_version=if_version, allow_missing=allow_missing
        )
    session.output(
        {"conversation_id": conversation_id, **to_json(deleted)},
        render_deleted_conversation(conversation_id, deleted),
    )


@conversation.command("fork", short_help="Copy a conversation (up to a message) into a new one.")
@click.argument("conversation_id")
@click.option("--up-to", "up_to", help="The last message to copy [default: all of them].")
@click.option("--new-id", "new_id", help="The new conversation's id [default: a new UUID].")
@_TITLE
@_LABELS
@client_options
def fork_conversation(
    session: Session,
    conversation_id: str,
    up_to: str | None,
    new_id: str | None,
    title: str | None,
    labels: tuple[tuple[str, str], ...],
) -> None:
    """Copy a conversation's ordering (up to --up-to) into a new one; print it."""
    with session.client() as client:
        fork = client.fork_conversation(
            conversation_id,
            up_to_message_id=up_to,
            new_conversation_id=new_id,
            title=title or "",
            labels=dict(labels),
        )
    session.output(to_json(fork), render_fork(fork))


# --- messages ------------------------------------------------------------------------


@click.command(short_help="Print a conversation's message count, last update and version.")
@click.argument("conversation_id")
@client_options
def get(session: Session, conversation_id: str) -> None:
    """Print a conversation's message count, last update and version."""
    with session.client() as client:
        metadata = client.get_conversation(conversation_id)
    session.output(to_json(metadata), render_metadata(metadata))


@click.command(short_help="Print a conversation's messages (--role, --kind, --id filter).")
@click.argument("conversation_id")
@_ROLE_FILTER
@_KIND_FILTER
@click.option(
    "--id",
    "message_ids",
    multiple=True,
    help="Only this message (repeatable; in the order given, filters aside).",
)
@client_options
def show(
    session: Session,
    conversation_id: str,
    roles: tuple[str, ...],
    kinds: tuple[str, ...],
    message_ids: tuple[str, ...],
) -> None:
    """Print the conversation's messages, oldest first, read in one
    consistent state.

    Each message shows its index in the whole ordering (0-based), id,
    role, kind, creation time and body. With --json: {"metadata",
    "messages"}, each message with its "index".
    """
    if message_ids and (roles or kinds):
        raise click.UsageError("--id contradicts --role/--kind.")
    with session.client() as client:
        if message_ids:
            found = client.get_messages(conversation_id, message_ids)
            metadata = client.get_conversation(conversation_id)
            messages = found.messages
        else:
            context = client.context(conversation_id, roles=_roles(roles), kinds=kinds)
            metadata, messages = context.metadata, context.messages
        positions = None
        if roles or kinds or message_ids:
            # Filtered, a message's index is its place among all the ids.
            ids = client.message_ids(conversation_id, page_size=LARGEST_PAGE)
            positions = {message_id: index for index, message_id in enumerate(ids)}
    indexed = [
        (index if positions is None else positions.get(message.id), message)
        for index, message in enumerate(messages)
    ]
    document = {"metadata": to_json(metadata), "messages": messages_json(indexed)}
    session.output(document, [render_conversation_header(metadata), *render_messages(indexed)])


@click.command(short_help="Print the last messages.")
@click.argument("conversation_id")
@click.option(
    "-n",
    "--count",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="How many of the last messages.",
)
@_ROLE_FILTER
@_KIND_FILTER
@client_options
def tail(
    session: Session,
    conversation_id: str,
    count: int,
    roles: tuple[str, ...],
    kinds: tuple[str, ...],
) -> None:
    """Print the last messages (those the filters keep), oldest first.

    Unfiltered, each shows its index in the ordering; filtered, its place
    from the end among those kept ([-1] is the last). With --json: {"metadata",
    "messages", "truncated"}.
    """
    with session.client() as client:
        found = client.tail(conversation_id, count, roles=_roles(roles), kinds=kinds)
    shown = len(found.messages)
    first = found.metadata.message_count - shown if not (roles or kinds) else -shown
    indexed = [(first + offset, message) for offset, message in enumerate(found.messages)]
    document = {
        "metadata": to_json(found.metadata),
        "messages": messages_json(indexed),
        "truncated": found.truncated,
    }
    lines = [render_conversation_header(found.metadata), *render_messages(indexed)]
    if found.truncated:
        lines.append(note("truncated: older ones left out to keep the answer under 3 MiB"))
    session.output(document, lines)


@click.command()
@click.argument("conversation_id")
@_PAGE_SIZE
@client_options
def ids(session: Session, conversation_id: str, page_size: int) -> None:
    """Print the ordered message ids, one per line.

    With --json: {"conversation_id", "message_ids"}.
    """
    with session.client() as client:
        message_ids = list(client.message_ids(conversation_id, page_size=page_size))
    session.output(
        {"conversation_id": conversation_id, "message_ids": message_ids},
        map(escape_controls, message_ids),
    )


@click.command(short_help="Append messages; without a conversation id, to a new one.")
@click.argument("arguments", nargs=-1, metavar="[CONVERSATION_ID] [TEXT]")
@click.option(
    "--role",
    type=click.Choice(list(inputs.ROLES)),
    help="Role of the message [default: tool for a tool output, else user].",
)
@click.option("--kind", default="", help="Kind of the message [default: empty].")
@click.option("--tool-name", help="Append TEXT as this tool's output (with --tool-call-id).")
@click.option("--tool-call-id", help="The tool call the output answers.")
@click.option(
    "--tool-metadata",
    multiple=True,
    type=LABEL,
    help="A key=value of the tool output's metadata (repeatable).",
)
@click.option(
    "--batch",
    type=click.File("r", encoding="utf-8"),
    help='Messages as JSON lines from a file (- for stdin): {"role", "kind", "text"} or '
    '{"role", "kind", "body"}, body as printed by --json.',
)
@click.option(
    "--state",
    "state_updates",
    nargs=2,
    multiple=True,
    metavar="SCOPE JSON",
    help="Also set these keys of a scope's state, in the same transaction (repeatable).",
)
@_if_version(0, "0: only while it does not exist")
@client_options
def append(
    session: Session,
    arguments: tuple[str, ...],
    role: str | None,
    kind: str,
    tool_name: str | None,
    tool_call_id: str | None,
    tool_metadata: tuple[tuple[str, str], ...],
    batch: Any,
    state_updates: tuple[tuple[str, str], ...],
    if_version: int | None,
) -> None:
    """Append one message (TEXT; '-' reads it from stdin), or a batch, at
    the tail, atomically; print the new messages' ids and the
    conversation's metadata and version.

    Without CONVERSATION_ID a new conversation is made (its id is
    printed); otherwise the conversation is created by its first append.
    With --json: {"metadata", "messages"}.
    """
    if batch is not None:
        if len(arguments) > 1:
            raise click.UsageError("--batch takes the messages from its file, not TEXT.")
        if tool_name or tool_call_id or tool_metadata or role:
            raise click.UsageError("--batch gives each message its role and body itself.")
        conversation_id = arguments[0] if arguments else None
        try:
            messages = inputs.messages_from_lines(batch)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--batch") from None
    else:
        if not arguments or len(arguments) > 2:
            raise click.UsageError("Give [CONVERSATION_ID] TEXT (TEXT '-' reads stdin) or --batch.")
        if len(arguments) == 1 and _is_uuid(arguments[0]):
            # Far more likely a conversation id without its text than a text.
            raise click.UsageError(f"Give the TEXT to append to {arguments[0]} (or --batch).")
        conversation_id = arguments[0] if len(arguments) == 2 else None
        text = _read_text(arguments[-1])
        messages = [_one_message(text, role, kind, tool_name, tool_call_id, tool_metadata)]
    if conversation_id is None:
        from agent_state.ids import new_id

        conversation_id = str(new_id())
        if if_version is None and not state_updates:
            if_version = 0  # a new id: it must not exist yet
    with session.client() as client:
        result = _append(client, conversation_id, messages, state_updates, if_version)
    session.output(to_json(result), render_appended(result))


def _is_uuid(text: str) -> bool:
    from agent_state.errors import InvalidArgument
    from agent_state.ids import parse_uuid

    try:
        parse_uuid(text, "text")
    except InvalidArgument:
        return False
    return True


def _one_message(
    text: str,
    role: str | None,
    kind: str,
    tool_name: str | None,
    tool_call_id: str | None,
    tool_metadata: tuple[tuple[str, str], ...],
) -> MessageInput:
    from agent_state_client.types import MessageInput, Text, ToolOutput, ToolText

    if tool_name is None and tool_call_id is None:
        if tool_metadata:
            raise click.UsageError("--tool-metadata needs --tool-name and --tool-call-id.")
        return MessageInput(inputs.ROLES[role or "user"], Text(text), kind)
    if tool_name is None or tool_call_id is None:
        raise click.UsageError("A tool output needs both --tool-name and --tool-call-id.")
    body = ToolOutput(tool_name, tool_call_id, ToolText(text), dict(tool_metadata))
    return MessageInput(inputs.ROLES[role or "tool"], body, kind)


def _append(
    client: Client,
    conversation_id: str,
    messages: list[MessageInput],
    state_updates: tuple[tuple[str, str], ...],
    if_version: int | None,
) -> AppendResult | AppendWithStateResult:
    if not state_updates:
        return client.append(conversation_id, messages, expected_version=if_version)
    from agent_state_client.types import StateUpdate

    if if_version == 0:
        raise click.UsageError("--state takes --if-version 1 or more (versions start at 1).")
    updates = [StateUpdate(scope, set=values) for scope, values in state_updates]
    return client.append_with_state(conversation_id, messages, updates, expected_version=if_version)


_RANGE_OPTIONS = _with(
    [
        click.option("--from", "from_id", help="First message of the range [default: the head]."),
        click.option("--to", "to_id", help="Last message of the range [default: the tail]."),
    ]
)


def _need_range(from_id: str | None, to_id: str | None, instead: str) -> None:
    if from_id is None and to_id is None:
        raise click.UsageError(f"Give --from, --to or both. {instead}")


@click.command(short_help="Replace a range of messages: summarise, reorder, detach.")
@click.argument("conversation_id")
@click.argument("new_message_ids", nargs=-1)
@_RANGE_OPTIONS
@_if_version(1, "versions start at 1")
@client_options
def replace(
    session: Session,
    conversation_id: str,
    new_message_ids: tuple[str, ...],
    from_id: str | None,
    to_id: str | None,
    if_version: int | None,
) -> None:
    """Replace the range [--from..--to] by NEW_MESSAGE_IDS (none: the range
    is detached, kept for snapshots); with only --from they go right after
    it, with only --to right before it. Prints the ids replaced and
    inserted, and the new version.

    Summarising: append the summary, then replace [first..last] with its id.
    """
    _need_range(from_id, to_id, "")
    with session.client() as client:
        result = client.replace_range(
            conversation_id,
            from_message_id=from_id,
            to_message_id=to_id,
            new_message_ids=new_message_ids,
            expected_version=if_version,
        )
    session.output(to_json(result), render_replaced(result))


@click.command(short_help="Delete a range of messages for good.")
@click.argument("conversation_id")
@_RANGE_OPTIONS
@_if_version(1, "versions start at 1")
@client_options
def delete(
    session: Session,
    conversation_id: str,
    from_id: str | None,
    to_id: str | None,
    if_version: int | None,
) -> None:
    """Delete the messages of the range [--from..--to] for good (with only
    --from through the tail, with only --to from the head); prints their
    ids and the new version. Snapshots still read them back.
    """
    _need_range(from_id, to_id, "A whole conversation: agent-state conversation delete ID.")
    with session.client() as client:
        result = client.delete_range(
            conversation_id, from_message_id=from_id, to_message_id=to_id,
            expected_version=if_version,
        )  # fmt: skip
    session.output(to_json(result), render_deleted_range(result))


# --- snapshots -----------------------------------------------------------------------


@click.group(short_help="Snapshots of a model call's context: create, list, show.")
def snapshot() -> None:
    """Record the exact context of a model call, list and read snapshots."""


@snapshot.command("create")
@click.argument("conversation_id")
@click.argument("message_ids", nargs=-1)
@_if_version(0, "the ids are read and named at it")
@client_options
def create_snapshot(
    session: Session, conversation_id: str, message_ids: tuple[str, ...], if_version: int | None
) -> None:
    """Record MESSAGE_IDS, in this order, as a snapshot; without them, the
    whole ordering as it is now. A snapshot reads back unchanged forever.
    """
    from agent_state_client import VersionConflict

    with session.client() as client:
        if message_ids:
            made = client.create_snapshot(conversation_id, message_ids, expected_version=if_version)
            count = len(message_ids)
        else:
            for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
                # The ids at one version, named at that version: nothing
                # written in between can slip in or out.
                context = client.context(conversation_id)
                if if_version is not None and context.version != if_version:
                    session.fail(
                        f"ABORTED: if-version: conversation {conversation_id} is at version "
                        f"{version_text(context.version)}, not {if_version}; nothing recorded"
                    )
                if not context.messages:
                    session.fail(f"conversation {conversation_id} has no messages to snapshot")
                try:
                    made = client.create_snapshot(
                        conversation_id, context.message_ids, expected_version=context.version
                    )
                except VersionConflict:
                    if attempt == SNAPSHOT_ATTEMPTS:
                        raise
                    continue
                count = len(context.message_ids)
                break
    session.output({**to_json(made), "item_count": count}, render_snapshot(made, count))


@snapshot.command("list")
@click.argument("conversation_id")
@_PAGE_SIZE
@client_options
def list_snapshots(session: Session, conversation_id: str, page_size: int) -> None:
    """List a conversation's snapshots, oldest first.

    With --json: {"conversation_id", "snapshots"}.
    """
    with session.client() as client:
        found = list(client.snapshots(conversation_id, page_size=page_size))
    session.output(
        {"conversation_id": conversation_id, "snapshots": to_json(found)}, render_snapshots(found)
    )


@snapshot.command("show")
@click.argument("snapshot_id")
@_PAGE_SIZE
@client_options
def show_snapshot(session: Session, snapshot_id: str, page_size: int) -> None:
    """Print a snapshot's messages like `show`; the index is the place in
    the snapshot. With --json: {"snapshot_id", "messages"}."""
    with session.client() as client:
        messages: list[Message] = list(client.snapshot_messages(snapshot_id, page_size=page_size))
    indexed = list(enumerate(messages))
    session.output(
        {"snapshot_id": snapshot_id, "messages": messages_json(indexed)},
        [render_snapshot_header(snapshot_id), *render_messages(indexed)],
    )


# --- state ---------------------------------------------------------------------------


@click.group(short_help="Scoped state: get, set.")
def state() -> None:
    """Read and change scoped state: app/APP, user/APP/USER, conversation/ID."""


@state.command("get")
@click.argument("scope")
@client_options
def get_state(session: Session, scope: str) -> None:
    """Print a scope's state (a JSON object, exactly as stored) and version
    (an unknown scope: {} at version 0). With --json: {"scope", "version", "values"}."""
    with session.client() as client:
        found = client.get_state(scope)
    _print_state(session, found)


def _print_state(session: Session, found: State) -> None:
    session.output(state_json(found), render_state(found))


@state.command("set")
@click.argument("scope")
@click.argument("values", required=False, metavar="[JSON_OBJECT]")
@click.option("--remove", "remove", multiple=True, help="Remove this key (repeatable).")
@_if_version(1, "the scope's; versions start at 1")
@client_options
def set_state(
    session: Session,
    scope: str,
    values: str | None,
    remove: tuple[str, ...],
    if_version: int | None,
) -> None:
    """Set the keys of JSON_OBJECT ('-' reads it from stdin) and remove
    --remove keys, in one transaction; print the state and its new version.
    Numbers are kept exactly as written."""
    if values is None and not remove:
        raise click.UsageError("Give a JSON object of keys to set, --remove KEY, or both.")
    with session.client() as client:
        changed = client.update_state(
            scope,
            set=None if values is None else _read_text(values),
            remove=remove,
            expected_version=if_version,
        )
    _print_state(session, changed)


# --- health --------------------------------------------------------------------------


@click.command()
@client_options
def health(session: Session) -> None:
    """Print the server's health status; exit 0 only when SERVING.

    Asks grpc.health.v1.Health/Check for the service "" (the whole server),
    so it can serve as a container health check.
    """
    with session.client() as client:
        status = check_health(client)
    session.output({"status": status}, [render_health(status)])
    if status != SERVING:
        sys.exit(EXIT_FAILURE)


def check_health(client: Client) -> str:
    """grpc.health.v1.Health/Check of the whole server: the status's name.
    Through the client's own connection, so that the token, TLS, request
    id, deadline, retries and errors are those of every other command."""
    from grpc_health.v1 import health_pb2

    reply = client.call_unary(
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest(service=""),
        health_pb2.HealthCheckResponse,
    )
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return name


COMMANDS: list[click.Command] = [
    conversation,
    append,
    show,
    tail,
    get,
    ids,
    replace,
    delete,
    snapshot,
    state,
    health,
]
