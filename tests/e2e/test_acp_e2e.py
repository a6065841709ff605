"""End to end with the real `opencode acp` (npm `opencode-ai`) as an ACP agent, and the fake
OpenAI-compatible model server: nothing leaves 127.0.0.1.

The agent runs the way kimaki runs it for a person: its own runtime home (HOME and XDG dirs
under the data directory), an allowlisted environment; its whole configuration (the scripted
provider) comes in through `OPENCODE_CONFIG_CONTENT`, so nothing of this machine's OpenCode
setup is used. The binary comes from `KIMAKI_TEST_OPENCODE`, else `opencode` on PATH; without it
these tests skip, except under CI (the `CI` variable set), where a missing binary is a failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from kimaki._control import ControlServer, control_url
from kimaki.agents import (
    EngineEvent,
    Grants,
    ModelRef,
    PermissionRequested,
    ToolFinished,
    ToolStarted,
    TurnEnded,
)
from kimaki.agents.acp import AcpConfig, AcpEngine, open_acp_engine, resolve_agent
from kimaki.bot import Engines
from kimaki.bot._tool_places import GrantedPlaces
from kimaki.mcp import McpPolicies, install_mcp_routes, load_catalog
from kimaki.store import ChannelRecord, ServerPolicy, Store
from kimaki.testing.daemon import free_port
from kimaki.testing.engine import drive_turn, texts
from kimaki.testing.model_server import ModelServer, Reply, opencode_config
from kimaki.testing.opencode import real_opencode_binary
from kimaki.testing.tools import RecordingToolContext
from kimaki.tools import BUILTIN_TOOLS, ToolBox, ToolContext, install_tool_routes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@asynccontextmanager
async def model_server(*replies: Reply) -> AsyncIterator[tuple[ModelServer, int]]:
    model = ModelServer(replies)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(model.serve)
        yield model, port
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def acp_opencode(data_dir: Path, port: int) -> AsyncIterator[AcpEngine]:
    """`opencode acp` as `resolve_agent` sets it up, with the binary under test."""
    agent = resolve_agent(f"{real_opencode_binary()} acp", data_dir)
    content = opencode_config(port, permission={"bash": "ask"})
    config = AcpConfig(
        agent,
        extra_env={"OPENCODE_CONFIG_CONTENT": json.dumps(content)},
        ready_timeout=60.0,
    )
    async with open_acp_engine(config) as engine:
        yield engine


async def test_text_tools_approved_and_denied_then_an_interrupted_turn(tmp_path: Path) -> None:
    never = trio.Event()
    replies = [
        Reply.text("Hello from the scripted model."),
        Reply.tool("bash", {"command": "echo kimaki-acp > proof.txt", "description": "Write"}),
        Reply.text("Wrote it."),
        Reply.tool("bash", {"command": "rm proof.txt", "description": "Remove proof"}),
        # A rejected call ends OpenCode's turn: no model request follows it.
        Reply(chunks=("slow ", "stream "), hold=never),
        Reply.text("Back again."),
    ]
    project = tmp_path / "project"
    project.mkdir()
    async with model_server(*replies) as (model, port), acp_opencode(tmp_path, port) as engine:
        assert engine.name == "acp:opencode"
        session = await engine.open_session(project, title="e2e")
        scripted = ModelRef("scripted", "scripted")
        assert session.current_model == scripted
        models = {p.provider_id: p for p in await engine.list_models(project)}
        assert [m.id for m in models["scripted"].models] == ["scripted"]
        assert {"build", "plan"} <= {a.name for a in await engine.list_agents(project)}
        assert "init" in {c.name for c in await engine.list_commands(project)}

        events = await drive_turn(session, "say hello", model=scripted, agent="build")
        assert texts(events) == ["Hello from the scripted model."]
        assert events[-1].stop_reason == "end_turn"  # type: ignore[union-attr]
        assert model.agent_requests[0].last_user_text.endswith("say hello")

        events = await drive_turn(session, "write the proof", permission="once")
        [asked] = [e for e in events if isinstance(e, PermissionRequested)]
        assert asked.permission == "execute"
        assert asked.patterns == ("echo kimaki-acp > proof.txt",)
        [started] = [e for e in events if isinstance(e, ToolStarted)]
        assert started.tool == "execute"
        [finished] = [e for e in events if isinstance(e, ToolFinished)]
        assert finished.status == "completed"
        assert (project / "proof.txt").read_text() == "kimaki-acp\n"
        assert texts(events) == ["Wrote it."]

        events = await drive_turn(session, "remove it", permission="reject")
        [finished] = [e for e in events if isinstance(e, ToolFinished)]
        assert finished.status == "error"
        assert (project / "proof.txt").exists()
        assert len(model.agent_requests) == 4

        # A new message interrupts: abort() while the model streams, then the next prompt.
        turn_id = await session.prompt("go slowly")
        with trio.fail_after(60):
            async for event in session.events:
                assert not isinstance(event, TurnEnded), "the turn ended before the abort"
                if getattr(event, "delta", "") == "stream ":
                    break
        with trio.fail_after(15):
            await session.abort()
        ended = [e for e in drain(session) if isinstance(e, TurnEnded)]
        assert ended == [TurnEnded(turn_id, "aborted")]
        events = await drive_turn(session, "again")
        assert texts(events) == ["Back again."]

    # The agent's own state lives in its runtime home, not in this machine's home.
    assert (tmp_path / "agent-runtime" / "opencode" / ".local" / "share" / "opencode").is_dir()


async def test_a_session_resumed_by_a_new_engine_remembers(tmp_path: Path) -> None:
    replies = [Reply.text("Noted: banana."), Reply.text("It was banana.")]
    project = tmp_path / "project"
    project.mkdir()
    async with model_server(*replies) as (model, port):
        async with acp_opencode(tmp_path, port) as engine:
            session = await engine.open_session(project)
            await drive_turn(session, "remember the word banana")
            session_id = session.session_id
        async with acp_opencode(tmp_path, port) as engine:  # a daemon restart
            session = await engine.open_session(project, resume_id=session_id)
            events = await drive_turn(session, "which word?")
        assert texts(events) == ["It was banana."]  # the earlier turn was not shown again
        history = [m for m in model.agent_requests[-1].body["messages"] if m["role"] != "system"]
        assert [m["role"] for m in history] == ["user", "assistant", "user"]
        assert "banana" in json.dumps(history[0])


def drain(session: Any) -> list[EngineEvent]:
    out: list[EngineEvent] = []
    while True:
        try:
            out.append(session.events.receive_nowait())
        except trio.WouldBlock:
            return out


@attrs.define
class _OneThread:
    """The thread pipeline's side: the session's thread, as a recording tool context."""

    context: RecordingToolContext
    session_id: str = ""

    def tool_context(self, session_id: str) -> ToolContext | None:
        return self.context if session_id == self.session_id else None


async def test_kimaki_tools_and_a_policy_filtered_mcp_server_reach_opencode_acp(
    tmp_path: Path,
) -> None:
    """`session/new` hands the agent kimaki's tool server and the test server behind the proxy,
    each with the session's grant; the daemon's lock-port routes carry the calls out."""
    project = tmp_path / "project"
    project.mkdir()
    mcp_json = tmp_path / "mcp.json"
    server = {"command": sys.executable, "args": ["-m", "kimaki.testing.mcp_server"]}
    mcp_json.write_text(json.dumps({"mcpServers": {"testmcp": server}}))
    lock_port = free_port()
    grants = Grants()
    thread = _OneThread(RecordingToolContext(directory=project, data_dir=tmp_path / "data"))
    async with (
        model_server(
            Reply.tool("kimaki_send_message", {"content": "Halfway there."}),
            Reply.tool("testmcp_echo", {"text": "echo via acp"}),
            Reply.tool("testmcp_add", {"a": 1, "b": 2}),
            Reply.text("Finished."),
        ) as (model, port),
        await Store.open(tmp_path / "kimaki.db") as store,
        trio.open_nursery() as nursery,
    ):
        policies = McpPolicies(
            catalog=lambda: load_catalog(mcp_json, ()),
            store=store.mcp,
            channels=store.places,
            control_url=control_url(lock_port),
            on_change=_ignore,
        )
        await store.places.put_channel(
            ChannelRecord(channel_id=1, directory=project, guild_id=2, app_id=3)
        )
        await store.mcp.set_policy(1, "testmcp", ServerPolicy("some", frozenset({"echo"})))
        control = ControlServer(port=lock_port, data_dir=tmp_path, health=dict)
        await nursery.start(control.serve)
        install_mcp_routes(control, policies, grants)
        agent = resolve_agent(f"{real_opencode_binary()} acp", tmp_path / "data")
        content = opencode_config(port)
        config = AcpConfig(
            agent,
            extra_env={"OPENCODE_CONFIG_CONTENT": json.dumps(content)},
            ready_timeout=60.0,
            mcp=policies,
            grants=grants,
        )
        async with open_acp_engine(config) as engine:
            places = GrantedPlaces(
                grants, Engines({engine.name: engine}, default=engine.name), thread
            )
            install_tool_routes(control, ToolBox(BUILTIN_TOOLS), places)
            session = await engine.open_session(project)
            thread.session_id = session.session_id
            events = await drive_turn(session, "report progress", permission="once")
            await session.aclose()
        nursery.cancel_scope.cancel()
    assert texts(events)[-1] == "Finished."
    assert [post.content for post in thread.context.posts] == ["Halfway there."]
    offered = {tool["function"]["name"] for tool in model.agent_requests[0].body["tools"]}
    assert {"kimaki_send_message", "testmcp_echo"} <= offered
    assert "testmcp_add" not in offered
    tool_results = [
        str(message.get("content"))
        for message in model.agent_requests[-1].body["messages"]
        if message.get("role") == "tool"
    ]
    assert any("echo via acp" in result for result in tool_results), tool_results
    # The unlisted tool: the model is told it cannot be used, and it never ran (no "3").
    [blocked] = [result for result in tool_results if "testmcp_add" in result]
    assert "3" not in blocked.replace("testmcp_add", "")
    assert len(grants) == 0  # the session's grant ended with it


async def _ignore(channel_id: int) -> None:
    return None
