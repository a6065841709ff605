"""What the engines hand their agents of MCP: grants, the OpenCode configuration, and the
board that tells which OpenCode session is calling one of kimaki's tools."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import trio
import trio.testing

from kimaki.agents import (
    Grants,
    McpPlan,
    McpServer,
    ServerState,
    TextCompleted,
    ToolCallBoard,
    ToolGrant,
    TurnEnded,
    derived_token,
)
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.agents.opencode._engine import with_mcp
from kimaki.testing.engine import texts, until_turn_end
from kimaki.testing.opencode import FakeOpenCode, stub_command
from kimaki.testing.script import Hold, Say, Tool, TurnScript


def test_grants_resolve_until_revoked(tmp_path: Path) -> None:
    grants = Grants()
    grant = grants.mint("opencode", tmp_path)
    assert grants.resolve(grant.token) is grant
    assert grants.resolve(grant.token + "x") is None
    grants.revoke(grant)
    assert grants.resolve(grant.token) is None
    assert "token" not in repr(grant).split("(", 1)[1]


def test_a_derived_token_is_stable_and_not_the_secret() -> None:
    assert derived_token("pw") == derived_token("pw") != derived_token("pw2")
    assert "pw" not in derived_token("pw")


def test_opencode_configuration_adds_servers_and_switches_off_the_rest() -> None:
    given = json.dumps({"model": "a/b", "mcp": {"mine": {"type": "local", "command": ["x"]}}})
    plan = McpPlan(
        servers=(
            McpServer(
                "kimaki",
                command="/usr/bin/python3",
                args=("-m", "kimaki", "mcp-tools"),
                env={"KIMAKI_GRANT": "t"},
            ),
        ),
        switched_off={"github": {"type": "remote", "url": "https://example.invalid/mcp"}},
    )
    config = with_mcp(given, plan)
    assert config["model"] == "a/b"
    assert config["mcp"]["mine"] == {"type": "local", "command": ["x"]}
    assert config["mcp"]["github"] == {
        "type": "remote",
        "url": "https://example.invalid/mcp",
        "enabled": False,
    }
    assert config["mcp"]["kimaki"] == {
        "type": "local",
        "command": ["/usr/bin/python3", "-m", "kimaki", "mcp-tools"],
        "environment": {"KIMAKI_GRANT": "t"},
        "enabled": True,
    }


async def test_the_board_matches_a_call_to_the_running_part_once(autojump_clock: object) -> None:
    board = ToolCallBoard()

    async def claim(results: list[str | None]) -> None:
        results.append(await board.claim("kimaki_send_message", {"content": "hi"}, within=5))

    results: list[str | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(claim, results)
        nursery.start_soon(claim, results)
        await trio.testing.wait_all_tasks_blocked()  # both are waiting
        board.running("p1", "kimaki_send_message", {"content": "other"}, "s0")
        board.running("p2", "kimaki_send_message", {"content": "hi"}, "s1")
    assert results.count(None) == 1
    assert results.count("s1") == 1  # one part, one claim; the other gave up
    board.ended("p2")
    assert await board.claim("kimaki_send_message", {"content": "hi"}, within=1) is None


@attrs.define
class _Plans:
    grants: list[ToolGrant] = attrs.Factory(list)

    async def plan(self, grant: ToolGrant) -> McpPlan:
        self.grants.append(grant)
        return McpPlan()


async def test_an_opencode_session_is_found_from_its_running_tool_part(tmp_path: Path) -> None:
    call = {"content": "deployed"}
    turn = TurnScript(Tool("kimaki_send_message", input=call, output="sent"), Say("Done."))
    fake = FakeOpenCode(turns=(turn,), directory=str(tmp_path))
    grants, plans = Grants(), _Plans()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake.serve)
        config = OpenCodeConfig(
            command=stub_command(port), stop_grace=2.0, mcp=plans, grants=grants
        )
        async with open_opencode_engine(config) as engine:
            session = await engine.open_session(tmp_path)
            [grant] = plans.grants  # minted for the server as it started
            assert grants.resolve(grant.token) is grant
            assert grant.session_id is None  # a server's grant: calls are matched per session
            found: list[str | None] = []

            async def claim() -> None:
                found.append(await engine.tool_call_session(grant, "send_message", call))

            async with trio.open_nursery() as calls:
                calls.start_soon(claim)
                await session.prompt("deploy")
        nursery.cancel_scope.cancel()
    assert found == [session.session_id]
    assert grants.resolve(grant.token) is None  # the server ended, and its grant with it


async def test_a_retired_server_finishes_its_turn_then_the_next_gets_a_new_one(
    tmp_path: Path,
) -> None:
    turns = (TurnScript(Say("working"), Hold()), TurnScript(Say("fresh")))
    directory = await trio.to_thread.run_sync(tmp_path.resolve)
    fake = FakeOpenCode(turns=turns, directory=str(tmp_path))
    grants, plans = Grants(), _Plans()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake.serve)
        config = OpenCodeConfig(
            command=stub_command(port), stop_grace=2.0, mcp=plans, grants=grants
        )
        async with open_opencode_engine(config) as engine:
            session = await engine.open_session(tmp_path)
            server = engine.server(tmp_path)
            first = server.process
            await session.prompt("work")
            with trio.fail_after(10):
                async for event in session.events:
                    if isinstance(event, TextCompleted):
                        break
            assert engine.server_directories() == [directory]
            engine.retire_server(tmp_path)  # the channel's MCP policy changed
            assert server.state is ServerState.READY  # the running turn is not cut short
            fake.release()
            events = await until_turn_end(session.events, within=10)
            assert isinstance(events[-1], TurnEnded)
            with trio.fail_after(10):
                await server.wait_for_state(ServerState.STOPPED)
            assert engine.server_directories() == []
            await session.prompt("again")
            events = await until_turn_end(session.events, within=10)
            assert texts(events) == ["fresh"]
            assert server.process is not first
        nursery.cancel_scope.cancel()
    old, new = plans.grants
    assert grants.resolve(old.token) is None
    assert new.token != old.token
