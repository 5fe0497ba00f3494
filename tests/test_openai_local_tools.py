"""openai-agents tools run by the app's own executors (`ShellTool`, `LocalShellTool`): each call is
a journaled ``tool`` step, replayed on resume instead of run again; a `ShellTool`'s
``needs_approval`` is an Agentspan approval. The executors run real commands (``bash -c``)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from agents import Agent, LocalShellTool, ShellTool, set_tracing_disabled
from agents.tool import LocalShellCommandRequest, ShellCallOutcome, ShellCommandOutput, ShellCommandRequest, ShellResult
from openai.types.responses.response_function_shell_tool_call import ResponseFunctionShellToolCall
from openai.types.responses.response_output_item import LocalShellCall

import agentspan
from agentspan_openai_agents.testing import ScriptedModel

from journal_utils import crashed_copy

set_tracing_disabled(True)
ran: list[str] = []  # every command an executor ran, in this process


@pytest.fixture(autouse=True)
def _fresh(home: Any) -> None:
    ran.clear()


def run_shell(request: ShellCommandRequest) -> ShellResult:
    outputs = []
    for command in request.data.action.commands:
        ran.append(command)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=10)
        outputs.append(ShellCommandOutput(stdout=done.stdout, stderr=done.stderr, command=command,
                                          outcome=ShellCallOutcome(type="exit", exit_code=done.returncode)))
    return ShellResult(output=outputs)


async def run_local_shell(request: LocalShellCommandRequest) -> str:
    command = " ".join(request.data.action.command)
    ran.append(command)
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=10).stdout


def shell_call(call_id: str, *commands: str) -> ResponseFunctionShellToolCall:
    return ResponseFunctionShellToolCall(id=f"sh_{call_id}", call_id=call_id, type="shell_call", status="completed",
                                         action={"commands": list(commands)})


def local_shell_call(call_id: str, command: list[str]) -> LocalShellCall:
    return LocalShellCall(id=f"ls_{call_id}", call_id=call_id, type="local_shell_call", status="completed",
                          action={"command": command, "env": {}, "type": "exec"})


def wait_for_approval(handle: agentspan.Handle) -> Any:
    deadline = time.monotonic() + 20
    while not handle.pending_approvals():
        assert time.monotonic() < deadline, f"no approval; status {handle.status()}"
        time.sleep(0.01)
    (approval,) = handle.pending_approvals()
    return approval


def test_shell_tool_calls_are_journaled_and_replayed_on_resume(tmp_path):
    marker = tmp_path / "marker"
    model = ScriptedModel([shell_call("c1", f"echo hi >> {marker}", "echo done"), "finished"], name="m")
    agent = Agent(name="ops", tools=[ShellTool(executor=run_shell)], model=model)
    handle = agentspan.start(agent, "Touch the marker.")
    assert handle.result(timeout=20).final_output == "finished"
    steps = handle.steps()
    assert [(s.kind.value, s.key, s.name) for s in steps] == [
        ("llm", "llm:0", "m"), ("tool", "llm:0/call:c1", "shell"), ("llm", "llm:1", "m")]
    tool = steps[1]
    assert tool.input == {"commands": [f"echo hi >> {marker}", "echo done"], "timeout_ms": None,
                          "max_output_length": None}
    assert [o["stdout"] for o in tool.output["shell_result"]["output"]] == ["", "done\n"]

    copy_id = crashed_copy(handle.id, keep=2)  # killed after the shell call was journaled
    ran.clear()
    resumed = agentspan.resume(copy_id, agent).result(timeout=20)
    assert resumed.final_output == "finished" and ran == []  # replayed, not run again
    assert marker.read_text() == "hi\n"
    # the model saw the replayed output exactly as the live one (the same input hash)
    again = agentspan.get(copy_id).steps()
    assert again[2].key == "llm:1" and again[2].input_hash == steps[2].input_hash


def test_shell_tool_needs_approval_is_an_agentspan_approval(tmp_path):
    marker = tmp_path / "marker"
    script = [shell_call("c1", f"echo yes >> {marker}"), shell_call("c2", f"echo no >> {marker}"), "finished"]
    asked: list[list[str]] = []

    async def needs_approval(run_context: Any, action: Any, call_id: str) -> bool:
        asked.append(action.commands)
        return True

    agent = Agent(name="ops", tools=[ShellTool(executor=run_shell, needs_approval=needs_approval)],
                  model=ScriptedModel(script, name="m"))
    handle = agentspan.start(agent, "Touch the marker twice.")
    first = wait_for_approval(handle)
    assert first.tool == "shell" and first.args["commands"] == [f"echo yes >> {marker}"] and ran == []
    handle.approve()
    second = wait_for_approval(handle)
    assert second.args["commands"] == [f"echo no >> {marker}"]
    handle.reject(reason="not that one")
    assert handle.result(timeout=20).final_output == "finished"
    assert marker.read_text() == "yes\n" and ran == [f"echo yes >> {marker}"]
    rejected = [s for s in handle.steps() if s.key == "llm:1/call:c2"]
    assert len(rejected) == 1 and "not that one" in str(rejected[0].output)
    assert {tuple(a) for a in asked} == {(f"echo yes >> {marker}",), (f"echo no >> {marker}",)}


def test_local_shell_tool_calls_are_journaled_and_replayed_on_resume(tmp_path):
    marker = tmp_path / "marker"
    model = ScriptedModel([local_shell_call("c1", ["echo", "hi", ">>", str(marker)]), "finished"], name="m")
    agent = Agent(name="ops", tools=[LocalShellTool(executor=run_local_shell)], model=model)
    handle = agentspan.start(agent, "Touch the marker.")
    assert handle.result(timeout=20).final_output == "finished"
    tool = handle.steps()[1]
    assert (tool.key, tool.name) == ("llm:0/call:c1", "local_shell")
    assert tool.input["command"] == ["echo", "hi", ">>", str(marker)]
    copy_id = crashed_copy(handle.id, keep=2)
    ran.clear()
    assert agentspan.resume(copy_id, agent).result(timeout=20).final_output == "finished"
    assert ran == [] and marker.read_text() == "hi\n"
