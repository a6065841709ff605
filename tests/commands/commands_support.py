"""Shared by the command tests: the bot with its commands against the emulator, and how a
person's command, autocomplete and button press come back as what Discord would show."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki.agents import Engine
from kimaki.agents.opencode import OpenCodeConfig, OpenCodeEngine, open_opencode_engine
from kimaki.testing.bot import BotHarness, running_bot
from kimaki.testing.discord import (
    DiscordEmulator,
    InteractionRecord,
    open_discord_emulator,
)
from kimaki.testing.discord._actors import Actor
from kimaki.testing.opencode import FakeOpenCode, stub_command

Json = dict[str, Any]

EPHEMERAL = 1 << 6


async def ensure_commands(harness: BotHarness) -> None:
    """The commands registered in the workspace's guild (the composition root installs them;
    GUILD_CREATE registers them)."""
    await harness.emulator.wait_until(
        lambda: (
            True
            if any(
                c["name"] == "abort"
                for c in harness.emulator.state.commands.get(harness.guild_id, [])
            )
            else None
        )
    )


@asynccontextmanager
async def commands_bot(data_dir: Path, engine: Engine, **options: Any) -> AsyncIterator[BotHarness]:
    """The bot with its commands, on a fresh emulator that checks requests against the spec."""
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, engine, data_dir, **options) as harness,
    ):
        await ensure_commands(harness)
        yield harness


@asynccontextmanager
async def opencode_engine(directory: Path) -> AsyncIterator[tuple[FakeOpenCode, OpenCodeEngine]]:
    """The real OpenCode engine driving the fake OpenCode server (a stub child process)."""
    resolved = await trio.Path(directory).resolve()
    fake = FakeOpenCode(directory=str(resolved), plugin_burst=2)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake.serve)
        config = OpenCodeConfig(
            command=stub_command(port), stream_backoff=(0.01, 0.05), stop_grace=2.0
        )
        async with open_opencode_engine(config) as engine:
            yield fake, engine
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def opencode_bot(
    tmp_path: Path,
) -> AsyncIterator[tuple[Path, FakeOpenCode, OpenCodeEngine, BotHarness]]:
    """A project folder `tmp_path/project`, the OpenCode engine on its fake server, and the bot."""
    project = tmp_path / "project"
    await trio.Path(project).mkdir()
    async with (
        opencode_engine(project) as (fake, engine),
        commands_bot(tmp_path, engine) as harness,
    ):
        yield project, fake, engine, harness


def run(
    harness: BotHarness,
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    actor: Actor | None = None,
    channel_id: str | None = None,
) -> InteractionRecord:
    """A person runs `/name options` (alice in the project channel unless told otherwise)."""
    return (actor or harness.alice).run_command(channel_id or harness.channel_id, name, options)


async def answer(emulator: DiscordEmulator, record: InteractionRecord) -> Json:
    """The message that answers `record`, once it is final."""
    return await emulator.wait_for_answer(record)


async def followups(emulator: DiscordEmulator, record: InteractionRecord, count: int) -> list[Json]:
    """The first `count` follow-up messages of `record` (answers after the first one)."""

    def found() -> list[Json] | None:
        if len(record.followup_ids) < count:
            return None
        messages = emulator.state.messages[record.channel_id]
        return [messages[m] for m in record.followup_ids[:count]]

    return await emulator.wait_until(found)


async def command(
    harness: BotHarness, name: str, options: Mapping[str, Any] | None = None, **kwargs: Any
) -> Json:
    """Run a command and return its (final) answer."""
    return await answer(harness.emulator, run(harness, name, options, **kwargs))


async def choices(
    harness: BotHarness,
    name: str,
    focused: str,
    typed: str,
    *,
    actor: Actor | None = None,
    channel_id: str | None = None,
) -> list[Json]:
    """The autocomplete choices offered while typing `typed` into option `focused`."""
    record = (actor or harness.alice).autocomplete(
        channel_id or harness.channel_id, name, focused, typed
    )
    await harness.emulator.wait_for_interaction_response(record)
    assert record.response_type == 8, record.response_type
    assert record.response_data is not None
    result: list[Json] = record.response_data.get("choices") or []
    return result


def ephemeral(message: Json) -> bool:
    return bool(message["flags"] & EPHEMERAL)


def buttons(message: Json) -> dict[str, str]:
    """Label → custom id of the buttons on a message."""
    found = {}
    for row in message.get("components") or []:
        for component in row.get("components") or []:
            if component.get("type") == 2:
                found[component.get("label", "")] = component["custom_id"]
    return found


def select_options(message: Json) -> tuple[str, list[str]]:
    """(custom id, option values) of the first select menu on a message."""
    for row in message.get("components") or []:
        for component in row.get("components") or []:
            if component.get("type") == 3:
                return component["custom_id"], [o["value"] for o in component["options"]]
    raise AssertionError(f"no select menu on {message.get('content')!r}")


async def updated(emulator: DiscordEmulator, record: InteractionRecord) -> Json:
    """The component's message after the bot answered the press by editing it."""
    await emulator.wait_for_interaction_response(record)
    assert record.response_type == 7, record.response_type
    assert record.message_id is not None
    return emulator.state.messages[record.channel_id][record.message_id]


@pytest.fixture
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits and rebases work without the machine's git configuration."""
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Kimaki Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")


def git(directory: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=directory, capture_output=True, text=True, check=True
    )
    return result.stdout


def make_repository(directory: Path, files: Mapping[str, str] | None = None) -> None:
    """A git repository on branch main with one commit of `files`."""
    directory.mkdir(parents=True, exist_ok=True)
    git(directory, "init", "--quiet", "--initial-branch=main")
    for name, text in (files or {"README.md": "hello\n"}).items():
        (directory / name).write_text(text)
    git(directory, "add", "--all")
    git(directory, "commit", "--quiet", "-m", "first")
