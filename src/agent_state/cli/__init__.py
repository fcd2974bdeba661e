"""Command line: ``agent-state serve | migrate | config`` (server_commands)
and the client commands (client_commands) for a running server.

`main` is the entry point of the `agent-state` script and of
``python -m agent_state``. Importing this package imports no grpc (see
session.py): `serve` gets gRPC's own log level, the client commands theirs.
"""

from __future__ import annotations

import click

from .. import __version__
from . import client_commands, server_commands

__all__ = ["main"]


def _version_text() -> str:
    from agent_state_client import __version__ as client_version

    return f"agent-state {__version__} (agent-state-client {client_version})"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, message=_version_text())
def main() -> None:
    """agent-state: working memory for LLM agents over gRPC."""


for _command in server_commands.COMMANDS + client_commands.COMMANDS:
    main.add_command(_command)
