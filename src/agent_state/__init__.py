"""agent-state: working memory for LLM agents, served as
agynio.api.agent_state.v1.AgentStateService over gRPC."""

__version__ = "0.1.0"
