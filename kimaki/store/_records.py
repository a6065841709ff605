"""Records the store takes and gives: plain frozen attrs classes, no SQL types.

The bot's records live here for now; the records of the layers below the store are theirs
(`kimaki.discord.gateway.GatewaySession`, `kimaki.agents.AgentServerHandover`), persisted by
the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, final

import attrs

__all__ = [
    "ChannelRecord",
    "InteractionKey",
    "McpMode",
    "MemoryEntry",
    "Preference",
    "PreferenceScope",
    "ProjectChannelKind",
    "QueuedPrompt",
    "RunningTurn",
    "ScanRecord",
    "ScannedTool",
    "ScheduledTask",
    "ServerPolicy",
    "ThreadRecord",
    "WorktreeRecord",
]

ProjectChannelKind = Literal["text", "voice"]
"""Which of a project's channels a record maps: its text channel or its voice channel (not
Discord's numeric channel type, `kimaki.discord.models.ChannelType`)."""
PreferenceScope = Literal["session", "channel", "global"]
McpMode = Literal["all", "some"]
"""How much of an MCP server a channel's agents get: every tool, or the tools it names."""


@final
@attrs.frozen
class ChannelRecord:
    """A Discord channel mapped to a project directory by one bot (application id).

    Several machines' bots can share a guild; each only acts in channels whose `app_id` is its
    own.
    """

    channel_id: int
    directory: Path = attrs.field(converter=Path)
    guild_id: int
    app_id: int
    channel_type: ProjectChannelKind = "text"
    engine: str | None = None
    verbosity: str | None = None
    auto_worktrees: bool = False


@final
@attrs.frozen
class ThreadRecord:
    """A Discord thread bound to one agent session, in one directory, of one engine."""

    thread_id: int
    session_id: str
    engine: str
    directory: Path = attrs.field(converter=Path)
    channel_id: int | None = None


@final
@attrs.frozen
class WorktreeRecord:
    """The git worktree a thread's session runs in."""

    thread_id: int
    project_directory: Path = attrs.field(converter=Path)
    directory: Path = attrs.field(converter=Path)
    branch: str
    base_branch: str | None = None


@final
@attrs.frozen
class Preference:
    """Model and agent choice at one scope; `None` fields fall through to the next scope.

    `scope_id` is the session id, the channel id, or "" for the global scope.
    """

    scope: PreferenceScope
    scope_id: str
    model: str | None = None
    agent: str | None = None


@final
@attrs.frozen
class ScheduledTask:
    """A prompt to send to a channel (new thread) or thread at `next_run_at` (Unix time).

    `schedule` is a cron expression for repeating tasks, or None for a one-off reminder.
    """

    channel_id: int
    prompt: str
    next_run_at: float
    created_by: int
    thread_id: int | None = None
    schedule: str | None = None
    # False once a one-off task has run (kept for its history); see `paused` for a pause.
    enabled: bool = True
    task_id: int | None = None
    name: str = ""
    # "prompt": a prompt to an agent; "remind": a message posted, no agent; "wake": the end of
    # an agent's `sleep` (cancelled by any new message in its thread).
    kind: TaskKind = "prompt"
    tz: str | None = None  # the cron expression's timezone (None: the machine's)
    created_by_name: str = ""  # a Discord display name, or "command line (<os user>)"
    reuse_thread: bool = False  # a channel task's runs share one thread (else one each)
    mention_user_id: int | None = None  # "remind": who is pinged
    agent: str | None = None
    model: str | None = None
    worktree: str | None = None  # a new thread per run works in a new worktree of this name
    paused: bool = False
    last_run_at: float | None = None
    last_status: str | None = None  # how the last run ended ("answered", "timed out", ...)


TaskKind = Literal["prompt", "remind", "wake"]


@final
@attrs.frozen
class TaskRun:
    """One run of a scheduled task: when it started and ended, and how."""

    task_id: int
    started_at: float
    status: str  # "running", "answered", "failed", "timed out", "interrupted", "skipped", ...
    ended_at: float | None = None
    error: str | None = None
    thread_id: int | None = None
    late_by: float = 0.0  # seconds after its time (a catch-up after downtime)
    run_id: int | None = None


@final
@attrs.frozen
class InteractionKey:
    """What a button or menu's custom id stands for: a kind, its data, and its thread.

    `payload` is JSON-compatible data (a permission request id, a question's options, ...).
    """

    key: str
    thread_id: int
    kind: str
    payload: Any
    expires_at: float


@final
@attrs.frozen
class RunningTurn:
    """A turn that was still running when the daemon restarted in place: continue it.

    `turn_id` is the engine's id of the turn (reserved before the prompt was sent);
    `prompt_message_id` the Discord message that started it, when there was one; `prompt`
    what was sent (JSON: text and files), to send it again if the agent never got it.
    """

    thread_id: int
    session_id: str
    turn_id: str
    started_at: float
    prompt_message_id: int | None = None
    prompt: str | None = None


@final
@attrs.frozen
class QueuedPrompt:
    """A prompt that was waiting behind a running turn when the daemon restarted in place.

    `payload` is JSON-compatible data (the bot layer's serialized prompt); `position` orders
    a thread's queue from 0.
    """

    thread_id: int
    position: int
    payload: Any


def _name_set(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


@final
@attrs.frozen
class ServerPolicy:
    """What one channel lets its agents use of one MCP server (no policy: the server is off).

    `tools` names the allowed tools when `mode` is "some"; it is empty for "all".
    """

    mode: McpMode = "all"
    tools: frozenset[str] = attrs.field(default=frozenset(), converter=_name_set)

    @classmethod
    def every_tool(cls) -> ServerPolicy:
        return cls("all")

    @classmethod
    def only(cls, tools: Iterable[str]) -> ServerPolicy:
        return cls("some", frozenset(tools))

    @property
    def allowed(self) -> frozenset[str] | None:
        """The allowed tool names, or None for every tool (the proxy's form)."""
        return None if self.mode == "all" else self.tools


@final
@attrs.frozen
class ScannedTool:
    """A tool an MCP server offered when it was scanned."""

    name: str
    description: str = ""


@final
@attrs.frozen
class ScanRecord:
    """An MCP server's tools as its last scan found them, and when (Unix time)."""

    server: str
    tools: tuple[ScannedTool, ...]
    scanned_at: float


@final
@attrs.frozen
class MemoryEntry:
    """One standing instruction of a project channel (`/memory`), or of its flash memory
    (held by the daemon, never stored). Listed by `position`, then by id."""

    channel_id: int
    text: str
    author_id: int
    """Who added it (whoever pressed Accept, for an agent's proposal); 0 when unknown."""
    author_name: str
    added_at: float
    entry_id: int = 0
    """Assigned when stored."""
    position: int = 0
