"""What an idempotency key adds to an append: 1-message appends with a new
key each and without one, against one running server, in rounds that
alternate the two.

    python -m bench.keyed_append [--calls 1000] [--rounds 2] [--backend postgresql]

Each round appends `calls` times to a conversation of its own, first
plain, then keyed, and reports the wall p50 and the server CPU per call
(/proc of the server process) of each. Nothing is asserted: a keyed
append's behaviour is tested in tests/storage and tests/e2e.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

from agent_state_client._gen import agent_state_pb2 as pb
from bench.harness import ADMIN_URL, BODY_TEXT, per_call, serve, stub
from tests.support.calls import Stub
from tests.support.postgres import throwaway_database
from tests.support.server import ServerProcess, sqlite_url


def _request(conversation: str) -> pb.AppendConversationMessagesRequest:
    body = pb.MessageBody(text=pb.TextBody(text=BODY_TEXT))
    message = pb.AppendMessageInput(role=pb.ROLE_USER, body=body)
    return pb.AppendConversationMessagesRequest(conversation_id=conversation, messages=[message])


def _appends(server: ServerProcess, client: Stub, calls: int, keyed: bool) -> tuple[float, float]:
    """Wall p50 and server CPU per call, in ms, of `calls` appends."""
    conversation = str(uuid.uuid4())
    client.AppendConversationMessages(_request(conversation))
    # A fresh key for each call (warm-up calls included), made beforehand.
    keys = iter([uuid.uuid4().hex for _ in range(calls + 20)] if keyed else [])
    request = _request(conversation)

    def append() -> None:
        key = next(keys, None)
        metadata = () if key is None else (("idempotency-key", key),)
        client.AppendConversationMessages(request, metadata=metadata)

    return per_call(server, append, calls)


def _measure(url: str, log: Path, calls: int, rounds: int) -> None:
    with serve(url, log) as server:
        client = stub(server.address)
        for round_number in range(1, rounds + 1):
            for keyed in (False, True):
                wall, cpu = _appends(server, client, calls, keyed)
                kind = "keyed" if keyed else "plain"
                print(f"round {round_number} {kind}: wall p50 {wall:.2f} ms, ", end="")
                print(f"server CPU {cpu:.2f} ms per call", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        if arguments.backend == "sqlite":
            _measure(sqlite_url(Path(tmp) / "keyed.db"), log, arguments.calls, arguments.rounds)
            return
        with throwaway_database(ADMIN_URL, "agent_state_bench") as url:
            _measure(url, log, arguments.calls, arguments.rounds)


if __name__ == "__main__":
    main()
