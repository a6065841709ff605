"""The slash commands: what a person uses to steer the bot from Discord.

```
_projects ...... ProjectCommands ..... /add-project /create-new-project /remove-project
_sessions ...... SessionCommands ..... /new-session /resume /abort /session-id /queue
                                       /clear-queue
_preferences ... PreferenceCommands .. /model /agent /verbosity
_maintenance ... MaintenanceCommands . /undo /redo /compact /diff /restart-agent-server
_worktrees ..... WorktreeCommands .... /new-worktree /merge-worktree /worktrees
_engine ........ EngineCommands ...... /engine
_mcp ........... McpCommands ......... /mcp
_voice ......... VoiceCommands ....... /transcription-key /transcription
_memory ........ MemoryCommands ...... /memory /flashmemory /context
_audit ......... AuditCommands ....... /audit recent, /audit ask
_usage ......... UsageCommands ....... /usage /budget
_common ........ what several groups share: option builders, the session thread, the narrow
                 protocols they consume
```

Each group is made by the bot's composition root (`kimaki.bot._compose`) with only what it uses
(a few of the thread pipeline's calls, a store facet or two, the engines, the REST calls it
makes), each as a narrow protocol defined in the group's module, and adds its commands and
component handlers to the bot's `Interactions` (`install`). Who may use them, acknowledging
within 3 s and refusing channels this bot does not own happen there, before any handler here
runs. Capabilities only some engines have (`kimaki.agents._extras`) are checked per command,
which answers "not supported by this engine" without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from kimaki.bot.commands._audit import AuditAsker, AuditCommands, AuditReader
from kimaki.bot.commands._common import CommandRegistry
from kimaki.bot.commands._engine import EngineCommands
from kimaki.bot.commands._maintenance import MaintenanceCommands
from kimaki.bot.commands._mcp import McpCommands, McpPolicyDoor
from kimaki.bot.commands._memory import MemoryCommandDoor, MemoryCommands
from kimaki.bot.commands._preferences import PreferenceCommands
from kimaki.bot.commands._projects import ProjectCommands
from kimaki.bot.commands._schedules import ScheduleCommands, ScheduleDoor
from kimaki.bot.commands._sessions import SessionCommands
from kimaki.bot.commands._usage import GuildOwners, UsageCommands
from kimaki.bot.commands._voice import VoiceCommands
from kimaki.bot.commands._worktrees import WorktreeCommands

__all__ = [
    "AuditAsker",
    "AuditCommands",
    "AuditReader",
    "CommandGroup",
    "CommandRegistry",
    "EngineCommands",
    "GuildOwners",
    "MaintenanceCommands",
    "McpCommands",
    "McpPolicyDoor",
    "MemoryCommandDoor",
    "MemoryCommands",
    "PreferenceCommands",
    "ProjectCommands",
    "ScheduleCommands",
    "ScheduleDoor",
    "SessionCommands",
    "UsageCommands",
    "VoiceCommands",
    "WorktreeCommands",
    "install_commands",
]


class CommandGroup(Protocol):
    """A group of commands, made with what it uses."""

    def install(self, registry: CommandRegistry) -> None: ...


def install_commands(registry: CommandRegistry, groups: Iterable[CommandGroup]) -> None:
    """Add every group's commands (and the components they use) to `registry`."""
    for group in groups:
        group.install(registry)
