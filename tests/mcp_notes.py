"""A real MCP server over stdio for the MCP tests: ``python mcp_notes.py``.

Its one tool, ``write_note``, appends ``note <text>`` to the ``effects`` file of AGENTSPAN_HOME
(`crash_support.log`), so a test counts the tool's side effects across the agent's processes.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from crash_support import log

server = MCPServer("notes")


@server.tool()
def write_note(text: str) -> str:
    """Appends a note."""
    log("effects", f"note {text}")
    return f"saved {text}"


if __name__ == "__main__":
    server.run("stdio")
