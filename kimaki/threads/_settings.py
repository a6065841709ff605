"""The settings values the thread pipeline reads (the daemon's settings hold them)."""

from __future__ import annotations

from pathlib import Path
from typing import final

import attrs

__all__ = ["ThreadSettings"]


@final
@attrs.frozen
class ThreadSettings:
    """Values, not the daemon's whole settings: the pipeline is handed what it reads."""

    attachments_dir: Path
    """Where text attachments too large to inline are saved for the agent to read."""
    worktrees_dir: Path
    """Where automatic and `/new-worktree` worktrees are made."""
    idle_timeout: float = 15 * 60
    """A thread's runtime (and its engine session) goes away after this long without a turn."""
    permission_timeout: float = 10 * 60
    """An unanswered permission request is denied after this long."""
    typing_interval: float = 8.0
    """How often the typing indicator is renewed while a turn runs."""
    data_dir: Path = attrs.field(
        default=attrs.Factory(lambda self: self.attachments_dir.parent, takes_self=True)
    )
    """The daemon's data dir (agent tools refuse to read from it); by default the one the
    attachments dir is in."""
