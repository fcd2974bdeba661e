"""Small builders over the generated messages, for tests below the wire."""

from __future__ import annotations

from agent_state_client._gen import agent_state_pb2 as pb


def text_body(text: str) -> bytes:
    """A MessageBody with a text variant, encoded as the service stores it."""
    return pb.MessageBody(text=pb.TextBody(text=text)).SerializeToString(deterministic=True)
