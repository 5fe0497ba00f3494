"""The agent the crash fuzzer (`crash_fuzz`) kills and resumes: a small order-support team.

It exercises most of what a resumed openai-agents run has to get right, in ~11 model calls and 12
tool calls:

* a ``triage`` agent whose turns make parallel tool calls, sync and async alike (``lookup``,
  ``fetch``, ``stats``), in one turn with an agent run as a tool (``researcher``, whose own model
  and ``note`` tool calls are journaled under the tool call's key);
* a tool that needs an approval (``refund``: the run waits until the fuzzer approves it);
* a handoff to a ``closer`` agent that makes more parallel tool calls (``archive``, ``notify``).

Every live side effect is logged (`crash_support.log`, fsynced) to the ``effects`` file of
``AGENTSPAN_HOME`` as ``"<tool> <step key> <pid> <idempotency key>"``, and every live model call to
``model-calls`` as ``"<model> <turn> <step key> <pid>"``, so the fuzzer counts executions across the
processes it killed. Tools and models sleep a random few milliseconds (`seed_latencies`) so that
kills land at different points of different calls. Each final text carries a digest of the input
its model got: a resumed run whose model saw other input than an uncrashed run's ends differently.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from typing import Any

from agents import Agent, ModelResponse, function_tool, set_tracing_disabled
from openai.types.responses import ResponseOutputMessage

import agentspan
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

from crash_support import log

set_tracing_disabled(True)

PROMPT = "Process order 42 end to end."
"""The run's input."""

_latency = random.Random()


def seed_latencies(seed: int) -> None:
    """Seeds the random sleeps of this process's tools and models."""
    _latency.seed(seed)


def _pause(low: float, high: float) -> None:
    time.sleep(_latency.uniform(low, high))


async def _apause(low: float, high: float) -> None:
    await asyncio.sleep(_latency.uniform(low, high))


def record_effect(tool: str) -> None:
    """Logs one live side effect of ``tool`` with the key of the step it runs in (``-`` outside a run)."""
    step = agentspan.current_step()
    key, idempotency_key = (step.key, step.idempotency_key) if step else ("-", "-")
    log("effects", f"{tool} {key} {os.getpid()} {idempotency_key}")


@function_tool
def lookup(order_id: str) -> str:
    """Look up an order (sync)."""
    _pause(0, 0.015)
    record_effect("lookup")
    _pause(0, 0.01)
    return f"lookup({order_id}) ok order {order_id} paid $30"


@function_tool
async def fetch(item: str) -> str:
    """Fetch an item (async)."""
    await _apause(0, 0.015)
    record_effect("fetch")
    await _apause(0, 0.01)
    return f"fetch({item}) ok"


@function_tool
def stats(n: int) -> int:
    """Compute statistics (sync)."""
    _pause(0, 0.01)
    record_effect("stats")
    _pause(0, 0.01)
    return n * 7


@function_tool
@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (sync, needs an approval)."""
    _pause(0, 0.01)
    record_effect("refund")
    _pause(0, 0.01)
    return f"refunded {amount:.2f} on {order_id}"


@function_tool
async def archive(x: int) -> str:
    """Archive a record (async)."""
    await _apause(0, 0.015)
    record_effect("archive")
    await _apause(0, 0.01)
    return f"archived {x}"


@function_tool
def notify(x: int) -> str:
    """Notify the customer (sync)."""
    _pause(0, 0.01)
    record_effect("notify")
    _pause(0, 0.01)
    return f"notified {x}"


@function_tool
def note(topic: str) -> str:
    """Take a note (sync), the researcher agent's tool."""
    _pause(0, 0.01)
    record_effect("note")
    return f"note on {topic}"


class DigestModel(ScriptedModel):
    """A `ScriptedModel` with random latency whose final texts end with a digest of its input.

    Args:
        turns: The scripted responses, in order.
        name: The model's name (``scripted/<name>`` in the trail, ``<name>`` in ``model-calls``).
    """

    def __init__(self, turns: list[Any], name: str) -> None:
        super().__init__(turns, name=name, on_call=self._log_call)

    def _log_call(self, turn: int) -> None:
        step = agentspan.current_step()
        log("model-calls", f"{self.agentspan_model_id.split('/')[-1]} {turn} {step.key if step else '-'} {os.getpid()}")

    async def get_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                           tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any,
                           **kwargs: Any) -> ModelResponse:
        digest = hashlib.sha256(json.dumps([system_instructions, input], sort_keys=True, default=str).encode())
        await _apause(0, 0.005)
        response = await self._answer()
        await _apause(0.005, 0.03)
        for item in response.output:
            if isinstance(item, ResponseOutputMessage):
                item.content[0].text += f" [{digest.hexdigest()[:12]}]"  # type: ignore[union-attr]
        return response


def build() -> Agent[Any]:
    """A fresh agent tree (triage, its researcher tool agent and the closer it hands off to)."""
    researcher = Agent(name="researcher", instructions="Research.", tools=[note], model=DigestModel([
        [ToolCall("note", {"topic": "damage"}, call_id="r0a")],
        "research: damage confirmed",
    ], "res"))
    closer = Agent(name="closer", instructions="Close the case.", tools=[archive, notify], model=DigestModel([
        [ToolCall("archive", {"x": 1}, call_id="c0a"), ToolCall("notify", {"x": 1}, call_id="c0b")],
        [ToolCall("notify", {"x": 2}, call_id="c1a"), ToolCall("archive", {"x": 2}, call_id="c1b"),
         ToolCall("notify", {"x": 3}, call_id="c1c")],
        [ToolCall("archive", {"x": 3}, call_id="c2a")],
        "Case closed",
    ], "clo"))
    return Agent(
        name="triage", instructions="Triage.", handoffs=[closer],
        tools=[lookup, fetch, stats, refund, researcher.as_tool("researcher", "Ask the researcher.")],
        model=DigestModel([
            [ToolCall("lookup", {"order_id": "42"}, call_id="t0a"), ToolCall("fetch", {"item": "a"}, call_id="t0b"),
             ToolCall("stats", {"n": 1}, call_id="t0c")],
            [ToolCall("researcher", {"input": "was it damaged?"}, call_id="t1a"),
             ToolCall("lookup", {"order_id": "43"}, call_id="t1b")],
            [ToolCall("refund", {"order_id": "42", "amount": 30.0}, call_id="t2a")],
            [ToolCall("fetch", {"item": "b"}, call_id="t3a"), ToolCall("stats", {"n": 2}, call_id="t3b")],
            [ToolCall("transfer_to_closer", {}, call_id="t4a")],
        ], "tri"))
