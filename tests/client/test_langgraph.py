"""AgentStateSaver, the LangGraph checkpointer of the client library,
against the real server on SQLite and PostgreSQL: LangGraph's own
conformance suite (every base and extended capability), compiled graphs
that run on it (blocking and async, with an interrupt resumed after the
server restarts), what a growing message list costs in storage, and
examples/langgraph_checkpointer.py run as it is written."""

from __future__ import annotations

import operator
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import (
    BASE_CAPABILITIES,
    EXTENDED_CAPABILITIES,
)
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from agent_state_client import Client, FailedPrecondition
from agent_state_client.integrations.langgraph import AgentStateSaver
from tests.support.growing_chat import growing_chat, marker, run_config
from tests.support.server import REPO_ROOT, ServerProcess


@pytest.fixture
def saver(live_server: ServerProcess) -> Iterator[AgentStateSaver]:
    with AgentStateSaver.connect(live_server.address) as opened:
        yield opened


async def test_the_conformance_suite_passes_every_capability(
    live_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    @checkpointer_test(name="AgentStateSaver")
    async def on_the_server() -> AsyncIterator[AgentStateSaver]:
        with AgentStateSaver.connect(live_server.address) as opened:
            yield opened

    report = await validate(on_the_server)
    report.print_report()
    results = report.to_dict()["results"]
    every = {capability.value for capability in BASE_CAPABILITIES | EXTENDED_CAPABILITIES}
    assert set(results) == every
    for name in sorted(every):
        result = results[name]
        assert result["detected"], name
        assert result["passed"] is True, (name, result["failures"])
        assert result["tests_failed"] == 0
        assert result["tests_passed"] > 0
    assert report.conformance_level() == "FULL"
    with capsys.disabled():
        print(f"\nconformance on {live_server.database_url.split(':')[0]}: {report.to_dict()}")


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]


def _chat_graph(saver: AgentStateSaver) -> Any:
    """Asks for a name (an interrupt), then greets."""

    def ask(state: Chat) -> dict[str, list[str]]:
        name = interrupt("what is your name?")
        return {"messages": [f"user: {name}"]}

    def greet(state: Chat) -> dict[str, list[str]]:
        return {"messages": [f"bot: hello {state['messages'][-1].removeprefix('user: ')}"]}

    builder = StateGraph(Chat)
    builder.add_node("ask", ask)
    builder.add_node("greet", greet)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "greet")
    builder.add_edge("greet", END)
    return builder.compile(checkpointer=saver)


def test_a_blocking_graph_interrupts_and_resumes(saver: AgentStateSaver) -> None:
    graph = _chat_graph(saver)
    config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
    first = graph.invoke({"messages": ["bot: hi"]}, config)
    assert first["__interrupt__"][0].value == "what is your name?"
    assert graph.get_state(config).next == ("ask",)
    done = graph.invoke(Command(resume="Ada"), config)
    assert done["messages"] == ["bot: hi", "user: Ada", "bot: hello Ada"]
    history = list(graph.get_state_history(config))
    assert [state.metadata["step"] for state in history] == [2, 1, 0, -1]
    assert history[0].values["messages"] == done["messages"]
    # The input is a pending write of the first checkpoint, applied in the next.
    assert history[-1].metadata["source"] == "input"
    assert history[-2].values == {"messages": ["bot: hi"]}


async def test_an_async_graph_runs_and_its_thread_is_erased(saver: AgentStateSaver) -> None:
    graph = _chat_graph(saver)
    thread_id = str(uuid.uuid4())
    config: Any = {"configurable": {"thread_id": thread_id}}
    await graph.ainvoke({"messages": ["bot: hi"]}, config)
    paused = await graph.aget_state(config)
    await graph.ainvoke(Command(resume="Bo"), config)
    assert (await graph.aget_state(config)).values["messages"][-1] == "bot: hello Bo"
    await saver.adelete_thread(thread_id)
    assert (await graph.aget_state(config)).values == {}
    # A write of the erased history (a run that was still going) is refused.
    with pytest.raises(FailedPrecondition):
        await saver.aput_writes(paused.config, [("messages", ["late"])], "task")
    # A new run of the thread starts fresh.
    await graph.ainvoke({"messages": ["bot: again"]}, config)
    assert (await graph.aget_state(config)).values["messages"] == ["bot: again"]


def test_an_interrupted_graph_resumes_after_the_server_restarts(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    server = ServerProcess(make_database_url(), tmp_path / "server.log")
    thread_id = str(uuid.uuid4())
    config: Any = {"configurable": {"thread_id": thread_id}}
    with server, AgentStateSaver.connect(server.address) as saver:
        first = _chat_graph(saver).invoke({"messages": ["bot: hi"]}, config)
        assert first["__interrupt__"][0].value == "what is your name?"
        assert server.terminate() == 0
        server.start_ready()
        # A new process would compile the graph again; the same saver
        # reconnects to the restarted server.
        graph = _chat_graph(saver)
        assert graph.get_state(config).next == ("ask",)
        done = graph.invoke(Command(resume="Cy"), config)
        assert done["messages"] == ["bot: hi", "user: Cy", "bot: hello Cy"]


def test_a_saver_over_a_client_the_caller_keeps(live_server: ServerProcess) -> None:
    with Client(live_server.address) as client:
        graph = _chat_graph(AgentStateSaver(client))
        config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
        graph.invoke({"messages": []}, config)
        assert graph.get_state(config).next == ("ask",)


STEPS = 1000
_TABLES = ("checkpoints", "checkpoint_values", "checkpoint_blobs", "checkpoint_writes")


def _thread_rows(database_url: str, table: str, thread_id: str) -> list[tuple[Any, ...]]:
    """The thread's rows of one of the store's tables, read from the
    database directly."""
    query = f"SELECT * FROM {table} WHERE thread_id = "
    if database_url.startswith("sqlite:"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as lite:
            return lite.execute(query + "?", (thread_id.encode(),)).fetchall()
    with psycopg.connect(database_url) as pg:
        return pg.execute(query + "%s", (thread_id.encode(),)).fetchall()


def _stored_bytes(database_url: str, thread_id: str) -> int:
    """What the thread's rows hold: the bytes of every value of every row."""
    return sum(
        len(value) if isinstance(value, bytes | str) else 8
        for table in _TABLES
        for row in _thread_rows(database_url, table, thread_id)
        for value in row
    )


def test_a_growing_message_list_stores_each_message_once(
    saver: AgentStateSaver, live_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    thread_id = str(uuid.uuid4())
    url = live_server.database_url
    half = STEPS // 2
    growing_chat(saver, half).invoke({"messages": []}, run_config(thread_id, half))
    at_half = _stored_bytes(url, thread_id)
    # The same thread goes on: the graph resumes from its stored state.
    final = growing_chat(saver, STEPS).invoke({"messages": []}, run_config(thread_id, STEPS))
    assert [m.id for m in final["messages"]] == [f"message-{step}" for step in range(STEPS)]
    at_end = _stored_bytes(url, thread_id)

    blobs = [bytes(row[3]) for row in _thread_rows(url, "checkpoint_blobs", thread_id)]
    for step in range(STEPS):
        holding = [data for data in blobs if marker(step).encode() in data]
        assert len(holding) == 1, (step, len(holding))
    message_bytes = sum(len(data) for data in blobs if b"<message " in data)
    # Storage grows with what changed: the second half of the run costs
    # what the first did (a store of whole states would cost three times).
    assert at_end - at_half < 1.25 * at_half
    with capsys.disabled():
        print(
            f"\ncheckpoint storage on {url.split(':')[0]}: {STEPS} steps, "
            f"{at_end / STEPS:.0f} bytes per step stored "
            f"({message_bytes / STEPS:.0f} of them the new message)"
        )


def test_the_example_runs(live_server: ServerProcess, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "langgraph_checkpointer.py")],
        cwd=tmp_path,
        env=dict(os.environ, AGENT_STATE_ADDRESS=live_server.address),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "interrupted: approve the booking?"
    assert "ai: Booked." in lines
    assert "after pruning: 1" in lines
    assert lines[-1] == "after deleting: {}"
