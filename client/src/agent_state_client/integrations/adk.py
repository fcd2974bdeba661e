"""Google ADK's sessions kept in agent-state.

`AgentStateSessionService` is a ``google.adk.sessions.BaseSessionService``:
hand it to a ``Runner`` and the agent's sessions, events and state live in
agent-state::

    from agent_state_client.integrations.adk import AgentStateSessionService

    session_service = AgentStateSessionService("127.0.0.1:50051")
    runner = Runner(agent=agent, app_name="trips", session_service=session_service)

How ADK's model maps onto agent-state:

- A session is a conversation. Its id is a UUID (version 5) of the app
  name, user id and session id, so the same three always find the same
  conversation; the three are kept as its labels ``adk.app``, ``adk.user``
  and ``adk.session``, which `list_sessions` filters on.
- An event is a message of kind ``adk.event`` whose text body is the event
  as JSON. Its role is USER for the user's events, TOOL for function
  responses, ASSISTANT for the rest. Events come back in the order they
  were appended, whatever their timestamps.
- Session state is the scope ``conversation/{id}`` (erased with the
  conversation), ``app:`` state the scope ``app/{app}``, ``user:`` state
  the scope ``user/{app}/{user}`` (``/`` and ``%`` in a name are written
  ``%2F`` and ``%25``, an empty name ``%``). ``temp:`` state is applied to
  the session object in memory, never stored. The session scope also holds
  ``agent_state:last_update_time``, the session's `last_update_time`; that
  key is the adapter's and never appears in `Session.state`.
- `append_event` stores the event and all its state changes in one
  AppendMessagesWithState call, conditional on the conversation version
  the session was read at (kept on the session object): a session that
  another writer changed since fails with ADK's ``StaleSessionError`` and
  nothing is stored. The call's idempotency key is derived from the event,
  so a retried append lands once, and an event appended again is kept
  once.

Names (app name, user id, session id) are at most 256 characters, as
agent-state's labels and scopes are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

try:
    from google.adk.errors import StaleSessionError
    from google.adk.errors.already_exists_error import AlreadyExistsError
    from google.adk.errors.session_not_found_error import SessionNotFoundError
    from google.adk.events.event import Event
    from google.adk.sessions.base_session_service import (
        BaseSessionService,
        GetSessionConfig,
        ListSessionsResponse,
    )
    from google.adk.sessions.session import Session
    from google.adk.sessions.state import State
    from pydantic_core import to_jsonable_python
except ImportError as missing:
    raise ImportError(
        "agent_state_client.integrations.adk needs Google ADK:"
        " pip install 'agent-state-client[adk]'"
    ) from missing

from .._async import AsyncClient
from ..errors import (
    AgentStateError,
    AlreadyExists,
    ConversationNotFound,
    FailedPrecondition,
    VersionConflict,
)
from ..types import ConversationMetadata, Message, MessageInput, Role, StateUpdate, Text
from ..types import State as ScopeState

__all__ = [
    "APP_LABEL",
    "EVENT_KIND",
    "INITIAL_STATE_KIND",
    "LAST_UPDATE_KEY",
    "SESSION_LABEL",
    "USER_LABEL",
    "AgentStateSessionService",
    "conversation_id_of",
]

EVENT_KIND = "adk.event"
"""The kind of the messages that hold events."""
INITIAL_STATE_KIND = "adk.initial_state"
"""The kind of the message `create_session` stores its initial state with
(AppendMessagesWithState needs a message); reads of events skip it."""
APP_LABEL = "adk.app"
USER_LABEL = "adk.user"
SESSION_LABEL = "adk.session"
LAST_UPDATE_KEY = "agent_state:last_update_time"
"""The session scope's key for `Session.last_update_time`: the timestamp
of the last event appended (or, before any, when the session was made)."""

DEFAULT_ADDRESS = "127.0.0.1:50051"

# Session ids are UUIDs derived in this namespace: never change it, or every
# session stored so far is lost to its name.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "agent-state:google-adk-session")
# agent-state's limit on a label value and on a part of a scope.
_MAX_NAME = 256
# TailConversationMessages answers at most this many messages.
_TAIL_LIMIT = 1000
# get_session with after_timestamp alone reads backwards in windows this
# large first, four times larger each time an older event has not shown up.
_FIRST_WINDOW = 16
# list_sessions reads this many state scopes at once.
_STATE_READS_AT_ONCE = 16


def _scope_part(value: str, name: str) -> str:
    """One part of a scope: ``/`` and ``%`` escaped, NUL too (a scope holds
    none), an empty value as a lone ``%`` (which no escaped text is)."""
    if not value:
        return "%"
    part = value.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    if len(part) > _MAX_NAME:
        raise ValueError(
            f"{name}: takes {len(part)} characters in a state scope; at most {_MAX_NAME}"
            " ('/' and '%' count as three)"
        )
    return part


def _app_scope(app_name: str) -> str:
    return f"app/{_scope_part(app_name, 'app_name')}"


def _user_scope(app_name: str, user_id: str) -> str:
    return f"user/{_scope_part(app_name, 'app_name')}/{_scope_part(user_id, 'user_id')}"


def conversation_id_of(app_name: str, user_id: str, session_id: str) -> str:
    """The conversation that holds a session (the session id as ADK
    normalizes it: without surrounding whitespace)."""
    name = json.dumps([app_name, user_id, session_id.strip()])
    return str(uuid.uuid5(_NAMESPACE, name))


@dataclass(frozen=True, slots=True)
class _SessionKey:
    """Where one session lives in agent-state."""

    app_name: str
    user_id: str
    session_id: str

    @classmethod
    def of(cls, app_name: str, user_id: str, session_id: str) -> _SessionKey:
        key = cls(app_name, user_id, session_id.strip())
        key.scopes()  # checks the app name and the user id
        if len(key.session_id) > _MAX_NAME:
            raise ValueError(
                f"session_id: has {len(key.session_id)} characters; at most {_MAX_NAME}"
            )
        return key

    @property
    def conversation_id(self) -> str:
        return conversation_id_of(self.app_name, self.user_id, self.session_id)

    @property
    def labels(self) -> dict[str, str]:
        return {APP_LABEL: self.app_name, USER_LABEL: self.user_id, SESSION_LABEL: self.session_id}

    @property
    def session_scope(self) -> str:
        return f"conversation/{self.conversation_id}"

    def scopes(self) -> tuple[str, str, str]:
        """The session's, the app's and the user's state scopes."""
        return (
            self.session_scope,
            _app_scope(self.app_name),
            _user_scope(self.app_name, self.user_id),
        )

    def describe(self) -> str:
        return f"session {self.session_id!r} of user {self.user_id!r} in app {self.app_name!r}"


@dataclass(frozen=True, slots=True)
class _Deltas:
    """A state change split by scope, prefixes removed, ``temp:`` left out,
    every value in its JSON form (one that has none becomes a string)."""

    app: dict[str, Any] = field(default_factory=dict)
    user: dict[str, Any] = field(default_factory=dict)
    session: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, state: Mapping[str, Any] | None) -> _Deltas:
        split = cls()
        safe: dict[str, Any] = to_jsonable_python(dict(state or {}), serialize_unknown=True)
        for name, value in safe.items():
            if name.startswith(State.APP_PREFIX):
                split.app[name.removeprefix(State.APP_PREFIX)] = value
            elif name.startswith(State.USER_PREFIX):
                split.user[name.removeprefix(State.USER_PREFIX)] = value
            elif not name.startswith(State.TEMP_PREFIX):
                split.session[name] = value
        return split

    def __bool__(self) -> bool:
        return bool(self.app or self.user or self.session)

    def updates(self, key: _SessionKey, last_update_time: float) -> list[StateUpdate]:
        """The state updates that store this change; the session scope's
        always records `last_update_time`."""
        session_scope, app_scope, user_scope = key.scopes()
        updates = [StateUpdate(session_scope, {**self.session, LAST_UPDATE_KEY: last_update_time})]
        if self.app:
            updates.append(StateUpdate(app_scope, self.app))
        if self.user:
            updates.append(StateUpdate(user_scope, self.user))
        return updates

    def prefixed(self) -> dict[str, Any]:
        """The change as one state mapping, with its prefixes."""
        return {
            **self.session,
            **{State.APP_PREFIX + name: value for name, value in self.app.items()},
            **{State.USER_PREFIX + name: value for name, value in self.user.items()},
        }


def _merged(
    session: Mapping[str, Any], app: Mapping[str, Any], user: Mapping[str, Any]
) -> dict[str, Any]:
    """A session's state as ADK shows it: its own keys, then the app's and
    the user's under their prefixes."""
    merged = dict(session)
    merged.update((State.APP_PREFIX + name, value) for name, value in app.items())
    merged.update((State.USER_PREFIX + name, value) for name, value in user.items())
    return merged


def _role_of(event: Event) -> Role:
    parts = event.content.parts if event.content is not None else None
    if any(part.function_response is not None for part in parts or ()):
        return Role.TOOL
    return Role.USER if event.author == "user" else Role.ASSISTANT


def _event_of(message: Message) -> Event:
    return Event.model_validate_json(message.text or "")


def _idempotency_key(event_json: str) -> str:
    """The same for equal events (the server keeps keys per conversation),
    so that a retried or repeated append of an event is applied once."""
    return "adk-event-" + hashlib.sha256(event_json.encode()).hexdigest()


def _since(events: Sequence[Event], after_timestamp: float) -> list[Event]:
    """The events after the last one older than `after_timestamp` (all of
    them when none is older), as ADK's in-memory service selects them."""
    for index in range(len(events) - 1, -1, -1):
        if events[index].timestamp < after_timestamp:
            return list(events[index + 1 :])
    return list(events)


def _seconds(moment: datetime) -> float:
    return moment.timestamp()


def _version_of(session: Session) -> int | None:
    """The conversation version the session was read or written at, as
    this service recorded it on the session; None when it did not."""
    marker = session._storage_update_marker
    if isinstance(marker, str) and marker.isascii() and marker.isdigit():
        return int(marker)
    return None


def _reported(version: int | None) -> int:
    if version is None:
        raise RuntimeError(
            "the agent-state server reported no conversation version (x-conversation-version);"
            " the ADK session service needs a server that does"
        )
    return version


@dataclass(frozen=True, slots=True)
class _Events:
    """Events read from a conversation, with its version and last change."""

    events: list[Event]
    version: int
    changed_at: float

    @classmethod
    def of(cls, messages: Sequence[Message], metadata: ConversationMetadata) -> _Events:
        return cls(
            [_event_of(message) for message in messages],
            _reported(metadata.version),
            _seconds(metadata.updated_at),
        )


class AgentStateSessionService(BaseSessionService):
    """ADK's session service on an agent-state server.

    `client`: an `AsyncClient`, used for every call (the caller's to
    close), or the server's address, for which the service makes one with
    `client_options` (``token=``, ``tls=``... as `AsyncClient` takes them)
    and closes it in `close`. Either serves every event loop, so
    ``Runner.run``, which runs each turn in an event loop of its own,
    works too.

    Calls: `append_event`, `delete_session` and `get_user_state` are one
    RPC each. `get_session` is two steps: the events (one
    TailConversationMessages, or one ListConversationMessages page per
    1,000 events when all are asked for; DescribeConversation when none
    are), then the three state scopes at once. `create_session` is
    CreateConversation, then AppendMessagesWithState when the initial state
    is not empty, with the app's and the user's state read meanwhile.
    `list_sessions` is ListConversations, then one GetState per session and
    per user, and one for the app.
    """

    def __init__(self, client: AsyncClient | str = DEFAULT_ADDRESS, **client_options: Any) -> None:
        if isinstance(client, AsyncClient):
            if client_options:
                raise TypeError("client_options: set them on the AsyncClient given instead")
            self._client, self._owns_client = client, False
        else:
            self._client, self._owns_client = AsyncClient(client, **client_options), True

    async def close(self) -> None:
        """Close the client the service made (one given to the constructor
        stays open: it is the caller's)."""
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> AgentStateSessionService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- sessions --------------------------------------------------------

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        given = session_id.strip() if session_id else ""
        key = _SessionKey.of(app_name, user_id, given or str(uuid.uuid4()))
        deltas = _Deltas.of(state)
        client = self._client
        _, app_scope, user_scope = key.scopes()
        (created_at, version), app_state, user_state = await asyncio.gather(
            self._create(client, key, deltas),
            client.get_state(app_scope),
            client.get_state(user_scope),
        )
        # The reads ran beside the writes: the initial values win.
        merged = _merged(
            deltas.session, {**app_state.values, **deltas.app}, {**user_state.values, **deltas.user}
        )
        session = Session(
            id=key.session_id,
            app_name=app_name,
            user_id=user_id,
            state=merged,
            last_update_time=created_at,
        )
        session._storage_update_marker = str(version)
        return session

    async def _create(
        self, client: AsyncClient, key: _SessionKey, deltas: _Deltas
    ) -> tuple[float, int]:
        """Creates the conversation, then stores the initial state; the
        session's creation time and its conversation's version."""
        try:
            conversation = await client.create_conversation(key.conversation_id, labels=key.labels)
        except AlreadyExists:
            raise AlreadyExistsError(f"{key.describe()} exists already") from None
        created_at = _seconds(conversation.created_at)
        if not deltas:
            return created_at, conversation.version
        initial = MessageInput(Role.USER, Text(json.dumps(deltas.prefixed())), INITIAL_STATE_KIND)
        try:
            stored = await client.append_with_state(
                key.conversation_id,
                initial,
                deltas.updates(key, created_at),
                expected_version=conversation.version,
            )
        except Exception:
            # No session without its initial state: undo the creation,
            # unless something else changed the conversation meanwhile.
            with contextlib.suppress(AgentStateError):
                await client.delete_conversation(
                    key.conversation_id, expected_version=conversation.version, allow_missing=True
                )
            raise
        return created_at, _reported(stored.version)

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        key = _SessionKey.of(app_name, user_id, session_id)
        client = self._client
        try:
            read = await self._events(client, key.conversation_id, config)
        except ConversationNotFound:
            return None
        # The state is read after the events: it is at least as new as the
        # version the session records, so a write that lands in between
        # makes the next append stale instead of going unnoticed.
        session_state, app_state, user_state = await asyncio.gather(
            *(client.get_state(scope) for scope in key.scopes())
        )
        values = session_state.values
        last_update_time = values.pop(LAST_UPDATE_KEY, read.changed_at)
        session = Session(
            id=key.session_id,
            app_name=app_name,
            user_id=user_id,
            state=_merged(values, app_state.values, user_state.values),
            events=read.events,
            last_update_time=last_update_time,
        )
        session._storage_update_marker = str(read.version)
        return session

    async def _events(
        self, client: AsyncClient, conversation_id: str, config: GetSessionConfig | None
    ) -> _Events:
        """The events `config` asks for, reading no more than it must."""
        recent = config.num_recent_events if config is not None else None
        after = config.after_timestamp if config is not None else None
        if recent == 0:
            conversation = await client.describe_conversation(conversation_id)
            return _Events([], conversation.version, _seconds(conversation.updated_at))
        if recent is None and after is None:
            return await self._all_events(client, conversation_id)
        if recent is not None:
            read = await self._last_events(client, conversation_id, recent)
        else:
            read = await self._events_back_to(client, conversation_id, after or 0.0)
        if after is not None:
            return _Events(_since(read.events, after), read.version, read.changed_at)
        return read

    async def _all_events(self, client: AsyncClient, conversation_id: str) -> _Events:
        context = await client.context(conversation_id, kinds=[EVENT_KIND])
        return _Events.of(context.messages, context.metadata)

    async def _last_events(self, client: AsyncClient, conversation_id: str, count: int) -> _Events:
        """The last `count` events: one TailConversationMessages, unless
        more are asked than a tail answers (or fit in its answer)."""
        if count <= _TAIL_LIMIT:
            tail = await client.tail(conversation_id, count, kinds=[EVENT_KIND])
            if not tail.truncated:
                return _Events.of(tail.messages, tail.metadata)
        context = await client.context(conversation_id, kinds=[EVENT_KIND])
        return _Events.of(context.messages[-count:], context.metadata)

    async def _events_back_to(
        self, client: AsyncClient, conversation_id: str, after_timestamp: float
    ) -> _Events:
        """The last events back to one older than `after_timestamp` (or all):
        tails of growing size, then the whole listing past what a tail
        answers."""
        window = _FIRST_WINDOW
        while True:
            tail = await client.tail(conversation_id, window, kinds=[EVENT_KIND])
            if tail.truncated:
                break
            read = _Events.of(tail.messages, tail.metadata)
            if len(read.events) < window or read.events[0].timestamp < after_timestamp:
                return read
            if window == _TAIL_LIMIT:
                break
            window = min(window * 4, _TAIL_LIMIT)
        return await self._all_events(client, conversation_id)

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        app_scope = _app_scope(app_name)
        labels = {APP_LABEL: app_name}
        if user_id is not None:
            _user_scope(app_name, user_id)  # checks the user id
            labels[USER_LABEL] = user_id
        client = self._client
        found = [
            conversation
            async for conversation in client.conversations(labels=labels, page_size=_TAIL_LIMIT)
        ]
        keys = [
            _SessionKey(
                app_name,
                conversation.labels.get(USER_LABEL, ""),
                conversation.labels.get(SESSION_LABEL, ""),
            )
            for conversation in found
        ]
        users = sorted({key.user_id for key in keys})
        at_once = asyncio.Semaphore(_STATE_READS_AT_ONCE)

        async def read(scope: str) -> ScopeState:
            async with at_once:
                return await client.get_state(scope)

        app_state, user_states, session_states = await asyncio.gather(
            read(app_scope),
            _all(read(_user_scope(app_name, user)) for user in users),
            _all(read(key.session_scope) for key in keys),
        )
        user_values = {user: state.values for user, state in zip(users, user_states, strict=True)}
        sessions = []
        for conversation, key, session_state in zip(found, keys, session_states, strict=True):
            values = session_state.values
            last_update_time = values.pop(LAST_UPDATE_KEY, _seconds(conversation.updated_at))
            session = Session(
                id=key.session_id,
                app_name=app_name,
                user_id=key.user_id,
                state=_merged(values, app_state.values, user_values[key.user_id]),
                last_update_time=last_update_time,
            )
            session._storage_update_marker = str(conversation.version)
            sessions.append(session)
        # Least recently active first, as BaseSessionService documents.
        sessions.sort(key=lambda found: (found.last_update_time, found.user_id, found.id))
        return ListSessionsResponse(sessions=sessions)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        key = _SessionKey.of(app_name, user_id, session_id)
        await self._client.delete_conversation(key.conversation_id, allow_missing=True)

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        state = await self._client.get_state(_user_scope(app_name, user_id))
        return state.values

    # --- events ------------------------------------------------------------

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        key = _SessionKey.of(session.app_name, session.user_id, session.id)
        client = self._client
        expected = _version_of(session)
        if expected is None:
            expected = await self._unmarked_version(client, key, session)
        deltas = _Deltas.of(event.actions.state_delta if event.actions else None)
        event_json = event.model_dump_json(exclude_none=True)
        try:
            stored = await client.append_with_state(
                key.conversation_id,
                MessageInput(_role_of(event), Text(event_json), EVENT_KIND),
                deltas.updates(key, event.timestamp),
                expected_version=expected,
                idempotency_key=_idempotency_key(event_json),
            )
        except VersionConflict as conflict:
            if conflict.current_version == 0:
                raise SessionNotFoundError(f"{key.describe()} does not exist") from None
            raise _stale(key, expected, conflict.current_version) from None
        except FailedPrecondition as reused:
            if reused.field != "idempotency-key":
                raise
            # This very event is stored in this session already: a repeated
            # delivery, kept once (as ADK's in-memory service does).
            return event
        session._storage_update_marker = str(_reported(stored.version))
        session.last_update_time = event.timestamp
        return self._commit_event_to_session(session, event)

    async def _unmarked_version(
        self, client: AsyncClient, key: _SessionKey, session: Session
    ) -> int:
        """The version to append at for a session this service did not
        read: the current one, if the session holds the last stored event."""
        try:
            tail = await client.tail(key.conversation_id, 1, kinds=[EVENT_KIND])
        except ConversationNotFound:
            raise SessionNotFoundError(f"{key.describe()} does not exist") from None
        stored_last = _event_of(tail.messages[-1]).id if tail.messages else None
        held_last = session.events[-1].id if session.events else None
        current = _reported(tail.version)
        if stored_last != held_last:
            raise _stale(key, None, current)
        return current


def _stale(key: _SessionKey, held: int | None, current: int | None) -> StaleSessionError:
    held_text = "unknown" if held is None else str(held)
    current_text = "unknown" if current is None else str(current)
    return StaleSessionError(
        f"{key.describe()} was modified in storage since this copy of it was read (read at"
        f" version {held_text}, stored at {current_text}); get it again with get_session"
        " before appending"
    )


async def _all(reads: Iterable[Awaitable[ScopeState]]) -> list[ScopeState]:
    return list(await asyncio.gather(*reads))
