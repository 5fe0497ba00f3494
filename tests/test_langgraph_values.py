"""Values a call hands back to a LangGraph graph (a tool's result, a model's reply) come back as the
call returned them, live and replayed, though JSON cannot hold them (`agentspan_langgraph._codec`)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, interrupt
from pydantic import BaseModel

import agentspan
from agentspan_langgraph import AgentspanSaver
from agentspan_langgraph._codec import from_json, to_exact_json, to_json


@pytest.fixture(autouse=True)
def _home(home):
    yield home


class Weather(BaseModel):
    city: str
    temp: float


class Profile(BaseModel):
    name: str
    tier: int


ODD = {"when": datetime.datetime(2024, 1, 2, 3, 4, 5), "raw": b"\x89PNG\x00", "tags": {"a"},
       "pair": ("k", 1), "weather": Weather(city="Oslo", temp=21.5), 7: "int key", "nan": float("nan")}


def test_the_exact_form_revives_what_json_cannot_hold_and_keeps_a_readable_form():
    revived = from_json(to_exact_json(ODD))
    expected = {**ODD, "pair": ["k", 1]}  # a tuple comes back a list, as from LangGraph's own checkpoints
    assert {k: v for k, v in revived.items() if k != "nan"} == {k: v for k, v in expected.items() if k != "nan"}
    assert revived["nan"] != revived["nan"]  # NaN, not null
    message = AIMessage(content="x", additional_kwargs={"parsed": Weather(city="Oslo", temp=1.0)})
    assert from_json(to_exact_json(message)).additional_kwargs["parsed"] == Weather(city="Oslo", temp=1.0)
    exact = to_exact_json({"weather": Weather(city="Oslo", temp=21.5)})
    assert exact["weather"]["json"] == {"city": "Oslo", "temp": 21.5}  # what the trail shows
    assert to_json({"weather": Weather(city="Oslo", temp=21.5)}) == {"weather": {"city": "Oslo", "temp": 21.5}}
    plain = {"a": [1, "b", None, True, 2.5]}
    assert to_exact_json(plain) == plain  # JSON stays as it is


calls: list[str] = []


class StructuredModel(BaseChatModel):
    """Replies as langchain-openai's structured output does: the parsed object in ``additional_kwargs``."""

    @property
    def _llm_type(self) -> str:
        return "structured"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        calls.append("model")
        weather = Weather(city="Oslo", temp=21.5)
        message = AIMessage(content=weather.model_dump_json(), additional_kwargs={"parsed": weather})
        return ChatResult(generations=[ChatGeneration(message=message)])


def asks_then_waits(state: MessagesState) -> dict[str, Any]:
    reply = StructuredModel().invoke(state["messages"])
    confirmed = interrupt({"confirm": reply.additional_kwargs["parsed"].city})
    return {"messages": [AIMessage(content=f"{reply.additional_kwargs['parsed'].temp} {confirmed}")]}


@pytest.mark.parametrize("saver", ["memory", "agentspan"])
def test_a_model_reply_holding_an_object_replays_when_an_interrupted_node_resumes(saver):
    """(was: ``NotImplementedError`` on every resume: the reply's journaled form could not be loaded)"""
    calls.clear()
    builder = StateGraph(MessagesState)
    builder.add_node("ask", asks_then_waits)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    graph = builder.compile(checkpointer=InMemorySaver() if saver == "memory" else AgentspanSaver())
    config = {"configurable": {"thread_id": "t"}}
    assert graph.invoke({"messages": [HumanMessage("weather?")]}, config)["__interrupt__"]
    assert graph.invoke(Command(resume="yes"), config)["messages"][-1].content == "21.5 yes"
    assert calls == (["model", "model"] if saver == "memory" else ["model"])  # ours: replayed, not made again


effects: list[str] = []


@tool(response_format="content_and_artifact")
def fetch_file(name: str) -> tuple[str, Any]:
    """Fetches a file."""
    effects.append(f"fetch {name}")
    return "fetched", {"when": datetime.datetime(2024, 1, 2, 3, 4, 5), "raw": b"\x00\x01", "tags": {"a"}}


@tool
def set_profile(name: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Sets the user's profile."""
    effects.append(f"profile {name}")
    return Command(update={"profile": Profile(name=name, tier=2), "tags": {"vip"},
                           "messages": [ToolMessage("ok", tool_call_id=tool_call_id)]})


class ProfileState(MessagesState):
    profile: Profile | None
    tags: set
    artifact: Any


def calls_tools(state: ProfileState) -> dict[str, Any]:
    return {"messages": [AIMessage(content="", tool_calls=[
        {"name": "set_profile", "args": {"name": "ann"}, "id": "c1"},
        {"name": "fetch_file", "args": {"name": "a.png"}, "id": "c2"}])]}


def reads_them(state: ProfileState) -> dict[str, Any]:
    artifact = next(m.artifact for m in state["messages"] if isinstance(m, ToolMessage) and m.name == "fetch_file")
    return {"artifact": artifact}


def profile_graph(saver: Any) -> Any:
    builder = StateGraph(ProfileState)
    builder.add_node("caller", calls_tools)
    builder.add_node("tools", ToolNode([set_profile, fetch_file]))
    builder.add_node("reads", reads_them)
    builder.add_edge(START, "caller")
    builder.add_edge("caller", "tools")
    builder.add_edge("tools", "reads")
    builder.add_edge("reads", END)
    return builder.compile(checkpointer=saver)


def test_tool_results_reach_the_graph_as_the_tools_returned_them():
    """A ``Command`` update holding a pydantic model and a set, and an artifact holding a datetime
    and bytes: as under LangGraph's own saver (was: a dict and a list, and ``NotImplementedError``
    for the artifact, after the tool had run)."""
    effects.clear()
    start = {"messages": [HumanMessage("hi")], "profile": None, "tags": set(), "artifact": None}
    expected = profile_graph(InMemorySaver()).invoke(start, {"configurable": {"thread_id": "m"}})
    result = profile_graph(AgentspanSaver()).invoke(start, {"configurable": {"thread_id": "a"}})
    assert result["profile"] == expected["profile"] == Profile(name="ann", tier=2)
    assert result["tags"] == expected["tags"] == {"vip"}
    assert result["artifact"] == expected["artifact"]
    assert sorted(effects) == ["fetch a.png", "fetch a.png", "profile ann", "profile ann"]
    (run,) = [r for r in agentspan.get_store().list_runs(limit=10)]
    assert run.status is agentspan.RunStatus.COMPLETED


def test_a_class_another_process_could_not_import_keeps_its_json_form_only():
    """A class of ``__main__`` or defined in a function would come back as the serializer's raw
    data in a process resuming the run (was: the live run had the object, the resumed one other
    data, and the run diverged): its JSON form, live and replayed alike."""
    class Local(BaseModel):
        tier: str

    value = {"profile": Local(tier="gold"), "seen": {Local(tier="x").tier}}
    assert from_json(to_exact_json(value)) == {"profile": {"tier": "gold"}, "seen": {"x"}}
    assert to_exact_json(value)["profile"] == to_json(value)["profile"]  # no serializer form to differ by process
    main_class = type("Tier", (BaseModel,), {"__module__": "__main__", "__annotations__": {"name": str}})
    assert to_exact_json({"tier": main_class(name="gold")}) == {"tier": {"name": "gold"}}


def test_the_exact_form_of_bytes_costs_their_base64_once():
    raw = bytes(range(256)) * 4096  # 1 MiB
    import json
    for value in ({"image": raw}, {1: {"x": {2: raw}}}, [raw, {raw}]):
        size = len(json.dumps(to_exact_json(value)))
        copies = 2 if isinstance(value, list) else 1
        assert size < copies * len(raw) * 1.34 + 1000, size  # was: up to 7x, a copy per level and its text
        assert from_json(to_exact_json(value)) == value
