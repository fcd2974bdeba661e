"""A Google ADK agent whose sessions live in agent-state.

Runs offline: the model is a stand-in that follows a fixed plan (ask the
weather tool about the city in the question, then answer from the tool's
result), so no model API is called. It needs a running agent-state server:

    agent-state serve &                         # or make run
    python examples/adk_session_service.py      # or: ... HOST:PORT

The address is the first argument, else AGENT_STATE_ADDRESS, else
127.0.0.1:50051. Install the adapter with ``pip install './client[adk]'``.

The first part runs two turns; the second reads the session back with a
new session service, as another process (or the same one after a restart)
would, and carries on from the stored history and state.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncGenerator

from google.adk.agents.llm_agent import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from agent_state_client.integrations.adk import AgentStateSessionService

ADDRESS = (
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AGENT_STATE_ADDRESS", "127.0.0.1:50051")
)
APP = "weather-example"
USER = "alice"


def get_weather(city: str, tool_context: ToolContext) -> dict[str, str]:
    """Stands for a weather service; remembers the user's last city."""
    tool_context.state["user:last_city"] = city
    return {"city": city, "forecast": "sunny, 24 °C"}


class PlannedModel(BaseLlm):
    """Stands for the model: for a question about the weather "in" a city,
    a call of the weather tool; with the tool's result, an answer made of
    it; for anything else, the last city it finds in the history."""

    model: str = "planned-stand-in"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        parts = [part for content in llm_request.contents for part in content.parts or []]
        last = parts[-1] if parts else types.Part(text="")
        if last.function_response is not None:
            forecast = last.function_response.response or {}
            yield said(f"{forecast.get('city')}: {forecast.get('forecast')}.")
        elif last.text and " in " in last.text:
            city = last.text.rsplit(" in ", 1)[1].strip(" ?")
            call = types.Part.from_function_call(name="get_weather", args={"city": city})
            yield LlmResponse(content=types.Content(role="model", parts=[call]))
        else:
            asked = [part.function_call.args or {} for part in parts if part.function_call]
            earlier = asked[-1].get("city") if asked else None
            yield said(f"You asked about {earlier}." if earlier else "You have not asked yet.")


def said(text: str) -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))


def make_runner(session_service: AgentStateSessionService) -> Runner:
    agent = LlmAgent(
        name="weather_agent",
        model=PlannedModel(),
        instruction="Answer questions about the weather with the get_weather tool.",
        tools=[get_weather],
        output_key="last_answer",
    )
    return Runner(app_name=APP, agent=agent, session_service=session_service)


async def ask(runner: Runner, session_id: str, question: str) -> None:
    print(f"{USER}: {question}")
    message = types.Content(role="user", parts=[types.Part(text=question)])
    async for event in runner.run_async(user_id=USER, session_id=session_id, new_message=message):
        parts = event.content.parts or [] if event.content is not None else []
        for part in parts:
            if part.function_call:
                print(
                    f"  {event.author} calls {part.function_call.name}({part.function_call.args})"
                )
            elif part.text:
                print(f"{event.author}: {part.text}")


async def main() -> None:
    session_id = f"trip-{uuid.uuid4().hex[:8]}"
    async with AgentStateSessionService(ADDRESS) as session_service:
        await session_service.create_session(
            app_name=APP, user_id=USER, session_id=session_id, state={"units": "metric"}
        )
        runner = make_runner(session_service)
        await ask(runner, session_id, "What is the weather in Lisbon?")

    # Later, elsewhere: a new service finds the session where it was left.
    async with AgentStateSessionService(ADDRESS) as session_service:
        session = await session_service.get_session(
            app_name=APP, user_id=USER, session_id=session_id
        )
        assert session is not None
        print(f"stored: {len(session.events)} events, state {session.state}")
        await ask(make_runner(session_service), session_id, "Which city was that again?")
        listed = await session_service.list_sessions(app_name=APP, user_id=USER)
        print(f"{USER} has {len(listed.sessions)} session(s) in {APP}")
        await session_service.delete_session(app_name=APP, user_id=USER, session_id=session_id)


if __name__ == "__main__":
    asyncio.run(main())
