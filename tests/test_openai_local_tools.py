"""openai-agents tools run by the app's own executors and editors (`ShellTool`, `LocalShellTool`,
`ApplyPatchTool`, `CustomTool`): each call (each patch operation) is a journaled ``tool`` step, replayed on resume
instead of run again; a tool's ``needs_approval`` is an Agentspan approval. The executors run real
commands (``bash -c``); the editor writes real files."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from agents import Agent, ApplyPatchTool, LocalShellTool, ShellTool, set_tracing_disabled
from agents.editor import ApplyPatchOperation, ApplyPatchResult
from agents.tool import LocalShellCommandRequest, ShellCallOutcome, ShellCommandOutput, ShellCommandRequest, ShellResult
from openai.types.responses.response_apply_patch_tool_call import ResponseApplyPatchToolCall
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


class FileEditor:
    """An `ApplyPatchTool` editor over a directory: a diff's ``+`` lines are the file's new text."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.edits: list[tuple[str, str]] = []

    def _text(self, operation: ApplyPatchOperation) -> str:
        return "".join(line[1:] + "\n" for line in (operation.diff or "").splitlines() if line.startswith("+"))

    def create_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        self.edits.append(("create", operation.path))
        (self.root / operation.path).write_text(self._text(operation))
        return ApplyPatchResult(status="completed", output=f"created {operation.path}")

    async def update_file(self, operation: ApplyPatchOperation) -> str:
        self.edits.append(("update", operation.path))
        with (self.root / operation.path).open("a") as file:
            file.write(self._text(operation))
        return f"updated {operation.path}"

    def delete_file(self, operation: ApplyPatchOperation) -> None:
        self.edits.append(("delete", operation.path))
        (self.root / operation.path).unlink()


def patch_call(call_id: str, kind: str, path: str, diff: str | None = None,
               *more: dict[str, str]) -> ResponseApplyPatchToolCall:
    """An ``apply_patch_call``; ``more`` operations make it a call of several (``operations``)."""
    operation = {"type": kind, "path": path} | ({"diff": diff} if diff is not None else {})
    extra = {"operations": [operation, *more]} if more else {}
    return ResponseApplyPatchToolCall(id=f"ap_{call_id}", call_id=call_id, type="apply_patch_call",
                                      status="completed", operation=operation, **extra)


def test_apply_patch_operations_are_journaled_and_replayed_on_resume(tmp_path):
    editor = FileEditor(tmp_path)
    two_files = patch_call("p1", "create_file", "notes.txt", "+one",
                           {"type": "create_file", "path": "extra.txt", "diff": "+x"})
    script = [[two_files, patch_call("p2", "update_file", "notes.txt", "+two")],
              patch_call("p3", "delete_file", "notes.txt"), "finished"]
    agent = Agent(name="coder", tools=[ApplyPatchTool(editor=editor)], model=ScriptedModel(script, name="m"))
    handle = agentspan.start(agent, "Write the notes, then remove them.")
    assert handle.result(timeout=20).final_output == "finished"
    steps = handle.steps()
    assert [(s.kind.value, s.key) for s in steps] == [
        ("llm", "llm:0"), ("tool", "llm:0/call:p1/op:0"), ("tool", "llm:0/call:p1/op:1"),
        ("tool", "llm:0/call:p2/op:0"),
        ("llm", "llm:1"), ("tool", "llm:1/call:p3/op:0"), ("llm", "llm:2")]
    assert steps[1].name == "apply_patch"
    assert steps[1].input == {"type": "create_file", "path": "notes.txt", "diff": "+one", "move_to": None}
    assert [s.output for s in steps if s.kind.value == "tool"] == [
        {"status": "completed", "output": "created notes.txt"}, {"status": "completed", "output": "created extra.txt"},
        {"status": None, "output": "updated notes.txt"}, {"status": None, "output": None}]
    assert editor.edits == [("create", "notes.txt"), ("create", "extra.txt"), ("update", "notes.txt"),
                            ("delete", "notes.txt")]

    copy_id = crashed_copy(handle.id, keep=2)  # killed after the first edit was journaled
    editor.edits.clear()
    (tmp_path / "notes.txt").write_text("one\n")  # what the killed process left on disk
    resumed = agentspan.resume(copy_id, agent).result(timeout=20)
    assert resumed.final_output == "finished"
    # the first create is not made again; the second operation of the same call is
    assert editor.edits == [("create", "extra.txt"), ("update", "notes.txt"), ("delete", "notes.txt")]
    outputs = [i.raw_item for i in resumed.new_items if getattr(i, "type", "") == "tool_call_output_item"]
    assert [(o["call_id"], o["status"], o.get("output")) for o in outputs] == [
        ("p1", "completed", "created notes.txt\ncreated extra.txt"), ("p2", "completed", "updated notes.txt"),
        ("p3", "completed", None)]


def test_apply_patch_needs_approval_is_an_agentspan_approval_per_operation(tmp_path):
    editor = FileEditor(tmp_path)
    (tmp_path / "keep.txt").write_text("kept\n")
    script = [patch_call("p1", "create_file", "new.txt", "+new"), patch_call("p2", "delete_file", "keep.txt"),
              "finished"]
    asked: list[tuple[str, str]] = []

    def deletes_need_approval(run_context: Any, operation: ApplyPatchOperation, call_id: str) -> bool:
        asked.append((operation.type, call_id))
        return operation.type == "delete_file"

    agent = Agent(name="coder", tools=[ApplyPatchTool(editor=editor, needs_approval=deletes_need_approval)],
                  model=ScriptedModel(script, name="m"))
    handle = agentspan.start(agent, "Add a file and delete another.")
    approval = wait_for_approval(handle)
    assert (approval.tool, approval.step_key) == ("apply_patch", "llm:1/call:p2/op:0")
    assert approval.args == {"type": "delete_file", "path": "keep.txt", "diff": None, "move_to": None}
    assert editor.edits == [("create", "new.txt")]  # created without asking; the delete waits
    handle.reject(reason="keep it")
    assert handle.result(timeout=20).final_output == "finished"
    assert (tmp_path / "keep.txt").read_text() == "kept\n" and editor.edits == [("create", "new.txt")]
    (rejected,) = [s for s in handle.steps() if s.key == "llm:1/call:p2/op:0"]
    assert "keep it" in str(rejected.output)
    assert ("create_file", "p1") in asked and ("delete_file", "p2") in asked


def custom_call(call_id: str, text: str) -> Any:
    from openai.types.responses.response_custom_tool_call import ResponseCustomToolCall

    return ResponseCustomToolCall(id=f"ct_{call_id}", call_id=call_id, type="custom_tool_call", name="sql", input=text)


def test_custom_tool_calls_are_journaled_replayed_and_approval_gated(tmp_path):
    from agents import CustomTool

    queries: list[str] = []

    async def run_sql(ctx: Any, text: str) -> str:
        queries.append(text)
        return f"{len(queries)} row(s) for {text}"

    def writes_need_approval(run_context: Any, text: str, call_id: str) -> bool:
        return not text.startswith("SELECT")

    sql = CustomTool(name="sql", description="Run SQL.", on_invoke_tool=run_sql, needs_approval=writes_need_approval)
    script = [custom_call("q1", "SELECT 1"), custom_call("q2", "DELETE FROM t"), "finished"]
    agent = Agent(name="db", tools=[sql], model=ScriptedModel(script, name="m"))
    handle = agentspan.start(agent, "Query, then clean up.")
    approval = wait_for_approval(handle)
    assert (approval.tool, approval.step_key, approval.args) == ("sql", "llm:1/call:q2", {"input": "DELETE FROM t"})
    assert queries == ["SELECT 1"]
    handle.approve()
    assert handle.result(timeout=20).final_output == "finished"
    tools = [s for s in handle.steps() if s.kind.value == "tool"]
    assert [(s.key, s.input, s.output) for s in tools] == [
        ("llm:0/call:q1", {"input": "SELECT 1"}, "1 row(s) for SELECT 1"),
        ("llm:1/call:q2", {"input": "DELETE FROM t"}, "2 row(s) for DELETE FROM t")]

    keys = [s.key for s in handle.steps()]
    copy_id = crashed_copy(handle.id, keep=keys.index("llm:1/call:q2") + 1)  # killed after the second query
    queries.clear()
    assert agentspan.resume(copy_id, agent).result(timeout=20).final_output == "finished"
    assert queries == []
