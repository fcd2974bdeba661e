"""A session of the OpenAI Agents SDK kept by agent-state.

``pip install "agent-state-client[openai-agents]"``, then::

    client = AsyncClient("127.0.0.1:50051")
    session = AgentStateSession("user-42", client)
    result = await Runner.run(agent, "Hello", session=session)

One session is one conversation. Its id is derived from the session id
(`conversation_id_for`), so any process that names the same session
reaches the same history; the session id is also kept as the label
`SESSION_LABEL` (and as the title), so that sessions can be listed.

Each item the SDK gives is one message, in order: its exact JSON as a text
body, its ``type`` as the message's kind (``message`` for a plain
``{"role": ..., "content": ...}`` item), and a role that says who made it
(`role_of`). What each call costs:

- `get_items` with a limit reads only the tail (one call up to 1,000 items);
  without one it reads the whole history in one consistent read (one call
  per 1,000 items).
- `add_items` is one atomic append whose idempotency key is kept across the
  client's retries, so a retried append lands once.
- `pop_item` reads the last item with the conversation's version, then
  deletes exactly that item on condition that the version has not moved;
  when it has (another writer), it reads again. Concurrent pops return each
  item once.
- `clear_session` erases the conversation (messages, labels, snapshots).

Responses compaction: wrap the session in the SDK's
``OpenAIResponsesCompactionSession``; its compaction replaces history here
with versioned writes (`_get_compaction_snapshot`, `_atomic_replace_items`),
so that an item appended while the model summarised makes the replacement
stand down instead of being lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .. import _convert
from .._async import AsyncClient
from .._gen import agent_state_pb2 as pb
from ..errors import ConversationNotFound, NotFound, VersionConflict
from ..types import AppendResult, Message, MessageInput, Role, Text

try:
    from agents.items import TResponseInputItem
    from agents.memory.session_settings import (
        SessionSettings,
        coerce_session_settings,
        resolve_session_limit,
    )
    from pydantic_core import from_json
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "agent_state_client.integrations.openai_agents needs the OpenAI Agents SDK: "
        'pip install "agent-state-client[openai-agents]"'
    ) from missing

if TYPE_CHECKING:
    from agents.memory.session import _CompactionSnapshot

__all__ = [
    "NAMESPACE",
    "SESSION_LABEL",
    "AgentStateSession",
    "conversation_id_for",
    "role_of",
    "session_label_value",
]

NAMESPACE = uuid.UUID("3f0c5f8e-8a51-5d6b-9b7e-4f1d0c2a7e61")
"""The UUIDv5 namespace under which session ids become conversation ids."""

SESSION_LABEL = "openai-agents/session-id"
"""The label that carries a session's id (see `session_label_value`)."""

# The companion API's limits: label values and titles (code points), kinds.
_LABEL_VALUE_LIMIT = 256
_TITLE_LIMIT = 1000
_KIND_LIMIT = 256
# The server's cap on one read (TailConversationMessages' count, a page).
_LARGEST_READ = 1000
# Conditional writes start over when another writer moved the version; each
# conflict means that writer made progress, so this bounds only starvation.
_CONFLICT_ATTEMPTS = 32

_T = TypeVar("_T")


def conversation_id_for(session_id: str, namespace: str = "") -> str:
    """The conversation that keeps session `session_id`: a UUIDv5 of the
    session id under `NAMESPACE`, or under the UUIDv5 of `namespace` in
    `NAMESPACE` when a namespace is given (the same id in two namespaces
    is two sessions)."""
    parent = uuid.uuid5(NAMESPACE, namespace) if namespace else NAMESPACE
    return str(uuid.uuid5(parent, session_id))


def session_label_value(session_id: str) -> str:
    """The value of `SESSION_LABEL` for a session: its id, or, for an id
    longer than a label value may be (256 code points), ``sha256:`` and the
    hex SHA-256 of its UTF-8 form."""
    if len(session_id) <= _LABEL_VALUE_LIMIT:
        return session_id
    return "sha256:" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


# Items that a tool, a shell or an editor produced, answering a call the
# model made: stored from role TOOL. Every "*_output" type is one.
def _is_tool_output(kind: str) -> bool:
    return kind.endswith("_output")


def role_of(item: Mapping[str, Any]) -> Role:
    """Who made an item: USER for messages of the user, the system or the
    developer (and MCP approval answers); TOOL for the outputs of calls
    (``function_call_output``, ``computer_call_output``...); ASSISTANT for
    everything the model produced (its messages, calls, reasoning,
    compaction items)."""
    role = item.get("role")
    if role in ("user", "system", "developer"):
        return Role.USER
    if role == "assistant":
        return Role.ASSISTANT
    kind = item.get("type")
    if isinstance(kind, str) and _is_tool_output(kind):
        return Role.TOOL
    if kind == "mcp_approval_response":
        return Role.USER
    return Role.ASSISTANT


def _kind_of(item: Mapping[str, Any]) -> str:
    kind = item.get("type", "message")
    if not isinstance(kind, str) or len(kind) > _KIND_LIMIT:
        return ""
    return kind


def _encode(item: Mapping[str, Any]) -> str:
    text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot travel as UTF-8: escaped, it round-trips.
        text = json.dumps(item, separators=(",", ":"))
    return text


def _message_input(item: TResponseInputItem) -> MessageInput:
    fields = cast(Mapping[str, Any], item)
    return MessageInput(role_of(fields), Text(_encode(fields)), _kind_of(fields))


def _item(message: Message) -> TResponseInputItem:
    return _decoded(message.text, message)


def _wire_item(message: pb.Message) -> TResponseInputItem:
    """_item of a message as it came: the whole history is read this way,
    without a Message for each item (a third of the time of a long one)."""
    return _decoded(_convert.body_text_of(message.body), message)


def _parsed(text: str) -> Any:
    """The JSON value of `text`, or None where it is not JSON. pydantic's
    parser (the SDK's own dependency) reads an item in a fifth of
    json.loads' time; what it refuses (a lone surrogate escape), json.loads
    reads as the item was written. (try, not contextlib.suppress: entered
    once per item, suppress made converting 1,000 items 1.2 ms of client
    CPU instead of 0.8.)"""
    try:
        return from_json(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return None


def _decoded(text: str | None, message: Message | pb.Message) -> TResponseInputItem:
    decoded = _parsed(text or "")
    if not isinstance(decoded, dict):
        raise ValueError(
            f"message {message.id} of conversation {message.conversation_id} is not an "
            "OpenAI Agents item (a JSON object in a text body)"
        )
    return cast(TResponseInputItem, decoded)


async def _settled(work: Coroutine[Any, Any, _T]) -> _T:
    """Await a write to its outcome even when the caller is cancelled
    meanwhile, then let the cancellation through: a cancelled write has
    landed or not before the caller goes on, never half-way (as the SDK's
    own stores do), so a later write cannot overtake it."""
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            # Waiting does not cancel the task, nor raise its failure.
            await asyncio.wait({task})
        except asyncio.CancelledError as error:
            cancelled = cancelled or error
    if cancelled is not None:
        # The caller asked to stop: that is what it hears, whatever the
        # write's outcome (retrieved, so that the loop reports no lost error).
        if not task.cancelled():
            task.exception()
        raise cancelled
    return task.result()


class AgentStateSession:
    """The OpenAI Agents SDK's ``Session`` protocol over an agent-state
    server: the history of one session is one conversation.

    - `session_id`: any string; the same id (in the same `namespace`)
      reaches the same history from any process.
    - `client`: an `AsyncClient` of the server. It is the caller's: close it
      when done. It may be used from any event loop (``Runner.run_sync``
      makes one per call).
    - `session_settings`: the SDK's ``SessionSettings`` (or a dict of its
      fields); ``limit`` is the number of items `get_items` returns by
      default.
    - `namespace`: keeps sessions of several applications apart on one
      server (`conversation_id_for`).
    - `labels`: more labels for the conversation, set when it is created.
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        client: AsyncClient,
        *,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
        namespace: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.session_id = session_id
        self.session_settings = (
            SessionSettings()
            if session_settings is None
            else coerce_session_settings(cast(Any, session_settings))
        )
        self.client = client
        self.namespace = namespace
        self.conversation_id = conversation_id_for(session_id, namespace)
        self._labels = {**(labels or {}), SESSION_LABEL: session_label_value(session_id)}

    def __repr__(self) -> str:
        return (
            f"AgentStateSession(session_id={self.session_id!r}, "
            f"conversation_id={self.conversation_id!r})"
        )

    # --- the Session protocol ------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items, oldest first: the last `limit` of them (the
        session settings' limit when None; everything when both are None)."""
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is None:
            return await self._everything()
        if wanted <= 0:
            return []
        return await self._last(wanted)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append the items in order, in one atomic call (nothing is stored
        when it fails; a retried call lands once)."""
        if not items:
            return
        inputs = [_message_input(item) for item in items]
        await _settled(self._append(inputs))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the last item and return it (None when there is none).
        The removal is conditional on the version the item was read at, so
        two concurrent pops never return the same item."""
        return await _settled(self._pop())

    async def clear_session(self) -> None:
        """Erase the session: its conversation and everything of it. A
        later `add_items` starts a new, empty history."""
        await _settled(self.client.delete_conversation(self.conversation_id, allow_missing=True))

    # --- reads -----------------------------------------------------------------

    async def _everything(self) -> list[TResponseInputItem]:
        try:
            pages, _version = await self.client._context_pages(self.conversation_id)
        except ConversationNotFound:
            return []
        return [_wire_item(message) for page in pages for message in page.messages]

    async def _last(self, count: int) -> list[TResponseInputItem]:
        """The last `count` messages: one tail read, unless more than it
        may carry were asked for (over 1,000, or over its 3 MiB budget)."""
        try:
            tail = await self.client.tail(self.conversation_id, min(count, _LARGEST_READ))
        except ConversationNotFound:
            return []
        complete = len(tail.messages) >= min(count, tail.metadata.message_count)
        if complete and not tail.truncated:
            return [_item(message) for message in tail.messages]
        return (await self._everything())[-count:]

    # --- writes ----------------------------------------------------------------

    async def _append(
        self, inputs: Sequence[MessageInput], *, expected_version: int | None = None
    ) -> AppendResult:
        appended = await self.client.append(
            self.conversation_id, inputs, expected_version=expected_version
        )
        if appended.version == 1:
            # This append created the conversation: name it after the session.
            await self._label()
        return appended

    async def _label(self) -> None:
        title = self.session_id if len(self.session_id) <= _TITLE_LIMIT else ""
        # Cleared meanwhile: the next append labels the new one.
        with contextlib.suppress(ConversationNotFound):
            await self.client.update_conversation(
                self.conversation_id, title=title, labels=self._labels
            )

    async def _pop(self) -> TResponseInputItem | None:
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                tail = await self.client.tail(self.conversation_id, 1)
            except ConversationNotFound:
                return None
            if not tail.messages:
                return None
            (last,) = tail.messages
            try:
                await self.client.delete_range(
                    self.conversation_id,
                    from_message_id=last.id,
                    to_message_id=last.id,
                    expected_version=tail.version,
                )
            except VersionConflict:
                if attempt + 1 == _CONFLICT_ATTEMPTS:
                    raise
                continue
            return _item(last)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _remove(self, message_ids: Sequence[str]) -> None:
        """Delete a contiguous run of messages this session appended itself,
        unless they are gone already."""
        with contextlib.suppress(NotFound):
            await self.client.delete_range(
                self.conversation_id, from_message_id=message_ids[0], to_message_id=message_ids[-1]
            )

    async def _swap(
        self,
        items: Sequence[TResponseInputItem],
        version: int,
        *,
        from_id: str | None,
        to_id: str,
    ) -> bool:
        """Put `items` in place of the run [from_id..to_id] (from the head
        when `from_id` is None) that ends the history, if the conversation
        is still at `version`: append the items on that condition, then
        delete the run on the condition that nothing came between. False,
        with nothing changed, when another write came first."""
        inputs = [_message_input(item) for item in items]
        appended: AppendResult | None = None
        if inputs:
            try:
                appended = await self._append(inputs, expected_version=version)
            except VersionConflict:
                return False
            version = appended.version or version + 1
        try:
            await self.client.delete_range(
                self.conversation_id,
                from_message_id=from_id,
                to_message_id=to_id,
                expected_version=version,
            )
        except (VersionConflict, NotFound):
            if appended is not None:
                await self._remove(appended.message_ids)
            return False
        return True

    # --- the hooks of the SDK's OpenAIResponsesCompactionSession --------------

    async def _get_compaction_snapshot(
        self,
        limit: int,
        *,
        prune_prefix: Callable[[TResponseInputItem], bool] | None = None,
    ) -> _CompactionSnapshot | None:
        """The last `limit` items for automatic compaction, and a way to
        replace a suffix of them atomically: the replacement happens only
        while the conversation is at the version they were read at (an
        item appended meanwhile makes it stand down, as the SDK expects).
        None (the SDK then reads the whole history) where this cannot
        serve: a pruned prefix, or more than one read carries."""
        try:
            from agents.memory.session import _CompactionSnapshot
        except ImportError:  # an SDK without suffix replacement
            return None
        if prune_prefix is not None or not 0 < limit <= _LARGEST_READ:
            return None
        try:
            tail = await self.client.tail(self.conversation_id, limit)
        except ConversationNotFound:
            return _CompactionSnapshot([], True, _nothing_to_replace)
        if tail.truncated:
            return None
        messages = tail.messages
        version = tail.version or 0
        items = [_item(message) for message in messages]
        complete = len(messages) >= tail.metadata.message_count

        async def replace_suffix(start: int, output: list[TResponseInputItem]) -> bool:
            old_ids = [message.id for message in messages[start:]]
            if not old_ids:
                return False
            return await _settled(
                self._swap(output, version, from_id=old_ids[0], to_id=old_ids[-1])
            )

        return _CompactionSnapshot(items, complete, replace_suffix)

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        """Replace the whole history by `items` (manual compaction, which
        the SDK does not check for staleness either): the items are
        appended, then everything before them deleted, each on the
        condition of the version read just before, so that an item another
        writer appends meanwhile is never deleted; such a write makes the
        replacement start over."""
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                tail = await self.client.tail(self.conversation_id, 1)
            except ConversationNotFound:
                tail = None
            if tail is None or not tail.messages:
                if not items:
                    return True
                try:
                    # 0: only while no conversation exists; else its version.
                    await self._append(
                        [_message_input(item) for item in items],
                        expected_version=0 if tail is None else tail.version,
                    )
                except VersionConflict:
                    continue
                return True
            (last,) = tail.messages
            swapped = self._swap(items, tail.version or 0, from_id=None, to_id=last.id)
            if await _settled(swapped):
                return True
            if attempt + 1 == _CONFLICT_ATTEMPTS:
                break
        raise VersionConflict(
            "the session kept changing while its history was replaced; it was left as it was"
        )


async def _nothing_to_replace(start: int, output: list[TResponseInputItem]) -> bool:
    return False
