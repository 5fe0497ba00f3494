"""Child process of the crash fuzzer: ``python fuzz_child.py MODE RUN_ID LATENCY_SEED``.

Runs the `fuzz_agent` team in one of four ways, then prints ``SUMMARY: <json>`` (`summarize`):

* ``start``: ``agentspan.run(agent, PROMPT, run_id=RUN_ID)``, the run's first process;
* ``resume``: ``agentspan.resume(RUN_ID, agent).result()``, after a crash;
* ``serve``: ``agentspan.serve(agent, max_runs=1)`` until the run has ended (a worker takes over a
  run whose owner died, and takes a run up again once its approval is decided); the summary has
  the stored output only, as the worker holds no `RunResult`;
* ``plain``: the SDK's own ``Runner.run_sync`` (no Agentspan run; RUN_ID is ignored), what an
  uncrashed durable run must look like to its caller.

The store is the one ``AGENTSPAN_HOME`` names; ``AGENTSPAN_STEP_HELPER`` says whether its step
writer helper process commits the steps. LATENCY_SEED seeds the agent's random sleeps.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import fuzz_agent
from agents import Runner, RunResult

import agentspan


def summarize(result: RunResult, mode: str) -> dict[str, Any]:
    """What the caller of a run sees of it: final output, items, last agent, usage, raw responses."""
    usage = result.context_wrapper.usage
    return {
        "final": result.final_output,
        "mode": mode,
        "last_agent": result.last_agent.name,
        "items": [[item.type, getattr(getattr(item, "agent", None), "name", None)] for item in result.new_items],
        "usage": [usage.requests, usage.input_tokens, usage.output_tokens, usage.total_tokens],
        "raw": len(result.raw_responses),
    }


def serve_until_ended(agent: Any, run_id: str) -> dict[str, Any]:
    """Works as ``agentspan.serve(max_runs=1)`` until run ``run_id`` has ended; its stored output."""
    while not agentspan.get(run_id).status().terminal:
        agentspan.serve(agent, max_runs=1)
    return {"final": agentspan.get(run_id).result(timeout=60), "mode": "serve"}


def main(argv: list[str]) -> None:
    """Runs the agent as ``argv`` (MODE RUN_ID LATENCY_SEED) says and prints its summary."""
    mode, run_id, latency_seed = argv[0], argv[1], int(argv[2])
    fuzz_agent.seed_latencies(latency_seed)
    agent = fuzz_agent.build()
    if mode == "start":
        summary = summarize(agentspan.run(agent, fuzz_agent.PROMPT, run_id=run_id), mode)
    elif mode == "resume":
        summary = summarize(agentspan.resume(run_id, agent).result(timeout=60), mode)
    elif mode == "serve":
        summary = serve_until_ended(agent, run_id)
    elif mode == "plain":
        summary = summarize(Runner.run_sync(agent, fuzz_agent.PROMPT), mode)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("SUMMARY:", json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
