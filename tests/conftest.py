from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kimaki.testing.bot import BotHarness, running_bot
from kimaki.testing.discord import DiscordEmulator, default_openapi_path, open_discord_emulator
from kimaki.testing.engine import FakeEngine, open_fake_engine

# Discord's OpenAPI description lives in ../shared/reference beside the repository. Every
# emulator validates the bot's requests against it when it is there (`open_discord_emulator`'s
# default); a checkout without it runs unvalidated, and says so: in the session's header and
# summary, and as skips (with the reason) of the tests marked `discord_openapi`.
DISCORD_OPENAPI = default_openapi_path()
NO_DISCORD_OPENAPI = (
    f"{DISCORD_OPENAPI} is absent (no ../shared/reference beside the repository): "
    "Discord requests are not validated"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "discord_openapi: needs Discord's OpenAPI description; skipped, with the reason, "
        "when ../shared/reference/discord-openapi.json is absent",
    )


def pytest_report_header(config: pytest.Config) -> str:
    if DISCORD_OPENAPI.is_file():
        return f"Discord requests: validated by every emulator against {DISCORD_OPENAPI}"
    return f"Discord requests: NOT validated, {DISCORD_OPENAPI} is absent"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if DISCORD_OPENAPI.is_file():
        return
    skip = pytest.mark.skip(reason=NO_DISCORD_OPENAPI)
    for item in items:
        if item.get_closest_marker("discord_openapi") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not DISCORD_OPENAPI.is_file():
        terminalreporter.write_line(f"warning: {NO_DISCORD_OPENAPI}", yellow=True)


@pytest.fixture
async def emulator() -> AsyncIterator[DiscordEmulator]:
    """A Discord emulator with a guild, a Kimaki category, a channel and a user."""
    async with open_discord_emulator() as emulator:
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
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, tmp_path / "data") as running,
    ):
        yield running
