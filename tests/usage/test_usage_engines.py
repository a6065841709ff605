"""Rows and footers for each engine's own usage shape, through the real engines: OpenCode's
per-step tokens and cost with the model's window from `/config/providers` (the fake OpenCode
server), and ACP's `usage_update` (window size and use, the session's running cost; the fake
ACP agent)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from usage_support import footer_of, rows, turn

from kimaki.agents import Engine
from kimaki.agents.acp import AcpConfig, AgentCommand, open_acp_engine
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.testing.acp_agent import AgentScript, fake_agent_argv
from kimaki.testing.bot import BotHarness, running_bot
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.opencode import FakeOpenCode, stub_command
from kimaki.testing.script import ContextUsage, Say, Step, TurnScript


@asynccontextmanager
async def _bot(engine: Engine, data_dir: Path) -> AsyncIterator[BotHarness]:
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, engine, data_dir) as harness,
    ):
        yield harness


async def test_opencode_rows_carry_step_tokens_cost_and_the_models_window(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    fake = FakeOpenCode(directory=str(await trio.Path(project).resolve()))
    fake.add_turns(
        TurnScript(Say("looking"), Step(input=20_000, output=500, cost=0.01)),
        TurnScript(
            Say("done"),
            Step(input=60_000, output=1000, reasoning=200, cache_read=9_800, cost=0.031),
        ),
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake.serve)
        config = OpenCodeConfig(command=stub_command(port), stop_grace=2.0)
        async with open_opencode_engine(config) as engine, _bot(engine, tmp_path) as harness:
            thread_id, lines = await turn(harness, "look")
            assert footer_of(lines)[-2:] == ["20%", "$0.0100"]
            _, lines = await turn(harness, "fix", thread_id=thread_id)
            # 60,000 in + 9,800 cached + 1,000 out + 200 reasoning of a 100,000 window.
            assert footer_of(lines)[-2:] == ["71%", "$0.0310"]
            first, second = await rows(harness)
            assert (second.input_tokens, second.output_tokens) == (60_000, 1000)
            assert (second.reasoning_tokens, second.cache_read_tokens) == (200, 9_800)
            assert (second.context_used, second.context_limit) == (71_000, 100_000)
            assert second.cost == pytest.approx(0.031)
            assert second.engine == "opencode"
            assert second.model is not None
            assert "fake-model" in second.model
            assert first.session_id == second.session_id
        nursery.cancel_scope.cancel()


async def test_acp_rows_carry_the_window_and_the_turns_share_of_the_running_cost(
    tmp_path: Path,
) -> None:
    script = AgentScript(
        turns=(
            TurnScript(Say("one"), ContextUsage(40_000, 200_000, cost=0.25)),
            TurnScript(Say("two"), ContextUsage(170_000, 200_000, cost=0.40)),
        )
    )
    argv = fake_agent_argv(script.write(tmp_path / "script.json"))
    agent = AgentCommand("fake", argv, home=tmp_path / "agent-runtime" / "fake")
    async with (
        open_acp_engine(AcpConfig(agent, stop_grace=2.0)) as engine,
        _bot(engine, tmp_path) as harness,
    ):
        thread_id, lines = await turn(harness, "one")
        assert footer_of(lines)[-2:] == ["20%", "$0.2500"]
        _, lines = await turn(harness, "two", thread_id=thread_id)
        assert footer_of(lines)[-2:] == ["85%", "$0.1500"]
        assert any("85% of its context window" in line for line in lines)
        first, second = await rows(harness)
        assert first.engine == second.engine == engine.name
        assert (second.context_used, second.context_limit) == (170_000, 200_000)
        assert (first.session_cost, second.session_cost) == (0.25, 0.40)
        assert second.cost == pytest.approx(0.15)
