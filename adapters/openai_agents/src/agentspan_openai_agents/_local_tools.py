"""Tools the SDK runs on this machine through an executor of the app's: `ShellTool` (with a local
environment) and `LocalShellTool`.

The model asks for them with items of their own (``shell_call``, ``local_shell_call``), not
function calls, and the SDK hands each call to the tool's ``executor``. `journaled_local_tool`
returns a copy whose executor runs each call as a journaled ``tool`` step (`ActiveRun.tool`), so
a command that completed is replayed after a crash instead of run again; its arguments are the
action the model asked for. A `ShellTool`'s ``needs_approval`` (a bool, or the SDK's
``(run_context, action, call_id)`` function) becomes an Agentspan approval, as a function tool's
does (its ``on_approval`` hook is then not asked: the decision is a person's, from the API, CLI,
web UI or Slack). Tools the SDK runs through other objects (`ComputerTool`, `ApplyPatchTool`) are
left as they are.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from agents import LocalShellTool, ShellTool
from agents.tool import (
    LocalShellCommandRequest,
    ShellCallOutcome,
    ShellCommandOutput,
    ShellCommandRequest,
    ShellResult,
)

import agentspan


async def _value(returned: Any) -> Any:
    return await returned if inspect.isawaitable(returned) else returned


async def approval_required(policy: Any, *args: Any) -> bool:
    """A tool's SDK ``needs_approval``: a bool, or a policy function (maybe async) of ``args``."""
    return bool(await _value(policy(*args)) if callable(policy) else policy)


def journaled_local_tool(tool: Any) -> Any:
    """A copy of ``tool`` whose executor calls are journaled (``tool`` itself when it runs elsewhere)."""
    if isinstance(tool, ShellTool) and tool.executor is not None:
        return _shell(tool)
    if isinstance(tool, LocalShellTool):
        return _local_shell(tool)
    return tool


def _shell(tool: ShellTool) -> ShellTool:
    executor: Callable[[ShellCommandRequest], Any] = tool.executor  # type: ignore[assignment]
    needs_approval = tool.needs_approval

    async def run_commands(request: ShellCommandRequest) -> str | ShellResult:
        run = agentspan.active_run()
        if run is None:
            return await _value(executor(request))
        action, call_id = request.data.action, request.data.call_id
        args = {"commands": list(action.commands), "timeout_ms": action.timeout_ms,
                "max_output_length": action.max_output_length}
        required = await approval_required(needs_approval, request.ctx_wrapper, action, call_id)
        output = await run.tool(key=run.call_key(call_id), name=tool.name, args=args,
                                invoke=lambda: _value(executor(request)), needs_approval=required,
                                dump=dump_shell_output, call_id=call_id)
        return load_shell_output(output)

    return dataclasses.replace(tool, executor=run_commands, needs_approval=False, on_approval=None)


def _local_shell(tool: LocalShellTool) -> LocalShellTool:
    executor = tool.executor

    async def run_command(request: LocalShellCommandRequest) -> str:
        run = agentspan.active_run()
        if run is None:
            return str(await _value(executor(request)))
        call_id = request.data.call_id
        args = request.data.action.model_dump(mode="json", exclude_none=True)
        output = await run.tool(key=run.call_key(call_id), name=tool.name, args=args,
                                invoke=lambda: _value(executor(request)), dump=str, call_id=call_id)
        return str(output)

    return dataclasses.replace(tool, executor=run_command)


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
