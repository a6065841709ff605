"""A small MCP server for the tests: over stdio as a real child, or Streamable HTTP in-process.

Agents run MCP servers as children, so the proxy's tests (and the end-to-end ones) run this
module the same way: `python -m kimaki.testing.mcp_server [--calls FILE]`, the SDK's low-level
server on its stdin and stdout. `--calls` appends the name of every tool call it receives to
FILE, so a test can prove that a blocked call never reached it.

`McpHttpServer` is the same server behind a Streamable HTTP endpoint (`POST /mcp`, JSON
answers, a session id, no SSE), on `kimaki._http.serve_http`, with a `fail` switch that makes
every request answer 500, to test a server that goes away and comes back.

Tools: `echo(text)`, `add(a, b)` (with `structuredContent`), `environment()` (the sorted
names, never the values, of the environment variables the server sees), `oops()` (a tool
error: `isError`), and `crash()` (stdio: the process exits mid-call; HTTP: that request
answers 500).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, final

import trio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import McpError
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS

from kimaki._http import Request, Response, serve_http
from kimaki.mcp._upstream import json_line_streams

__all__ = ["TOOLS", "McpHttpServer", "build_server", "call_tool", "main", "serve_stdio"]

_OBJECT: Final[dict[str, Any]] = {"type": "object", "properties": {}}

TOOLS: Final = (
    types.Tool(
        name="echo",
        description="Returns its text.",
        inputSchema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    ),
    types.Tool(
        name="add",
        description="Adds two numbers.",
        inputSchema={
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    ),
    types.Tool(
        name="environment",
        description="The names of the environment variables this server sees, sorted.",
        inputSchema=_OBJECT,
    ),
    types.Tool(name="oops", description="Always fails, as a tool error.", inputSchema=_OBJECT),
    types.Tool(name="crash", description="The server dies while answering.", inputSchema=_OBJECT),
)


def call_tool(name: str, arguments: Mapping[str, Any]) -> types.CallToolResult:
    """One call of a tool other than `crash`, which each transport plays its own way."""
    if name == "echo":
        return _text(str(arguments.get("text", "")))
    if name == "add":
        a, b = arguments.get("a"), arguments.get("b")
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message="a and b: numbers"))
        result = _text(str(a + b))
        result.structuredContent = {"sum": a + b}
        return result
    if name == "environment":
        names = sorted(os.environ)
        result = _text("\n".join(names))
        result.structuredContent = {"names": names}
        return result
    if name == "oops":
        result = _text("oops: this tool always fails")
        result.isError = True
        return result
    raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}"))


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


# -- stdio -----------------------------------------------------------------------------------


def build_server(on_call: Callable[[str], Awaitable[None]]) -> Server[Any, Any]:
    """The SDK's low-level server with the test tools; `on_call` hears each call's name first."""
    server: Server[Any, Any] = Server("kimaki-test")

    async def list_tools(request: types.ListToolsRequest) -> types.ServerResult:
        return types.ServerResult(types.ListToolsResult(tools=list(TOOLS)))

    async def call(request: types.CallToolRequest) -> types.ServerResult:
        name = request.params.name
        await on_call(name)
        if name == "crash":
            os._exit(3)
        return types.ServerResult(call_tool(name, request.params.arguments or {}))

    server.request_handlers[types.ListToolsRequest] = list_tools
    server.request_handlers[types.CallToolRequest] = call
    return server


async def serve_stdio(calls: Path | None = None) -> None:
    """Serve on this process's stdin and stdout until stdin ends."""

    async def record(name: str) -> None:
        if calls is not None:
            await trio.to_thread.run_sync(_append, calls, name)

    server = build_server(record)
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    async with stdin, stdout, json_line_streams(stdin, stdout) as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _append(path: Path, name: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(name + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kimaki.testing.mcp_server")
    parser.add_argument("--calls", type=Path, help="append each tool call's name to this file")
    args = parser.parse_args(argv)
    trio.run(serve_stdio, args.calls)


# -- Streamable HTTP -------------------------------------------------------------------------


@final
class McpHttpServer:
    """The test tools behind a Streamable HTTP endpoint: `port = await nursery.start(server.serve)`.

    `calls` lists the tool calls received; `requests` every POST (a test reads the headers a
    client sent); `fail = True` makes every request answer 500 until it is set back;
    `hold_listing` / `hold_calls`, when set, are awaited before a `tools/list` / `tools/call` is
    answered (a slow server, a long tool).
    """

    def __init__(self) -> None:
        self.fail = False
        self.hold_listing: trio.Event | None = None
        self.hold_calls: trio.Event | None = None
        self.calls: list[str] = []
        self.requests: list[Request] = []
        self.port = 0
        self._sessions: set[str] = set()

    def forget_sessions(self) -> None:
        """Forget every session, as a server that restarted does: their requests get 404."""
        self._sessions.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(partial(serve_http, self._handle, name="mcp-test"))
            task_status.started(self.port)

    async def _handle(self, request: Request) -> Response:
        if request.path != "/mcp":
            return Response.json({"error": "not found"}, status=404)
        if self.fail:
            return Response.text("failing on purpose", status=500)
        if request.method == "GET":  # no server-initiated stream
            return Response(405, [("allow", "POST, DELETE")])
        if request.method == "DELETE":
            self._sessions.discard(request.header("mcp-session-id") or "")
            return Response.empty(204)
        if request.method != "POST":
            return Response(405, [("allow", "POST, DELETE")])
        self.requests.append(request)
        accept = request.header("accept") or ""
        if "application/json" not in accept or "text/event-stream" not in accept:
            return Response.json({"error": "accept both JSON and SSE"}, status=406)
        if not (request.header("content-type") or "").startswith("application/json"):
            return Response.json({"error": "JSON only"}, status=415)
        try:
            message = types.JSONRPCMessage.model_validate_json(request.body)
        except ValueError:
            return _error(None, types.PARSE_ERROR, "Parse error", status=400)
        root = message.root
        if not isinstance(root, types.JSONRPCRequest):
            return Response.empty(202)  # a notification or a response
        if root.method == "initialize":
            return self._initialize(root)
        session = request.header("mcp-session-id")
        if session is None:
            return _error(root.id, types.INVALID_REQUEST, "mcp-session-id missing", status=400)
        if session not in self._sessions:
            return _error(root.id, types.INVALID_REQUEST, "unknown session", status=404)
        if request.header("mcp-protocol-version") not in SUPPORTED_PROTOCOL_VERSIONS:
            return _error(root.id, types.INVALID_REQUEST, "bad protocol version", status=400)
        if root.method == "tools/list" and self.hold_listing is not None:
            await self.hold_listing.wait()
        if root.method == "tools/call" and self.hold_calls is not None:
            await self.hold_calls.wait()
        return self._answer(root)

    def _initialize(self, request: types.JSONRPCRequest) -> Response:
        asked = (request.params or {}).get("protocolVersion")
        version = asked if asked in SUPPORTED_PROTOCOL_VERSIONS else types.LATEST_PROTOCOL_VERSION
        session = uuid.uuid4().hex
        self._sessions.add(session)
        result = types.InitializeResult(
            protocolVersion=version,
            capabilities=types.ServerCapabilities(tools=types.ToolsCapability(listChanged=False)),
            serverInfo=types.Implementation(name="kimaki-test-http", version="1"),
        )
        return _result(request.id, result, headers=[("mcp-session-id", session)])

    def _answer(self, request: types.JSONRPCRequest) -> Response:
        if request.method == "ping":
            return _result(request.id, types.EmptyResult())
        if request.method == "tools/list":
            return _result(request.id, types.ListToolsResult(tools=list(TOOLS)))
        if request.method == "tools/call":
            params = types.CallToolRequestParams.model_validate(request.params or {})
            self.calls.append(params.name)
            if params.name == "crash":
                return Response.text("crashed on purpose", status=500)
            try:
                return _result(request.id, call_tool(params.name, params.arguments or {}))
            except McpError as exc:
                return _error(request.id, exc.error.code, exc.error.message)
        return _error(request.id, types.METHOD_NOT_FOUND, "Method not found")


def _result(
    request_id: types.RequestId, result: Any, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    body = types.JSONRPCResponse(
        jsonrpc="2.0",
        id=request_id,
        result=result.model_dump(by_alias=True, mode="json", exclude_none=True),
    )
    return Response.json(
        body.model_dump(by_alias=True, mode="json", exclude_none=True), 200, headers
    )


def _error(
    request_id: types.RequestId | None, code: int, message: str, *, status: int = 200
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    return Response.json({"jsonrpc": "2.0", "id": request_id, "error": error}, status=status)


if __name__ == "__main__":
    main()
