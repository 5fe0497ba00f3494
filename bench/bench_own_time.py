"""Agentspan's own time per turn inside an ``agentspan.run``: a low-noise measure for hot-path changes.

Run with ``uv run python bench/bench_own_time.py [--turns 100] [--runs 20] [--processes 3]``.

``bench_openai_agents.py`` measures what users see (a run's wall time against the plain runner), but
on this VM the same code measures 0.2 to 0.6 ms per turn from one process to the next, more than
most changes to the hot path move it. This bench times only the code between the SDK and the
calls it makes, inside the same 100-turn run (a zero-latency `ScriptedModel`, one ``add`` tool call
per turn, the embedded SQLite store, durability "normal"):

- **model**: the adapter's model wrapper (`JournalingModel.get_response`) minus the wrapped model's
  own ``get_response``: keys, the conversation hash, the step records, the response's JSON, the
  step write;
- **tool**: the adapter's tool wrapper minus the SDK's own ``on_invoke_tool`` of the tool: the
  arguments' hash, the step records, the step write;
- **writes**: of those, the time in `SqliteStore.record_step` (the two step writes of a turn: their
  hand-off to the store's helper process, `agentspan.stores.step_writer`, once it runs; commits
  before that). The wait for the helper's commits is in model and tool (`Store.wait_durable`).

It wraps two internals of the adapter to time them (`JournalingModel.get_response` and the tools
`AgentWrapper.tool` makes); the timing costs ~1 µs per call. Everything the SDK does because
Agentspan is there (it calls the same code as without it), and the after-effects of that work on
the SDK's own (caches: what runs between two of our calls evicts what we use, so our code runs
about 4x slower than in a loop), are not in these numbers: they are in ``bench_openai_agents.py``'s.
The medians of 3 processes agree within about 10% here.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents import FunctionTool

import agentspan
import agentspan.config
from agentspan.records import Step, StepResult
from agentspan.stores.sqlite import SqliteStore
from agentspan_openai_agents import _model, _wrap
from agentspan_openai_agents.testing import ScriptedModel

from bench_openai_agents import FINAL, PROMPT, add, make_agent
from bench_support import child_bench_args, child_measurements, machine

Timed = dict[str, int]  # what -> ns in the current run


def _timed_async(fn: Callable[..., Any], into: Timed, what: str) -> Callable[..., Any]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return await fn(*args, **kwargs)
        finally:
            into[what] += time.perf_counter_ns() - started

    return timed


def instrument(into: Timed) -> FunctionTool:
    """Wraps the adapter's model and tool wrappers, the scripted model and the store's step write
    (for this process); returns the ``add`` tool with its SDK call timed."""
    ScriptedModel.get_response = _timed_async(ScriptedModel.get_response, into, "model_inner")  # type: ignore[method-assign]
    _model.JournalingModel.get_response = _timed_async(  # type: ignore[method-assign]
        _model.JournalingModel.get_response, into, "model_outer")
    wrap_tool = _wrap.AgentWrapper.tool

    def tool(self: _wrap.AgentWrapper, original: FunctionTool) -> FunctionTool:
        wrapped = wrap_tool(self, original)
        timed = _timed_async(wrapped.on_invoke_tool, into, "tool_outer")
        # the SDK reads the context's type off the wrapper's signature and annotations
        timed.__annotations__ = wrapped.on_invoke_tool.__annotations__
        timed.__signature__ = wrapped.on_invoke_tool.__signature__  # type: ignore[attr-defined]
        wrapped.on_invoke_tool = timed
        return wrapped

    _wrap.AgentWrapper.tool = tool  # type: ignore[method-assign]
    record_step = SqliteStore.record_step

    def timed_record_step(self: SqliteStore, step: Step, result: StepResult, *, epoch: int) -> None:
        started = time.perf_counter_ns()
        try:
            record_step(self, step, result, epoch=epoch)
        finally:
            into["writes"] += time.perf_counter_ns() - started

    SqliteStore.record_step = timed_record_step  # type: ignore[method-assign]
    # The SDK's invoker is a callable object without annotations: the SDK's default context either way.
    return dataclasses.replace(add, on_invoke_tool=_timed_async(add.on_invoke_tool, into, "tool_inner"))


def measure(turns: int, runs: int) -> dict[str, float]:
    """One process: ``runs`` timed runs after 4 warm-up runs; medians in µs per turn."""
    into: Timed = dict.fromkeys(("model_inner", "model_outer", "tool_inner", "tool_outer", "writes"), 0)
    tool = instrument(into)
    store = SqliteStore(Path(tempfile.mkdtemp(prefix="as-own-")) / "journal.db", durability="normal",
                        defer_step_sync=True)
    agentspan.config._store = store  # as `EmbeddedHomes.configure`
    rows: list[dict[str, float]] = []
    for index in range(4 + runs):
        for what in into:
            into[what] = 0
        result = agentspan.run(make_agent(turns, tool), PROMPT, max_turns=max(200, 2 * turns))
        assert result.final_output == FINAL, result.final_output
        if index >= 4:
            model = (into["model_outer"] - into["model_inner"]) / turns / 1e3
            tool_own = (into["tool_outer"] - into["tool_inner"]) / turns / 1e3
            rows.append({"model": model, "tool": tool_own, "total": model + tool_own,
                         "writes": into["writes"] / turns / 1e3})
    agentspan.config.reset()
    store.close()
    return {what: statistics.median(row[what] for row in rows) for what in rows[0]}


def main() -> None:
    args = child_bench_args(__doc__, "runs", "timed runs per process")
    if args.one:
        print(json.dumps(measure(args.turns, args.runs)))
        return
    print(f"{args.turns} turns per run, {args.runs} timed runs per process; {machine()}")
    print("Agentspan's own time per turn inside agentspan.run (µs): model wrapper + tool wrapper (store writes)")

    def describe(row: dict[str, float]) -> str:
        return (f"model {row['model']:.1f} + tool {row['tool']:.1f} = {row['total']:.1f} µs per turn "
                f"(store writes {row['writes']:.1f})")

    child_measurements(__file__, args, "runs", describe)


if __name__ == "__main__":
    main()
