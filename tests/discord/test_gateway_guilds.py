"""The guilds before a RESUME (issue 19): a bot that resumed without them ignored everyone.

A process that RESUMEs a session it did not start gets no GUILD_CREATE, so it loads the guilds
over REST first. These tests break that load in the emulator and check that the bot still
answers its owner, and that it does not call itself ready while it cannot judge who may drive
it. The REST client's and the fill's retries take seconds: the tests run on a mock clock that
jumps ahead once everything has waited a moment of real time (not at once, as the autojump
clock does, which would also jump while the store works in its thread).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from kimaki.bot._serve import GUILD_FILL_ATTEMPTS, connection_state
from kimaki.discord.gateway import GatewayEvent, GatewayShard
from kimaki.dispatch import Dispatcher
from kimaki.guilds import GuildCache
from kimaki.testing.bot import running_bot
from kimaki.testing.discord import DiscordEmulator, Workspace, open_discord_emulator
from kimaki.testing.engine import FakeEngine

GUILD_LIST = "GET /users/@me/guilds"


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.2)


# One attempt of the fill is the request and the REST client's three retries.
REQUESTS_PER_ATTEMPT = 4


async def _stop_resumably(emulator: DiscordEmulator, engine: FakeEngine, data: Path) -> Workspace:
    """A first run that leaves a resumable gateway session in the store, as a restart does."""
    async with running_bot(emulator, engine, data) as first:
        await first.connection.shard.close(resumable=True)
        assert await first.store.gateway.load_gateway_session() is not None
        return first.workspace


async def test_a_failed_guild_list_is_retried_before_resuming(
    patient_clock: trio.abc.Clock, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with open_discord_emulator() as emulator:
        workspace = await _stop_resumably(emulator, fake_engine, tmp_path)
        emulator.rest.script_error(GUILD_LIST, status=502, count=REQUESTS_PER_ATTEMPT)
        async with running_bot(emulator, fake_engine, tmp_path, workspace=workspace) as bot:
            assert len(emulator.gateway.resumes) == 1  # the session was kept
            assert len(emulator.gateway.identifies) == 1
            assert bot.guilds.guild(int(bot.guild_id)) is not None
            message = bot.owner.send_message(bot.channel_id, "still there?")
            thread_id = await bot.thread_of(message)
            await emulator.wait_for_message(thread_id, lambda m: m["content"].startswith("echo:"))
            assert connection_state(bot.connection.shard, bot.guilds) == ("ready", [])


async def test_a_guild_list_that_cannot_be_loaded_drops_the_session_and_identifies(
    patient_clock: trio.abc.Clock,
    fake_engine: FakeEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kimaki")
    async with open_discord_emulator() as emulator:
        workspace = await _stop_resumably(emulator, fake_engine, tmp_path)
        emulator.rest.script_error(
            GUILD_LIST, status=502, count=GUILD_FILL_ATTEMPTS * REQUESTS_PER_ATTEMPT
        )
        async with running_bot(emulator, fake_engine, tmp_path, workspace=workspace) as bot:
            # Not a RESUME with an empty guild cache: a fresh IDENTIFY, whose GUILD_CREATE
            # tells the bot who owns the guild.
            assert emulator.gateway.resumes == []
            assert len(emulator.gateway.identifies) == 2
            message = bot.owner.send_message(bot.channel_id, "hello after the outage")
            thread_id = await bot.thread_of(message)
            await emulator.wait_for_message(thread_id, lambda m: m["content"].startswith("echo:"))
            assert bot.guilds.guild(int(bot.guild_id)) is not None
    assert f"could not load the guild list before resuming ({GUILD_FILL_ATTEMPTS} attempts" in (
        caplog.text
    )
    assert "dropping the stored gateway session" in caplog.text


async def test_not_ready_while_the_announced_guilds_are_not_loaded(
    autojump_clock: trio.abc.Clock, emulator: DiscordEmulator
) -> None:
    guilds = GuildCache()
    guilds.problem = "the guild list: loading it over REST failed (502)"
    assert connection_state(None, guilds) == ("connecting", [guilds.problem])
    guilds.problem = None

    async def fetch_gateway() -> dict[str, Any]:
        return emulator.gateway.gateway_bot()

    send, receive = trio.open_memory_channel[GatewayEvent](0)
    shard = GatewayShard(token=emulator.token, fetch_gateway=fetch_gateway, events=send)
    [guild_id] = emulator.state.guilds
    loaded = trio.Event()

    async def guild_loaded(_: object) -> None:
        loaded.set()

    dispatcher = Dispatcher()
    guilds.subscribe(dispatcher)
    dispatcher.on("GUILD_CREATE", guild_loaded)  # in order: after the cache has it
    async with trio.open_nursery() as nursery:
        await nursery.start(shard.run)  # READY: the shard knows the guild, the cache does not
        state, waiting = connection_state(shard, guilds)
        assert state == "loading guilds"
        assert waiting == [f"guild(s) {guild_id}: announced by the gateway, not loaded yet"]
        nursery.start_soon(dispatcher.run, receive)
        await loaded.wait()
        assert connection_state(shard, guilds) == ("ready", [])
        nursery.cancel_scope.cancel()
