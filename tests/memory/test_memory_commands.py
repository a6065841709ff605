"""`/memory`, `/flashmemory` and `/context` through the emulator: the verbs, the limits, the
refusals a person reads, `clear` asking first, and threads using their channel's memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from memory_support import EPHEMERAL, buttons, command, commands_ready, run, says, updated

from kimaki._redact import register_environment
from kimaki.bot import Interactions
from kimaki.bot.commands import MemoryCommands, install_commands
from kimaki.discord.models import ApplicationCommandOptionType, unstructure
from kimaki.testing.bot import BotHarness, running_bot
from kimaki.testing.discord import RequestValidator, default_openapi_path, open_discord_emulator
from kimaki.testing.engine import FakeEngine

MEMORY = "memory"
FLASH = "flashmemory"


@pytest.fixture
async def bot(fake_engine: FakeEngine, tmp_path: Path) -> AsyncIterator[BotHarness]:
    """The bot with a small memory bound (200 bytes), so the limit is reached in a test."""
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, tmp_path / "data", memory_limit_bytes=200) as harness,
    ):
        await commands_ready(harness)
        yield harness


async def test_add_list_remove_in_the_order_listed(bot: BotHarness) -> None:
    added = await says(bot, MEMORY, "add", text="Use   pnpm,\n never npm.")
    assert "entry 1" in added
    assert "> Use pnpm, never npm." in added
    await says(bot, MEMORY, "add", text="Run the linter before committing.")
    await says(bot, MEMORY, "add", text="Answer in French.")
    listed = await says(bot, MEMORY, "list")
    assert listed.index("1. Use pnpm, never npm.") < listed.index("2. Run the linter")
    assert "3. Answer in French." in listed
    assert "alice" in listed  # who added it
    removed = await says(bot, MEMORY, "remove", index=2)
    assert "Run the linter before committing." in removed
    # A new entry's number is where it is listed, not where the store keeps it.
    assert "entry 3" in await says(bot, MEMORY, "add", text="Prefer small commits.")
    await says(bot, MEMORY, "remove", index=3)
    assert "Run the linter before committing." in removed
    listed = await says(bot, MEMORY, "list")
    assert "2. Answer in French." in listed
    assert "linter" not in listed
    # Stored per project channel.
    entries = await bot.store.memory.memory_entries(bot.project.channel_id)
    assert [e.text for e in entries] == ["Use pnpm, never npm.", "Answer in French."]


async def test_an_empty_list_and_a_wrong_index_are_explained(bot: BotHarness) -> None:
    assert "is empty" in await says(bot, MEMORY, "list")
    assert "is empty" in await says(bot, MEMORY, "remove", index=1)
    await says(bot, MEMORY, "add", text="Be brief.")
    refused = await says(bot, MEMORY, "remove", index=5)
    assert "There is no entry 5" in refused
    assert "1 to 1" in refused


async def test_an_entry_over_1000_characters_is_refused(bot: BotHarness) -> None:
    refused = await says(bot, MEMORY, "add", text="word " * 250)  # 1,249 once collapsed
    assert "at most 1000" in refused
    assert await bot.store.memory.memory_entries(bot.project.channel_id) == []


async def test_the_total_bound_refuses_clearly(bot: BotHarness) -> None:
    await says(bot, MEMORY, "add", text="a" * 150)
    refused = await says(bot, MEMORY, "add", text="b" * 60)
    assert "is full: 150 of 200 bytes are used and this entry needs 60" in refused
    assert "/memory remove" in refused
    assert len(await bot.store.memory.memory_entries(bot.project.channel_id)) == 1
    # What fits still goes in.
    assert "entry 2" in await says(bot, MEMORY, "add", text="c" * 50)


@pytest.mark.parametrize(
    "text",
    [
        "Deploy with OPENAI_API_KEY=sk-live-abcdefghijklmnopqrstuvwx",
        "the token is ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "db password: hunter2hunter2",
    ],
)
async def test_a_secret_shaped_entry_is_refused_with_the_reason(bot: BotHarness, text: str) -> None:
    refused = await says(bot, MEMORY, "add", text=text)
    assert refused.startswith("⚠️ Not stored: it ")
    assert "must not hold secrets" in refused
    assert await bot.store.memory.memory_entries(bot.project.channel_id) == []
    # Not echoed back either.
    assert "hunter2hunter2" not in refused
    assert "ghp_abc" not in refused


async def test_the_value_of_a_secret_environment_variable_is_refused(bot: BotHarness) -> None:
    register_environment({"DEPLOY_TOKEN": "plainlookingvalue42"})
    refused = await says(bot, MEMORY, "add", text="use plainlookingvalue42 for deploys")
    assert "it contains the value of DEPLOY_TOKEN" in refused


async def test_clear_asks_first(bot: BotHarness) -> None:
    await says(bot, MEMORY, "add", text="Be brief.")
    await says(bot, MEMORY, "add", text="Use tabs.")
    asked = await command(bot, MEMORY, "clear")
    assert asked["content"].startswith("Remove all 2 entries of channel memory")
    choices = buttons(asked)
    assert list(choices) == ["Clear", "Cancel"]
    cancelled = await updated(bot.emulator, bot.alice.click_button(asked, choices["Cancel"]))
    assert cancelled["content"] == "Nothing was removed."
    assert cancelled["components"] == []
    assert len(await bot.store.memory.memory_entries(bot.project.channel_id)) == 2
    asked = await command(bot, MEMORY, "clear")
    cleared = await updated(bot.emulator, bot.alice.click_button(asked, buttons(asked)["Clear"]))
    assert "2 entries removed" in cleared["content"]
    assert await bot.store.memory.memory_entries(bot.project.channel_id) == []
    assert "is empty already" in await says(bot, MEMORY, "clear")


async def test_flash_memory_has_the_same_verbs_and_is_not_stored(bot: BotHarness) -> None:
    await says(bot, FLASH, "add", text="Today: only the login page.")
    await says(bot, FLASH, "add", text="Ask before touching the schema.")
    listed = await says(bot, FLASH, "list")
    assert "1. Today: only the login page." in listed
    assert "gone at a restart" in listed
    await says(bot, FLASH, "remove", index=1)
    assert "1. Ask before touching the schema." in await says(bot, FLASH, "list")
    # The store holds channel memory only.
    assert await bot.store.memory.memory_entries(bot.project.channel_id) == []
    assert "is empty" in await says(bot, MEMORY, "list")
    asked = await command(bot, FLASH, "clear")
    await updated(bot.emulator, bot.alice.click_button(asked, buttons(asked)["Clear"]))
    assert "is empty" in await says(bot, FLASH, "list")


async def test_flash_memorys_help_says_it_is_gone_at_a_restart(bot: BotHarness) -> None:
    registered = {c["name"]: c for c in bot.emulator.state.commands[bot.guild_id]}
    assert "gone at a restart or clear" in registered[FLASH]["description"]
    assert {o["name"] for o in registered[MEMORY]["options"]} == {
        "list",
        "add",
        "remove",
        "clear",
    }


async def test_a_thread_uses_its_channels_memory(bot: BotHarness, fake_engine: FakeEngine) -> None:
    message = bot.alice.send_message(bot.channel_id, "hello")
    thread_id = await bot.thread_of(message)
    added = await answer_in(bot, MEMORY, "add", thread_id, text="Prefer small commits.")
    assert f"<#{bot.channel_id}>" in added
    entries = await bot.store.memory.memory_entries(bot.project.channel_id)
    assert [e.text for e in entries] == ["Prefer small commits."]
    assert "1. Prefer small commits." in await says(bot, MEMORY, "list")


async def answer_in(
    bot: BotHarness, name: str, subcommand: str, channel_id: str, **options: object
) -> str:
    message = await command(bot, name, subcommand, options, channel_id=channel_id)
    assert message["flags"] & EPHEMERAL
    return str(message["content"])


async def test_context_on_and_off(bot: BotHarness) -> None:
    assert await bot.store.memory.thread_context(bot.project.channel_id) is True
    assert "start without" in await says(bot, "context", "off")
    assert await bot.store.memory.thread_context(bot.project.channel_id) is False
    assert "get the channel's recent conversation" in await says(bot, "context", "on")
    assert await bot.store.memory.thread_context(bot.project.channel_id) is True


async def test_a_stranger_cannot_change_memory(bot: BotHarness) -> None:
    record = run(bot, MEMORY, "add", {"text": "Be evil."}, actor=bot.stranger())
    answered = await bot.emulator.wait_for_interaction_response(record)
    assert answered.response_data is not None
    assert "Kimaki role" in answered.response_data["content"]
    assert await bot.store.memory.memory_entries(bot.project.channel_id) == []


# ---- the definitions


def _definitions() -> list[object]:
    unused: Any = None
    interactions = Interactions(
        rest=unused,
        application_id=0,
        handled=unused,
        guilds=unused,
        projects=unused,
        keys=unused,
    )
    group = MemoryCommands(memory=unused, keys=unused)
    install_commands(interactions, [group])
    return list(interactions.definitions())


def test_definitions_within_discord_limits() -> None:
    for definition in _definitions():
        data = unstructure(definition)
        assert isinstance(data, dict)
        assert 1 <= len(data["description"]) <= 100
        for sub in data["options"]:
            assert sub["type"] == ApplicationCommandOptionType.SUB_COMMAND
            assert 1 <= len(sub["description"]) <= 100
            for inner in sub.get("options", []):
                assert 1 <= len(inner["description"]) <= 100


@pytest.mark.discord_openapi
def test_registration_payload_matches_the_openapi_schema() -> None:
    validator = RequestValidator.from_path(default_openapi_path())
    payload = unstructure(_definitions())
    problems = validator.validate(
        "PUT", "/applications/1234/guilds/5678/commands", "application/json", payload
    )
    assert problems == []
