"""The client covers every RPC of both services, Client has exactly
AsyncClient's methods, with the same signatures, and the package exports
what it declares without importing grpc until a name needs it."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from agent_state_client import (
    AsyncClient,
    ChannelValue,
    ChannelWrite,
    Client,
    MessageInput,
    Serialized,
    StateUpdate,
    Value,
    _call,
)
from agent_state_client._gen import agent_state_pb2 as pb
from agent_state_client._gen import checkpoints_pb2 as kpb
from agent_state_client._gen import conversations_pb2 as cpb

from .fake_server import fake_server, methods


def _service_paths() -> set[str]:
    services = (
        pb.DESCRIPTOR.services_by_name["AgentStateService"],
        cpb.DESCRIPTOR.services_by_name["ConversationsService"],
        kpb.DESCRIPTOR.services_by_name["CheckpointsService"],
    )
    return {
        f"/{service.full_name}/{method.name}" for service in services for method in service.methods
    }


def test_the_method_table_is_every_service() -> None:
    paths = [rpc.path for rpc in _call.ALL]
    assert len(paths) == len(set(paths))
    assert set(paths) == _service_paths()


async def test_the_client_calls_every_method() -> None:
    c, m, s = "conversation", "message", "snapshot"
    # An empty answer parses as the default of every response type.
    async with fake_server(pb.GetConversationResponse()) as fake, AsyncClient(fake.address) as ac:
        await ac.append(c, MessageInput.user("x"))
        await ac.get_conversation(c)
        await ac.list_messages(c)
        await ac.list_message_ids(c)
        await ac.replace_range(c, from_message_id=m, new_message_ids=[m])
        await ac.delete_range(c, from_message_id=m)
        await ac.create_snapshot(c, [m])
        await ac.list_snapshot_messages(s)
        await ac.list_snapshot_message_ids(s)
        await ac.create_conversation()
        await ac.describe_conversation(c)
        await ac.update_conversation(c, title="t")
        await ac.list_conversations(updated_before=datetime.now(UTC))
        await ac.delete_conversation(c)
        await ac.tail(c, 3)
        await ac.get_messages(c, [m])
        await ac.fork_conversation(c)
        await ac.get_state("app/a")
        await ac.update_state("app/a", set={"k": None}, remove=["j"])
        await ac.append_with_state(c, MessageInput.user("x"), [StateUpdate("app/a")])
        await ac.list_snapshots(c)
        value = Value.whole(Serialized("json", b"1"))
        await ac.put_checkpoint(
            "t", "1", Serialized("json", b"{}"), values=[ChannelValue("a", "1", value)]
        )
        await ac.put_writes("t", "1", "task", [ChannelWrite(0, "a", value)])
        await ac.get_checkpoint("t")
        await ac.list_checkpoints("t", checkpoint_ns="", metadata_filter={"step": 1})
        await ac.delete_thread("t")
        await ac.copy_thread("t", "u")
        await ac.prune(["t"])
        await ac.delete_for_runs(["r"])
    assert set(methods(fake)) == _service_paths()


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_client_and_async_client_have_the_same_surface() -> None:
    blocking, asynchronous = _public(Client), _public(AsyncClient)
    assert set(blocking) == set(asynchronous)
    for name, signature in asynchronous.items():
        assert blocking[name].parameters == signature.parameters, name
        blocking_method = getattr(Client, name)
        if hasattr(blocking_method, "__wrapped__"):  # made from AsyncClient's
            assert inspect.getdoc(blocking_method) == inspect.getdoc(getattr(AsyncClient, name))


def test_the_package_exports_what_it_declares() -> None:
    package = importlib.import_module("agent_state_client")
    tree = ast.parse(Path(str(package.__file__)).read_text())
    typed = {
        alias.asname
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname
    }
    declared = set(package.__all__) - {"__version__"}
    assert typed == declared
    for name in declared:
        assert getattr(package, name) is not None, name


def test_importing_the_package_or_its_generated_code_leaves_grpc_alone() -> None:
    probe = (
        "import sys\n"
        "import agent_state_client\n"
        "from agent_state_client._gen import agent_state_pb2, conversations_pb2\n"
        "from agent_state_client import Role, MessageInput\n"
        "assert 'grpc' not in sys.modules, 'grpc was imported'\n"
        "from agent_state_client import AsyncClient\n"
        "assert 'grpc' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
