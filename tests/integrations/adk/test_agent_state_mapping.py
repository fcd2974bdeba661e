"""What AgentStateSessionService makes of ADK's sessions in agent-state:
the conversations, messages and state scopes it writes, the RPCs each of
its calls makes, and the failures of other stores it must not have
(duplicates after retries, whole-history loads, deleted sessions coming
back); against the real server on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig
from google.genai import types

from agent_state_client import AsyncClient, Role
from agent_state_client.integrations.adk import (
    APP_LABEL,
    EVENT_KIND,
    INITIAL_STATE_KIND,
    SESSION_LABEL,
    USER_LABEL,
    AgentStateSessionService,
    conversation_id_of,
)
from tests.integrations.adk.conftest import CountingClient

USER = "u1"


def said(author: str, text: str, **fields: object) -> Event:
    role = "user" if author == "user" else "model"
    content = types.Content(role=role, parts=[types.Part(text=text)])
    return Event(author=author, content=content, **fields)  # type: ignore[arg-type]


async def test_a_session_is_a_labelled_conversation_of_event_messages(
    counting_client: CountingClient, app_name: str
) -> None:
    service = AgentStateSessionService(counting_client)
    session = await service.create_session(
        app_name=app_name, user_id=USER, session_id="trip", state={"city": "Lisbon", "app:v": 2}
    )
    call = types.Part.from_function_call(name="weather", args={"city": "Lisbon"})
    answer = types.Part.from_function_response(name="weather", response={"sky": "clear"})
    events = [
        said("user", "Weather?"),
        Event(author="agent", content=types.Content(role="model", parts=[call])),
        Event(author="agent", content=types.Content(role="user", parts=[answer])),
        said("agent", "Clear skies."),
    ]
    for event in events:
        await service.append_event(session, event)

    conversation_id = conversation_id_of(app_name, USER, "trip")
    described = await counting_client.describe_conversation(conversation_id)
    assert described.labels == {APP_LABEL: app_name, USER_LABEL: USER, SESSION_LABEL: "trip"}
    stored = [message async for message in counting_client.messages(conversation_id)]
    assert [message.kind for message in stored] == [INITIAL_STATE_KIND] + [EVENT_KIND] * 4
    assert json.loads(stored[0].text or "") == {"city": "Lisbon", "app:v": 2}
    assert [message.role for message in stored[1:]] == [
        Role.USER,
        Role.ASSISTANT,
        Role.TOOL,
        Role.ASSISTANT,
    ]
    assert [Event.model_validate_json(message.text or "") for message in stored[1:]] == events
    session_state = await counting_client.get_state(f"conversation/{conversation_id}")
    assert session_state.values == {
        "city": "Lisbon",
        "agent_state:last_update_time": events[-1].timestamp,
    }
    assert (await counting_client.get_state(f"app/{app_name}")).values == {"v": 2}


async def test_names_with_slashes_and_percent_signs_stay_apart(
    service: AgentStateSessionService, app_name: str
) -> None:
    # Each would be the same scope if '/' and '%' were written as they are.
    users = ["a/b", "a%2Fb", "a%252Fb", ""]
    for user_id in users:
        session = await service.create_session(app_name=app_name, user_id=user_id)
        await service.append_event(
            session, Event(author="user", actions=EventActions(state_delta={"user:me": user_id}))
        )
    for user_id in users:
        assert await service.get_user_state(app_name=app_name, user_id=user_id) == {"me": user_id}
        listed = (await service.list_sessions(app_name=app_name, user_id=user_id)).sessions
        assert [found.user_id for found in listed] == [user_id]


async def test_names_longer_than_agent_state_keeps_are_refused(
    service: AgentStateSessionService, app_name: str
) -> None:
    with pytest.raises(ValueError, match="session_id: has 257 characters"):
        await service.create_session(app_name=app_name, user_id=USER, session_id="s" * 257)
    with pytest.raises(ValueError, match="user_id: takes 258 characters"):
        await service.get_user_state(app_name=app_name, user_id="/" + "u" * 255)


async def test_each_call_makes_the_rpcs_it_documents(
    counting_client: CountingClient, app_name: str
) -> None:
    service = AgentStateSessionService(counting_client)
    rpcs = counting_client.rpcs

    async def made(call: object) -> list[str]:
        rpcs.clear()
        await call  # type: ignore[misc]
        return sorted(rpcs)

    state = {"k": 1, "app:a": 1}
    assert await made(service.create_session(app_name=app_name, user_id=USER, session_id="s")) == [
        "CreateConversation",
        "GetState",
        "GetState",
    ]
    assert await made(
        service.create_session(app_name=app_name, user_id=USER, session_id="t", state=state)
    ) == ["AppendMessagesWithState", "CreateConversation", "GetState", "GetState"]
    session = await service.get_session(app_name=app_name, user_id=USER, session_id="s")
    assert session is not None
    delta = EventActions(state_delta={"k": 2, "app:a": 2, "user:u": 3, "temp:t": 4})
    assert await made(service.append_event(session, Event(author="user", actions=delta))) == [
        "AppendMessagesWithState"
    ]

    def get(**config: int) -> object:
        return service.get_session(
            app_name=app_name,
            user_id=USER,
            session_id="s",
            config=GetSessionConfig(**config) if config else None,
        )

    assert await made(get()) == ["GetState"] * 3 + ["ListConversationMessages"]
    assert await made(get(num_recent_events=0)) == ["DescribeConversation"] + ["GetState"] * 3
    assert await made(get(num_recent_events=5)) == ["GetState"] * 3 + ["TailConversationMessages"]
    # More than one tail answers: the listing, one page per 1,000 events.
    assert await made(get(num_recent_events=1001)) == ["GetState"] * 3 + [
        "ListConversationMessages"
    ]
    assert await made(service.get_user_state(app_name=app_name, user_id=USER)) == ["GetState"]
    # One listing page, the app's state, each user's, each session's.
    assert await made(service.list_sessions(app_name=app_name)) == [
        "GetState",
        "GetState",
        "GetState",
        "GetState",
        "ListConversations",
    ]
    assert await made(service.delete_session(app_name=app_name, user_id=USER, session_id="s")) == [
        "DeleteConversation"
    ]


async def test_recent_events_are_read_from_the_tail_alone(
    counting_client: CountingClient, app_name: str
) -> None:
    service = AgentStateSessionService(counting_client)
    session = await service.create_session(app_name=app_name, user_id=USER)
    for number in range(40):
        await service.append_event(session, said("user", f"turn {number}", timestamp=float(number)))

    async def read(config: GetSessionConfig) -> tuple[list[float], list[str]]:
        """The timestamps of the events read, and the RPCs that read them."""
        counting_client.rpcs.clear()
        got = await service.get_session(
            app_name=app_name, user_id=USER, session_id=session.id, config=config
        )
        assert got is not None
        return [event.timestamp for event in got.events], list(counting_client.rpcs)

    recent, rpcs = await read(GetSessionConfig(num_recent_events=3))
    assert recent == [37.0, 38.0, 39.0]
    assert rpcs.count("TailConversationMessages") == 1
    assert "ListConversationMessages" not in rpcs
    # after_timestamp alone reads backwards, in windows of 16, then 64.
    since, rpcs = await read(GetSessionConfig(after_timestamp=10.0))
    assert since == [float(n) for n in range(10, 40)]
    assert rpcs.count("TailConversationMessages") == 2
    assert "ListConversationMessages" not in rpcs


async def test_a_retried_append_lands_once(
    service: AgentStateSessionService, app_name: str
) -> None:
    session = await service.create_session(app_name=app_name, user_id=USER)
    before = session.model_copy(deep=True)
    event = Event(author="user", actions=EventActions(state_delta={"count": 1}))
    await service.append_event(session, event)
    # The same call again, as a caller retries one whose answer it lost:
    # the server answers it from its idempotency record.
    await service.append_event(before, event.model_copy(deep=True))
    assert before._storage_update_marker == session._storage_update_marker
    stored = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert stored is not None
    assert [found.id for found in stored.events] == [event.id]
    assert stored.state == {"count": 1}


async def test_a_deleted_session_does_not_come_back(
    service: AgentStateSessionService, app_name: str, counting_client: AsyncClient
) -> None:
    session = await service.create_session(
        app_name=app_name, user_id=USER, session_id="gone", state={"secret": 1}
    )
    await service.append_event(session, said("user", "remember this"))
    await service.delete_session(app_name=app_name, user_id=USER, session_id="gone")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(session, said("user", "and this"))
    assert await service.get_session(app_name=app_name, user_id=USER, session_id="gone") is None
    assert (await service.list_sessions(app_name=app_name)).sessions == []
    # Its messages and state are erased: a new session of that id starts empty.
    again = await service.create_session(app_name=app_name, user_id=USER, session_id="gone")
    assert (again.state, again.events) == ({}, [])
    conversation_id = conversation_id_of(app_name, USER, "gone")
    assert [message async for message in counting_client.messages(conversation_id)] == []
