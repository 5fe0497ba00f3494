"""Tools the SDK runs on this machine through an object of the app's: `ShellTool` (with a local
environment), `LocalShellTool`, `ApplyPatchTool` and `CustomTool` (raw text input).

The model asks for them with items of their own (``shell_call``, ``local_shell_call``,
``custom_tool_call``), not function calls, and the SDK hands each call to the tool's ``executor``
(a `CustomTool`'s ``on_invoke_tool``). `journaled_local_tool` returns a copy whose executor runs
each call as a journaled ``tool`` step (`ActiveRun.tool`), so a call that completed is replayed
after a crash instead of run again; its arguments are what the model asked for (the action; a
custom tool's ``{"input": text}``). A `ShellTool`'s or `CustomTool`'s ``needs_approval`` (a bool,
or the SDK's ``(run_context, action or input, call_id)`` function) becomes an Agentspan approval, as
a function tool's does (its ``on_approval`` hook is then not asked: the decision is a person's,
from the API, CLI, web UI or Slack).

An `ApplyPatchTool`'s editor gets each operation of a call (create, update or delete a file) without
the call's id; the SDK hands that id, with the very operation object, to the tool's
``needs_approval`` first. So the copy's ``needs_approval`` notes which call each operation belongs
to (and answers False: the approval is Agentspan's), and its editor journals each operation as a
``tool`` step of its own, ``<call key>/op:<index>``, gated by an approval when the tool's own
``needs_approval`` asks for one for that operation. A `ComputerTool` is left as it is: its
computer's actions (clicks, key presses) act on a screen that a crash does not keep.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from agents import ApplyPatchTool, CustomTool, LocalShellTool, ShellTool
from agents.editor import ApplyPatchOperation, ApplyPatchResult
from agents.tool import (
    LocalShellCommandRequest,
    ShellCallOutcome,
    ShellCommandOutput,
    ShellCommandRequest,
    ShellResult,
)

import agentspan
from agentspan.jsontext import error_text


async def value_of(returned: Any) -> Any:
    """``returned``, awaited if it is awaitable (an app callback's result, sync or async)."""
    return await returned if inspect.isawaitable(returned) else returned


def note_handled(exc: BaseException) -> None:
    """Notes on the running step (`agentspan.StepInfo.handled_error`) a tool's exception the SDK
    answers for (its ``failure_error_function``, a timeout's message): shown failed, replayed as
    answered."""
    step = agentspan.current_step()
    if step is not None:
        step.handled_error(error_text(exc))


async def approval_required(policy: Any, *args: Any) -> bool:
    """A tool's SDK ``needs_approval``: a bool, or a policy function (maybe async) of ``args``."""
    return bool(await value_of(policy(*args)) if callable(policy) else policy)


async def journaled_call(run: agentspan.ActiveRun, *, name: str, call_id: str, args: Any,
                         invoke: Callable[[], Any], policy: Any = False, policy_args: tuple[Any, ...] = (),
                         dump: Callable[[Any], Any] | None = None, suffix: str = "") -> Any:
    """One call of a local tool as a journaled ``tool`` step at its call's key (plus ``suffix``),
    gated by an approval when the tool's ``needs_approval`` ``policy`` asks for one."""
    required = await approval_required(policy, *policy_args)
    return await run.tool(key=run.call_key(call_id) + suffix, name=name, args=args, invoke=invoke,
                          needs_approval=required, dump=dump, call_id=call_id)


def journaled_local_tool(tool: Any) -> Any:
    """A copy of ``tool`` whose executor calls are journaled (``tool`` itself when it runs elsewhere)."""
    if isinstance(tool, ShellTool) and tool.executor is not None:
        return _shell(tool)
    if isinstance(tool, LocalShellTool):
        return _local_shell(tool)
    if isinstance(tool, CustomTool):
        return _custom(tool)
    if isinstance(tool, ApplyPatchTool):
        editor = JournaledEditor(tool)
        return dataclasses.replace(tool, editor=editor, needs_approval=editor.note, on_approval=None)
    return tool


def _shell(tool: ShellTool) -> ShellTool:
    executor: Callable[[ShellCommandRequest], Any] = tool.executor  # type: ignore[assignment]
    needs_approval = tool.needs_approval

    async def run_commands(request: ShellCommandRequest) -> str | ShellResult:
        run = agentspan.active_run()
        if run is None:
            return await value_of(executor(request))
        action, call_id = request.data.action, request.data.call_id
        args = {"commands": list(action.commands), "timeout_ms": action.timeout_ms,
                "max_output_length": action.max_output_length}
        output = await journaled_call(run, name=tool.name, call_id=call_id, args=args,
                                      invoke=lambda: value_of(executor(request)), policy=needs_approval,
                                      policy_args=(request.ctx_wrapper, action, call_id), dump=dump_shell_output)
        return load_shell_output(output)

    return dataclasses.replace(tool, executor=run_commands, needs_approval=False, on_approval=None)


def _local_shell(tool: LocalShellTool) -> LocalShellTool:
    executor = tool.executor

    async def run_command(request: LocalShellCommandRequest) -> str:
        run = agentspan.active_run()
        if run is None:
            return str(await value_of(executor(request)))
        output = await journaled_call(run, name=tool.name, call_id=request.data.call_id,
                                      args=request.data.action.model_dump(mode="json", exclude_none=True),
                                      invoke=lambda: value_of(executor(request)), dump=str)
        return str(output)

    return dataclasses.replace(tool, executor=run_command)


class JournaledEditor:
    """An `ApplyPatchTool`'s editor whose operations are journaled ``tool`` steps of the active run.

    `note` is the tool copy's ``needs_approval``: the SDK asks it about each operation of a call, in
    order, before it edits; it notes the operation's call and answers False.
    """

    def __init__(self, tool: ApplyPatchTool) -> None:
        self.tool = tool
        self.editor = tool.editor
        self.noted: dict[int, tuple[ApplyPatchOperation, str, Any]] = {}
        """The call id (and run context) of each operation about to be edited, by the operation's
        id (the operation is held, so its id is not reused) until the editor takes it."""
        self.edited: dict[str, int] = {}
        """Operations of each call edited in this attempt (the next one's index)."""

    def note(self, ctx: Any, operation: ApplyPatchOperation, call_id: str) -> bool:
        self.noted[id(operation)] = (operation, call_id, ctx)
        return False

    def create_file(self, operation: ApplyPatchOperation) -> Any:
        return self._edit(operation, self.editor.create_file)

    def update_file(self, operation: ApplyPatchOperation) -> Any:
        return self._edit(operation, self.editor.update_file)

    def delete_file(self, operation: ApplyPatchOperation) -> Any:
        return self._edit(operation, self.editor.delete_file)

    def _edit(self, operation: ApplyPatchOperation, edit: Callable[[ApplyPatchOperation], Any]) -> Any:
        noted = self.noted.pop(id(operation), None)
        run = agentspan.active_run()
        if run is None or noted is None or noted[0] is not operation:
            return edit(operation)  # outside a durable run (or an operation the SDK did not ask about)
        _, call_id, ctx = noted
        index = self.edited.get(call_id, 0)
        self.edited[call_id] = index + 1
        return self._journaled(run, ctx, operation, call_id, index, edit)

    async def _journaled(self, run: agentspan.ActiveRun, ctx: Any, operation: ApplyPatchOperation, call_id: str,
                         index: int, edit: Callable[[ApplyPatchOperation], Any]) -> Any:
        args = {"type": operation.type, "path": operation.path, "diff": operation.diff, "move_to": operation.move_to}
        output = await journaled_call(run, name=self.tool.name, call_id=call_id, args=args, suffix=f"/op:{index}",
                                      invoke=lambda: value_of(edit(operation)), policy=self.tool.needs_approval,
                                      policy_args=(ctx, operation, call_id), dump=dump_patch_result)
        return load_patch_result(output)


def dump_patch_result(result: Any) -> dict[str, Any]:
    """An editor's result (an `ApplyPatchResult`, a mapping, text or None) as ``{"status", "output"}``;
    the SDK normalizes it as it does the editor's own mapping (`load_patch_result`)."""
    if isinstance(result, ApplyPatchResult):
        return {"status": result.status, "output": result.output}
    if isinstance(result, Mapping):
        output = result.get("output")
        return {"status": result.get("status"), "output": None if output is None else str(output)}
    return {"status": None, "output": None if result is None else str(result)}


def load_patch_result(output: Any) -> dict[str, Any]:
    """What `dump_patch_result` journaled, as a mapping for the SDK; a rejection's message is a failed edit."""
    return output if isinstance(output, dict) else {"status": "failed", "output": str(output)}


def _custom(tool: CustomTool) -> CustomTool:
    executor = tool.on_invoke_tool
    needs_approval = tool.needs_approval

    async def run_custom(ctx: Any, tool_input: str) -> Any:
        run = agentspan.active_run()
        if run is None:
            return await value_of(executor(ctx, tool_input))
        return await journaled_call(run, name=tool.name, call_id=ctx.tool_call_id, args={"input": tool_input},
                                    invoke=lambda: value_of(executor(ctx, tool_input)), policy=needs_approval,
                                    policy_args=(ctx, tool_input, ctx.tool_call_id))

    return dataclasses.replace(tool, on_invoke_tool=run_custom, needs_approval=False, on_approval=None)


def dump_shell_output(result: Any) -> Any:
    """A shell executor's result as JSON: its text, or ``{"shell_result": ...}`` for a `ShellResult`."""
    if isinstance(result, ShellResult):
        return {"shell_result": dataclasses.asdict(result)}
    return str(result)


def load_shell_output(output: Any) -> str | ShellResult:
    """Rebuilds what `dump_shell_output` journaled (a rejection's message stays text)."""
    if isinstance(output, dict) and isinstance(output.get("shell_result"), dict):
        data = output["shell_result"]
        return ShellResult(
            output=[ShellCommandOutput(stdout=o["stdout"], stderr=o["stderr"],
                                       outcome=ShellCallOutcome(**o["outcome"]), command=o.get("command"),
                                       provider_data=o.get("provider_data"))
                    for o in data["output"]],
            max_output_length=data.get("max_output_length"), provider_data=data.get("provider_data"))
    return output if isinstance(output, str) else str(output)
