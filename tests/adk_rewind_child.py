"""Child process for `tests/test_adk_runner_rewind.py`: a user-built Runner (SQLite sessions, a file
artifact service, ``AgentspanPlugin``) sends "go" on session ``s``.

``python adk_rewind_child.py artifact|state``: ``artifact``: a tool saves ``report.txt``, the next
reads it; ``state``: a root agent and the sub-agent it transfers to count their visits in a
``before_agent_callback`` (``state.get("visits", 0) + 1``). Logs what the tools read, and at the
end the session's state and the artifact's latest version, to ``log`` in AGENTSPAN_HOME.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.artifacts import FileArtifactService
from google.adk.runners import Runner
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.adk.tools import ToolContext
from google.genai import types

from agentspan_adk import AgentspanPlugin
from agentspan_adk.testing import Call

import adk_support
from crash_support import home, log


async def save_report(text: str, tool_context: ToolContext) -> dict[str, Any]:
    """Save the report."""
    return {"version": await tool_context.save_artifact("report.txt", types.Part(text=text))}


async def read_report(tool_context: ToolContext) -> dict[str, Any]:
    """Read the report."""
    part = await tool_context.load_artifact("report.txt")
    log("log", f"read {part.text if part else None}")
    return {"report": part.text if part else None}


def visit(callback_context: Any) -> None:
    state = callback_context.state
    state["visits"] = state.get("visits", 0) + 1


def agent(variant: str) -> LlmAgent:
    if variant == "artifact":
        return LlmAgent(name="writer", model=adk_support.model("writer", [Call("save_report", {"text": "hello"}),
                                                                          Call("read_report", {}), "done"]),
                        tools=[save_report, read_report])
    sub = LlmAgent(name="sub", description="The sub-agent.", model=adk_support.model("sub", ["sub done"]),
                   before_agent_callback=visit)
    return LlmAgent(name="root", model=adk_support.model("root", [Call("read_report", {}),
                                                                  Call("transfer_to_agent", {"agent_name": "sub"})]),
                    tools=[read_report], sub_agents=[sub], before_agent_callback=visit)


async def main(variant: str) -> None:
    artifacts = FileArtifactService(str(home() / "artifacts"))
    runner = Runner(app=App(name="app", root_agent=agent(variant), plugins=[AgentspanPlugin()]),
                    session_service=SqliteSessionService(str(home() / "sessions.db")), artifact_service=artifacts)
    if await runner.session_service.get_session(app_name="app", user_id="u", session_id="s") is None:
        await runner.session_service.create_session(app_name="app", user_id="u", session_id="s")
    message = types.Content(role="user", parts=[types.Part(text="go")])
    async for _ in runner.run_async(user_id="u", session_id="s", new_message=message):
        pass
    session = await runner.session_service.get_session(app_name="app", user_id="u", session_id="s")
    assert session is not None
    latest = await artifacts.load_artifact(app_name="app", user_id="u", session_id="s", filename="report.txt")
    log("log", f"end visits={session.state.get('visits')} latest={latest.text if latest else None}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
