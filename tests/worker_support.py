"""``worker_support:AGENT`` for ``agentspan worker`` child processes: an agent with a slow sync tool
(``SLOW`` seconds, from the environment) whose starts, ends and model calls are logged in
AGENTSPAN_HOME (`crash_support.log`), so a test counts them across processes."""

from __future__ import annotations

import os
import time
from typing import Any

from agents import Agent, function_tool

from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from crash_support import log


@function_tool
def slow_step(n: int) -> str:
    """A step that takes a while."""
    log("tool", f"start {n}")
    time.sleep(float(os.environ.get("SLOW", "0")))
    log("tool", f"end {n}")
    return f"step {n} done"


def agent() -> Agent[Any]:
    turns = [ToolCall("slow_step", {"n": 1}), ToolCall("slow_step", {"n": 2}), "both steps done"]
    return Agent(name="slow", instructions="Do the steps.", tools=[slow_step],
                 model=ScriptedModel(turns, name="m", on_call=lambda index: log("model", f"call {index}")))


def __getattr__(name: str) -> Any:
    if name == "AGENT":
        return agent()
    raise AttributeError(name)
