"""MCP servers for agents: the catalog, the per-channel policy, and the proxy that enforces it.

The **catalog** is what this machine knows (`<data-dir>/mcp.json`, and the person's own OpenCode
configuration, read-only). The **policy** says, per project channel, which of those servers its
agents get and which of their tools (`McpPolicies`, the door; the store keeps it). Every enabled
server runs behind the **proxy** (`kimaki mcp-proxy`), which fetches its upstream and allowlist
from the daemon with its session's grant, lists only the allowed tools and refuses the others
without forwarding them. The engines receive the servers through `kimaki.agents.McpProvider`,
which `McpPolicies` is.
"""

from __future__ import annotations

from kimaki.mcp._catalog import (
    RESERVED_NAME,
    CatalogEntry,
    McpConfigError,
    load_catalog,
    opencode_config_paths,
)
from kimaki.mcp._policy import McpPolicies, McpPolicyError
from kimaki.mcp._proxy import (
    BLOCKED,
    UNREACHABLE,
    ProxyPlan,
    blocked_message,
    fetch_plan,
    serve_proxy,
    serve_proxy_stdio,
)
from kimaki.mcp._retire import retire_channel_servers
from kimaki.mcp._routes import install_mcp_routes
from kimaki.mcp._upstream import UpstreamError, UpstreamTool, list_upstream_tools, open_upstream

__all__ = [
    "BLOCKED",
    "RESERVED_NAME",
    "UNREACHABLE",
    "CatalogEntry",
    "McpConfigError",
    "McpPolicies",
    "McpPolicyError",
    "ProxyPlan",
    "UpstreamError",
    "UpstreamTool",
    "blocked_message",
    "fetch_plan",
    "install_mcp_routes",
    "list_upstream_tools",
    "load_catalog",
    "open_upstream",
    "opencode_config_paths",
    "retire_channel_servers",
    "serve_proxy",
    "serve_proxy_stdio",
]
