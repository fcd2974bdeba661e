"""A LangGraph graph whose state is a message list that grows by one
message a step, for the checkpoint storage test and its benchmark
(bench/checkpoint_storage.py): what a thread costs per step is then what
a checkpointer stores beyond the one new message."""

from __future__ import annotations

import random
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

_WORDS = str.split(
    "the a of to and in that it is was for on are as with his they at be this have from or"
    " one had by word but not what all were we when your can said there use an each which she"
    " do how their if will up other about out many then them these so some her would make like"
    " him into time has look two more write go see number no way could people my than first"
    " water been call who oil its now find long down day did get come made may part model"
    " answer tool result query thread graph state step user assistant reply context memory"
)


def text(step: int) -> str:
    """About 200 characters of words, different for each step: text that
    compresses as prose does, not as a repeated filler would."""
    draw = random.Random(step)
    return " ".join(draw.choice(_WORDS) for _ in range(40))


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def marker(step: int) -> str:
    """Text that only message `step` holds."""
    return f"<message {step:05d}>"


def growing_chat(checkpointer: BaseCheckpointSaver[Any], steps: int) -> Any:
    """A compiled graph that, from an empty list, appends one message a
    step (a superstep, so a checkpoint) until the list holds `steps`."""

    def speak(state: Chat) -> dict[str, list[AnyMessage]]:
        step = len(state["messages"])
        message = AIMessage(content=f"{marker(step)} {text(step)}", id=f"message-{step}")
        return {"messages": [message]}

    def more(state: Chat) -> str:
        return "speak" if len(state["messages"]) < steps else END

    builder = StateGraph(Chat)
    builder.add_node("speak", speak)
    builder.add_edge(START, "speak")
    builder.add_conditional_edges("speak", more)
    return builder.compile(checkpointer=checkpointer)


def run_config(thread_id: str, steps: int) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": steps + 10}
