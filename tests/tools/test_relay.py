"""The tool server as an agent sees it: the SDK's own MCP client against the relay, which
forwards to a real control server with the tool routes; over memory streams, and as the child
process an agent starts (`python -m kimaki.tools`, through the SDK's stdio client)."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import attrs
import httpx
import pytest
import trio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

from kimaki._control import ControlServer, control_url
from kimaki.testing.tools import FakeToolPlaces, RecordingToolContext, relay_session
from kimaki.tools import BUILTIN_TOOLS, ToolBox, ToolContext, install_tool_routes

REVOKED = "this session's tools are no longer available (the session ended)"
TOKEN = "grant-of-thread-a"
OTHER = "grant-of-thread-b"


@attrs.frozen
class Daemon:
    url: str
    places: FakeToolPlaces
    a: RecordingToolContext
    b: RecordingToolContext


def _context(tmp_path: Path, name: str, thread_id: int) -> RecordingToolContext:
    directory = tmp_path / name
    directory.mkdir()
    data_dir = tmp_path / "data"
    return RecordingToolContext(directory=directory, data_dir=data_dir, thread_id=thread_id)


async def _serve(nursery: trio.Nursery, tmp_path: Path, places: Any) -> str:
    control = ControlServer(port=0, data_dir=tmp_path, health=dict)
    install_tool_routes(control, ToolBox(BUILTIN_TOOLS), places)
    port: int = await nursery.start(control.serve)
    return control_url(port)


@pytest.fixture
async def daemon(nursery: trio.Nursery, tmp_path: Path) -> Daemon:
    a, b = _context(tmp_path, "a", 101), _context(tmp_path, "b", 202)
    places = FakeToolPlaces({TOKEN: a, OTHER: b})
    return Daemon(await _serve(nursery, tmp_path, places), places, a, b)


def _text(result: types.CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, types.TextContent)
    return content.text


async def test_listing_and_calling(daemon: Daemon) -> None:
    async with relay_session(daemon.url, TOKEN) as session:
        assert session.get_server_capabilities() is not None
        listed = await session.list_tools()
        assert [(tool.name, tool.description, tool.inputSchema) for tool in listed.tools] == [
            (spec.name, spec.description, spec.input_schema) for spec in BUILTIN_TOOLS
        ]
        result = await session.call_tool("send_message", {"content": "Tests pass."})
    [post] = daemon.a.posts
    assert (post.content, post.where) == ("Tests pass.", "thread")
    assert not result.isError
    assert _text(result) == f"sent (message {post.message_id})"
    assert daemon.places.calls == [(TOKEN, "send_message", {"content": "Tests pass."})]


async def test_a_tool_acts_only_on_its_grants_thread(daemon: Daemon) -> None:
    async with relay_session(daemon.url, OTHER) as session:
        arguments = {"content": "hi", "thread_id": daemon.a.thread_id, "where": "thread"}
        result = await session.call_tool("send_message", arguments)
    assert not result.isError
    assert daemon.a.posts == []
    assert [post.content for post in daemon.b.posts] == ["hi"]


async def test_what_the_model_must_fix_comes_back_as_an_error_result(daemon: Daemon) -> None:
    daemon.a.answers.append([["Ship it"]])
    async with relay_session(daemon.url, TOKEN) as session:
        wrong = await session.call_tool("send_message", {"content": ""})
        unknown = await session.call_tool("post_tweet", {})
        answered = await session.call_tool("ask", {"question": "Ship?", "options": ["Ship it"]})
    assert (wrong.isError, _text(wrong)) == (True, "`content` is empty; send the text itself")
    assert unknown.isError
    assert _text(unknown).startswith("no tool named 'post_tweet'")
    assert (answered.isError, _text(answered)) == (False, "Ship it")
    assert daemon.a.posts == []


async def test_a_call_waits_as_long_as_a_person_takes(
    daemon: Daemon, autojump_clock: trio.abc.Clock
) -> None:
    daemon.a.answer_gate = trio.Event()
    daemon.a.answers.append([["Tomorrow"]])
    results: list[types.CallToolResult] = []
    async with relay_session(daemon.url, TOKEN) as session, trio.open_nursery() as nursery:

        async def ask() -> None:
            result = await session.call_tool("ask", {"question": "When?"}, progress_callback=beat)
            results.append(result)

        async def beat(progress: float, total: float | None, message: str | None) -> None:
            beats.append(progress)

        beats: list[float] = []
        nursery.start_soon(ask)
        await trio.sleep(6 * 3600)  # the clock jumps past any timeout there could be
        assert [asked.question for [asked] in daemon.a.asked] == ["When?"]
        assert results == []
        # "Still working" every 20 s, which resets a client's own time limit (OpenCode's 60 s).
        assert len(beats) >= 6 * 3600 // 20 - 1
        assert beats == sorted(beats)
        daemon.a.answer_gate.set()
    [result] = results
    assert (result.isError, _text(result)) == (False, "Tomorrow")


async def test_an_unknown_token_gets_nothing(daemon: Daemon) -> None:
    async with relay_session(daemon.url, "forged") as session:
        with pytest.raises(McpError, match="the session ended"):
            await session.list_tools()
        result = await session.call_tool("send_message", {"content": "hi"})
    assert (result.isError, _text(result)) == (True, REVOKED)
    assert daemon.a.posts == daemon.b.posts == []
    assert daemon.places.calls == []


async def test_a_grant_revoked_while_the_relay_runs(daemon: Daemon) -> None:
    async with relay_session(daemon.url, TOKEN) as session:
        first = await session.call_tool("current_time", {})
        daemon.places.revoke(TOKEN)
        second = await session.call_tool("send_message", {"content": "too late"})
    assert not first.isError
    assert (second.isError, _text(second)) == (True, REVOKED)
    assert daemon.a.posts == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_daemon_that_is_not_there(tmp_path: Path) -> None:
    url = control_url(_closed_port())
    async with relay_session(url, TOKEN) as session:
        with pytest.raises(McpError, match="not reachable"):
            await session.list_tools()
        result = await session.call_tool("send_message", {"content": "hi"})
    assert result.isError
    assert _text(result) == (
        f"kimaki's daemon is not reachable at {url} (stopped, or restarting); try again in a moment"
    )


@attrs.define
class BrokenPlaces:
    """Knows every token, and fails (or finds no session) when asked for a thread."""

    fail: bool

    def knows(self, token: str) -> bool:
        return True

    async def context_for(
        self, token: str, tool: str, arguments: Mapping[str, Any]
    ) -> ToolContext | None:
        if self.fail:
            raise RuntimeError("the store is gone")
        return None


async def test_a_daemon_that_fails_points_at_its_log(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await _serve(nursery, tmp_path, BrokenPlaces(fail=True))
    with caplog.at_level(logging.ERROR, logger="kimaki.control"):
        async with relay_session(url, TOKEN) as session:
            result = await session.call_tool("current_time", {})
    [record] = caplog.records
    assert record.exc_info is not None
    assert "the store is gone" in str(record.exc_info[1])
    assert result.isError
    assert _text(result) == (
        "kimaki's daemon could not run the tool (HTTP 500); see the daemon's log"
    )


async def test_the_routes_refuse_what_is_not_a_call_from_a_live_grant(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    live = _context(tmp_path, "a", 101)
    url = await _serve(nursery, tmp_path, FakeToolPlaces({TOKEN: live}))
    gone = await _serve(nursery, tmp_path, BrokenPlaces(fail=False))
    bearer = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url) as client:
        for headers in ({}, {"authorization": TOKEN}, {"authorization": "Bearer forged"}):
            for path in ("/tools/list", "/tools/call"):
                response = await client.post(path, headers=headers, json={"name": "current_time"})
                assert response.status_code == 401, (path, headers)
                assert response.json() == {"error": "unknown or revoked grant"}
        bad: list[tuple[bytes, str]] = [
            (b"{", "the body is not JSON"),
            (b"[]", "the body must be a JSON object"),
            (b'{"arguments": {}}', "`name` (the tool's name, a string) is missing"),
            (b'{"name": "ask", "arguments": [1]}', "`arguments` must be a JSON object"),
        ]
        for body, error in bad:
            response = await client.post("/tools/call", headers=bearer, content=body)
            assert response.status_code == 400
            assert response.json()["error"].startswith(error)
        assert (await client.get("/tools/list", headers=bearer)).status_code == 405
        called = await client.post("/tools/call", headers=bearer, json={"name": "current_time"})
        assert called.status_code == 200
        assert called.json()["isError"] is False
    async with httpx.AsyncClient(base_url=gone) as client:
        response = await client.post("/tools/call", headers=bearer, json={"name": "current_time"})
        assert (response.status_code, response.json()) == (
            401,
            {"error": "no live session for this grant"},
        )
    assert live.posts == []


# The relay as an agent runs it


def _parameters(url: str, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "kimaki", "mcp-tools"],
        env={"KIMAKI_CONTROL_URL": url, "KIMAKI_GRANT": token},
        cwd=str(Path(__file__).parents[2]),
    )


def _log_file(path: Path) -> TextIO:
    return open(path, "w")  # closed by the caller's `with`


async def test_the_relay_as_a_child_process(daemon: Daemon, tmp_path: Path) -> None:
    with _log_file(tmp_path / "stderr") as errlog:
        async with (
            stdio_client(_parameters(daemon.url, TOKEN), errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            initialized = await session.initialize()
            listed = await session.list_tools()
            result = await session.call_tool(
                "send_message", {"content": "from a child", "where": "channel"}
            )
        async with (
            stdio_client(_parameters(daemon.url, "forged"), errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            refused = await session.call_tool("send_message", {"content": "hi"})
    assert initialized.serverInfo.name == "kimaki"
    assert [tool.name for tool in listed.tools] == [spec.name for spec in BUILTIN_TOOLS]
    [post] = daemon.a.posts
    assert (post.content, post.where) == ("from a child", "channel")
    assert _text(result) == f"sent (message {post.message_id})"
    assert (refused.isError, _text(refused)) == (True, REVOKED)
    assert TOKEN not in (tmp_path / "stderr").read_text()
