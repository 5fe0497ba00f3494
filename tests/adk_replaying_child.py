"""Child process for `tests/test_adk_runner_replaying.py`: a user-built Runner (SQLite sessions,
``AgentspanPlugin``) sends "go" on session ``s``; an agent calls ``one``, then ``two`` and ``three``
in parallel, then answers. Its ``after_model`` and ``after_tool`` callbacks log what
`agentspan.replaying` says about their call, and the caller logs it again after the invocation,
to ``log`` in AGENTSPAN_HOME. Crash points: ``model:w:N``, ``tool:three``, ``final-event``."""

from __future__ import annotations

import asyncio
from typing import Any

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.runners import Runner
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

import agentspan
from agentspan_adk import AgentspanPlugin
from agentspan_adk.testing import Call

import adk_support
from crash_support import crash_if, home, log


def one() -> str:
    """Step one."""
    return "1"


def two() -> str:
    """Step two."""
    return "2"


def three() -> str:
    """Step three."""
    crash_if("tool:three")
    return "3"


def after_model(callback_context: Any, llm_response: Any) -> None:
    if not llm_response.partial:
        log("log", f"after_model replaying={agentspan.replaying()}")


def after_tool(tool: Any, args: Any, tool_context: Any, tool_response: Any) -> None:
    log("log", f"after_tool {tool.name} replaying={agentspan.replaying()}")


async def main() -> None:
    agent = LlmAgent(name="w", model=adk_support.model("w", [Call("one", {}), [Call("two", {}), Call("three", {})],
                                                             "done"]),
                     tools=[one, two, three], after_model_callback=after_model, after_tool_callback=after_tool)
    runner = Runner(app=App(name="app", root_agent=agent, plugins=[AgentspanPlugin()]),
                    session_service=SqliteSessionService(str(home() / "sessions.db")))
    if await runner.session_service.get_session(app_name="app", user_id="u", session_id="s") is None:
        await runner.session_service.create_session(app_name="app", user_id="u", session_id="s")
    message = types.Content(role="user", parts=[types.Part(text="go")])
    async for event in runner.run_async(user_id="u", session_id="s", new_message=message):
        if event.content and any(part.text == "done" for part in event.content.parts or ()):
            crash_if("final-event")  # the final answer journaled and handed out, the invocation not ended
    log("log", f"after the invocation replaying={agentspan.replaying()}")


if __name__ == "__main__":
    asyncio.run(main())
