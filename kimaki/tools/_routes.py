"""The daemon's side of the tool server: `/tools/list` and `/tools/call` on the lock port.

The relay an agent runs (`kimaki mcp-tools`) forwards each MCP request here with its grant's
token as a bearer token. The token is all a call carries: `ToolPlaces` turns it into the
thread it belongs to (or refuses it), so a tool acts where its session is, whatever the
arguments say. A refused token is a 401, which the relay tells the model as "the session
ended"; a body that is not a tool call is a 400 saying what is wrong.

A private agent (the audit agent of `/audit ask`) has grants of its own, resolved by its own
`ToolPlaces` to its own `ToolBox`: a token is served by the first (box, places) pair that knows
it, so such an agent lists and calls only its box's tools, and a thread's grant never reaches
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from kimaki._http import Handler, Request, Response
from kimaki.tools._box import ToolBox
from kimaki.tools._spec import ToolContext

__all__ = ["RouteTable", "ToolPlaces", "install_tool_routes"]


class RouteTable(Protocol):
    """Where routes go (`kimaki._control.ControlServer`)."""

    def add_route(self, method: str, path: str, route: Handler) -> None: ...


class ToolPlaces(Protocol):
    """The grants behind the tokens, and the threads their sessions are in."""

    def knows(self, token: str) -> bool:
        """Whether `token` is a live grant (for listing, which needs no thread)."""
        ...

    async def context_for(
        self, token: str, tool: str, arguments: Mapping[str, Any]
    ) -> ToolContext | None:
        """The thread a call with `token` acts on; None when the token is unknown or revoked,
        or no live session matches it."""
        ...


def _refused(reason: str) -> Response:
    return Response.json({"error": reason}, 401)


def _bad(reason: str) -> Response:
    return Response.json({"error": reason}, 400)


def install_tool_routes(
    control: RouteTable,
    box: ToolBox,
    places: ToolPlaces,
    *,
    private: Sequence[tuple[ToolBox, ToolPlaces]] = (),
) -> None:
    """Add `POST /tools/list` and `POST /tools/call` to `control`; `private`: the boxes of
    agents with grants of their own (each served only to the tokens its places know)."""
    realms = ((box, places), *private)

    def realm_of(token: str | None) -> tuple[ToolBox, ToolPlaces] | None:
        if token is None:
            return None
        for realm in realms:
            if realm[1].knows(token):
                return realm
        return None

    async def list_tools(request: Request) -> Response:
        realm = realm_of(request.bearer_token)
        if realm is None:
            return _refused("unknown or revoked grant")
        box = realm[0]
        tools = [
            {"name": spec.name, "description": spec.description, "inputSchema": spec.input_schema}
            for spec in box.specs()
        ]
        return Response.json({"tools": tools})

    async def call_tool(request: Request) -> Response:
        token = request.bearer_token
        realm = realm_of(token)
        if token is None or realm is None:
            return _refused("unknown or revoked grant")
        box, places = realm
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            return _bad('the body is not JSON; send {"name": ..., "arguments": {...}}')
        if not isinstance(body, dict):
            return _bad('the body must be a JSON object {"name": ..., "arguments": {...}}')
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return _bad("`name` (the tool's name, a string) is missing")
        arguments = body.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return _bad("`arguments` must be a JSON object")
        ctx = await places.context_for(token, name, arguments)
        if ctx is None:
            return _refused("no live session for this grant")
        result = await box.call(ctx, name, arguments)
        return Response.json({"text": result.text, "isError": result.is_error})

    control.add_route("POST", "/tools/list", list_tools)
    control.add_route("POST", "/tools/call", call_tool)
