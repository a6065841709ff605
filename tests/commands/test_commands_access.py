"""Who may use the commands, where, and how fast they are acknowledged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio
from commands_support import answer, choices, command, commands_bot, ephemeral, run

from kimaki.agents import AgentInfo, CommandInfo, ProviderModels
from kimaki.testing.engine import FakeEngine, FakeSession, open_fake_engine


class SlowAgents:
    """The fake engine, but listing agents takes 30 s (an agent server starting slowly)."""

    name = "fake"

    def __init__(self, inner: FakeEngine) -> None:
        self.inner = inner

    async def open_session(
        self, directory: Path, *, resume_id: str | None = None, title: str | None = None
    ) -> FakeSession:
        return await self.inner.open_session(directory, resume_id=resume_id, title=title)

    async def list_models(self, directory: Path) -> Sequence[ProviderModels]:
        return await self.inner.list_models(directory)

    async def list_agents(self, directory: Path) -> Sequence[AgentInfo]:
        await trio.sleep(30)
        return await self.inner.list_agents(directory)

    async def list_commands(self, directory: Path) -> Sequence[CommandInfo]:
        return await self.inner.list_commands(directory)


async def test_a_stranger_is_refused_and_gets_no_choices(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        mallory = harness.stranger()
        reply = await command(harness, "abort", actor=mallory)
        assert ephemeral(reply)
        assert "Kimaki role" in reply["content"]
        offered = await choices(harness, "agent", "agent", "", actor=mallory)
        assert offered == []
        # The same person's command in a project channel does nothing to the bot's state.
        reply = await command(harness, "verbosity", {"level": "text"}, actor=mallory)
        assert "Kimaki role" in reply["content"]
        project = await harness.store.places.get_channel(harness.project.channel_id)
        assert project is not None
        assert project.verbosity is None


async def test_commands_act_only_in_channels_of_this_bot(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        other = harness.emulator.create_text_channel(harness.guild_id, "random")
        reply = await command(harness, "verbosity", {"level": "text"}, channel_id=other["id"])
        assert ephemeral(reply)
        assert "not a project of this bot" in reply["content"]
        # Adding a project is the exception: there is no project channel before it.
        (tmp_path / "projects" / "site").mkdir(parents=True)
        reply = await command(harness, "add-project", {"project": "site"}, channel_id=other["id"])
        assert "Added" in reply["content"]


async def test_slow_command_is_deferred_within_the_deadline(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # Jump the clock only when nothing happened for a moment of real time: the store works in
    # a worker thread, and a jump while it does would fire the waiters' own timeouts.
    mock_clock.autojump_threshold = 0.1
    async with (
        open_fake_engine() as fake,
        commands_bot(tmp_path, SlowAgents(fake)) as harness,
    ):
        harness.emulator.wait_timeout = 60
        started = trio.current_time()
        record = run(harness, "agent")
        reply = await answer(harness.emulator, record)
        assert record.response_type == 5  # "thinking…", then the answer filled it in
        assert record.ack_latency is not None
        assert record.ack_latency < 3.0
        assert trio.current_time() - started >= 30
        assert ephemeral(reply)
        assert "Pick an agent" in reply["content"]
        assert record.late_callbacks == 0
