"""Code generated from agynio/api/agent_state/v1/agent_state.proto by
scripts/generate.sh (`make generate`). DO NOT EDIT."""
