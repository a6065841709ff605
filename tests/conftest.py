from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kimaki.testing.discord import DiscordEmulator, default_openapi_path, open_discord_emulator

# Discord's OpenAPI description lives in ../shared/reference beside the repository; a user's
# checkout may not have it, and then requests are not schema-checked (everything else runs).
VALIDATE_DISCORD_REQUESTS = default_openapi_path().is_file()


@pytest.fixture
async def emulator() -> AsyncIterator[DiscordEmulator]:
    """A Discord emulator with a guild, a Kimaki category, a channel and a user."""
    async with open_discord_emulator(validate_requests=VALIDATE_DISCORD_REQUESTS) as emulator:
        emulator.create_workspace()
        yield emulator
