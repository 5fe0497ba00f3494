"""``agentspan demo``: a real openai-agents agent on a scripted model, crashed and resumed.

The demo runs offline on the embedded SQLite store: a child process runs the agent and is killed
with SIGKILL mid-run; this process resumes the run at the exact step (completed calls replayed
from the journal), the refund waits for a human approval that another process gives, and the run
finishes. Each tool appends to a side-effect file so you can see nothing ran twice.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from agents import Agent, function_tool, set_tracing_disabled
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import agentspan
import agentspan.errors
from agentspan.records import new_id
from agentspan.stores.base import Store
from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

set_tracing_disabled(True)
console = Console()


def _effects_file() -> Path:
    return agentspan.settings().home / "demo-side-effects.log"


def _effect(line: str) -> None:
    with _effects_file().open("a") as f:
        f.write(line + "\n")


@function_tool
def lookup_order(order_id: str) -> str:
    """Look up an order by id."""
    _effect(f"lookup_order {order_id}")
    return f"order {order_id}: 2 books, paid $30.00, delivered damaged"


@function_tool
@agentspan.tool(approval_required=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (needs a human's approval)."""
    step = agentspan.current_step()
    _effect(f"refund {order_id} {amount} idempotency_key={step.idempotency_key if step else None}")
    return f"refunded ${amount:.2f} on order {order_id}"


def build_agent(latency: float = 0.4) -> Agent:
    """The demo's support agent: look up the order, refund it (approval), answer."""
    model = ScriptedModel(
        [ToolCall("lookup_order", {"order_id": "42"}),
         ToolCall("refund", {"order_id": "42", "amount": 30.0}),
         "Order 42 arrived damaged, so I refunded the $30.00. Sorry about that!"],
        name="support-model", latency=latency)
    return Agent(name="support", instructions="You are a support agent.", tools=[lookup_order, refund],
                 model=model)


def _child(run_id: str) -> None:
    agentspan.run(build_agent(), "My order 42 arrived damaged. Refund it please.", run_id=run_id)


class _ChildProcess:
    """The process that runs the agent until the demo kills it.

    On Linux it is forked from this process (which has openai-agents imported already: a new
    interpreter spends ~3 s importing it) before this process opens the store or starts a thread;
    elsewhere it is ``python -m agentspan_openai_agents.demo child RUN_ID``. Either way a process of
    its own, with its own store connection, killed with a real SIGKILL.
    """

    def __init__(self, run_id: str, env: dict[str, str]) -> None:
        self._forked: multiprocessing.process.BaseProcess | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        if sys.platform.startswith("linux") and threading.active_count() == 1:
            self._forked = multiprocessing.get_context("fork").Process(target=_child, args=(run_id,), daemon=True)
            self._forked.start()
        else:
            self._popen = subprocess.Popen([sys.executable, "-m", "agentspan_openai_agents.demo", "child", run_id],
                                           env=env)

    @property
    def pid(self) -> int | None:
        return self._forked.pid if self._forked is not None else self._popen.pid  # type: ignore[union-attr]

    def running(self) -> bool:
        return self._forked.is_alive() if self._forked is not None else self._popen.poll() is None  # type: ignore[union-attr]

    def kill(self) -> int | None:
        """SIGKILLs the child; returns its exit code (-9)."""
        if self._forked is not None:
            self._forked.kill()
            self._forked.join()
            return self._forked.exitcode
        assert self._popen is not None
        self._popen.send_signal(signal.SIGKILL)
        return self._popen.wait()


def _steps_table(run_id: str, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("seq", "kind", "key", "name", "status", "ms", "tokens in/out"):
        table.add_column(col, overflow="fold")
    for s in agentspan.get(run_id).steps():
        tokens = f"{s.input_tokens}/{s.output_tokens}" if s.input_tokens is not None else ""
        color = {"completed": "green", "started": "yellow", "failed": "red"}[s.status.value]
        table.add_row(str(s.seq), s.kind.value, s.key, s.name or "", f"[{color}]{s.status.value}[/]",
                      f"{s.duration_ms:.0f}" if s.duration_ms is not None else "", tokens)
    return table


def _where(store: Store) -> str:
    """Where the demo's runs are: the store it uses, not the home's file (with
    ``AGENTSPAN_SERVER_URL`` set that is the server; the home then holds only the side effects)."""
    if isinstance(store, SqliteStore):
        return store.path
    if isinstance(store, RemoteStore):
        return f"the server at {','.join(store.shown_urls)}"  # never a user:password@ part
    return repr(store)


def main() -> None:
    """Runs the demo (crash → resume → approval → done) in a few seconds."""
    home = agentspan.settings().home
    try:
        home.mkdir(parents=True, exist_ok=True)  # a fresh machine has no ~/.agentspan yet
        _effects_file().write_text("")
    except OSError as exc:  # a file in the way, no permission: the CLI's one-line error, not a traceback
        raise agentspan.errors.ConfigurationError(
            f"cannot use the Agentspan home {home} (AGENTSPAN_HOME): {exc.strerror or exc}") from None
    run_id = new_id()
    env = {**os.environ, "AGENTSPAN_HOME": str(home)}
    child = _ChildProcess(run_id, env)  # before this process opens the store (a fork copies no connection)
    store = agentspan.get_store()
    console.rule("[bold]Agentspan demo[/]: an openai-agents agent that survives kill -9")
    console.print(f"store: {escape(_where(store))}   run: [cyan]{run_id}[/]\n")

    console.print("1. A child process runs the agent; we SIGKILL it while its 2nd model call is in flight.")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.running():
        try:
            if any(s.name == "lookup_order" and s.status.value == "completed" for s in store.list_steps(run_id)):
                break
        except agentspan.errors.RunNotFound:
            pass
        time.sleep(0.02)
    time.sleep(0.1)  # the 2nd model call (0.4 s) is now in flight, with margin on both sides
    code = child.kill()
    console.print(f"   [red]killed[/] pid {child.pid} (exit {code})")
    console.print(_steps_table(run_id, "   journal at the crash"))

    console.print("\n2. This process resumes the run: completed calls replay from the journal.")
    agent = build_agent()
    handle = agentspan.resume(run_id, agent)
    while handle.status() is not agentspan.RunStatus.WAITING:
        time.sleep(0.05)
    pending = handle.pending_approvals()[0]
    console.print(f"   run is [yellow]waiting[/]: approval {pending.id} for {pending.tool}({pending.args})")

    console.print("\n3. Someone approves from another process (the CLI):")
    console.print(f"   $ agentspan approve {pending.id} --by alice")
    subprocess.run([sys.executable, "-m", "agentspan.cli", "approve", pending.id, "--by", "alice"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    result = handle.result(timeout=60)
    counters = handle.counters()
    console.print(f"\n4. Done: [bold green]{result.final_output}[/]")
    if counters is not None:
        console.print(f"   this process: model calls replayed from the journal {counters.replayed('llm')}, "
                      f"made live {counters.live('llm')} (incl. the one in flight at the kill); "
                      f"tool calls replayed {counters.replayed('tool')}, run live {counters.live('tool')}")
    effects = _effects_file().read_text().splitlines()
    console.print(f"   side effects (each exactly once): {len(effects)}")
    for line in effects:
        console.print(f"     - {line}")
    console.print(_steps_table(run_id, "\n   the full trail"))
    usage = handle.usage()
    console.print(f"   tokens in/out: {usage['input_tokens']}/{usage['output_tokens']}, steps: {usage['steps']}")
    console.print(f"\nInspect it: [cyan]agentspan runs show {run_id}[/]  (add --json for machine-readable)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        _child(sys.argv[2])
    else:
        main()
