"""AgentStateSession against the real server, on SQLite and PostgreSQL:
how it stores a session, the behaviours the SDK's own tests check on their
stores' internals (ordering under equal timestamps, concurrent pops, retried
writes, cancellation, erasure), compaction through the SDK's
OpenAIResponsesCompactionSession, and real Runner loops with tool calls,
offline, on the SDK's scripted model.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import AsyncMock, MagicMock

import pytest
from agents import Agent, Runner, TResponseInputItem, function_tool, set_tracing_disabled
from agents.memory import OpenAIResponsesCompactionSession, Session, SessionSettings
from agents.testing import ScriptedModel, assistant_message, function_call

from agent_state_client import (
    AsyncClient,
    ConversationNotFound,
    MessageInput,
    RetryPolicy,
    Role,
    Text,
    ToolOutput,
    ToolText,
)
from agent_state_client.integrations.openai_agents import (
    SESSION_LABEL,
    AgentStateSession,
    conversation_id_for,
    role_of,
    session_label_value,
)
from tests.client.lossy_proxy import AnswerLosingProxy
from tests.support.threads import run_each_in_a_thread

MakeSession = Callable[..., AgentStateSession]

set_tracing_disabled(True)  # offline: the SDK would try to export traces


def said(text: str, role: str = "user") -> TResponseInputItem:
    return cast(TResponseInputItem, {"role": role, "content": text})


def contents(items: list[TResponseInputItem]) -> list[Any]:
    return [cast(dict[str, Any], item).get("content") for item in items]


@pytest.fixture
def make_session(client: AsyncClient) -> MakeSession:
    """Sessions in a namespace of the test's own (the server is shared)."""
    namespace = f"test-{uuid.uuid4()}"

    def make(
        session_id: str = "s", *, through: AsyncClient | None = None, **options: Any
    ) -> AgentStateSession:
        options.setdefault("namespace", namespace)
        return AgentStateSession(session_id, through or client, **options)

    return make


# --- how a session is stored ----------------------------------------------------


def test_it_is_a_session_of_the_sdk(client: AsyncClient) -> None:
    session: Session = AgentStateSession("typed", client)
    assert isinstance(session, Session)
    assert session.session_settings == SessionSettings()


def test_session_ids_map_to_conversations_deterministically() -> None:
    first = conversation_id_for("user-42")
    assert first == conversation_id_for("user-42")
    assert str(uuid.UUID(first)) == first
    assert uuid.UUID(first).version == 5
    assert conversation_id_for("user-43") != first
    assert conversation_id_for("user-42", "app-a") != first
    assert conversation_id_for("user-42", "app-a") != conversation_id_for("user-42", "app-b")


async def test_each_item_is_one_message_of_its_type_and_role(
    make_session: MakeSession, client: AsyncClient
) -> None:
    session = make_session()
    items = [
        said("Weather in Paris?"),
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "☀"}]},
        {"role": "developer", "content": "be brief"},
    ]
    await session.add_items(cast(list[TResponseInputItem], items))

    stored = (await client.context(session.conversation_id)).messages
    assert [json.loads(message.text or "") for message in stored] == items
    assert [message.kind for message in stored] == [
        "message", "function_call", "function_call_output", "message", "message"
    ]  # fmt: skip
    assert [message.role for message in stored] == [
        Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT, Role.USER
    ]  # fmt: skip
    assert await session.get_items() == items


def test_roles_follow_who_made_the_item() -> None:
    assert role_of({"role": "system", "content": "x"}) == Role.USER
    assert role_of({"type": "computer_call_output", "call_id": "c"}) == Role.TOOL
    assert role_of({"type": "reasoning", "summary": []}) == Role.ASSISTANT
    assert role_of({"type": "mcp_approval_response", "approve": True}) == Role.USER


async def test_the_conversation_carries_the_session_id_and_can_be_found(
    make_session: MakeSession, client: AsyncClient
) -> None:
    session = make_session(f"user-{uuid.uuid4()}", labels={"app": "support"})
    await session.add_items([said("hi")])
    await session.add_items([said("again")])

    conversation = await client.describe_conversation(session.conversation_id)
    assert conversation.title == session.session_id
    assert dict(conversation.labels) == {SESSION_LABEL: session.session_id, "app": "support"}
    found = [c async for c in client.conversations(labels={SESSION_LABEL: session.session_id})]
    assert [c.conversation_id for c in found] == [session.conversation_id]


async def test_a_session_id_longer_than_a_label_is_kept_hashed(
    make_session: MakeSession, client: AsyncClient
) -> None:
    long_id = "é" * 300
    session = make_session(long_id)
    await session.add_items([said("hi")])
    conversation = await client.describe_conversation(session.conversation_id)
    assert conversation.labels[SESSION_LABEL] == session_label_value(long_id)
    assert session_label_value(long_id).startswith("sha256:")
    assert conversation.title == long_id
    assert contents(await make_session(long_id).get_items()) == ["hi"]


async def test_text_round_trips_exactly(make_session: MakeSession) -> None:
    session = make_session()
    items = [said('こんにちは 😊 \u0000 "quoted" O\'Reilly'), said("lone \ud800 surrogate")]
    await session.add_items(items)
    assert await make_session().get_items() == items


@pytest.mark.parametrize(
    "body",
    [Text("plain text"), Text('["a JSON list"]'), ToolOutput("tool", "c1", ToolText("plain"))],
    ids=["text", "json-list", "tool-output"],
)
async def test_a_message_that_is_not_an_item_is_named(
    make_session: MakeSession, client: AsyncClient, body: Text | ToolOutput
) -> None:
    session = make_session()
    written = await client.append(session.conversation_id, MessageInput(Role.USER, body))
    named = f"message {written.message_ids[0]} .* not an OpenAI"
    # The whole history and a tail read each name it.
    with pytest.raises(ValueError, match=named):
        await session.get_items()
    with pytest.raises(ValueError, match=named):
        await session.get_items(limit=1)


async def test_a_tool_output_holding_an_item_is_read_as_one(
    make_session: MakeSession, client: AsyncClient
) -> None:
    # As Message.text reads it: a tool's text output is the message's text.
    session = make_session()
    item = {"type": "function_call_output", "call_id": "c1", "output": "42"}
    body = ToolOutput("tool", "c1", ToolText(json.dumps(item)))
    await client.append(session.conversation_id, MessageInput(Role.TOOL, body))
    assert await session.get_items() == [item]
    assert await session.get_items(limit=1) == [item]


# --- isolation, limits, empty sessions --------------------------------------------


async def test_sessions_are_isolated_by_id_and_namespace(make_session: MakeSession) -> None:
    await make_session("a").add_items([said("in a")])
    await make_session("b").add_items([said("in b")])
    await make_session("a", namespace="elsewhere").add_items([said("a elsewhere")])
    assert contents(await make_session("a").get_items()) == ["in a"]
    assert contents(await make_session("b").get_items()) == ["in b"]
    assert contents(await make_session("a", namespace="elsewhere").get_items()) == ["a elsewhere"]
    await make_session("a", namespace="elsewhere").clear_session()


async def test_limits_return_the_latest_items_oldest_first(make_session: MakeSession) -> None:
    session = make_session()
    await session.add_items([said(f"m{i}") for i in range(6)])
    assert contents(await session.get_items(limit=2)) == ["m4", "m5"]
    assert contents(await session.get_items(limit=1)) == ["m5"]
    assert contents(await session.get_items(limit=10)) == [f"m{i}" for i in range(6)]
    assert await session.get_items(limit=0) == []
    settled = make_session(session_settings={"limit": 3})
    assert contents(await settled.get_items()) == ["m3", "m4", "m5"]
    assert contents(await settled.get_items(limit=4)) == ["m2", "m3", "m4", "m5"]


async def test_a_limit_past_one_read_reads_the_whole_history(make_session: MakeSession) -> None:
    session = make_session()
    await session.add_items([said(f"m{i}") for i in range(1000)])
    await session.add_items([said(f"m{i}") for i in range(1000, 1205)])
    assert contents(await session.get_items(limit=1200)) == [f"m{i}" for i in range(5, 1205)]
    assert len(await session.get_items()) == 1205


async def test_empty_sessions_read_empty_and_are_not_created(
    make_session: MakeSession, client: AsyncClient
) -> None:
    session = make_session()
    assert await session.get_items() == []
    assert await session.get_items(limit=3) == []
    assert await session.pop_item() is None
    await session.add_items([])
    await session.clear_session()
    with pytest.raises(ConversationNotFound):
        await client.describe_conversation(session.conversation_id)


# --- pop ----------------------------------------------------------------------------


async def test_pop_removes_and_returns_the_last_item(make_session: MakeSession) -> None:
    session = make_session()
    await session.add_items([said("one"), said("two", "assistant"), said("three")])
    assert await session.pop_item() == said("three")
    assert await session.pop_item() == said("two", "assistant")
    assert contents(await session.get_items()) == ["one"]
    assert await session.pop_item() == said("one")
    assert await session.pop_item() is None


async def test_concurrent_pops_return_each_item_once(make_session: MakeSession) -> None:
    writer, other = make_session(), make_session()
    await writer.add_items([said(f"m{i}") for i in range(12)])
    popped = await asyncio.gather(*(s.pop_item() for s in (writer, other) * 10))
    got = [content for content in contents([p for p in popped if p is not None])]
    assert sorted(got) == sorted(f"m{i}" for i in range(12))
    assert popped.count(None) == 8
    assert await writer.get_items() == []


async def test_order_holds_under_equal_timestamps(
    make_session: MakeSession, client: AsyncClient
) -> None:
    session = make_session()
    await session.add_items([said(f"m{i:02}") for i in range(40)])
    stored = (await client.context(session.conversation_id)).messages
    # One batch: one timestamp; only the stored order tells them apart.
    assert len({message.created_at for message in stored}) == 1
    assert contents(await session.get_items()) == [f"m{i:02}" for i in range(40)]
    assert contents(await session.get_items(limit=3)) == ["m37", "m38", "m39"]
    assert await session.pop_item() == said("m39")


# --- writes that are retried, cancelled, erased -------------------------------------


async def test_an_append_whose_answer_is_lost_is_stored_once(
    proxy: AnswerLosingProxy, make_session: MakeSession
) -> None:
    retrying = AsyncClient(proxy.address, retry=RetryPolicy(attempts=4, initial_backoff=0.01))
    async with retrying:
        session = make_session(through=retrying)
        await session.add_items([said("before")])
        proxy.lose_next_answer()
        await session.add_items([said("once"), said("only once", "assistant")])
    assert proxy.lost.is_set()
    assert contents(await make_session().get_items()) == ["before", "once", "only once"]


async def test_a_cancelled_write_settles_before_the_cancellation(
    make_session: MakeSession,
) -> None:
    session = make_session()
    adding = asyncio.create_task(session.add_items([said("landed")]))
    await asyncio.sleep(0)
    adding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adding
    assert contents(await session.get_items()) == ["landed"]

    popping = asyncio.create_task(session.pop_item())
    await asyncio.sleep(0)
    popping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await popping
    assert await session.get_items() == []


async def test_a_cancelled_write_that_fails_reports_the_cancellation() -> None:
    from agent_state_client.integrations.openai_agents import _settled

    started, failing = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def write() -> None:
        started.set()
        await failing.wait()
        finished.append("ran to its end")
        raise RuntimeError("the write failed")

    task = asyncio.create_task(_settled(write()))
    await started.wait()
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    failing.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["ran to its end"]


async def test_a_cleared_session_is_gone_and_starts_again_empty(
    make_session: MakeSession, client: AsyncClient
) -> None:
    session = make_session()
    await session.add_items([said("secret")])
    await session.clear_session()
    with pytest.raises(ConversationNotFound):
        await client.describe_conversation(session.conversation_id)
    assert await session.get_items() == []
    await session.add_items([said("fresh")])
    assert contents(await session.get_items()) == ["fresh"]
    conversation = await client.describe_conversation(session.conversation_id)
    assert conversation.labels[SESSION_LABEL] == session.session_id


def test_it_serves_from_several_event_loops(make_session: MakeSession) -> None:
    session = make_session()
    adds = [functools.partial(session.add_items, [said(f"t{i}")]) for i in range(4)]
    assert run_each_in_a_thread(adds) == []
    assert sorted(contents(asyncio.run(session.get_items()))) == ["t0", "t1", "t2", "t3"]


# --- compaction ----------------------------------------------------------------------


def compactor(output: list[dict[str, Any]]) -> MagicMock:
    """An OpenAI client whose responses.compact answers `output`."""
    openai = MagicMock()
    openai.responses.compact = AsyncMock(return_value=SimpleNamespace(output=output))
    return openai


SUMMARY = {"type": "compaction", "id": "cmp", "encrypted_content": "summary"}


async def test_manual_compaction_replaces_the_history(make_session: MakeSession) -> None:
    session = make_session()
    await session.add_items([said(f"m{i}") for i in range(5)])
    compacting = OpenAIResponsesCompactionSession(
        session.session_id, session, client=compactor([SUMMARY])
    )
    await compacting.run_compaction({"force": True, "compaction_mode": "input"})
    assert await session.get_items() == [SUMMARY]


async def test_a_suffix_replacement_stands_down_for_a_write_in_between(
    make_session: MakeSession,
) -> None:
    intruder = "appended by another process meanwhile"
    session = make_session()
    await session.add_items([said(f"m{i}") for i in range(4)])
    snapshot = await session._get_compaction_snapshot(10)
    assert snapshot is not None
    assert snapshot.complete
    assert contents(snapshot.items) == ["m0", "m1", "m2", "m3"]

    # The write lands between our append of the summary and our delete.
    original_append = session._append

    async def append_then_intrude(*args: Any, **kwargs: Any) -> Any:
        appended = await original_append(*args, **kwargs)
        await make_session().add_items([said(intruder)])
        return appended

    session._append = append_then_intrude  # type: ignore[method-assign]
    replaced = await snapshot.replace_suffix(2, [cast(TResponseInputItem, SUMMARY)])
    assert replaced is False
    assert contents(await make_session().get_items()) == ["m0", "m1", "m2", "m3", intruder]


async def test_a_suffix_replacement_keeps_the_prefix(make_session: MakeSession) -> None:
    session = make_session()
    await session.add_items([said(f"m{i}") for i in range(4)])
    snapshot = await session._get_compaction_snapshot(3)
    assert snapshot is not None
    assert not snapshot.complete
    assert await snapshot.replace_suffix(1, [cast(TResponseInputItem, SUMMARY)]) is True
    assert await session.get_items() == [said("m0"), said("m1"), SUMMARY]
    # The snapshot's version is gone: a second use stands down.
    assert await snapshot.replace_suffix(1, []) is False


# --- a real Runner loop, offline ---------------------------------------------------------


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("runner", ["run", "run_streamed"])
async def test_a_runner_loop_with_tool_calls_keeps_its_history(
    runner: str, make_session: MakeSession, client: AsyncClient
) -> None:
    session = make_session()
    model = ScriptedModel()
    agent = Agent(name="forecaster", model=model, tools=[weather])

    async def turn(text: str) -> Any:
        if runner == "run":
            return (await Runner.run(agent, text, session=session)).final_output
        streamed = Runner.run_streamed(agent, text, session=session)
        async for _ in streamed.stream_events():
            pass
        return streamed.final_output

    model.enqueue([function_call("weather", {"city": "Paris"}, call_id="call-1")])
    model.enqueue([assistant_message("Sunny in Paris.")])
    assert await turn("Weather in Paris?") == "Sunny in Paris."
    model.enqueue([assistant_message("You asked about Paris.")])
    assert await turn("What did I ask?") == "You asked about Paris."

    # The second turn's model call saw the first turn, read back from the server.
    assert [item.get("type", "message") for item in model.calls[-1].input] == [
        "message", "function_call", "function_call_output", "message", "message"
    ]  # fmt: skip
    stored = (await client.context(session.conversation_id)).messages
    assert [(message.role, message.kind) for message in stored] == [
        (Role.USER, "message"),
        (Role.ASSISTANT, "function_call"),
        (Role.TOOL, "function_call_output"),
        (Role.ASSISTANT, "message"),
        (Role.USER, "message"),
        (Role.ASSISTANT, "message"),
    ]
    output = json.loads(stored[2].text or "")
    assert output["call_id"] == "call-1"
    assert "sunny in Paris" in output["output"]


def test_run_sync_uses_the_session_from_its_own_loop(make_session: MakeSession) -> None:
    session = make_session()
    model = ScriptedModel()
    agent = Agent(name="sync", model=model)
    model.enqueue([assistant_message("first")])
    assert Runner.run_sync(agent, "one", session=session).final_output == "first"
    model.enqueue([assistant_message("second")])
    assert Runner.run_sync(agent, "two", session=session).final_output == "second"
    assert contents(asyncio.run(session.get_items()))[::2] == ["one", "two"]


# --- what each call costs ---------------------------------------------------------------


async def test_each_call_makes_the_rpcs_it_documents(
    make_session: MakeSession, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    caller = client._caller
    original = caller.call

    async def counting(options: Any, rpc: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(rpc.name)
        return await original(options, rpc, *args, **kwargs)

    monkeypatch.setattr(caller, "call", counting)
    session = make_session()

    async def rpcs(call: Any) -> list[str]:
        made.clear()
        await call
        return list(made)

    assert await rpcs(session.add_items([])) == []
    # The append that creates the conversation also names it after the session.
    assert await rpcs(session.add_items([said("a"), said("b")])) == [
        "AppendConversationMessages", "UpdateConversation"
    ]  # fmt: skip
    assert await rpcs(session.add_items([said("c")])) == ["AppendConversationMessages"]
    assert await rpcs(session.get_items()) == ["ListConversationMessages"]
    assert await rpcs(session.get_items(limit=2)) == ["TailConversationMessages"]
    assert await rpcs(session.get_items(limit=0)) == []
    assert await rpcs(session.pop_item()) == [
        "TailConversationMessages", "DeleteConversationMessagesRange"
    ]  # fmt: skip
    assert await rpcs(session.clear_session()) == ["DeleteConversation"]
