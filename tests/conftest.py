from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kimaki.testing.bot import BotHarness, running_bot
from kimaki.testing.discord import DiscordEmulator, default_openapi_path, open_discord_emulator
from kimaki.testing.engine import FakeEngine, open_fake_engine

# Discord's OpenAPI description lives in ../shared/reference beside the repository; a user's
# checkout may not have it, and then requests are not schema-checked (everything else runs).
VALIDATE_DISCORD_REQUESTS = default_openapi_path().is_file()


@pytest.fixture
async def emulator() -> AsyncIterator[DiscordEmulator]:
    """A Discord emulator with a guild, a Kimaki category, a channel and a user."""
    async with open_discord_emulator(validate_requests=VALIDATE_DISCORD_REQUESTS) as emulator:
        emulator.create_workspace()
        yield emulator


@pytest.fixture
async def fake_engine() -> AsyncIterator[FakeEngine]:
    async with open_fake_engine() as engine:
        yield engine


@pytest.fixture
async def harness(fake_engine: FakeEngine, tmp_path: Path) -> AsyncIterator[BotHarness]:
    """The bot in-process against a validating emulator and the fake engine."""
    async with (
        open_discord_emulator(validate_requests=VALIDATE_DISCORD_REQUESTS) as emulator,
        running_bot(emulator, fake_engine, tmp_path / "data") as running,
    ):
        yield running
