"""The tool server an agent runs (`kimaki mcp-tools`): a stdio MCP server that relays to the daemon.

It is built on the official SDK's low-level `Server` (run under trio through anyio) and holds
no tool of its own: `tools/list` and `tools/call` are forwarded to the daemon's lock port
(`/tools/list`, `/tools/call`) with the session's grant as a bearer token, and the daemon's
answer becomes the MCP result. So the tools run in the daemon, next to the thread they act on,
and a relay started by anyone without a live grant can do nothing.

What the model sees when the daemon cannot serve a call is a tool error it can read, not a
protocol error: the session ended (a 401: its grant was revoked), the daemon is not reachable
(restarting, or stopped), or the connection broke mid-call. A `tools/call` has no time limit (an
`ask` waits for a person, as long as it takes); connecting has one, and so has listing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import McpError
from mcp.shared.message import SessionMessage

from kimaki._mcp_keepalive import progress_while_running
from kimaki._version import __version__

__all__ = [
    "REVOKED",
    "serve_relay",
    "serve_relay_stdio",
]

log = logging.getLogger("kimaki.tools.relay")

REVOKED: Final = "this session's tools are no longer available (the session ended)"
CONNECT_TIMEOUT: Final = 10.0
LIST_TIMEOUT: Final = 30.0

INSTRUCTIONS: Final = (
    "kimaki's tools act on the Discord thread this session belongs to (and its project "
    "channel): post a message or a file, offer buttons, ask a question, read the history, "
    "tell the time. Your final answer is posted by the bot; do not send it with send_message."
)


class _Daemon:
    """The daemon's tool routes, as the relay calls them."""

    def __init__(self, client: httpx.AsyncClient, control_url: str) -> None:
        self._client = client
        self._control_url = control_url

    def _unreachable(self) -> str:
        return (
            f"kimaki's daemon is not reachable at {self._control_url} (stopped, or "
            "restarting); try again in a moment"
        )

    async def list_tools(self) -> types.ListToolsResult:
        try:
            response = await self._client.post("/tools/list", timeout=LIST_TIMEOUT)
        except httpx.TransportError as exc:
            log.warning("tools/list: %r", exc)
            raise _error(self._unreachable()) from None
        if response.status_code == 401:
            raise _error(REVOKED)
        try:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            tools = response.json()["tools"]
            return types.ListToolsResult(
                tools=[
                    types.Tool(
                        name=tool["name"],
                        description=tool["description"],
                        inputSchema=tool["inputSchema"],
                    )
                    for tool in tools
                ]
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("tools/list: the daemon answered %s: %r", response.status_code, exc)
            raise _error(f"kimaki's daemon could not list its tools ({exc})") from None

    async def call_tool(self, name: str, arguments: Mapping[str, Any]) -> types.CallToolResult:
        try:
            response = await self._client.post(
                "/tools/call", json={"name": name, "arguments": dict(arguments)}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            log.warning("tools/call %s: %r", name, exc)
            return _result(self._unreachable(), is_error=True)
        except httpx.TransportError as exc:
            log.warning("tools/call %s: %r", name, exc)
            return _result(
                "the connection to kimaki's daemon broke during the call; the tool may or may "
                "not have acted",
                is_error=True,
            )
        if response.status_code == 401:
            return _result(REVOKED, is_error=True)
        try:
            body = response.json()
            if response.status_code == 400:
                return _result(f"the call was refused: {body['error']}", is_error=True)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            text, is_error = body["text"], body["isError"]
            if not isinstance(text, str) or not isinstance(is_error, bool):
                raise TypeError("text and isError expected")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "tools/call %s: the daemon answered %s: %r", name, response.status_code, exc
            )
            return _result(
                f"kimaki's daemon could not run the tool (HTTP {response.status_code}); "
                "see the daemon's log",
                is_error=True,
            )
        return _result(text, is_error=is_error)


def _error(message: str) -> McpError:
    return McpError(types.ErrorData(code=types.INTERNAL_ERROR, message=message))


def _result(text: str, *, is_error: bool) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], isError=is_error
    )


def _server(daemon: _Daemon) -> Server[Any, Any]:
    # The handlers go straight into the table: the SDK's decorators would validate arguments
    # against a cached listing (another round trip) and wrap errors; the daemon does both.
    server: Server[Any, Any] = Server("kimaki", version=__version__, instructions=INSTRUCTIONS)

    async def list_tools(request: types.ListToolsRequest) -> types.ServerResult:
        return types.ServerResult(await daemon.list_tools())

    async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
        params = request.params
        async with progress_while_running(server.request_context):
            result = await daemon.call_tool(params.name, params.arguments or {})
        return types.ServerResult(result)

    server.request_handlers[types.ListToolsRequest] = list_tools
    server.request_handlers[types.CallToolRequest] = call_tool
    return server


async def serve_relay(
    control_url: str,
    token: str,
    read_stream: MemoryObjectReceiveStream[SessionMessage | Exception],
    write_stream: MemoryObjectSendStream[SessionMessage],
) -> None:
    """Serve MCP over the given streams until the client goes away."""
    async with httpx.AsyncClient(
        base_url=control_url,
        headers={"authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
    ) as client:
        server = _server(_Daemon(client, control_url))
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_relay_stdio(control_url: str, token: str) -> None:
    """Serve MCP on stdin and stdout (what an agent starts) until stdin ends."""
    async with stdio_server() as (read_stream, write_stream):
        await serve_relay(control_url, token, read_stream, write_stream)
