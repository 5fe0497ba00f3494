"""Child process for the ADK crash tests.

``python adk_child.py start|resume|serve RUN_ID SCENARIO``: ``agentspan.run`` / ``resume`` /
``serve`` with the agent of ``adk_support.SCENARIOS[SCENARIO]``.
``python adk_child.py runner SESSION_ID SCENARIO``: a user-built Runner (durable SQLite session
service, ``AgentspanPlugin``) sends ``adk_support.PROMPT`` on the session; ``runner-confirm``
answers the session's confirmation request (confirmed) instead; ``runner-resumable`` sends the
prompt through a resumable App, and ``runner-adk-resume`` resumes that App's last invocation the
ADK way (``run_async(invocation_id=...)``).

Prints ``FINAL: <text>`` at the end.
"""

from __future__ import annotations

import asyncio
import sys

import agentspan

import adk_support

if __name__ == "__main__":
    mode, ident, scenario = sys.argv[1], sys.argv[2], sys.argv[3]
    agent = adk_support.SCENARIOS[scenario]()
    if mode == "start":
        text = agentspan.run(agent, adk_support.PROMPT, run_id=ident, session_id=f"session-{ident}",
                             user_id=adk_support.USER).text
    elif mode == "resume":
        text = agentspan.resume(ident, agent).result(timeout=60).text
    elif mode == "serve":
        agentspan.serve(agent, max_runs=1)
        text = agentspan.get(ident).result(timeout=60)["text"]
    elif mode in ("runner", "runner-confirm", "runner-resumable", "runner-adk-resume"):
        runner = adk_support.runner(agent, resumable=mode in ("runner-resumable", "runner-adk-resume"))
        if mode == "runner-confirm":
            events = asyncio.run(adk_support.answer_confirmation(runner, ident, confirmed=True))
        elif mode == "runner-adk-resume":
            events = asyncio.run(adk_support.resume_last_invocation(runner, ident))
        else:
            events = asyncio.run(adk_support.run_turn(runner, ident, adk_support.PROMPT))
        text = next((e.content.parts[0].text for e in reversed(events)
                     if e.is_final_response() and e.content and e.content.parts and e.content.parts[0].text), None)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("FINAL:", text, flush=True)
