"""`/model`, `/agent` (session > channel > global > engine default) and `/verbosity`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from commands_support import (
    buttons,
    choices,
    command,
    commands_bot,
    ephemeral,
    select_options,
    updated,
)

from kimaki.agents import ModelRef
from kimaki.testing.bot import BotHarness
from kimaki.testing.engine import FakeEngine, open_fake_engine

Json = dict[str, Any]


async def pick(harness: BotHarness, message: Json, value: str) -> Json:
    custom_id, values = select_options(message)
    assert value in values, values
    return await updated(harness.emulator, harness.alice.select(message, custom_id, [value]))


async def press(harness: BotHarness, message: Json, label: str) -> Json:
    found = buttons(message)
    assert label in found, found
    return await updated(harness.emulator, harness.alice.click_button(message, found[label]))


async def prompt_model(
    harness: BotHarness, engine: FakeEngine, channel_id: str, text: str
) -> ModelRef | None:
    """The model the engine was asked to use for a message written in `channel_id`."""
    count = len(engine.prompts)
    harness.alice.send_message(channel_id, text)
    prompts = await engine.wait_for_prompts(count + 1)
    return prompts[-1].model


async def test_model_step_by_step_for_the_channel(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "model")
        assert ephemeral(reply)
        assert "the engine's default" in reply["content"]
        assert select_options(reply)[1] == ["fake"]
        models = await pick(harness, reply, "fake")
        assert select_options(models)[1] == ["fake/model-1", "fake/model-2"]
        scopes = await pick(harness, models, "fake/model-2")
        assert set(buttons(scopes)) == {"This channel", "Everywhere"}  # no session here
        done = await press(harness, scopes, "This channel")
        assert "`fake/model-2`" in done["content"]
        assert done["components"] == []

        stored = await harness.store.preferences.get_preference("channel", harness.channel_id)
        assert stored is not None
        assert stored.model == "fake/model-2"
        assert await prompt_model(harness, engine, harness.channel_id, "go") == ModelRef(
            "fake", "model-2"
        )


async def test_session_beats_channel_beats_global_and_clearing(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        offered = await choices(harness, "model", "model", "model-")
        assert [c["value"] for c in offered] == ["fake/model-1", "fake/model-2"]

        reply = await command(harness, "model", {"model": "fake/model-2"})
        await press(harness, reply, "Everywhere")
        message = harness.alice.send_message(harness.channel_id, "first")
        thread_id = await harness.thread_of(message)
        [first] = await engine.wait_for_prompts(1)
        assert first.model == ModelRef("fake", "model-2")

        reply = await command(harness, "model", {"model": "fake/model-1"}, channel_id=thread_id)
        assert set(buttons(reply)) == {"This session", "This channel", "Everywhere"}
        await press(harness, reply, "This session")
        model = await prompt_model(harness, engine, thread_id, "second")
        assert model == ModelRef("fake", "model-1")
        # Another thread of the channel still follows the global choice.
        assert await prompt_model(harness, engine, harness.channel_id, "other") == ModelRef(
            "fake", "model-2"
        )

        reply = await command(harness, "model", channel_id=thread_id)
        assert "set for this session" in reply["content"]
        scopes = await press(harness, reply, "Clear an override…")
        done = await press(harness, scopes, "This session")
        assert "Cleared" in done["content"]
        assert "set for everywhere" in done["content"]
        assert await prompt_model(harness, engine, thread_id, "third") == ModelRef(
            "fake", "model-2"
        )

        reply = await command(harness, "model", {"model": "nope/none"})
        assert "no model `nope/none`" in reply["content"]
        reply = await command(harness, "model", {"model": "no-slash"})
        assert "provider/model" in reply["content"]


async def test_agent_for_the_channel_keeps_the_model(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "model", {"model": "fake/model-1"})
        await press(harness, reply, "This channel")
        reply = await command(harness, "agent")
        assert select_options(reply)[1] == ["build", "plan"]
        scopes = await pick(harness, reply, "plan")
        await press(harness, scopes, "This channel")
        harness.alice.send_message(harness.channel_id, "go")
        [prompt] = await engine.wait_for_prompts(1)
        assert (prompt.agent, prompt.model) == ("plan", ModelRef("fake", "model-1"))

        reply = await command(harness, "agent", {"agent": "ghost"})
        assert "no agent `ghost`" in reply["content"]


async def test_verbosity(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "verbosity", {"level": "text"})
        assert ephemeral(reply)
        assert "the agent's text only" in reply["content"]
        record = await harness.store.places.get_channel(harness.project.channel_id)
        assert record is not None
        assert record.verbosity == "text"
        # In a thread it sets the thread's channel.
        message = harness.alice.send_message(harness.channel_id, "hi")
        thread_id = await harness.thread_of(message)
        await command(harness, "verbosity", {"level": "tools"}, channel_id=thread_id)
        record = await harness.store.places.get_channel(harness.project.channel_id)
        assert record is not None
        assert record.verbosity == "tools"
