"""`/mcp`: a project channel's MCP servers and tools, chosen from Discord, through the emulator.

The servers are real: `kimaki.testing.mcp_server` run as a stdio child for scans, so "Scan"
and "Choose tools" show what the server really offers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from commands_support import (
    buttons,
    command,
    commands_bot,
    ephemeral,
    select_options,
    updated,
)

from kimaki.agents import Grants
from kimaki.mcp._policy import McpPolicies
from kimaki.store import ScannedTool, ScanRecord, ServerPolicy
from kimaki.testing.bot import BotHarness
from kimaki.testing.discord import DiscordEmulator, InteractionRecord
from kimaki.testing.engine import open_fake_engine
from kimaki.testing.mcp_server import TOOLS, McpHttpServer

Json = dict[str, Any]

SECRET = "hunter2-not-for-discord"
ECHO = {
    "command": sys.executable,
    "args": ["-m", "kimaki.testing.mcp_server"],
    "env": {"ECHO_TOKEN": SECRET},
}
OFFERED = [tool.name for tool in TOOLS]
SEARCH = {"url": "https://search.example/mcp?key=abc", "headers": {"X-Key": SECRET}}


@attrs.define
class McpBot:
    harness: BotHarness
    policies: McpPolicies
    changes: list[int]

    @property
    def emulator(self) -> DiscordEmulator:
        return self.harness.emulator

    @property
    def channel(self) -> int:
        return self.harness.project.channel_id

    async def policy(self) -> dict[str, ServerPolicy]:
        return await self.harness.store.mcp.policy(self.channel)


@asynccontextmanager
async def mcp_bot(tmp_path: Path, servers: Mapping[str, Any]) -> AsyncIterator[McpBot]:
    """The bot with `/mcp` over a catalog of `servers` (mcp.json in the data directory)."""
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": servers}))
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        yield McpBot(harness, harness.mcp, harness.mcp_changes)


async def pick(bot: McpBot, message: Json, values: list[str]) -> InteractionRecord:
    custom_id, offered = select_options(message)
    assert set(values) <= set(offered), offered
    return bot.harness.alice.select(message, custom_id, values)


def press(bot: McpBot, message: Json, label: str) -> InteractionRecord:
    found = buttons(message)
    assert label in found, found
    return bot.harness.alice.click_button(message, found[label])


async def settled(
    emulator: DiscordEmulator, record: InteractionRecord, done: Callable[[str], bool]
) -> Json:
    """The component's message once its content satisfies `done` (a slow answer, such as a
    scan, is deferred first and edited later)."""
    await emulator.wait_for_interaction_response(record)
    message_id = record.message_id
    assert message_id is not None

    def found() -> Json | None:
        message = emulator.state.messages[record.channel_id][message_id]
        return message if done(message["content"]) else None

    return await emulator.wait_until(found, describe=lambda: emulator.transcript(record.channel_id))


async def server_view(bot: McpBot, name: str, *, channel_id: str | None = None) -> Json:
    """`/mcp`, then pick server `name`."""
    listing = await command(bot.harness, "mcp", channel_id=channel_id)
    return await updated(bot.emulator, await pick(bot, listing, [name]))


async def announcement(bot: McpBot, text: str) -> Json:
    """The bot's post in the project channel (for everyone) containing `text`."""
    message = await bot.emulator.wait_for_message(
        bot.harness.channel_id, lambda m: text in m["content"]
    )
    assert not ephemeral(message)
    return message


def menus(message: Json) -> list[Json]:
    return [
        component
        for row in message.get("components") or []
        for component in row.get("components") or []
        if component.get("type") == 3
    ]


async def test_the_servers_and_their_state_without_secrets(tmp_path: Path) -> None:
    async with mcp_bot(tmp_path, {"echo": ECHO, "search": SEARCH}) as bot:
        await bot.harness.store.mcp.set_policy(bot.channel, "search", ServerPolicy.only(["a", "b"]))
        reply = await command(bot.harness, "mcp")
        assert ephemeral(reply)
        text = reply["content"]
        assert "`kimaki`: always on" in text
        assert "`echo` (stdio, from mcp.json): disabled" in text
        assert "`search` (http, from mcp.json): 2 tools" in text
        _, offered = select_options(reply)
        assert offered == ["echo", "search"]
        shown = json.dumps(reply)
        assert SECRET not in shown
        assert "search.example" not in shown  # a URL can hold a key too
        assert "kimaki.testing.mcp_server" not in shown

        refused = await command(bot.harness, "mcp", actor=bot.harness.stranger())
        assert "Kimaki role" in refused["content"]


async def test_all_tools_then_disable_from_a_thread(tmp_path: Path) -> None:
    async with mcp_bot(tmp_path, {"echo": ECHO}) as bot:
        view = await server_view(bot, "echo")
        assert "`echo` (stdio, from mcp.json)" in view["content"]
        assert "disabled" in view["content"]
        assert set(buttons(view)) == {"All tools", "Choose tools", "Disable", "Scan"}

        done = await updated(bot.emulator, press(bot, view, "All tools"))
        assert "all tools, from the next turn on" in done["content"]
        assert done["components"] == []
        post = await announcement(bot, "MCP server `echo` is now on")
        assert "all its tools" in post["content"]
        assert "the next turn uses it" in post["content"]
        assert await bot.policy() == {"echo": ServerPolicy("all")}
        assert bot.changes == [bot.channel]
        grant = Grants().mint("fake", bot.harness.project_dir)
        plan = await bot.policies.plan(grant)
        assert [s.name for s in plan.servers] == ["kimaki", "echo"]

        # In a thread, the command acts on the thread's project channel.
        message = bot.harness.alice.send_message(bot.harness.channel_id, "hello")
        thread_id = await bot.harness.thread_of(message)
        view = await server_view(bot, "echo", channel_id=thread_id)
        assert "all tools" in view["content"]
        done = await updated(bot.emulator, press(bot, view, "Disable"))
        assert "disabled" in done["content"]
        post = await announcement(bot, "MCP server `echo` is now off")
        assert "runs without it" in post["content"]
        assert await bot.policy() == {}
        assert bot.changes == [bot.channel, bot.channel]
        plan = await bot.policies.plan(grant)
        assert [s.name for s in plan.servers] == ["kimaki"]


async def test_choose_tools_from_a_real_scan(tmp_path: Path) -> None:
    async with mcp_bot(tmp_path, {"echo": ECHO}) as bot:
        view = await server_view(bot, "echo")
        chooser = await settled(
            bot.emulator, press(bot, view, "Choose tools"), lambda t: "Choose the tools" in t
        )
        [menu] = menus(chooser)
        names = {o["label"]: o["value"] for o in menu["options"]}
        assert list(names) == OFFERED
        assert not any(o.get("default") for o in menu["options"])
        assert menu["min_values"] == 0

        record = bot.harness.alice.select(chooser, menu["custom_id"], [names["echo"], names["add"]])
        chooser = await updated(bot.emulator, record)
        assert "2 chosen" in chooser["content"]
        assert "Save (2 tools)" in buttons(chooser)
        assert bot.changes == []  # nothing changes before Save

        done = await updated(bot.emulator, press(bot, chooser, "Save (2 tools)"))
        assert "2 tools, from the next turn on" in done["content"]
        post = await announcement(bot, "MCP server `echo` is now on")
        assert "2 tools: `add`, `echo`" in post["content"]
        assert await bot.policy() == {"echo": ServerPolicy.only(["add", "echo"])}
        proxy = await bot.policies.proxy_plan(Grants().mint("x", bot.harness.project_dir), "echo")
        assert proxy is not None
        assert proxy.allowed == frozenset({"add", "echo"})

        # Choosing again starts from the policy (the scan is cached); nothing chosen is refused.
        view = await server_view(bot, "echo")
        assert "Allowed: `add`, `echo`" in view["content"]
        chooser = await settled(
            bot.emulator, press(bot, view, "Choose tools"), lambda t: "Choose the tools" in t
        )
        [menu] = menus(chooser)
        assert {o["label"] for o in menu["options"] if o.get("default")} == {"add", "echo"}
        chooser = await updated(
            bot.emulator, bot.harness.alice.select(chooser, menu["custom_id"], [])
        )
        again = await updated(bot.emulator, press(bot, chooser, "Save (0 tools)"))
        assert "Choose at least one tool" in again["content"]
        assert await bot.policy() == {"echo": ServerPolicy.only(["add", "echo"])}
        assert bot.changes == [bot.channel]


async def test_many_tools_take_pages_of_menus(tmp_path: Path) -> None:
    async with mcp_bot(tmp_path, {"big": ECHO}) as bot:
        tools = tuple(ScannedTool(f"tool_{n:03}", f"Tool number {n}") for n in range(130))
        await bot.harness.store.mcp.put_scan(ScanRecord("big", tools, 1.0))
        view = await server_view(bot, "big")
        chooser = await updated(bot.emulator, press(bot, view, "Choose tools"))
        assert "page 1 of 2" in chooser["content"]
        assert "130 offered" in chooser["content"]
        page = menus(chooser)
        assert [len(m["options"]) for m in page] == [25, 25, 25, 25]
        assert page[0]["options"][0]["label"] == "tool_000"
        assert set(buttons(chooser)) == {"Save (0 tools)", "Next ▶"}

        first = page[1]  # tools 25..49
        by_label = {o["label"]: o["value"] for o in first["options"]}
        chooser = await updated(
            bot.emulator,
            bot.harness.alice.select(chooser, first["custom_id"], [by_label["tool_030"]]),
        )
        chooser = await updated(bot.emulator, press(bot, chooser, "Next ▶"))
        assert "page 2 of 2" in chooser["content"]
        last, rest = menus(chooser)
        assert (len(last["options"]), len(rest["options"])) == (25, 5)
        assert [o["label"] for o in last["options"]][:2] == ["tool_100", "tool_101"]
        assert set(buttons(chooser)) == {"Save (1 tool)", "◀ Previous"}
        by_label = {o["label"]: o["value"] for o in last["options"]}
        chooser = await updated(
            bot.emulator,
            bot.harness.alice.select(chooser, last["custom_id"], [by_label["tool_101"]]),
        )
        chooser = await updated(bot.emulator, press(bot, chooser, "◀ Previous"))
        # What was chosen on another page is kept.
        assert {o["label"] for o in menus(chooser)[1]["options"] if o.get("default")} == {
            "tool_030"
        }
        await updated(bot.emulator, press(bot, chooser, "Save (2 tools)"))
        assert await bot.policy() == {"big": ServerPolicy.only(["tool_030", "tool_101"])}


async def test_scan_shows_the_tools_and_an_unreachable_server_says_why(tmp_path: Path) -> None:
    broken = {"command": str(tmp_path / "no-such-server")}
    async with mcp_bot(tmp_path, {"echo": ECHO, "broken": broken}) as bot:
        view = await server_view(bot, "echo")
        scanned = await settled(bot.emulator, press(bot, view, "Scan"), lambda t: "Scanned" in t)
        assert f"Scanned just now: {len(OFFERED)} tools" in scanned["content"]
        for name in OFFERED:
            assert f"• `{name}`" in scanned["content"]
        assert set(buttons(scanned)) == {"All tools", "Choose tools", "Disable", "Scan"}
        stored = await bot.harness.store.mcp.scan("echo")
        assert stored is not None
        assert [t.name for t in stored.tools] == OFFERED

        view = await server_view(bot, "broken")
        failed = await settled(
            bot.emulator, press(bot, view, "Scan"), lambda t: "Could not scan" in t
        )
        assert ephemeral(failed)
        assert failed["content"].startswith("⚠️ Could not scan `broken`:")
        assert "Scan" in buttons(failed)  # it can be tried again
        assert bot.changes == []

        listing = await command(bot.harness, "mcp")
        assert "`broken` (stdio, from mcp.json): disabled" in listing["content"]


async def test_a_slow_scan_is_deferred_then_fills_in_the_ephemeral_view(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Past the 2 s deadline the press is acknowledged; the result then edits the ephemeral
    message through the interaction (Discord's channel endpoint cannot reach it)."""
    mock_clock.autojump_threshold = 0.1  # the store and the scan work in real time
    server = McpHttpServer()
    server.hold_listing = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with mcp_bot(tmp_path, {"slow": {"url": server.url}}) as bot:
            bot.emulator.wait_timeout = 60
            view = await server_view(bot, "slow")
            assert ephemeral(view)
            record = press(bot, view, "Scan")
            await bot.emulator.wait_for_interaction_response(record)
            assert record.response_type == 6  # deferred: the view stays until the scan ends
            server.hold_listing.set()
            scanned = await settled(bot.emulator, record, lambda t: "Scanned" in t)
            assert ephemeral(scanned)
            assert scanned["id"] == view["id"]
            assert f"{len(OFFERED)} tools" in scanned["content"]
        nursery.cancel_scope.cancel()
