"""The turn's hooks: where capabilities take part in a thread's turns.

A capability that needs to add to every turn (the channel's memory before the prompt, a budget
that may refuse a turn, usage recorded at its end, the audit trail) implements `TurnHook` in its
own package (`kimaki.channel_memory.MemoryHook`, `kimaki.usage.UsageLedger`,
`kimaki.audit.AuditTurnHook`) and is handed to `kimaki.threads.Threads` by the composition root
(`kimaki.bot`); the pipeline (`kimaki.threads._turn.ThreadTurns`) knows it only through this
protocol. The types live here, low in the layers (beside store and settings, importing only
`kimaki.agents`), so that the capabilities, which sit below the thread pipeline, use the same
`TurnInfo`, `TurnReport` and `TurnNotes` the pipeline calls them with. Hooks run in the order
given; each method is called for every turn:

1. `admit`: before the prompt is sent (not for a turn resumed after a restart). The first hook
   that answers a line refuses the turn: the line is said in the thread and nothing is sent.
2. `preamble`: text placed before the prompt, outermost (hooks' texts in hook order, blank
   lines between). It is part of what the engine receives, and of what a restart sends again.
3. `observe`: every engine event of the turn, as it is handled (synchronous: it must be cheap
   and must not fail; it runs while the thread's writer waits).
4. `ended`: once the turn is over, answered, failed or interrupted, with what it cost. Its
   `TurnNotes` add to the footer (an answered turn's) and say lines after it.

A hook that fails is logged and skipped: a capability's fault never stops a turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, final

import attrs

from kimaki.agents import EngineEvent, Usage

__all__ = [
    "NO_NOTES",
    "TurnHook",
    "TurnInfo",
    "TurnNotes",
    "TurnReport",
    "TurnSource",
    "TurnTokens",
    "joined_preamble",
]

TurnSource = Literal["message", "command", "scheduled", "voice", "resume"]
"""What started a turn: a Discord message, a slash command, a scheduled task, a voice message,
or a turn resumed after a restart."""


@final
@attrs.frozen
class TurnInfo:
    """The turn the hooks are told about: where it runs and who asked for it."""

    thread_id: int
    channel_id: int | None
    """The project channel the thread belongs to (None for a thread without one)."""
    directory: Path
    engine: str
    session_id: str
    author_id: int
    """The Discord user who sent the prompt's first message (0 for the command line)."""
    source: TurnSource
    first_turn: bool
    """The session was made for this turn: the thread's first prompt (or its session was lost)."""
    text: str
    """The prompt as composed (messages, attachments' descriptions), before any preamble."""
    started_at: float
    """Wall-clock seconds since the epoch."""


@final
@attrs.frozen
class TurnReport:
    """How a turn ended, for `TurnHook.ended`."""

    stop_reason: str
    """The engine's reason ("end_turn", "cancelled", "error", ...), "interrupted" when a newer
    message or `/abort` cut it short, "lost" when its events ended without an end."""
    model: str | None
    seconds: float
    usage: tuple[Usage, ...]
    """Every usage report of the turn, in order (one per model step)."""
    error: str | None = None

    @property
    def tokens(self) -> TurnTokens:
        """The turn's tokens: its steps' added up."""
        usage = self.usage
        return TurnTokens(
            input=sum(step.input_tokens for step in usage),
            output=sum(step.output_tokens for step in usage),
            reasoning=sum(step.reasoning_tokens for step in usage),
            cache_read=sum(step.cache_read_tokens for step in usage),
            cache_write=sum(step.cache_write_tokens for step in usage),
        )

    @property
    def step_cost(self) -> float:
        """What the steps reported as their own cost (OpenCode's), added up."""
        return sum(step.cost for step in self.usage)

    @property
    def session_cost(self) -> float | None:
        """The session's running cost as last reported (ACP's `usage_update`), if any: the
        turn's share is the difference from the session's previous turn, which the usage
        ledger keeps."""
        totals = [step.session_cost for step in self.usage if step.session_cost is not None]
        return totals[-1] if totals else None


@final
@attrs.frozen
class TurnTokens:
    input: int
    output: int
    reasoning: int
    cache_read: int
    cache_write: int


@final
@attrs.frozen
class TurnNotes:
    """What a hook adds when a turn ends."""

    footer: tuple[str, ...] = ()
    """Appended to an answered turn's footer line, in order (e.g. "71%", "$0.0123")."""
    lines: tuple[str, ...] = ()
    """Said in the thread after the footer (e.g. a context or budget notice)."""


NO_NOTES = TurnNotes()


class TurnHook(Protocol):
    async def admit(self, info: TurnInfo) -> str | None:
        """A line refusing the turn, or None to let it run."""
        ...

    async def preamble(self, info: TurnInfo) -> str:
        """Text to put before the prompt ("" for none)."""
        ...

    def observe(self, info: TurnInfo, event: EngineEvent) -> None:
        """One event of the turn, as it is handled."""
        ...

    async def ended(self, info: TurnInfo, report: TurnReport) -> TurnNotes:
        """The turn is over."""
        ...


def joined_preamble(texts: Sequence[str]) -> str:
    """The hooks' preambles as one text: in order, stripped, blank lines between."""
    return "\n\n".join(text.strip() for text in texts if text.strip())
