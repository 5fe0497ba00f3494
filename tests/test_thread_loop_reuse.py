"""`agentspan.run` keeps its thread's event loop open for the next run (as openai-agents'
``Runner.run_sync`` does) after finalizing the run's async generators: the next run, of any
framework, has its own async generators tracked and finalized as on a new loop. Before, every
async generator an ADK or LangGraph run started on a thread after a first run warned
"asynchronous generator ... was scheduled after loop.shutdown_asyncgens() call" and was never
finalized (an ADK run: ~50 of them)."""

from __future__ import annotations

import gc
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from google.adk.agents import LlmAgent

import agentspan
from agentspan_adk.testing import ScriptedLlm

from lg_support import counter_graph, counter_input


def _late_generators(run: Callable[[], Any], times: int = 3) -> list[str]:
    """Runs ``run`` ``times`` times on a thread of its own; returns the warnings about async
    generators started after the loop's ``shutdown_asyncgens``."""
    found: list[str] = []

    def runs() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(times):
                run()
        found.extend(str(w.message) for w in caught
                     if issubclass(w.category, ResourceWarning) and "shutdown_asyncgens" in str(w.message))

    gc.collect()
    thread = threading.Thread(target=runs)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return found


@pytest.mark.usefixtures("home")
def test_adk_runs_one_after_another_on_a_thread_finalize_their_async_generators() -> None:
    def adk() -> None:
        assert agentspan.run(LlmAgent(name="a", model=ScriptedLlm(model="m", turns=["hi"])), "x").text == "hi"

    assert _late_generators(adk) == []


@pytest.mark.usefixtures("home")
def test_langgraph_runs_one_after_another_on_a_thread_finalize_their_async_generators() -> None:
    assert _late_generators(lambda: agentspan.run(counter_graph(2), counter_input())) == []
