"""`mock_run`: run a real agent or graph against a scripted model, offline, in milliseconds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from agentspan import executor
from agentspan.adapters import Adapter, adapter_for
from agentspan.api import _new_run
from agentspan.errors import ConfigurationError, RunCancelledError, ScriptError
from agentspan.records import Run
from agentspan.stores.base import Store
from agentspan.testing import targets
from agentspan.testing._store import MockStore
from agentspan.testing.result import MockResult, build_result
from agentspan.testing.script import ApprovalDefault, Entry, Script, Stubs
from agentspan.testing.stand_ins import LocalStandIns, MockSetup, StandIns

_default_store: Store | None = None


@contextlib.contextmanager
def default_store(store: Store) -> Iterator[Store]:
    """Makes ``store`` the one mock runs use when given none (the ``agentspan_store`` fixture)."""
    global _default_store
    previous, _default_store = _default_store, store
    try:
        yield store
    finally:
        _default_store = previous


def mock_run(
    target: Any,
    input: Any,
    *,
    script: Sequence[Entry] | Script,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    default_approval: ApprovalDefault = "approve",
    crash_after: int | None = None,
    crash_at: str | None = None,
    store: Store | None = None,
    strict: bool = True,
    raise_errors: bool = True,
    run_id: str | None = None,
    **options: Any,
) -> MockResult:
    """Runs ``target`` durably with a scripted model in place of every model it calls.

    The agent's own loop, tools, approvals and journal run for real; only model calls are
    answered from ``script`` (and the tools in ``tools`` from their stand-ins). No server, no
    network, no API key::

        result = mock_run(agent, "Refund order 42",
                          script=[call("lookup_order", order_id="42"), reply("Refunded.")],
                          tools={"refund": lambda **args: "ok"})
        expect(result).completed().used_tool("lookup_order", args={"order_id": "42"})

    Args:
        target: The agent or compiled graph, or its ``"module:attr"`` name.
        input: The input, as the framework takes it (for a LangGraph graph whose input has a
            ``messages`` channel, a str becomes ``{"messages": [user message]}``).
        script: The model's responses and the approval decisions, in order (see
            `agentspan.testing.script`), or a `Script` (its cursor shows what was used).
        tools: Stand-ins for tools by name, called with the model's arguments as keywords.
        default_approval: The decision on approvals the script does not decide.
        crash_after: Crash test: run in a child process, SIGKILL it once this many steps are
            journaled, and resume the run here.
        crash_at: Crash test: SIGKILL the child while the step with this key is in flight (a tool
            after its in-flight record, before it runs; a model call before it answers). Take it
            from an earlier run's `MockResult.crash_points`: for LangGraph, a key without the task
            ids that change from run to run (``agent/llm:0``, ``agent/llm:0#1`` for the node's
            next run); a full key of another run is read so too, and fails as ambiguous when it
            fits several steps.
        store: Where the run is recorded (default: the ``agentspan_store`` fixture's store, else a
            fresh in-memory store; a crash test needs a SQLite store, by default a temporary one).
        strict: Fail when the run ends with script entries never used.
        raise_errors: Re-raise what the agent raised (False: return a result with status
            ``failed``). Script errors are always raised.
        run_id: The run's id (default: a new one).
        **options: Runner options (``max_turns``, ``context``, ``run_config``, ``thread_id``, ...).

    Returns:
        The `MockResult`.

    Raises:
        ScriptError: The script ran out, answered a model call with a decision, called a tool the
            agent does not have, or was not used to its end (``strict``).
        ConfigurationError: Bad arguments, a stand-in for a tool the target does not have, or a
            crash point the run never reached.
    """
    script_obj = script if isinstance(script, Script) else Script(script, default_approval=default_approval)
    stubs = Stubs(tools)
    if crash_after is not None or crash_at is not None:
        from agentspan.testing.crash import crash_run

        return crash_run(target, input, script=script_obj, stubs=stubs, crash_after=crash_after, crash_at=crash_at,
                         store=store or _default_store, strict=strict, raise_errors=raise_errors, run_id=run_id,
                         options=options)
    target_obj = targets.load(target) if isinstance(target, str) else target
    adapter = adapter_for(target_obj)
    setup = prepare(adapter, target_obj, LocalStandIns(script_obj, stubs), options)
    store = store or _default_store or _memory_store()
    run = create_run(adapter, target_obj, setup.input(input), options, store=store, run_id=run_id)
    outcome, failure = execute(MockStore(store, decide=lambda a: script_obj.decide(a.tool)[0]), run, adapter,
                               target_obj, setup, fresh=True)
    finish(script_obj, failure, strict=strict, raise_errors=raise_errors)
    return build_result(store, run.id, setup, raw=outcome.result if outcome is not None else None)


def _memory_store() -> Store:
    from agentspan.stores.memory import MemoryStore

    return MemoryStore()


def prepare(adapter: Adapter, target: Any, stand_ins: StandIns, options: dict[str, Any]) -> MockSetup:
    """Asks the adapter for its mock setup and checks the stand-ins against the target's tools."""
    setup = adapter.mock(target, stand_ins, options)
    if setup.tools is not None:
        unknown = sorted(stand_ins.stubbed - setup.tools)
        if unknown:
            raise ConfigurationError(
                f"tools={{...}} has stand-ins for {', '.join(map(repr, unknown))}, which the {adapter.framework} "
                f"target does not have (its tools: {', '.join(sorted(setup.tools)) or 'none'})")
    setup.options = {**options, **setup.options}
    return setup


def create_run(adapter: Adapter, target: Any, input: Any, options: dict[str, Any], *, store: Store,
               run_id: str | None) -> Run:
    """Records a new running run owned by this process."""
    run, _ = _new_run(adapter, target, input, options, run_id=run_id, session_id=None, idempotency_key=None,
                      agent_name=None, store=store)
    return run


def execute(store: Store, run: Run, adapter: Adapter, target: Any, setup: MockSetup,
            *, fresh: bool, on_wait: executor.OnWait = "block") -> tuple[executor.Outcome | None, BaseException | None]:
    """Executes a claimed run to its end with the setup's scope entered.

    With ``on_wait="release"``, a run that waits for an approval ends here as ``waiting``.

    Returns:
        ``(outcome, None)``, or ``(None, exception)`` when the run failed or was cancelled.
    """
    async def main() -> executor.Outcome:
        with setup.scope():
            return await executor.execute(store, run, adapter, target, setup.options, on_wait=on_wait,
                                          fresh=fresh)

    def in_new_loop() -> executor.Outcome:
        return asyncio.run(main())

    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return in_new_loop(), None
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agentspan-mock") as pool:
            return pool.submit(in_new_loop).result(), None
    except Exception as exc:
        return None, exc


def finish(script: Script, failure: BaseException | None, *, strict: bool, raise_errors: bool) -> None:
    """Raises what a finished mock run must raise: script errors first, then the agent's own."""
    if isinstance(failure, ScriptError):
        raise failure
    if script.error is not None:  # raised inside the agent, which swallowed it
        raise script.error
    if failure is not None and raise_errors and not isinstance(failure, RunCancelledError):
        raise failure
    unused = script.unused()
    if strict and unused and failure is None:
        entries = ", ".join(f"[{i}] {text}" for i, text in unused)
        raise ScriptError(
            f"script entries never used: {entries} (the run ended after {script.model_calls} model calls; "
            "pass strict=False to allow a script longer than the run)", position=unused[0][0])
