"""Child process for LangGraph crash tests: ``python lg_child.py start|resume|serve RUN_ID GRAPH``.

GRAPH names a graph of `lgr_support` (``support``, ``review``, ``refunds``). Prints the final
conversation without its random ids as ``FINAL: <json>``.
"""

from __future__ import annotations

import json
import sys

from langchain_core.messages import HumanMessage

import agentspan

import lgr_support

GRAPHS = {"support": lgr_support.support_graph, "review": lgr_support.review_graph,
          "refunds": lgr_support.refund_graph}

if __name__ == "__main__":
    mode, run_id, name = sys.argv[1], sys.argv[2], sys.argv[3]
    graph = GRAPHS[name]()
    if mode == "start":
        result = agentspan.run(graph, {"messages": [HumanMessage(lgr_support.PROMPT)]}, run_id=run_id)
    elif mode == "resume":
        result = agentspan.resume(run_id, graph).result(timeout=60)
    else:
        agentspan.serve(graph, max_runs=1)
        result = agentspan.get(run_id).result(timeout=60)
        print("STORED:", json.dumps(result), flush=True)
        sys.exit(0)
    print("FINAL:", json.dumps(lgr_support.plain(result["messages"])), flush=True)
