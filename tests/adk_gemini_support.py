"""An ADK agent on the real `google.adk.models.Gemini` model, pointed at a local `GeminiServer`,
for `test_adk_gemini_http.py`; run as a script, it is the child process a crash test kills.

Usage as a child: ``python adk_gemini_support.py BASE_URL TOOL_LOG`` runs one invocation of a
user-built ``Runner`` with `AgentspanPlugin` (session ``SESSION_ID``), refusing any connection
that would leave 127.0.0.1. ``GOOGLE_API_KEY`` comes from the environment.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.models import Gemini
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.genai import types

from agentspan_adk import AgentspanPlugin

from gemini_server import loopback_only

MODEL = "gemini-2.5-flash"
APP, USER, SESSION_ID = "weather-app", "u", "session-1"
PROMPT = "Weather in Paris?"


def make_agent(base_url: str, tool_log: Path) -> LlmAgent:
    """A weather agent on ADK's real Gemini model; its tool appends each city to ``tool_log``."""

    def get_weather(city: str) -> str:
        """Weather for a city."""
        with tool_log.open("a") as log:
            log.write(city + "\n")
        return f"sunny in {city}"

    return LlmAgent(name="weather", instruction="Answer about weather.", tools=[get_weather],
                    model=Gemini(model=MODEL, base_url=base_url))


async def run_with_plugin(base_url: str, tool_log: Path) -> str:
    """One invocation through a user-built Runner with `AgentspanPlugin`; returns the final text.

    The session service is in memory, so a new process starts from an empty session with the
    same id, and the plugin finds the run of the same message again.
    """
    app = App(name=APP, root_agent=make_agent(base_url, tool_log), plugins=[AgentspanPlugin()])
    runner = Runner(app=app, session_service=InMemorySessionService())
    await runner.session_service.create_session(app_name=APP, user_id=USER, session_id=SESSION_ID)
    message = types.Content(role="user", parts=[types.Part(text=PROMPT)])
    final = ""
    async for event in runner.run_async(user_id=USER, session_id=SESSION_ID, new_message=message):
        if event.is_final_response() and event.content and event.content.parts:
            final = event.content.parts[0].text or ""
    return final


if __name__ == "__main__":
    with loopback_only():
        print(asyncio.run(run_with_plugin(sys.argv[1], Path(sys.argv[2]))))
