"""The agent's memory tools over the lock port (`/tools/call` with the session's grant, as the
relay reaches it), from inside a running turn of the fake engine: `memory_add` proposes in the
thread with Accept / Reject, and only a person's Accept stores the entry; `memory_list` reads
the channel's memory; a secret-shaped proposal is refused before anything is posted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from memory_support import buttons, updated

from kimaki._control import ControlServer, control_url
from kimaki.agents import Grants
from kimaki.bot import Engines
from kimaki.bot._tool_places import GrantedPlaces
from kimaki.channel_memory import memory_tools
from kimaki.testing.bot import BotHarness
from kimaki.testing.daemon import free_port
from kimaki.testing.engine import FakeEngine, RunningTurn
from kimaki.testing.script import Say
from kimaki.tools import ToolBox, install_tool_routes

Json = dict[str, Any]
Call = Callable[[str, Json], Awaitable[Json]]


@asynccontextmanager
async def agent_in_a_turn(
    harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> AsyncIterator[tuple[str, Call, trio.Event]]:
    """A thread whose turn is held open; (its id, a tool call with its session's grant, the
    event that lets the turn end)."""
    grants = Grants()
    control = ControlServer(port=free_port(), data_dir=tmp_path, health=dict)
    engines = Engines({fake_engine.name: fake_engine}, default=fake_engine.name)
    places = GrantedPlaces(grants, engines, harness.bot.threads)
    running, release = trio.Event(), trio.Event()
    sessions: list[str] = []

    async def responder(turn: RunningTurn) -> None:
        sessions.append(turn.session.session_id)
        running.set()
        await release.wait()
        await turn.play(Say("Done."))

    fake_engine.responder = responder
    async with trio.open_nursery() as nursery:
        port = await nursery.start(control.serve)
        install_tool_routes(control, ToolBox(memory_tools(harness.bot.channel_memory)), places)
        message = harness.alice.send_message(harness.channel_id, "remember our conventions")
        thread_id = await harness.thread_of(message)
        await running.wait()
        grant = grants.mint(fake_engine.name, harness.project_dir)
        grant.session_id = sessions[0]

        async def call(name: str, arguments: Json) -> Json:
            async with httpx.AsyncClient(base_url=control_url(port)) as client:
                answer = await client.post(
                    "/tools/call",
                    json={"name": name, "arguments": arguments},
                    headers={"Authorization": f"Bearer {grant.token}"},
                )
            assert answer.status_code == 200, answer.text
            result: Json = answer.json()
            return result

        yield thread_id, call, release
        release.set()
        nursery.cancel_scope.cancel()


def _text(result: Json) -> str:
    return str(result["text"])


async def _proposal(harness: BotHarness, thread_id: str) -> Json:
    return await harness.emulator.wait_for_message(
        thread_id, lambda m: "proposes a channel memory entry" in m["content"] and m["components"]
    )


async def _stored(harness: BotHarness) -> list[str]:
    return [e.text for e in await harness.store.memory.memory_entries(harness.project.channel_id)]


async def test_a_proposal_is_stored_only_when_accepted(
    harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with agent_in_a_turn(harness, fake_engine, tmp_path) as (thread_id, call, _):
        result = await call(
            "memory_add",
            {"text": "Run  `pnpm test`\nbefore pushing.", "reason": "You asked for it twice."},
        )
        assert result["isError"] is False, result
        assert "stored only if a person presses Accept" in _text(result)
        proposed = await _proposal(harness, thread_id)
        assert "> Run `pnpm test` before pushing." in proposed["content"]
        assert "Why: You asked for it twice." in proposed["content"]
        assert list(buttons(proposed)) == ["Accept", "Reject"]
        accept_id = buttons(proposed)["Accept"]
        assert await _stored(harness) == []  # nothing before a person decides
        # Someone not allowed to drive the bot cannot accept it.
        refused = harness.stranger().click_button(proposed, buttons(proposed)["Accept"])
        answered = await harness.emulator.wait_for_interaction_response(refused)
        assert answered.response_data is not None
        assert "Kimaki role" in answered.response_data["content"]
        assert await _stored(harness) == []
        accepted = await updated(
            harness.emulator, harness.alice.click_button(proposed, buttons(proposed)["Accept"])
        )
        assert accepted["content"].endswith("**→ Accepted** (alice): channel memory entry 1")
        assert accepted["components"] == []
        assert await _stored(harness) == ["Run `pnpm test` before pushing."]
        [entry] = await harness.store.memory.memory_entries(harness.project.channel_id)
        assert entry.author_name == "alice"  # the person who accepted it
        # A stale second press stores nothing more.
        again = harness.emulator.state.create_interaction(
            3,
            harness.alice.id,
            thread_id,
            {"custom_id": accept_id, "component_type": 2},
        )
        stale = await harness.emulator.wait_for_interaction_response(again)
        assert stale.response_data is not None
        assert stale.response_data["flags"] & 64  # an ephemeral "decided already" or "expired"
        assert await _stored(harness) == ["Run `pnpm test` before pushing."]
        listed = await call("memory_list", {})
        assert "1. Run `pnpm test` before pushing." in _text(listed)


async def test_a_rejected_proposal_is_not_stored(
    harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with agent_in_a_turn(harness, fake_engine, tmp_path) as (thread_id, call, _):
        result = await call("memory_add", {"text": "Always use tabs.", "reason": "Style."})
        assert result["isError"] is False, result
        proposed = await _proposal(harness, thread_id)
        rejected = await updated(
            harness.emulator, harness.alice.click_button(proposed, buttons(proposed)["Reject"])
        )
        assert rejected["content"].endswith("**→ Rejected** (alice)")
        assert rejected["components"] == []
        assert await _stored(harness) == []


async def test_a_secret_shaped_proposal_is_refused_before_it_is_posted(
    harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with agent_in_a_turn(harness, fake_engine, tmp_path) as (thread_id, call, _):
        result = await call(
            "memory_add",
            {"text": "The API key is sk-ant-abcdefghijklmnopqrstuvwxyz", "reason": "handy"},
        )
        assert result["isError"] is True
        assert "Not stored: it contains something shaped like a key or token" in _text(result)
        too_long = await call("memory_add", {"text": "x" * 1001, "reason": "long"})
        assert too_long["isError"] is True
        assert "at most 1000" in _text(too_long)
        contents = [m["content"] for m in harness.emulator.state.messages[thread_id].values()]
        assert not any("proposes" in content for content in contents)
        assert "sk-ant-" not in "\n".join(contents)


async def test_there_is_no_memory_remove_tool(harness: BotHarness) -> None:
    tools = [tool.name for tool in memory_tools(harness.bot.channel_memory)]
    assert tools == ["memory_list", "memory_add"]


async def test_an_accepted_proposal_still_respects_the_limit(
    harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    door = harness.bot.channel_memory
    channel_id = harness.project.channel_id
    async with agent_in_a_turn(harness, fake_engine, tmp_path) as (thread_id, call, _):
        assert (await call("memory_add", {"text": "y" * 900, "reason": "r"}))["isError"] is False
        proposed = await _proposal(harness, thread_id)
        # Meanwhile people filled the memory.
        for n in range(8):
            await door.add(channel_id, "memory", f"{n}" * 1000, author_id=1, author_name="bob")
        accepted = await updated(
            harness.emulator, harness.alice.click_button(proposed, buttons(proposed)["Accept"])
        )
        assert "**→ Not stored** (alice): Channel memory is full" in accepted["content"]
        assert len(await _stored(harness)) == 8
