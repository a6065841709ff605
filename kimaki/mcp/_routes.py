"""The daemon's side of the policy proxy: `POST /mcp/plan` on the lock port.

A proxy (`kimaki mcp-proxy --server X`, run by an agent) holds no configuration of its own: it
asks here, with its session's grant, for the upstream server to reach and the tools it may
pass on. The answer carries the upstream's environment and headers, so it is given only to a
live grant, and only for a server its channel enables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from kimaki._http import Request, Response
from kimaki.agents import ToolGrant
from kimaki.mcp._catalog import McpConfigError
from kimaki.mcp._proxy import ProxyPlan

__all__ = ["PLAN_PATH", "GrantLookup", "ProxyPlans", "RouteTable", "install_mcp_routes"]


PLAN_PATH: Final = "/mcp/plan"


class RouteTable(Protocol):
    """Where routes are added (`kimaki._control.ControlServer` is one)."""

    def add_route(
        self, method: str, path: str, route: Callable[[Request], Awaitable[Response]]
    ) -> None: ...


class ProxyPlans(Protocol):
    """What a proxy may pass on (`kimaki.mcp.McpPolicies` is one)."""

    async def proxy_plan(self, grant: ToolGrant, server: str) -> ProxyPlan | None: ...


class GrantLookup(Protocol):
    """The live grants by token (`kimaki.agents.Grants` is one)."""

    def resolve(self, token: str) -> ToolGrant | None: ...


def install_mcp_routes(control: RouteTable, policies: ProxyPlans, grants: GrantLookup) -> None:
    """`POST /mcp/plan`: `Authorization: Bearer <grant>`, `{"server": name}` →
    200 the `ProxyPlan` | 401 no live grant | 403 not enabled | 400 a malformed request."""

    async def plan(request: Request) -> Response:
        token = request.bearer_token
        grant = grants.resolve(token) if token is not None else None
        if grant is None:
            return Response.json({"error": "a live grant is required"}, 401)
        try:
            body = request.json()
        except ValueError:
            return Response.json({"error": "the body is not JSON"}, 400)
        server = body.get("server") if isinstance(body, dict) else None
        if not isinstance(server, str) or not server:
            return Response.json({"error": 'the body must be {"server": "<name>"}'}, 400)
        try:
            found = await policies.proxy_plan(grant, server)
        except McpConfigError as exc:
            return Response.json({"error": str(exc)}, 500)
        if found is None:
            return Response.json(
                {"error": f'MCP server "{server}" is not enabled for this channel'}, 403
            )
        return Response.json(found.to_json())

    control.add_route("POST", PLAN_PATH, plan)
