"""End to end with the real `opencode serve` and the fake model server: what a turn's row says
it used is what the model server reported (`KIMAKI_TEST_OPENCODE`; skipped without it)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import trio
from usage_support import footer_of, rows, turn

from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.testing.bot import running_bot
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.model_server import ModelServer, Reply, opencode_config
from kimaki.testing.opencode import real_opencode_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_a_turns_stored_tokens_are_what_the_model_reported(tmp_path: Path) -> None:
    binary = real_opencode_binary()
    model = ModelServer(
        [attrs.evolve(Reply.text("Counted."), prompt_tokens=1234, completion_tokens=56)]
    )
    project = tmp_path / "project"
    project.mkdir()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(model.serve)
        config = OpenCodeConfig(
            command=(binary,),
            home_for=lambda directory: tmp_path / "home",
            extra_env={"OPENCODE_CONFIG_CONTENT": json.dumps(opencode_config(port))},
            ready_timeout=60.0,
        )
        async with (
            open_opencode_engine(config) as engine,
            open_discord_emulator() as emulator,
            running_bot(emulator, engine, tmp_path / "data") as harness,
        ):
            emulator.wait_timeout = 90  # the real binary's first turn starts its server
            _, lines = await turn(harness, "count this")
            [row] = await rows(harness)
            assert (row.input_tokens, row.output_tokens) == (1234, 56)
            assert row.engine == "opencode"
            assert row.stop_reason == "end_turn"
            assert row.context_used == 1234 + 56
            # The configured model's window (100,000) as OpenCode reports it: 1,290 is 1 %.
            assert row.context_limit == 100_000
            assert footer_of(lines)[-1] == "1%"  # the scripted provider has no prices
        nursery.cancel_scope.cancel()
