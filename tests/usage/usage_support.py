"""Shared by the usage tests: a turn in a thread, a command's answer, the rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kimaki.store import UsageRow
from kimaki.testing.bot import BotHarness, bot_paragraphs
from kimaki.testing.discord import DiscordEmulator, InteractionRecord
from kimaki.testing.discord._actors import Actor

Json = dict[str, Any]
EPHEMERAL = 1 << 6


async def turn(
    harness: BotHarness, text: str, *, thread_id: str | None = None, actor: Actor | None = None
) -> tuple[str, list[str]]:
    """Send `text` (in the project channel, or in `thread_id`) and wait for the turn's footer:
    the thread, and what the bot said in it during this turn."""
    person = actor or harness.alice
    if thread_id is None:
        message = person.send_message(harness.channel_id, text)
        thread_id = await harness.thread_of(message)
    else:
        person.send_message(thread_id, text)
    before = len(_footers(harness.emulator, thread_id))
    seen = len(bot_paragraphs(harness.emulator, thread_id)) if before else 0
    await harness.emulator.wait_until(
        lambda: len(_footers(harness.emulator, thread_id)) > before or None
    )
    return thread_id, bot_paragraphs(harness.emulator, thread_id)[seen:]


def _footers(emulator: DiscordEmulator, thread_id: str) -> list[str]:
    return [p for p in bot_paragraphs(emulator, thread_id) if p.startswith("-# ")]


def footer_of(lines: list[str]) -> list[str]:
    """The footer's parts (`-# a · b · c` → [a, b, c])."""
    [footer] = [line for line in lines if line.startswith("-# ")]
    return footer.removeprefix("-# ").split(" · ")


async def answer(emulator: DiscordEmulator, record: InteractionRecord) -> Json:
    """The message that answers `record`, once it is final."""
    return await emulator.wait_for_answer(record)


async def slash(
    harness: BotHarness,
    name: str,
    subcommand: str,
    options: Mapping[str, Any] | None = None,
    *,
    actor: Actor | None = None,
    channel_id: str | None = None,
) -> str:
    """Run `/name subcommand options` and return the answer's text."""
    emulator = harness.emulator
    await emulator.wait_until(
        lambda: (
            any(c["name"] == name for c in emulator.state.commands.get(harness.guild_id, []))
            or None
        )
    )
    record = (actor or harness.alice).run_command(
        channel_id or harness.channel_id, name, options or {}, subcommand=subcommand
    )
    message = await answer(harness.emulator, record)
    assert message["flags"] & EPHEMERAL
    return str(message["content"])


async def rows(harness: BotHarness, channel_id: int | None = None) -> list[UsageRow]:
    return await harness.store.usage.usage_rows(since=0, channel_id=channel_id)
