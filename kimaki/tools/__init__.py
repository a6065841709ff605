"""Agent tools: what an agent can do on Discord, through one MCP tool server.

A tool is one small module with one `ToolSpec` (`_spec`); the daemon serves the `ToolBox` of
them on the lock port (`install_tool_routes`), and each agent session runs the stdio relay
(`kimaki mcp-tools`, `serve_relay_stdio`) that forwards its MCP calls there with the session's
grant. The thread a tool acts on comes from the grant, never from the model's arguments.
"""

from __future__ import annotations

from kimaki.tools._box import ToolBox
from kimaki.tools._builtin import BUILTIN_TOOLS
from kimaki.tools._relay import (
    serve_relay,
    serve_relay_stdio,
)
from kimaki.tools._routes import RouteTable, ToolPlaces, install_tool_routes
from kimaki.tools._spec import (
    ButtonChoice,
    HistoryEntry,
    ToolContext,
    ToolError,
    ToolResult,
    ToolSpec,
    Where,
)

__all__ = [
    "BUILTIN_TOOLS",
    "ButtonChoice",
    "HistoryEntry",
    "RouteTable",
    "ToolBox",
    "ToolContext",
    "ToolError",
    "ToolPlaces",
    "ToolResult",
    "ToolSpec",
    "Where",
    "install_tool_routes",
    "serve_relay",
    "serve_relay_stdio",
]
