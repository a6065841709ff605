"""`/engine`: a channel's new threads run on the engine chosen for it; running threads keep
theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from commands_support import choices, command, commands_bot, ephemeral

from kimaki.testing.bot import BotHarness
from kimaki.testing.engine import FakeEngine, PromptRecord, open_fake_engine


@asynccontextmanager
async def two_engines(tmp_path: Path) -> AsyncIterator[tuple[BotHarness, FakeEngine, FakeEngine]]:
    """The bot with its default engine `fake` and a second one registered as `acp:x`."""
    async with open_fake_engine() as default, open_fake_engine() as acp:
        acp.name = "acp:x"
        async with commands_bot(tmp_path, default, engines={"acp:x": acp}) as harness:
            yield harness, default, acp


async def prompts(engine: FakeEngine, count: int) -> list[PromptRecord]:
    """The first `count` prompts `engine` received; fails (not hangs) if they went elsewhere."""
    with trio.fail_after(10):
        return await engine.wait_for_prompts(count)


async def new_thread(harness: BotHarness, text: str) -> str:
    message = harness.alice.send_message(harness.channel_id, text)
    return await harness.thread_of(message)


async def test_no_argument_shows_the_current_engine(tmp_path: Path) -> None:
    async with two_engines(tmp_path) as (harness, _, _):
        reply = await command(harness, "engine")
        assert ephemeral(reply)
        assert "run on `fake` (the default)" in reply["content"]
        assert "Available: `fake`, `acp:x`." in reply["content"]


async def test_autocomplete_offers_every_engine(tmp_path: Path) -> None:
    async with two_engines(tmp_path) as (harness, _, _):
        offered = await choices(harness, "engine", "engine", "")
        assert [c["value"] for c in offered] == ["fake", "acp:x", "default"]
        assert offered[0]["name"] == "fake (the default)"
        assert [c["value"] for c in await choices(harness, "engine", "engine", "ACP")] == ["acp:x"]


async def test_a_new_thread_runs_on_the_chosen_engine(tmp_path: Path) -> None:
    async with two_engines(tmp_path) as (harness, default, acp):
        reply = await command(harness, "engine", {"engine": "acp:x"})
        assert ephemeral(reply)
        assert reply["content"] == f"New threads in <#{harness.channel_id}> run on `acp:x`."
        channel = await harness.store.places.get_channel(int(harness.channel_id))
        assert channel is not None
        assert channel.engine == "acp:x"

        thread_id = await new_thread(harness, "hello acp")
        [prompt] = await prompts(acp, 1)
        assert "hello acp" in prompt.text
        assert default.prompts == []
        record = await harness.store.places.get_thread(int(thread_id))
        assert record is not None
        assert record.engine == "acp:x"

        shown = await command(harness, "engine")
        assert f"New threads in <#{harness.channel_id}> run on `acp:x`." in shown["content"]


async def test_a_running_thread_keeps_its_engine(tmp_path: Path) -> None:
    async with two_engines(tmp_path) as (harness, default, acp):
        thread_id = await new_thread(harness, "first")
        await prompts(default, 1)

        reply = await command(harness, "engine", {"engine": "acp:x"}, channel_id=thread_id)
        assert reply["content"] == (
            f"New threads in <#{harness.channel_id}> run on `acp:x`. This thread keeps `fake`."
        )
        harness.alice.send_message(thread_id, "second")
        received = await prompts(default, 2)
        assert "second" in received[1].text
        assert acp.prompts == []


async def test_an_unknown_engine_changes_nothing_and_says_what_to_fix(tmp_path: Path) -> None:
    async with two_engines(tmp_path) as (harness, default, _):
        reply = await command(harness, "engine", {"engine": "acp:nobody"})
        assert ephemeral(reply)
        assert "There is no engine `acp:nobody` here" in reply["content"]
        assert "`fake`, `acp:x`" in reply["content"]
        assert "KIMAKI_AGENTS" in reply["content"]
        channel = await harness.store.places.get_channel(int(harness.channel_id))
        assert channel is not None
        assert channel.engine is None

        await new_thread(harness, "still the default")
        await prompts(default, 1)


async def test_default_follows_the_daemons_default_again(tmp_path: Path) -> None:
    async with two_engines(tmp_path) as (harness, default, acp):
        await command(harness, "engine", {"engine": "acp:x"})
        reply = await command(harness, "engine", {"engine": "default"})
        assert "the daemon's default engine (now `fake`)" in reply["content"]
        channel = await harness.store.places.get_channel(int(harness.channel_id))
        assert channel is not None
        assert channel.engine is None

        await new_thread(harness, "back to the default")
        await prompts(default, 1)
        assert acp.prompts == []


async def test_a_channel_set_to_an_engine_no_longer_running_is_told(tmp_path: Path) -> None:
    async with (
        open_fake_engine() as engine,
        commands_bot(tmp_path, engine, channel_fields={"engine": "acp:removed"}) as harness,
    ):
        reply = await command(harness, "engine")
        assert "`acp:removed`, which is not available here" in reply["content"]
