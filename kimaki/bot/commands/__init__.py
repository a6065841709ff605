"""The slash commands: what a person uses to steer the bot from Discord.

```
_projects ...... /add-project /create-new-project /remove-project
_sessions ...... /new-session /resume /abort /session-id /queue /clear-queue
_preferences ... /model /agent /verbosity
_maintenance ... /undo /redo /compact /diff /restart-agent-server
_worktrees ..... /new-worktree /merge-worktree /worktrees
_engine ........ /engine
```

Each group registers its commands and component handlers on the bot's `Interactions`; who may
use them, acknowledging within 3 s and refusing channels this bot does not own happen there,
before any handler here runs. Capabilities only some engines have (`kimaki.agents._extras`) are
checked per command, which answers "not supported by this engine" without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kimaki.bot.commands import (
    _engine,
    _maintenance,
    _preferences,
    _projects,
    _sessions,
    _worktrees,
)

if TYPE_CHECKING:
    from kimaki.bot._bot import Bot

__all__ = ["install_commands"]


def install_commands(bot: Bot) -> None:
    """Add every command (and the components they use) to `bot.interactions`."""
    for group in (_projects, _sessions, _preferences, _maintenance, _worktrees, _engine):
        group.install(bot)
