"""Command line: ``agent-state serve | migrate | config`` (server_commands)
and the client commands (client_commands) for a running server.

`main` is the entry point of the `agent-state` script and of
``python -m agent_state``.
"""

from __future__ import annotations

import click

from . import client_commands, server_commands

__all__ = ["main"]


@click.group()
def main() -> None:
    """agent-state: working memory for LLM agents over gRPC."""


for _command in server_commands.COMMANDS + client_commands.COMMANDS:
    main.add_command(_command)
