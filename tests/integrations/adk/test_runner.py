"""A real ADK Runner on AgentStateSessionService: a scripted model (no
network) asks for a tool, answers, and answers again next turn; the server
restarts on the same database and the conversation resumes where it was,
history and state included. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path

import pytest
from google.adk.agents.llm_agent import LlmAgent
from google.adk.events.event import Event
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.tools.tool_context import ToolContext
from google.genai import types
from pydantic import Field

from agent_state_client.integrations.adk import AgentStateSessionService
from tests.support.server import ServerProcess

USER = "traveller"
SESSION = "trip"


class ScriptedModel(BaseLlm):
    """A model that gives the next of its scripted responses on each call,
    and keeps what each call showed it."""

    model: str = "scripted"
    script: list[LlmResponse] = Field(default_factory=list)
    shown: list[list[types.Content]] = Field(default_factory=list)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.shown.append(list(llm_request.contents))
        yield self.script.pop(0)


def reply(text: str) -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))


def calls_weather(city: str) -> LlmResponse:
    call = types.Part.from_function_call(name="get_weather", args={"city": city})
    return LlmResponse(content=types.Content(role="model", parts=[call]))


def get_weather(city: str, tool_context: ToolContext) -> dict[str, str]:
    """Tomorrow's forecast for a city."""
    tool_context.state["user:last_city"] = city
    return {"city": city, "forecast": "sunny"}


def runner_for(model: ScriptedModel, app_name: str, service: AgentStateSessionService) -> Runner:
    agent = LlmAgent(
        name="forecaster",
        model=model,
        instruction="Answer questions about the weather.",
        tools=[get_weather],
        output_key="last_answer",
    )
    return Runner(app_name=app_name, agent=agent, session_service=service)


def user_says(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def turn(runner: Runner, text: str) -> list[Event]:
    return [
        event
        async for event in runner.run_async(
            user_id=USER, session_id=SESSION, new_message=user_says(text)
        )
    ]


def texts(contents: list[types.Content]) -> list[str]:
    return [part.text for content in contents for part in content.parts or () if part.text]


def describe(events: list[Event]) -> list[tuple[str, str]]:
    """Each event as (author, what it carries)."""
    described = []
    for event in events:
        assert event.content is not None
        assert event.content.parts is not None
        (part,) = event.content.parts
        if part.function_call is not None:
            what = f"call {part.function_call.name}({part.function_call.args})"
        elif part.function_response is not None:
            what = f"result {part.function_response.response}"
        else:
            what = part.text or ""
        described.append((event.author, what))
    return described


@pytest.fixture
def database_url(make_database_url: Callable[[], str]) -> str:
    return make_database_url()


@pytest.fixture
def start_server(database_url: str, tmp_path: Path) -> Iterator[Callable[[], ServerProcess]]:
    """Starts a server on the test's database (the next one after the
    last stopped), and stops whatever is still running at the end."""
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        process = ServerProcess(database_url, tmp_path / f"server{len(started)}.log")
        started.append(process)
        return process.start_ready()

    yield start
    for process in started:
        process.terminate()


async def test_a_conversation_with_a_tool_survives_a_server_restart(
    start_server: Callable[[], ServerProcess], app_name: str
) -> None:
    first_server = start_server()
    model = ScriptedModel(
        script=[calls_weather("Lisbon"), reply("Sunny in Lisbon."), reply("Still sunny tomorrow.")]
    )
    async with AgentStateSessionService(first_server.address) as service:
        await service.create_session(
            app_name=app_name, user_id=USER, session_id=SESSION, state={"units": "metric"}
        )
        runner = runner_for(model, app_name, service)
        first_turn = await turn(runner, "Weather in Lisbon?")
        second_turn = await turn(runner, "And tomorrow?")
    assert describe(first_turn) == [
        ("forecaster", "call get_weather({'city': 'Lisbon'})"),
        ("forecaster", "result {'city': 'Lisbon', 'forecast': 'sunny'}"),
        ("forecaster", "Sunny in Lisbon."),
    ]
    assert describe(second_turn) == [("forecaster", "Still sunny tomorrow.")]
    # The second call of the model saw the tool's result.
    assert texts(model.shown[-1]) == [
        "Weather in Lisbon?",
        "Sunny in Lisbon.",
        "And tomorrow?",
    ]

    assert first_server.terminate() == 0, first_server.describe()
    second_server = start_server()

    model = ScriptedModel(script=[reply("You asked about Lisbon.")])
    async with AgentStateSessionService(second_server.address) as service:
        resumed = await service.get_session(app_name=app_name, user_id=USER, session_id=SESSION)
        assert resumed is not None
        assert describe(resumed.events) == [
            ("user", "Weather in Lisbon?"),
            *describe(first_turn),
            ("user", "And tomorrow?"),
            *describe(second_turn),
        ]
        assert [event.id for event in resumed.events if event.author != "user"] == [
            event.id for event in first_turn + second_turn
        ]
        assert resumed.state == {
            "units": "metric",
            "user:last_city": "Lisbon",
            "last_answer": "Still sunny tomorrow.",
        }
        assert await service.get_user_state(app_name=app_name, user_id=USER) == {
            "last_city": "Lisbon"
        }

        third_turn = await turn(runner_for(model, app_name, service), "Where was that?")
        assert describe(third_turn) == [("forecaster", "You asked about Lisbon.")]
        # The model was shown the whole history that was stored before.
        assert texts(model.shown[0]) == [
            "Weather in Lisbon?",
            "Sunny in Lisbon.",
            "And tomorrow?",
            "Still sunny tomorrow.",
            "Where was that?",
        ]
        final = await service.get_session(app_name=app_name, user_id=USER, session_id=SESSION)
        assert final is not None
        assert len(final.events) == len(resumed.events) + 2
        assert final.state["last_answer"] == "You asked about Lisbon."


def test_the_blocking_runner_works_turn_after_turn(
    start_server: Callable[[], ServerProcess], app_name: str
) -> None:
    # Runner.run runs each turn in an event loop of its own; the service's
    # one client serves each of them.
    server = start_server()
    service = AgentStateSessionService(server.address)
    model = ScriptedModel(script=[reply("One."), reply("Two.")])
    runner = runner_for(model, app_name, service)
    runner.auto_create_session = True
    answers = [
        describe(list(runner.run(user_id=USER, session_id=SESSION, new_message=user_says(text))))
        for text in ("First?", "Second?")
    ]
    assert answers == [[("forecaster", "One.")], [("forecaster", "Two.")]]
    assert texts(model.shown[-1]) == ["First?", "One.", "Second?"]
