"""What the scheduling capability is made of, as its parts and its users see it.

`Schedules` (the door, `_schedules.py`) validates and stores tasks and runs the runner; the bot
gives it a `RunTarget` (how a run reaches Discord: a prompt into a thread, a reminder posted);
the commands (`/schedule`, `/remind`, `/tasks`), the command line (`kimaki send --send-at`,
`kimaki task ...`) and the agent's tools (`schedule`, `list_schedules`, `cancel_schedule`,
`sleep`) all go through the door.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Literal, Protocol, final

import attrs

from kimaki.errors import KimakiError
from kimaki.store import ScheduledTask, TaskKind

__all__ = ["NewTask", "RunResult", "RunTarget", "ScheduleError", "StartedRun"]


class ScheduleError(KimakiError, ValueError):
    """A task that cannot be made as asked; the message names what to fix (shown to the person,
    the model, or on the command line with exit 64)."""


@final
@attrs.frozen
class NewTask:
    """A task to create. `when`: an ISO 8601 time with an offset or `Z` (in the future), a
    delay (`10m`, `2h30m`, `1d`), or a 5-field cron expression (repeats; in `tz`, else the
    machine's timezone)."""

    channel_id: int  # the project channel
    prompt: str  # the prompt, or for "remind" the reminder's text
    when: str
    created_by: int  # a Discord user id; 0 for the command line
    created_by_name: str
    name: str = ""  # default: the prompt's first line, clipped
    thread_id: int | None = None  # runs go to this thread; None: a thread per run (or reused)
    tz: str | None = None
    kind: TaskKind = "prompt"
    reuse_thread: bool = False
    mention_user_id: int | None = None
    agent: str | None = None
    model: str | None = None
    worktree: str | None = None


RunStatus = Literal["answered", "failed", "interrupted", "timed out", "dropped"]


@final
@attrs.frozen
class RunResult:
    """How a run's prompt ended: its turn's status, and the agent's final answer (if any)."""

    status: RunStatus
    answer: str | None = None
    error: str | None = None


@final
@attrs.frozen
class StartedRun:
    """A run's prompt, in its thread's prompt channel: `done` resolves when its turn ends."""

    thread_id: int
    done: Awaitable[RunResult] = attrs.field(repr=False)


class RunTarget(Protocol):
    """How a run reaches Discord (the bot implements it over the thread pipeline)."""

    async def start_prompt(self, task: ScheduledTask, text: str) -> StartedRun:
        """Queue `text` in `task`'s thread (or a new thread named "⏰ <name>", or the task's
        reused one), behind a running turn rather than interrupting it, as the task's author
        (the author's name is shown: a person, the command line, or the schedule)."""
        ...

    async def interrupt(self, thread_id: int, notice: str) -> None:
        """End the thread's running turn, saying `notice` (a run past its time limit)."""
        ...

    async def post(self, channel_id: int, content: str, *, mention_user_id: int | None) -> None:
        """Post `content` in a channel or thread (a reminder; a missed run's notice)."""
        ...
