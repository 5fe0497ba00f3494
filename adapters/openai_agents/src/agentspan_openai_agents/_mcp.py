"""MCP servers of an agent tree that nobody connected: connected for the run, in its own loop.

An MCP server's connection belongs to the event loop that opened it (``async with server:``).
`agentspan.run_async` and `agentspan.resume_async` run in the caller's loop, where the caller's
connected servers work as they are; `agentspan.start`, `resume` and `serve` run the agent on a
thread and loop of their own. There, a server the caller left unconnected is connected by
`servers_connected` for the run and closed after it, so those entry points (a worker above all)
can run agents with MCP tools. A server already connected is left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent

from agentspan_openai_agents._mock import agents_of


def unconnected_servers(agent: Agent[Any]) -> list[Any]:
    """The MCP servers of the tree with a client session that is not open (``session is None``)."""
    found: dict[int, Any] = {}
    for member in agents_of(agent):
        for server in getattr(member, "mcp_servers", None) or ():
            if hasattr(server, "session") and server.session is None:
                found.setdefault(id(server), server)
    return list(found.values())


@contextlib.asynccontextmanager
async def servers_connected(agent: Agent[Any]) -> AsyncIterator[None]:
    """Connects the tree's unconnected MCP servers for the block and closes them after it."""
    async with contextlib.AsyncExitStack() as stack:
        for server in unconnected_servers(agent):
            await stack.enter_async_context(server)
        yield
