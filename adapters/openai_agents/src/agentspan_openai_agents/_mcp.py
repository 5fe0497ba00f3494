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
import sys
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


def servers_connected(agent: Agent[Any]) -> contextlib.AbstractAsyncContextManager[Any]:
    """Connects the tree's unconnected MCP servers for the block and closes them after it.

    No async generator (``@asynccontextmanager``): `agentspan.run` keeps its thread's loop for the
    next run after ``loop.shutdown_asyncgens()`` (as ``Runner.run_sync`` does), and an async
    generator started on that loop afterwards gets a ``ResourceWarning`` (one per run).
    """
    servers = unconnected_servers(agent)
    return _Connected(servers) if servers else contextlib.nullcontext()


class _Connected:
    """`servers_connected` of some servers: each entered in turn, all closed in reverse order."""

    def __init__(self, servers: list[Any]) -> None:
        self._servers = servers
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> None:
        await self._stack.__aenter__()
        try:
            for server in self._servers:
                await self._stack.enter_async_context(server)
        except BaseException:
            if not await self._stack.__aexit__(*sys.exc_info()):
                raise

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._stack.__aexit__(*exc_info)
