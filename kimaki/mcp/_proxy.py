"""`kimaki mcp-proxy`: one enabled MCP server, behind the channel's policy, outside the agent.

The agent starts the proxy as a stdio MCP server. The proxy asks the daemon for its plan (the
catalog entry and the tools the channel allows, with its grant), answers `initialize` itself,
and is an MCP client of the real server: `tools/list` comes back filtered to the allowed names,
and a `tools/call` of anything else is refused here with JSON-RPC error -32001, so the server
never sees it, whatever the model or the agent's own configuration asks for.

A server that cannot be reached does not take the proxy down: requests are answered with
-32002 saying why, and the next request tries to connect again. The agent may treat a dead
stdio MCP server as gone for the rest of its session; a proxy that stays up lets the server
come back without a restart.

The hot path (an allowed `tools/call` on a live connection) takes no lock and starts no task:
a set lookup, then the SDK's request, inside a cancel scope that a failing connection cancels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, Final, TypeVar, final

import anyio
import attrs
import httpx
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession, types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import McpError
from mcp.shared.message import SessionMessage

from kimaki._mcp_keepalive import progress_while_running
from kimaki._version import __version__
from kimaki.mcp._catalog import CatalogEntry, McpConfigError
from kimaki.mcp._upstream import UpstreamError, json_line_streams, open_upstream, unreachable

__all__ = [
    "BLOCKED",
    "UNREACHABLE",
    "ProxyPlan",
    "blocked_message",
    "fetch_plan",
    "serve_proxy",
    "serve_proxy_stdio",
]

log = logging.getLogger("kimaki.mcp")

BLOCKED: Final = -32001
"""JSON-RPC error code: the tool is not allowed by the channel's policy."""
UNREACHABLE: Final = -32002
"""JSON-RPC error code: the server cannot be started or reached, or failed during the call."""

_PLAN_TIMEOUT: Final = 10.0
_MAX_PAGES: Final = 100
_ResultT = TypeVar("_ResultT", types.ListToolsResult, types.CallToolResult)


def blocked_message(tool: str) -> str:
    """What the agent (and the model) reads when a tool is refused."""
    return f'MCP tool "{tool}" is blocked by this channel\'s policy'


@final
@attrs.frozen
class ProxyPlan:
    """What one proxy serves: the server to reach, and the tools it may pass on (None: all)."""

    entry: CatalogEntry
    allowed: frozenset[str] | None

    def to_json(self) -> dict[str, Any]:
        allowed = None if self.allowed is None else sorted(self.allowed)
        return {"entry": self.entry.to_json(), "allowed": allowed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProxyPlan:
        """The inverse of `to_json`; raises `McpConfigError` on anything else."""
        if not isinstance(data, Mapping) or not isinstance(data.get("entry"), Mapping):
            raise McpConfigError('a proxy plan is {"entry": {...}, "allowed": [...] | null}')
        allowed = data.get("allowed")
        if allowed is not None and (
            not isinstance(allowed, list) or not all(isinstance(name, str) for name in allowed)
        ):
            raise McpConfigError('a proxy plan\'s "allowed" is a list of tool names or null')
        entry = CatalogEntry.from_json(data["entry"])
        return cls(entry, None if allowed is None else frozenset(allowed))


async def fetch_plan(control_url: str, token: str, server: str) -> ProxyPlan:
    """The plan for `server`, from the daemon's control endpoint, with this proxy's grant.

    Raises `UpstreamError` with the daemon's reason (an unknown or revoked grant, a server not
    enabled for the channel) or, when the daemon cannot be reached, with that.
    """
    url = control_url.rstrip("/") + "/mcp/plan"
    try:
        # Never through an HTTP proxy from the environment: the daemon is on this machine.
        async with httpx.AsyncClient(timeout=_PLAN_TIMEOUT, trust_env=False) as client:
            response = await client.post(
                url, json={"server": server}, headers={"authorization": f"Bearer {token}"}
            )
    except httpx.HTTPError as exc:
        raise UpstreamError(
            f"the kimaki daemon cannot be reached at {control_url} ({type(exc).__name__})"
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        raise UpstreamError(str(error) if error else f"HTTP {response.status_code}")
    if not isinstance(body, Mapping):
        raise UpstreamError("the kimaki daemon answered a plan that is not a JSON object")
    try:
        return ProxyPlan.from_json(body)
    except McpConfigError as exc:
        raise UpstreamError(f"the kimaki daemon answered a malformed plan: {exc}") from None


async def serve_proxy_stdio(plan: ProxyPlan) -> None:
    """`serve_proxy` on this process's stdin and stdout, until the agent closes stdin."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    # Whatever else writes to fd 1 (a print, a library) goes to stderr, not into the protocol.
    saved = os.dup(1)
    os.dup2(sys.stderr.fileno(), 1)
    try:
        async with stdin, stdout, json_line_streams(stdin, stdout) as (read_stream, write_stream):
            await serve_proxy(plan, read_stream, write_stream)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def serve_proxy(
    plan: ProxyPlan,
    read_stream: MemoryObjectReceiveStream[SessionMessage | Exception],
    write_stream: MemoryObjectSendStream[SessionMessage],
) -> None:
    """The proxy over the given streams, until the client's side of them ends."""
    server: Server[Any, Any] = Server(plan.entry.name, version=__version__)
    async with trio.open_nursery() as nursery:
        upstream = _Upstream(plan.entry, nursery)

        async def list_tools(request: types.ListToolsRequest) -> types.ServerResult:
            tools = await upstream.tools()
            if plan.allowed is not None:
                tools = [tool for tool in tools if tool.name in plan.allowed]
            return types.ServerResult(types.ListToolsResult(tools=tools))

        async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
            name = request.params.name
            if plan.allowed is not None and name not in plan.allowed:
                log.info("MCP server %r: blocked a call of %r", plan.entry.name, name)
                raise McpError(types.ErrorData(code=BLOCKED, message=blocked_message(name)))
            # A new request: the one received carries its JSON-RPC envelope as extra fields.
            async with progress_while_running(server.request_context):
                result = await upstream.call(types.CallToolRequest(params=request.params))
            return types.ServerResult(result)

        server.request_handlers[types.ListToolsRequest] = list_tools
        server.request_handlers[types.CallToolRequest] = call_tool
        nursery.start_soon(upstream.warm_up)
        await server.run(read_stream, write_stream, server.create_initialization_options())
        nursery.cancel_scope.cancel()


@final
class _Connection:
    """One live session with the server, held open by a task of the proxy's nursery."""

    def __init__(self, session: ClientSession, holder: trio.CancelScope) -> None:
        self.session = session
        self.holder = holder
        self.ended = trio.Event()
        self.failure = ""
        # The requests in flight on it: a connection that fails cancels them.
        self.requests: set[trio.CancelScope] = set()


@final
class _Upstream:
    """The proxy's way to the server: connected at start, and again on the first request
    after a failure, one connection at a time."""

    def __init__(self, entry: CatalogEntry, nursery: trio.Nursery) -> None:
        self._entry = entry
        self._nursery = nursery
        self._current: _Connection | None = None
        self._connecting = trio.Lock()

    async def warm_up(self) -> None:
        """Connect before the first request needs it; a failure is logged and left for it."""
        with contextlib.suppress(McpError):
            await self._connection()

    async def tools(self) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await self._request(
                types.ClientRequest(types.ListToolsRequest(params=params)), types.ListToolsResult
            )
            tools.extend(page.tools)
            cursor = page.nextCursor
            if not cursor:
                break
        return tools

    async def call(self, request: types.CallToolRequest) -> types.CallToolResult:
        # Sent as is (arguments, _meta), answered as is (content, isError, structuredContent).
        return await self._request(types.ClientRequest(request), types.CallToolResult)

    async def _request(self, request: types.ClientRequest, result_type: type[_ResultT]) -> _ResultT:
        connection = await self._connection()
        scope = trio.CancelScope()
        connection.requests.add(scope)
        try:
            with scope:
                return await connection.session.send_request(request, result_type)
        except McpError as exc:
            why = _LOST.get((exc.error.code, exc.error.message))
            if why is None:
                raise  # the server's own answer, passed on
            await self._lost(connection, why)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._lost(connection, "the connection closed")
        finally:
            connection.requests.discard(scope)
        # Here only when the connection failed under the request: say why it did.
        await connection.ended.wait()
        why = connection.failure or str(unreachable(self._entry.name, "the connection closed"))
        raise _unreachable_error(why)

    async def _lost(self, connection: _Connection, why: str) -> None:
        """The session ended under a request: close the connection, and say why unless its
        holder already knows better (a child's exit code, an HTTP status)."""
        if not connection.failure:
            connection.failure = str(unreachable(self._entry.name, why))
        connection.holder.cancel()
        await connection.ended.wait()

    async def _connection(self) -> _Connection:
        current = self._current
        if current is not None and not current.ended.is_set():
            return current
        async with self._connecting:
            current = self._current
            if current is None or current.ended.is_set():
                try:
                    current = await self._nursery.start(self._hold)
                except UpstreamError as exc:
                    log.warning("%s", exc)
                    raise _unreachable_error(str(exc)) from None
                self._current = current
            return current

    async def _hold(
        self, *, task_status: trio.TaskStatus[_Connection] = trio.TASK_STATUS_IGNORED
    ) -> None:
        connection: _Connection | None = None
        try:
            with trio.CancelScope() as holder:
                async with open_upstream(self._entry) as session:
                    connection = _Connection(session, holder)
                    task_status.started(connection)
                    await trio.sleep_forever()
        except Exception as exc:
            if connection is None:
                raise  # not started: `nursery.start` hands it to the request
            if isinstance(exc, UpstreamError):
                connection.failure = str(exc)
                log.warning("%s", exc)
            else:
                connection.failure = str(unreachable(self._entry.name, type(exc).__name__))
                log.warning("%s", connection.failure, exc_info=exc)
        finally:
            if connection is not None:
                connection.ended.set()
                for scope in connection.requests:
                    scope.cancel()


# The SDK's own errors for a session that ended under a request: its transport closed, or an
# HTTP server no longer knows its session id (it restarted).
_LOST: Final = {
    (types.CONNECTION_CLOSED, "Connection closed"): "the connection closed",
    (32600, "Session terminated"): "it ended the session",
}


def _unreachable_error(message: str) -> McpError:
    return McpError(types.ErrorData(code=UNREACHABLE, message=message))
