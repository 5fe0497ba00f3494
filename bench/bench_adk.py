"""Overhead of durable Google ADK runs: plain Runner vs `AgentspanPlugin` vs DBOS's ADK plugin.

Run with ``uv run python bench/bench_adk.py [--turns 50] [--repeats 5]``.

One run is ``--turns`` model calls against a zero-latency `agentspan_adk.testing.ScriptedLlm`: every
turn but the last asks for one ``add(a, b)`` function-tool call, the last returns the final text. A durable
variant therefore journals ``2 * turns - 1`` calls (one per model call, one per tool call). The
variants run interleaved round-robin in one process and one event loop, after one untimed warm-up
run each (which also checks what was journaled); the median per variant is reported:

1. ``Runner.run_async`` with no plugin (plain ADK, nothing journaled);
2. the same with ``plugins=[AgentspanPlugin()]``, embedded SQLite store, durability "normal"
   (WAL, synchronous=NORMAL) and "full" (WAL, synchronous=FULL: power-loss safe);
3. the same with ``plugins=[DBOSPlugin()]`` (dbos-google-adk) inside a ``@DBOS.workflow()``,
   SQLite system database, the tool also a ``@DBOS.step()`` so both journal the same calls. DBOS is
   launched once and reused (fresh workflow ids), as a long-lived app process would.

Every run gets a new agent, model (its call counter starts at 0), Runner and in-memory session,
all made before the clock starts. Each durability has one store file that all its runs share
(as all DBOS runs share its system database), held open between runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.plugins import BasePlugin
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.genai import types

import agentspan
import agentspan.config
from agentspan_adk import AgentspanPlugin
from agentspan_adk.testing import Call, ScriptedLlm

from bench_support import (
    Clock,
    Column,
    EmbeddedHomes,
    destroy_dbos,
    framework_bench_args,
    machine,
    ok,
    print_markdown_table,
    print_variant_table,
    run_rounds,
    summarize,
)

PROMPT = "Add up the numbers, one call at a time."
FINAL = "done"
APP = "bench"
TARGET_RATIO_OF_DBOS = 0.1
"""Ours may add at most this fraction of what DBOS adds per journaled call."""

logging.getLogger("opentelemetry.context").setLevel(logging.CRITICAL)  # ADK/OTel noise, see dbos-google-adk


def script(turns: int) -> list[str | Call]:
    """``turns - 1`` ``add`` calls (stable call ids), then the final text."""
    return [Call("add", {"a": i, "b": 1}, id=f"call-{i}") for i in range(turns - 1)] + [FINAL]


async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def prepared(turns: int, tool: Callable[..., Any], plugins: list[BasePlugin]) -> tuple[Runner, str]:
    """A new agent, model, Runner and session (made before any clock starts)."""
    agent = LlmAgent(name="calc", instruction="Add numbers.", tools=[tool], model=ScriptedLlm(turns=script(turns)))
    runner = Runner(app=App(name=APP, root_agent=agent, plugins=plugins), session_service=InMemorySessionService())
    session = await runner.session_service.create_session(app_name=APP, user_id="u")
    return runner, session.id


async def drive(runner: Runner, session_id: str) -> str:
    """Runs one invocation to the end; returns the final text."""
    message = types.Content(role="user", parts=[types.Part(text=PROMPT)])
    final = ""
    async for event in runner.run_async(user_id="u", session_id=session_id, new_message=message):
        if event.is_final_response() and event.content and event.content.parts:
            final = event.content.parts[0].text or ""
    return final


class Bench:
    """Holds the variants and the state they share across runs."""

    def __init__(self, turns: int, tmp_root: Path) -> None:
        self.turns = turns
        self.tmp_root = tmp_root
        self.journaled = 2 * turns - 1
        self.dbos_ready = False
        self._dbos_runner: Runner | None = None
        self.stores = EmbeddedHomes(tmp_root)

    # -- variants: each times one measured run ------------------------------------------------

    async def plain(self, *, check: bool = False) -> Clock:
        runner, session_id = await prepared(self.turns, add, [])
        with Clock() as clock:
            final = await drive(runner, session_id)
        assert final == FINAL, final
        if check:
            assert runner.agent.model.calls == self.turns  # type: ignore[union-attr]
        return clock

    async def agentspan_plugin(self, durability: str, *, check: bool = False) -> Clock:
        store = self.stores.configure(durability)
        runner, session_id = await prepared(self.turns, add, [AgentspanPlugin()])
        with Clock() as clock:
            final = await drive(runner, session_id)
        assert final == FINAL, final
        if check:
            (run,) = [r for r in store.list_runs(limit=1000) if r.session_id == session_id]
            assert run.status is agentspan.RunStatus.COMPLETED, run.status
            steps = store.list_steps(run.id)
            assert len(steps) == self.journaled, len(steps)
            assert runner.agent.model.calls == self.turns  # type: ignore[union-attr]
        return clock

    async def normal(self, *, check: bool = False) -> Clock:
        return await self.agentspan_plugin("normal", check=check)

    async def full(self, *, check: bool = False) -> Clock:
        return await self.agentspan_plugin("full", check=check)

    def setup_dbos(self) -> None:
        """Configures, registers and launches DBOS once, on a SQLite system database."""
        from dbos import DBOS

        home = Path(tempfile.mkdtemp(prefix="dbos-", dir=self.tmp_root))
        DBOS(config={"name": "agentspan-bench-adk", "system_database_url": f"sqlite:///{home}/dbos.sqlite",
                     "log_level": "WARNING"})

        @DBOS.step()
        async def dbos_add(a: int, b: int) -> int:
            """Add two numbers."""
            return a + b

        dbos_add.__name__ = "add"  # the name the model calls
        self._dbos_tool = dbos_add

        @DBOS.workflow()
        async def agent_workflow(session_id: str) -> str:  # workflow arguments are pickled: no Runner here
            assert self._dbos_runner is not None
            return await drive(self._dbos_runner, session_id)

        self._dbos_workflow = agent_workflow
        DBOS.launch()
        logging.getLogger("dbos").setLevel(logging.WARNING)
        self.dbos_ready = True

    async def dbos(self, *, check: bool = False) -> Clock:
        from dbos import DBOS, SetWorkflowID
        from dbos_google_adk import DBOSPlugin

        runner, session_id = await prepared(self.turns, self._dbos_tool, [DBOSPlugin()])
        self._dbos_runner = runner
        workflow_id = f"bench-{uuid.uuid4()}"
        with Clock() as clock, SetWorkflowID(workflow_id):
            final = await self._dbos_workflow(session_id)
        assert final == FINAL, final
        if check:
            steps = await DBOS.list_workflow_steps_async(workflow_id, load_output=False)
            assert len(steps) == self.journaled, len(steps)
            assert runner.agent.model.calls == self.turns  # type: ignore[union-attr]
        return clock

    def teardown_dbos(self) -> None:
        if self.dbos_ready:
            destroy_dbos()
            self.dbos_ready = False


def main() -> None:
    args = framework_bench_args(__doc__, default_turns=50)
    started = time.perf_counter()

    tmp_root = Path(tempfile.mkdtemp(prefix="agentspan-bench-adk-", dir=args.tmp))
    bench = Bench(args.turns, tmp_root)
    plain_name, dbos_name = "plain Runner", "DBOSPlugin (SQLite)"
    normal_name, full_name = "AgentspanPlugin normal", "AgentspanPlugin full"
    variants: dict[str, Callable[..., Awaitable[Clock]]] = {
        plain_name: bench.plain, normal_name: bench.normal, full_name: bench.full}
    loop = asyncio.new_event_loop()
    try:
        if not args.no_dbos:
            bench.setup_dbos()
            variants[dbos_name] = bench.dbos
        for fn in variants.values():  # untimed warm-up that also checks what was journaled
            loop.run_until_complete(fn(check=True))
        bench.stores.forget_open_times()
        clocks = run_rounds({name: lambda fn=fn: loop.run_until_complete(fn()) for name, fn in variants.items()},
                            args.repeats)
    finally:
        bench.teardown_dbos()
        loop.close()
        bench.stores.close()
        shutil.rmtree(tmp_root, ignore_errors=True)

    calls = bench.journaled
    summary = summarize(clocks, plain_name, calls)
    median, added, cpu_added = summary.median, summary.added, summary.cpu_added

    print(f"\n{args.turns} turns per run ({args.turns - 1} tool calls + final text, zero-latency scripted "
          f"BaseLlm) = {calls} journaled calls; {args.repeats} interleaved repeats, median per variant")
    print(f"{machine()} (shared machine: expect noise)")
    print_variant_table(summary, 26, [Column("+ms/call", 9, added.__getitem__),
                                      Column("paired", 7, summary.paired.__getitem__),
                                      Column("cpu", 7, cpu_added.__getitem__)])
    print(f"+ms/call = (median - plain median) / {calls} journaled calls. Noise cross-checks, same unit:\n"
          "paired = median over rounds of (run - same round's plain run); cpu = on process CPU time (all\n"
          "threads, so not the fsync waits). DBOS's SQLite system db uses the default rollback journal with\n"
          "synchronous=FULL (power-loss safe), so its like-for-like agentspan variant is durability=full.")
    bench.stores.print_open_times()
    print(f"total bench wall time: {time.perf_counter() - started:.1f} s")

    rows = [("Plain ADK Runner per journaled-call slot", f"{median[plain_name] / calls:.3f} ms", "", ""),
            ("AgentspanPlugin added per journaled call, normal / full",
             f"{added[normal_name]:.3f} / {added[full_name]:.3f} ms", "", "")]
    if dbos_name in added:
        dbos = added[dbos_name]
        rows.append(("DBOSPlugin (dbos-google-adk, SQLite) added per journaled call", f"{dbos:.3f} ms", "", ""))
        for name, label in ((normal_name, "normal"), (full_name, "full")):
            ratio = added[name] / dbos if dbos > 0 else float("inf")
            rows.append((f"Ours ({label}) / DBOS added time per journaled call", f"{ratio:.3f}×",
                         f"≤ {TARGET_RATIO_OF_DBOS}×", ok(ratio, TARGET_RATIO_OF_DBOS)))
        dbos_cpu = cpu_added[dbos_name]
        rows.append(("Same on process CPU time (no fsync waits), normal / full",
                     f"{cpu_added[normal_name] / dbos_cpu:.3f}× / {cpu_added[full_name] / dbos_cpu:.3f}×"
                     if dbos_cpu > 0 else "n/a", "", ""))
    print(f"\n<!-- bench/bench_adk.py --turns {args.turns} --repeats {args.repeats}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} shared CPUs -->")
    print_markdown_table(rows)


if __name__ == "__main__":
    main()
