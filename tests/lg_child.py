"""Child process for LangGraph crash tests: ``python lg_child.py start|resume|serve RUN_ID GRAPH``.

GRAPH names a graph of `lgr_support` (``support``, ``review``, ``refunds``). Prints the final
conversation without its random ids as ``FINAL: <json>``. ``direct-start|direct-resume THREAD
GRAPH`` invoke the graph compiled with an ``AgentspanSaver`` directly (``graph.invoke(input)``,
then ``graph.invoke(None)``) on thread THREAD, without ``agentspan.run`` (with ``durability=``
``$LG_DURABILITY`` when set).
"""

from __future__ import annotations

import json
import os
import sys

from langchain_core.messages import HumanMessage

import agentspan
from agentspan_langgraph import AgentspanSaver

import lgr_support

GRAPHS = {"support": lgr_support.support_graph, "review": lgr_support.review_graph,
          "refunds": lgr_support.refund_graph}

if __name__ == "__main__":
    mode, run_id, name = sys.argv[1], sys.argv[2], sys.argv[3]
    graph = GRAPHS[name]()
    if mode.startswith("direct-"):
        graph = graph.copy(update={"checkpointer": AgentspanSaver()})
        given = {"messages": [HumanMessage(lgr_support.PROMPT)]} if mode == "direct-start" else None
        durability = os.environ.get("LG_DURABILITY")  # unset: Agentspan's default, "sync" (LangGraph: "async")
        extra = {"durability": durability} if durability else {}
        result = graph.invoke(given, {"configurable": {"thread_id": run_id}}, **extra)
        if result.get("__interrupt__"):
            print("INTERRUPTED", flush=True)
            sys.exit(0)
    elif mode == "start":
        result = agentspan.run(graph, {"messages": [HumanMessage(lgr_support.PROMPT)]}, run_id=run_id)
    elif mode == "resume":
        result = agentspan.resume(run_id, graph).result(timeout=60)
    else:
        agentspan.serve(graph, max_runs=1)
        result = agentspan.get(run_id).result(timeout=60)
        print("STORED:", json.dumps(result), flush=True)
        sys.exit(0)
    print("FINAL:", json.dumps(lgr_support.plain(result["messages"])), flush=True)
