from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from mcp import ClientSession, types
from mcp.shared.exceptions import McpError
from mcp.shared.memory import create_client_server_memory_streams

from kimaki._http import Request, Response, serve_http
from kimaki.mcp._catalog import CatalogEntry
from kimaki.mcp._proxy import (
    BLOCKED,
    UNREACHABLE,
    ProxyPlan,
    blocked_message,
    fetch_plan,
    serve_proxy,
)
from kimaki.mcp._upstream import UpstreamError, list_upstream_tools, open_upstream
from kimaki.testing.daemon import free_port
from kimaki.testing.mcp_server import TOOLS, McpHttpServer
from kimaki.testing.opencode import process_running, wait_for_exit

ALL_TOOLS = [tool.name for tool in TOOLS]
SECRET = "upstream-secret-0123456789"


def stdio_entry(calls: Path, **env: str) -> CatalogEntry:
    # LC_ALL stops Python from setting LC_CTYPE in the child's environment (PEP 538).
    return CatalogEntry(
        name="tester",
        transport="stdio",
        command=sys.executable,
        args=("-m", "kimaki.testing.mcp_server", "--calls", str(calls)),
        env={"LC_ALL": "C.UTF-8", **env},
    )


def http_entry(url: str, **headers: str) -> CatalogEntry:
    return CatalogEntry(name="web", transport="http", url=url, headers=headers)


def text_of(result: types.CallToolResult) -> str:
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


def calls_in(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@asynccontextmanager
async def proxied(plan: ProxyPlan) -> AsyncIterator[ClientSession]:
    """The proxy over memory streams, and the SDK's client session with it, initialized."""
    async with (
        create_client_server_memory_streams() as (client_streams, server_streams),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_proxy, plan, *server_streams)
        async with ClientSession(*client_streams) as session:
            initialized = await session.initialize()
            assert initialized.serverInfo.name == plan.entry.name
            yield session
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def http_server() -> AsyncIterator[McpHttpServer]:
    server = McpHttpServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def test_listing_is_filtered_and_allowed_calls_pass_as_is(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    plan = ProxyPlan(stdio_entry(calls), frozenset({"echo", "add", "oops", "missing"}))

    async with proxied(plan) as session:
        listed = await session.list_tools()
        echoed = await session.call_tool("echo", {"text": "hello"})
        added = await session.call_tool("add", {"a": 2, "b": 3})
        failed = await session.call_tool("oops", {})

    assert [tool.name for tool in listed.tools] == ["echo", "add", "oops"]
    assert listed.tools[0].inputSchema == TOOLS[0].inputSchema
    assert (text_of(echoed), echoed.isError) == ("hello", False)
    assert (text_of(added), added.structuredContent) == ("5", {"sum": 5})
    assert (text_of(failed), failed.isError) == ("oops: this tool always fails", True)
    assert calls_in(calls) == ["echo", "add", "oops"]


async def test_without_an_allowlist_every_tool_is_listed() -> None:
    async with http_server() as server, proxied(ProxyPlan(http_entry(server.url), None)) as session:
        listed = await session.list_tools()

    assert [tool.name for tool in listed.tools] == ALL_TOOLS


async def test_a_blocked_call_is_an_error_and_never_reaches_the_server(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with http_server() as server:
        stdio = ProxyPlan(stdio_entry(calls), frozenset({"echo"}))
        http = ProxyPlan(http_entry(server.url), frozenset({"echo"}))
        async with proxied(stdio) as via_stdio, proxied(http) as via_http:
            for session in (via_stdio, via_http):
                with pytest.raises(McpError) as caught:
                    await session.call_tool("environment", {})
                assert caught.value.error.code == BLOCKED
                assert caught.value.error.message == (
                    'MCP tool "environment" is blocked by this channel\'s policy'
                )
                assert caught.value.error.message == blocked_message("environment")
                # A call after it, so the server has seen everything that was sent to it.
                assert text_of(await session.call_tool("echo", {"text": "after"})) == "after"

        assert server.calls == ["echo"]
    assert calls_in(calls) == ["echo"]


async def test_an_http_upstream_that_fails_is_unreachable_and_the_proxy_recovers() -> None:
    async with http_server() as server, proxied(ProxyPlan(http_entry(server.url), None)) as session:
        assert text_of(await session.call_tool("echo", {"text": "one"})) == "one"

        server.fail = True
        with pytest.raises(McpError) as failed_call:
            await session.call_tool("echo", {"text": "two"})
        with pytest.raises(McpError) as failed_list:
            await session.list_tools()

        server.fail = False
        back = await session.call_tool("echo", {"text": "three"})
        listed = await session.list_tools()

    for caught in (failed_call, failed_list):
        assert caught.value.error.code == UNREACHABLE
        assert caught.value.error.message == 'MCP server "web" is unreachable: HTTP 500'
    assert text_of(back) == "three"
    assert len(listed.tools) == len(TOOLS)


async def test_an_upstream_failing_mid_call_is_unreachable_for_that_call_only() -> None:
    async with http_server() as server, proxied(ProxyPlan(http_entry(server.url), None)) as session:
        with pytest.raises(McpError) as caught:
            await session.call_tool("crash", {})
        after = await session.call_tool("echo", {"text": "still here"})

    assert caught.value.error.code == UNREACHABLE
    assert text_of(after) == "still here"


async def test_an_http_upstream_that_restarted_is_reconnected() -> None:
    async with http_server() as server, proxied(ProxyPlan(http_entry(server.url), None)) as session:
        assert text_of(await session.call_tool("echo", {"text": "before"})) == "before"
        server.forget_sessions()
        with pytest.raises(McpError) as caught:
            await session.call_tool("echo", {"text": "lost"})
        after = await session.call_tool("echo", {"text": "after"})

    assert caught.value.error.code == UNREACHABLE
    assert caught.value.error.message == 'MCP server "web" is unreachable: it ended the session'
    assert text_of(after) == "after"


async def test_a_stdio_child_that_dies_mid_call_is_started_again(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with proxied(ProxyPlan(stdio_entry(calls), None)) as session:
        with pytest.raises(McpError) as caught:
            await session.call_tool("crash", {})
        after = await session.call_tool("echo", {"text": "new child"})

    assert caught.value.error.code == UNREACHABLE
    assert caught.value.error.message == 'MCP server "tester" is unreachable: it exited with code 3'
    assert text_of(after) == "new child"
    assert calls_in(calls) == ["crash", "echo"]


async def test_an_upstream_down_at_start_is_unreachable_until_it_is_up() -> None:
    refused = http_entry(f"http://127.0.0.1:{free_port()}/mcp")
    async with proxied(ProxyPlan(refused, None)) as session:
        with pytest.raises(McpError) as caught:
            await session.list_tools()
    assert caught.value.error.code == UNREACHABLE
    assert caught.value.error.message.startswith('MCP server "web" is unreachable: ConnectError')

    async with http_server() as server:
        server.fail = True
        async with proxied(ProxyPlan(http_entry(server.url), frozenset({"echo"}))) as session:
            with pytest.raises(McpError) as caught:
                await session.call_tool("echo", {"text": "x"})
            assert caught.value.error.code == UNREACHABLE
            # Blocked stays blocked, reachable or not.
            with pytest.raises(McpError) as blocked:
                await session.call_tool("add", {"a": 1, "b": 2})
            assert blocked.value.error.code == BLOCKED

            server.fail = False
            assert text_of(await session.call_tool("echo", {"text": "up"})) == "up"


async def test_a_stdio_child_sees_only_its_env_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIMAKI_CANARY_PASSWORD", "must-not-leak")
    entry = stdio_entry(tmp_path / "calls", UPSTREAM_TOKEN=SECRET)
    async with proxied(ProxyPlan(entry, None)) as session:
        result = await session.call_tool("environment", {})

    assert result.structuredContent == {"names": ["LC_ALL", "PATH", "UPSTREAM_TOKEN"]}


async def test_http_headers_are_sent_to_the_upstream() -> None:
    async with http_server() as server:
        tools = await list_upstream_tools(http_entry(server.url, Authorization=f"Bearer {SECRET}"))

    assert [tool.name for tool in tools] == ALL_TOOLS
    assert {request.header("authorization") for request in server.requests} == {f"Bearer {SECRET}"}


async def test_list_upstream_tools_over_both_transports(tmp_path: Path) -> None:
    stdio_tools = await list_upstream_tools(stdio_entry(tmp_path / "calls"))
    async with http_server() as server:
        http_tools = await list_upstream_tools(http_entry(server.url))

    assert stdio_tools == http_tools
    assert [(tool.name, tool.description) for tool in stdio_tools] == [
        (tool.name, tool.description) for tool in TOOLS
    ]


async def test_list_upstream_tools_says_why_a_server_is_unreachable(tmp_path: Path) -> None:
    missing = CatalogEntry(name="gone", transport="stdio", command=str(tmp_path / "nope"))
    with pytest.raises(UpstreamError) as not_started:
        await list_upstream_tools(missing)
    async with http_server() as server:
        server.fail = True
        with pytest.raises(UpstreamError) as failing:
            await list_upstream_tools(http_entry(server.url, Authorization=SECRET))

    assert str(not_started.value) == (
        f'MCP server "gone" is unreachable: {str(tmp_path / "nope")!r} cannot be started: '
        "No such file or directory"
    )
    assert str(failing.value) == 'MCP server "web" is unreachable: HTTP 500'


async def test_no_process_of_a_stdio_server_outlives_its_session(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    server = f"{sys.executable} -m kimaki.testing.mcp_server"
    entry = CatalogEntry(
        name="forking",
        transport="stdio",
        command="/bin/sh",
        args=("-c", f"sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pid_file}; exec {server}"),
        env={"LC_ALL": "C.UTF-8"},
    )
    async with open_upstream(entry) as session:
        await session.list_tools()
        grandchild = int(pid_file.read_text())
        assert process_running(grandchild)

    # SIGKILL was sent to the whole group: the grandchild exits too.
    with trio.fail_after(10):
        await wait_for_exit(grandchild)


async def test_the_proxy_over_its_own_stdio(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    plan = ProxyPlan(stdio_entry(calls), frozenset({"echo"}))
    script = (
        "import json, sys, trio\n"
        "from kimaki.mcp._proxy import ProxyPlan, serve_proxy_stdio\n"
        "trio.run(serve_proxy_stdio, ProxyPlan.from_json(json.loads(sys.argv[1])))\n"
    )
    proxy = CatalogEntry(
        name="proxy",
        transport="stdio",
        command=sys.executable,
        args=("-c", script, json.dumps(plan.to_json())),
        env={"LC_ALL": "C.UTF-8"},
    )
    async with open_upstream(proxy) as session:
        listed = await session.list_tools()
        with pytest.raises(McpError) as caught:
            await session.call_tool("add", {"a": 1, "b": 2})
        echoed = await session.call_tool("echo", {"text": "through two pipes"})

    assert [tool.name for tool in listed.tools] == ["echo"]
    assert (caught.value.error.code, caught.value.error.message) == (
        BLOCKED,
        blocked_message("add"),
    )
    assert text_of(echoed) == "through two pipes"
    assert calls_in(calls) == ["echo"]


async def test_fetch_plan_round_trip_and_refusals() -> None:
    plan = ProxyPlan(http_entry("https://x.example/mcp", Authorization=SECRET), frozenset({"a"}))
    seen: list[object] = []

    async def daemon(request: Request) -> Response:
        seen.append(request.json())
        if request.path != "/mcp/plan" or request.method != "POST":
            return Response.json({"error": "not found"}, status=404)
        if request.header("authorization") != "Bearer good-grant":
            return Response.json({"error": "unknown or revoked grant"}, status=401)
        if request.json() != {"server": "web"}:
            return Response.json({"error": 'MCP server "x" is not enabled'}, status=403)
        return Response.json(plan.to_json())

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, daemon)
        url = f"http://127.0.0.1:{port}"
        fetched = await fetch_plan(url, "good-grant", "web")
        with pytest.raises(UpstreamError) as unauthorized:
            await fetch_plan(url, "bad-grant", "web")
        with pytest.raises(UpstreamError) as forbidden:
            await fetch_plan(url + "/", "good-grant", "x")
        nursery.cancel_scope.cancel()

    assert fetched == plan
    assert str(unauthorized.value) == "unknown or revoked grant"
    assert str(forbidden.value) == 'MCP server "x" is not enabled'
    assert seen == [{"server": "web"}, {"server": "web"}, {"server": "x"}]
    unrestricted = ProxyPlan(plan.entry, None)
    assert ProxyPlan.from_json(json.loads(json.dumps(unrestricted.to_json()))) == unrestricted

    with pytest.raises(UpstreamError, match="the kimaki daemon cannot be reached"):
        await fetch_plan(f"http://127.0.0.1:{free_port()}", "good-grant", "web")


async def test_a_long_call_is_kept_alive_with_progress_until_it_answers(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A client's own time limit (OpenCode's: 60 s) restarts on each progress notification:
    the proxy sends one every 20 s while the upstream works, and none once it answered."""
    mock_clock.autojump_threshold = 0.1  # the upstream is reached over a real socket
    async with http_server() as server, proxied(ProxyPlan(http_entry(server.url), None)) as session:
        server.hold_calls = trio.Event()
        beats: list[float] = []
        results: list[types.CallToolResult] = []

        async def beat(progress: float, total: float | None, message: str | None) -> None:
            beats.append(progress)

        async def call() -> None:
            results.append(
                await session.call_tool("echo", {"text": "late"}, progress_callback=beat)
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(150)  # virtual: past the 60 s a client might allow
            assert results == []
            assert len(beats) >= 5
            server.hold_calls.set()
        [result] = results
        assert text_of(result) == "late"
        done = len(beats)
        await trio.sleep(100)
        assert len(beats) == done
