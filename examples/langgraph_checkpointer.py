"""LangGraph on agent-state: a graph that asks a human for approval (an
interrupt), is resumed later, and whose thread is then pruned and erased.

Needs a running server (`agent-state serve`) and
``pip install 'agent-state-client[langgraph]' langgraph``; the server's
address comes from AGENT_STATE_ADDRESS (default 127.0.0.1:50051).

    python examples/langgraph_checkpointer.py
"""

from __future__ import annotations

import os
import uuid
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

from agent_state_client import Client
from agent_state_client.integrations.langgraph import AgentStateSaver

ADDRESS = os.environ.get("AGENT_STATE_ADDRESS", "127.0.0.1:50051")


class Booking(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def propose(state: Booking) -> dict[str, list[AnyMessage]]:
    return {"messages": [AIMessage("I found the Alfama hotel for 120 EUR. Book it?")]}


def approve(state: Booking) -> dict[str, list[AnyMessage]]:
    # Stops the run here until it is resumed with the human's answer.
    answer = interrupt("approve the booking?")
    return {"messages": [HumanMessage(answer)]}


def book(state: Booking) -> dict[str, list[AnyMessage]]:
    last = state["messages"][-1].content
    reply = "Booked." if last == "yes" else "Not booked."
    return {"messages": [AIMessage(reply)]}


def build(saver: AgentStateSaver) -> Any:
    builder = StateGraph(Booking)
    builder.add_node("propose", propose)
    builder.add_node("approve", approve)
    builder.add_node("book", book)
    builder.add_edge(START, "propose")
    builder.add_edge("propose", "approve")
    builder.add_edge("approve", "book")
    builder.add_edge("book", END)
    return builder.compile(checkpointer=saver)


def main() -> None:
    with Client(ADDRESS) as client:
        saver = AgentStateSaver(client)
        graph = build(saver)
        config: Any = {"configurable": {"thread_id": f"booking-{uuid.uuid4()}"}}

        paused = graph.invoke({"messages": [HumanMessage("Find me a hotel in Lisbon.")]}, config)
        print("interrupted:", paused["__interrupt__"][0].value)

        # Later, maybe in another process: the state is on the server.
        done = build(saver).invoke(Command(resume="yes"), config)
        for message in done["messages"]:
            print(f"{message.type}: {message.content}")

        history = list(graph.get_state_history(config))
        print("checkpoints:", len(history))
        saver.prune([config["configurable"]["thread_id"]], strategy="keep_latest")
        print("after pruning:", len(list(graph.get_state_history(config))))
        saver.delete_thread(config["configurable"]["thread_id"])
        print("after deleting:", graph.get_state(config).values)


if __name__ == "__main__":
    main()
