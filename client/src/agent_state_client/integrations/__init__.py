"""Drop-in storage for agent frameworks, each an optional extra of
agent-state-client:

- `agent_state_client.integrations.openai_agents`: `AgentStateSession`, a
  session of the OpenAI Agents SDK (``pip install
  "agent-state-client[openai-agents]"``).
- `agent_state_client.integrations.adk`: `AgentStateSessionService`, a
  session service of Google ADK (``pip install "agent-state-client[adk]"``).
- `agent_state_client.integrations.langgraph`: `AgentStateSaver`, a
  LangGraph checkpointer (``pip install "agent-state-client[langgraph]"``).

Each adapter is a module of its own that imports its framework, so that
importing this package (or the client) needs none of them.
"""
