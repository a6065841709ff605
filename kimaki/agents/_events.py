"""Engine-neutral events: everything rendering, queueing and delivery ever see of an agent.

Each engine (OpenCode over HTTP+SSE, ACP over stdio) translates its own wire events into these
records, so a Discord thread renders a turn the same way whichever agent runs it.

Parts carry stable ids (`part_id`): the engine's own ids where it has them. Text is streamed as
`TextDelta`s but only `TextCompleted` is final; a renderer that remembers which part ids it has
posted can resume after a restart without posting a part twice.

A turn ends with exactly one `TurnEnded` whose `turn_id` is the id `EngineSession.prompt`
returned, so a consumer that abandoned a turn (it was interrupted) can tell a late end of the old
turn from the end of the new one.
"""

from __future__ import annotations

import os
from typing import Final, Literal, final

import attrs

__all__ = [
    "DiffStats",
    "EngineEvent",
    "PermissionRequested",
    "PermissionResolved",
    "PlanEntry",
    "PlanUpdated",
    "Question",
    "QuestionAsked",
    "QuestionOption",
    "QuestionResolved",
    "ReasoningCompleted",
    "ReasoningDelta",
    "Retrying",
    "SessionRenamed",
    "StepFinished",
    "StopReason",
    "TextCompleted",
    "TextDelta",
    "ToolEvent",
    "ToolFinished",
    "ToolStarted",
    "ToolStatus",
    "ToolUpdated",
    "TurnEnded",
    "Usage",
    "relative_path",
    "summary_line",
]

StopReason = Literal["end_turn", "aborted", "error", "max_tokens", "max_turn_requests", "refused"]
ToolStatus = Literal["pending", "running", "completed", "error"]
PlanStatus = Literal["pending", "in_progress", "completed", "cancelled"]

_SUMMARY_LIMIT: Final = 200


@final
@attrs.frozen
class TextDelta:
    """More text of an answer part, not final: `TextCompleted` for the same part replaces it."""

    part_id: str
    delta: str


@final
@attrs.frozen
class TextCompleted:
    """The final text of one answer part."""

    part_id: str
    text: str


@final
@attrs.frozen
class ReasoningDelta:
    part_id: str
    delta: str


@final
@attrs.frozen
class ReasoningCompleted:
    part_id: str
    text: str


@final
@attrs.frozen
class DiffStats:
    """What a file-changing tool did: `+additions -deletions` for edits, `lines` for writes."""

    path: str | None = None
    additions: int | None = None
    deletions: int | None = None
    lines: int | None = None


@attrs.frozen(kw_only=True)
class ToolEvent:
    """The state of one tool call; the three subclasses say which moment of it this is.

    `input_summary` is the one line a person needs (the command, the file, the pattern); `title`
    is the engine's own title when it has one. `output` is the tool's output when finished.
    """

    part_id: str
    call_id: str
    tool: str
    title: str
    input_summary: str
    status: ToolStatus
    error: str | None = None
    output: str | None = None
    diff: DiffStats | None = None


def summary_line(text: str, limit: int = _SUMMARY_LIMIT) -> str:
    """`text` as one line of at most `limit` characters (for `input_summary` and titles)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def relative_path(path: str, directory: str) -> str:
    """`path` relative to the project `directory` when it lies inside it, else as given."""
    if directory and os.path.isabs(path):
        relative = os.path.relpath(path, directory)
        if not relative.startswith(".."):
            return relative
    return path


@final
@attrs.frozen(kw_only=True)
class ToolStarted(ToolEvent):
    pass


@final
@attrs.frozen(kw_only=True)
class ToolUpdated(ToolEvent):
    pass


@final
@attrs.frozen(kw_only=True)
class ToolFinished(ToolEvent):
    """`status` is `completed` or `error` (then `error` says why)."""


@final
@attrs.frozen
class PlanEntry:
    content: str
    status: str
    priority: str = "medium"


@final
@attrs.frozen
class PlanUpdated:
    """The agent's whole todo list / plan as it stands now (not a diff)."""

    entries: tuple[PlanEntry, ...]


@final
@attrs.frozen
class PermissionRequested:
    """The agent wants to do something that needs a person's yes: answer with
    `EngineSession.reply_permission(request_id, "once" | "always" | "reject")`.

    `patterns` is what is asked for now (a command, a path); `always` is what "always" would
    allow from now on.
    """

    request_id: str
    permission: str
    title: str
    patterns: tuple[str, ...] = ()
    always: tuple[str, ...] = ()
    call_id: str | None = None


@final
@attrs.frozen
class PermissionResolved:
    request_id: str
    reply: Literal["once", "always", "reject"]


@final
@attrs.frozen
class QuestionOption:
    label: str
    description: str = ""


@final
@attrs.frozen
class Question:
    question: str
    header: str
    options: tuple[QuestionOption, ...]
    multiple: bool = False
    custom: bool = True


@final
@attrs.frozen
class QuestionAsked:
    """Answer with `EngineSession.answer_question(request_id, answers)` (one list of chosen
    labels per question, in order) or `reject_question(request_id)`."""

    request_id: str
    questions: tuple[Question, ...]
    call_id: str | None = None


@final
@attrs.frozen
class QuestionResolved:
    """`answers` is None when the question was rejected."""

    request_id: str
    answers: tuple[tuple[str, ...], ...] | None


@final
@attrs.frozen
class Usage:
    """Tokens of the last model step; `context_limit` is the model's window when known."""

    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: float = 0.0
    context_limit: int | None = None
    # `provider/model` that answered, when the engine says.
    model: str | None = None
    context_used: int | None = None
    """Tokens in the context window now, when the engine says so itself (ACP `usage_update`
    `used`); else `context_tokens` is the best estimate."""
    session_cost: float | None = None
    """The session's cost so far, for engines that report a running total instead of each
    step's cost (ACP `usage_update.cost`, "cumulative session cost"); `cost` is then 0."""
    credits: float | None = None
    """Metering credits the step used, for agents that bill in credits rather than money."""

    @property
    def context_tokens(self) -> int:
        """What the next request will carry: everything read and written so far."""
        if self.context_used is not None:
            return self.context_used
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.output_tokens
            + self.reasoning_tokens
        )


@final
@attrs.frozen
class SessionRenamed:
    title: str


@final
@attrs.frozen
class StepFinished:
    """One model step ended: a good moment to flush what was rendered so far."""

    part_id: str
    reason: str = ""


@final
@attrs.frozen
class Retrying:
    """The engine hit a model error it retries on its own; the turn is still running."""

    attempt: int
    message: str


@final
@attrs.frozen
class TurnEnded:
    """The turn started by `prompt()` (its id is `turn_id`) is over."""

    turn_id: str
    stop_reason: StopReason
    message: str | None = None


EngineEvent = (
    TextDelta
    | TextCompleted
    | ReasoningDelta
    | ReasoningCompleted
    | ToolStarted
    | ToolUpdated
    | ToolFinished
    | PlanUpdated
    | PermissionRequested
    | PermissionResolved
    | QuestionAsked
    | QuestionResolved
    | Usage
    | SessionRenamed
    | StepFinished
    | Retrying
    | TurnEnded
)
