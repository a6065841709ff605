"""Shared by the voice tests: the fake transcription server beside the bot, and what a person
sees of a command's answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from kimaki.agents import Engine
from kimaki.testing.bot import BotHarness, running_bot
from kimaki.testing.discord import DiscordEmulator, InteractionRecord, open_discord_emulator
from kimaki.testing.transcription import TranscriptionServer, ogg_opus
from kimaki.voice import TranscriptionSettings

Json = dict[str, Any]

KEY = "sk-voice-test-0123456789abcdef"
VOICE = ogg_opus(1.0)


@asynccontextmanager
async def voice_bot(
    tmp_path: Path,
    engine: Engine,
    server: TranscriptionServer,
    *,
    settings: TranscriptionSettings | Callable[[str], TranscriptionSettings] | None = None,
) -> AsyncIterator[BotHarness]:
    """The bot with the fake transcription server as its OpenAI-compatible service (unless
    `settings` say otherwise: given, or made from the server's OpenAI-compatible URL), and a
    project with a few files to name in the prompt."""
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        if callable(settings):
            settings = settings(server.openai_url)
        if settings is None:
            settings = TranscriptionSettings(
                provider="openai", base_url=server.openai_url, model="whisper-1", api_key=KEY
            )
        async with (
            open_discord_emulator() as emulator,
            running_bot(emulator, engine, tmp_path / "data", transcription=settings) as harness,
        ):
            await trio.Path(harness.project_dir / "pyproject.toml").write_text("[project]\n")
            await trio.Path(harness.project_dir / "conftest.py").write_text("")
            yield harness
        nursery.cancel_scope.cancel()


async def answer(emulator: DiscordEmulator, record: InteractionRecord) -> Json:
    """The message that answers `record`, once it is final."""
    return await emulator.wait_for_answer(record)


async def commands_ready(harness: BotHarness) -> None:
    await harness.emulator.wait_until(
        lambda: (
            True
            if any(
                c["name"] == "transcription"
                for c in harness.emulator.state.commands.get(harness.guild_id, [])
            )
            else None
        )
    )
