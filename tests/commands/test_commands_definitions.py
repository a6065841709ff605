"""What the bot registers: every definition within Discord's limits, and the payload the
bulk overwrite sends accepted by Discord's OpenAPI description."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from commands_support import commands_bot

from kimaki.bot import Interactions
from kimaki.bot.commands import (
    AuditCommands,
    EngineCommands,
    MaintenanceCommands,
    McpCommands,
    MemoryCommands,
    PreferenceCommands,
    ProjectCommands,
    ScheduleCommands,
    SessionCommands,
    UsageCommands,
    VoiceCommands,
    WorktreeCommands,
    install_commands,
)
from kimaki.discord.models import ApplicationCommand, unstructure
from kimaki.testing.discord import RequestValidator, default_openapi_path
from kimaki.testing.engine import open_fake_engine

NAME = re.compile(r"[a-z0-9-]{1,32}")

EXPECTED = {
    "add-project",
    "create-new-project",
    "remove-project",
    "new-session",
    "resume",
    "abort",
    "session-id",
    "queue",
    "clear-queue",
    "model",
    "agent",
    "verbosity",
    "undo",
    "redo",
    "compact",
    "diff",
    "restart-agent-server",
    "new-worktree",
    "merge-worktree",
    "worktrees",
    "engine",
    "mcp",
    "schedule",
    "remind",
    "tasks",
    "audit",
    "usage",
    "budget",
    "memory",
    "flashmemory",
    "context",
    "transcription-key",
    "transcription",
}


# In the order the composition root installs them.
GROUPS = (
    ProjectCommands,
    SessionCommands,
    PreferenceCommands,
    MaintenanceCommands,
    WorktreeCommands,
    EngineCommands,
    McpCommands,
    MemoryCommands,
    UsageCommands,
    AuditCommands,
    ScheduleCommands,
    VoiceCommands,
)
_UNUSED: Any = None  # what registering commands never touches


def definitions() -> list[ApplicationCommand]:
    """What the groups register in the bot's registry, each group and the registry made
    without their parts (registering uses none of them)."""
    interactions = Interactions(
        rest=_UNUSED,
        application_id=0,
        handled=_UNUSED,
        guilds=_UNUSED,
        projects=_UNUSED,
        keys=_UNUSED,
    )
    groups = [group(**{f.alias: _UNUSED for f in attrs.fields(group)}) for group in GROUPS]
    install_commands(interactions, groups)
    return interactions.definitions()


def test_every_command_of_the_issue_is_there() -> None:
    assert {d.name for d in definitions()} == EXPECTED


@pytest.mark.parametrize("command", definitions(), ids=lambda c: c.name)
def test_definition_within_discord_limits(command: ApplicationCommand) -> None:
    assert NAME.fullmatch(command.name)
    assert 1 <= len(command.description) <= 100
    assert len(command.options) <= 25
    seen_optional = False
    names = set()
    for option in command.options:
        assert NAME.fullmatch(option.name), option.name
        assert option.name not in names
        names.add(option.name)
        assert 1 <= len(option.description) <= 100, option.name
        # Discord refuses a required option after an optional one.
        if option.required:
            assert not seen_optional, f"{command.name}: required {option.name} after optional"
        else:
            seen_optional = True
        assert len(option.choices) <= 25
        assert not (option.choices and option.autocomplete)
        for choice in option.choices:
            assert 1 <= len(choice.name) <= 100
            assert not isinstance(choice.value, str) or len(choice.value) <= 100


@pytest.mark.discord_openapi
def test_registration_payload_matches_the_openapi_schema() -> None:
    validator = RequestValidator.from_path(default_openapi_path())
    payload: Any = unstructure(definitions())
    problems = validator.validate(
        "PUT", "/applications/1234/guilds/5678/commands", "application/json", payload
    )
    assert problems == []


async def test_the_emulator_accepts_the_bulk_overwrite(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        registered = harness.emulator.state.commands[harness.guild_id]
        assert {c["name"] for c in registered} == EXPECTED
        harness.emulator.check()  # no request failed the OpenAPI check
