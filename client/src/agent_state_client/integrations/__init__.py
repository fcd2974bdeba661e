"""Adapters of agent-state to agent frameworks, each installed with the
extra of its name (``agent-state-client[langgraph]``, ...)."""
