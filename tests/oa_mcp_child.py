"""Child process for the MCP tests: ``python oa_mcp_child.py start|resume|serve RUN_ID [approval]``.

An openai-agents agent whose only tools are those of a real MCP server (`mcp_notes`, over stdio,
a process of its own): it writes note ``a``, then note ``b``, then answers (with ``approval``,
the server requires approval of every call and the agent writes note ``a`` only). ``start`` and
``resume`` connect the server in their own loop (``async with``); ``serve`` is a worker given
the agent with its server not connected.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from agents import Agent
from agents.mcp import MCPServerStdio

import agentspan
from agentspan_openai_agents.testing import ToolCall

import oa_support

NOTES_SERVER = str(Path(__file__).with_name("mcp_notes.py"))


def notes_agent(server: MCPServerStdio, *, approval: bool) -> Agent[Any]:
    notes = ["a"] if approval else ["a", "b"]
    turns: list[Any] = [ToolCall("write_note", {"text": text}) for text in notes] + [oa_support.FINAL]
    return Agent(name="notes", instructions="Take notes.", mcp_servers=[server], model=oa_support.model_for(turns))


def notes_server(*, approval: bool) -> MCPServerStdio:
    params: Any = {"command": sys.executable, "args": [NOTES_SERVER], "env": dict(os.environ)}
    return MCPServerStdio(params=params, cache_tools_list=True, require_approval="always" if approval else None)


async def main(mode: str, run_id: str, approval: bool) -> Any:
    async with notes_server(approval=approval) as server:
        agent = notes_agent(server, approval=approval)
        hooks = {"hooks": oa_support.CrashHooks()}
        if mode == "start":
            return await agentspan.run_async(agent, "Take the notes.", run_id=run_id, **hooks)
        return await agentspan.resume_async(run_id, agent, **hooks)


if __name__ == "__main__":
    mode, run_id, approval = sys.argv[1], sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "approval"
    if mode == "serve":
        server = notes_server(approval=approval)
        agentspan.serve(notes_agent(server, approval=approval), max_runs=1)
        assert server.session is None  # connected for the run, closed after it
        print("FINAL:", agentspan.get(run_id).result(timeout=60), flush=True)
    else:
        print("FINAL:", asyncio.run(main(mode, run_id, approval)).final_output, flush=True)
