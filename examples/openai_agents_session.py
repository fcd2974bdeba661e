"""An OpenAI Agents SDK agent whose memory is an agent-state server.

    python examples/openai_agents_session.py [ADDRESS]

ADDRESS (or AGENT_STATE_ADDRESS; default 127.0.0.1:50051) is a running
server (``agent-state serve``). Needs ``pip install
"agent-state-client[openai-agents]"``. It runs offline: the model is the
SDK's ScriptedModel, which answers what the script says (a tool call, then
text), so the Runner loop, the tool and the session are all real.

Two turns run in one session; then a new session object with the same id
(as another process would make) reads the history back from the server.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from agent_state_client import AsyncClient
from agent_state_client.integrations.openai_agents import AgentStateSession


@function_tool
def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"sunny and 24°C in {city}"


async def main(address: str) -> None:
    set_tracing_disabled(True)  # offline: no trace export
    model = ScriptedModel()
    agent = Agent(name="forecaster", model=model, tools=[weather])
    session_id = f"example-{uuid.uuid4()}"

    async with AsyncClient(address) as client:
        session = AgentStateSession(session_id, client)

        model.enqueue([function_call("weather", {"city": "Lisbon"}, call_id="call-1")])
        model.enqueue([assistant_message("It is sunny and 24°C in Lisbon.")])
        result = await Runner.run(agent, "What is the weather in Lisbon?", session=session)
        print("turn 1:", result.final_output)

        model.enqueue([assistant_message("You asked about Lisbon.")])
        result = await Runner.run(agent, "Which city did I ask about?", session=session)
        print("turn 2:", result.final_output)
        print("the model saw", len(model.calls[-1].input), "items on turn 2")

        # Another process, the same session id: the same history.
        again = AgentStateSession(session_id, client)
        for item in await again.get_items():
            print(" ", item.get("type", "message"), item.get("role", ""), str(item)[:70])
        print("conversation", again.conversation_id, "for session", session_id)
        await again.clear_session()


if __name__ == "__main__":
    given = sys.argv[1] if len(sys.argv) > 1 else None
    asyncio.run(main(given or os.environ.get("AGENT_STATE_ADDRESS", "127.0.0.1:50051")))
