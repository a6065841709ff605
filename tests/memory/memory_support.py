"""Shared by the memory tests: a person's `/memory`-style command and its answer, through the
emulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kimaki.testing.bot import BotHarness
from kimaki.testing.discord import DiscordEmulator, InteractionRecord
from kimaki.testing.discord._actors import Actor, iter_components

Json = dict[str, Any]

EPHEMERAL = 1 << 6


async def commands_ready(harness: BotHarness) -> None:
    """The commands registered in the workspace's guild (GUILD_CREATE registers them)."""
    await harness.emulator.wait_until(
        lambda: (
            True
            if any(
                c["name"] == "memory"
                for c in harness.emulator.state.commands.get(harness.guild_id, [])
            )
            else None
        )
    )


def run(
    harness: BotHarness,
    name: str,
    subcommand: str,
    options: Mapping[str, Any] | None = None,
    *,
    actor: Actor | None = None,
    channel_id: str | None = None,
) -> InteractionRecord:
    """A person runs `/name subcommand options` (alice in the project channel by default)."""
    return (actor or harness.alice).run_command(
        channel_id or harness.channel_id, name, options, subcommand=subcommand
    )


async def answer(emulator: DiscordEmulator, record: InteractionRecord) -> Json:
    """The message that answers `record`, once it is final."""
    return await emulator.wait_for_answer(record)


async def command(
    harness: BotHarness,
    name: str,
    subcommand: str,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Json:
    """Run a command and return its (final) answer."""
    return await answer(harness.emulator, run(harness, name, subcommand, options, **kwargs))


async def says(harness: BotHarness, name: str, subcommand: str, **options: Any) -> str:
    """The text of the (ephemeral) answer to `/name subcommand options`."""
    message = await command(harness, name, subcommand, options or None)
    assert message["flags"] & EPHEMERAL, message
    return str(message["content"])


def buttons(message: Json) -> dict[str, str]:
    """Label → custom id of the buttons on a message."""
    return {
        c.get("label", ""): c["custom_id"]
        for c in iter_components(message.get("components") or [])
        if c.get("type") == 2
    }


async def updated(emulator: DiscordEmulator, record: InteractionRecord) -> Json:
    """The component's message after the bot answered the press by editing it."""
    await emulator.wait_for_interaction_response(record)
    assert record.response_type == 7, record.response_type
    assert record.message_id is not None
    return emulator.state.messages[record.channel_id][record.message_id]
