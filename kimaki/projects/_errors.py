"""The project error tree, and Discord's refusals translated into it.

Every project operation, whether run by a slash command, the daemon's lock port or the shell,
fails with a `ProjectError` whose `str()` is the one line shown to the person: the slash
command replies with it, the lock port sends it back as `{"error": ...}`, the shell prints it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kimaki.discord.errors import Forbidden, HTTPError, NetworkError, NotFound
from kimaki.errors import KimakiError

__all__ = [
    "GuildChoiceError",
    "InvalidProjectError",
    "ProjectError",
    "ProjectNotFoundError",
    "discord_errors",
]


class ProjectError(KimakiError):
    """A project operation that cannot go ahead; `str()` is written for the person."""


class InvalidProjectError(ProjectError):
    """The folder is missing, is not a directory, or holds kimaki's data dir."""


class ProjectNotFoundError(ProjectError):
    """No project of this bot has that channel."""


class GuildChoiceError(ProjectError):
    """Which guild is unclear: the bot is in several, or in none known."""


@contextmanager
def discord_errors(what: str) -> Iterator[None]:
    """Discord's refusals as the person's problem to fix, in one line."""
    try:
        yield
    except Forbidden:
        raise ProjectError(
            f"Discord refused to {what}: the bot needs the Manage Channels permission"
        ) from None
    except NotFound:
        raise ProjectError(f"Discord could not {what}: the server or channel is gone") from None
    except HTTPError as exc:
        raise ProjectError(f"Discord refused to {what}: {exc}") from None
    except NetworkError as exc:
        raise ProjectError(f"Discord is not reachable, could not {what}: {exc}") from None
