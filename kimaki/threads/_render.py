"""Engine-neutral events → the lines a Discord thread shows.

The renderer is pure: it turns each event into zero or more markdown blocks, and knows which
events are flush points (a step ended, or something interactive is about to be posted), so the
thread reads in the order things happened. Sending is the delivery layer's job.

What a person sees, per verbosity:

| verbosity        | text | reasoning | essential tools | other tools |
| ---------------- | ---- | --------- | --------------- | ----------- |
| `tools`          | yes  | one line  | yes             | yes         |
| `essential`      | yes  | one line  | yes             | no          |
| `text`           | yes  | no        | no              | no          |

Essential tools are the ones that change something or run something (edits, writes, shell
commands, patches, tasks handed to sub-agents); reads and searches are the others. Tool errors
are always shown.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final, Literal, final

import attrs

from kimaki.agents import (
    EngineEvent,
    PermissionRequested,
    PlanEntry,
    PlanUpdated,
    QuestionAsked,
    ReasoningCompleted,
    SessionRenamed,
    StepFinished,
    TextCompleted,
    ToolEvent,
    ToolFinished,
    ToolStarted,
    TurnEnded,
)

__all__ = [
    "VERBOSITY_LEVELS",
    "Footer",
    "Rendered",
    "Renderer",
    "Verbosity",
    "format_duration",
    "format_footer",
    "format_tool",
]

Verbosity = Literal["tools", "essential", "text"]
VERBOSITY_LEVELS: Final[tuple[Verbosity, ...]] = ("tools", "essential", "text")

ESSENTIAL_TOOLS: Final = frozenset(
    {
        "bash",
        "shell",
        "execute",
        "edit",
        "write",
        "patch",
        "apply_patch",
        "multiedit",
        "delete",
        "move",
        "task",
        "terminal",
    }
)
_REASONING_WIDTH: Final = 120
_SUMMARY_WIDTH: Final = 160
_ERROR_WIDTH: Final = 300

_STOP_NOTICES: Final = {
    "max_tokens": "⚠️ the answer was cut off: the model reached its output limit",
    "refused": "⚠️ the model refused to continue",
    "max_turn_requests": "⚠️ the agent stopped: too many model requests in one turn",
    # An end the daemon asked for (a new message, /abort) never reaches the renderer: the turn
    # handler drops it and says "⏹ interrupted" itself. An `aborted` end that arrives here is
    # the agent's own (ACP `cancelled`, an abort from another client), and must not be silent.
    "aborted": "⚠️ the agent cancelled the turn on its side",
}


@final
@attrs.frozen
class Rendered:
    """What one event adds to the thread.

    `blocks` are markdown paragraphs to append; `flush` asks for everything buffered so far to
    be sent now (a step ended, or an interactive message must come after what precedes it).
    """

    blocks: tuple[str, ...] = ()
    flush: bool = False


_NOTHING: Final = Rendered()


def _one_line(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def _escape(text: str) -> str:
    """Make text safe inside `_…_` / `*…*` emphasis (and keep it on one line)."""
    return text.replace("\\", "\\\\").replace("_", "\\_").replace("*", "\\*").replace("`", "'")


def format_tool(event: ToolEvent) -> str:
    """`┣ bash _git status_`, `┣ edit *src/app.py* (+12-3)`, `┣ write *notes.md* (40 lines)`."""
    name = event.tool
    diff = event.diff
    if diff is not None and diff.path:
        line = f"┣ {name} *{_escape(_short_path(diff.path))}*"
        if diff.additions is not None or diff.deletions is not None:
            line += f" (+{diff.additions or 0}-{diff.deletions or 0})"
        elif diff.lines is not None:
            line += f" ({diff.lines} line{'s' if diff.lines != 1 else ''})"
    else:
        summary = _one_line(event.input_summary or event.title, _SUMMARY_WIDTH)
        line = f"┣ {name} _{_escape(summary)}_" if summary else f"┣ {name}"
    if event.status == "error":
        reason = _one_line(event.error or "failed", _ERROR_WIDTH)
        line += f" ✗ {_escape(reason)}"
    return line


def _short_path(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if not relative.startswith("..") and len(relative) < len(path) else path


def _current_item(entries: Sequence[PlanEntry]) -> PlanEntry | None:
    for status in ("in_progress", "pending"):
        for entry in entries:
            if entry.status == status:
                return entry
    return None


@final
class Renderer:
    """Renders one thread's events. Keep one per thread; it remembers the current todo item."""

    def __init__(self, verbosity: Verbosity = "essential") -> None:
        self.verbosity: Verbosity = verbosity
        self._todo: str | None = None

    def render(self, event: EngineEvent) -> Rendered:
        match event:
            case TextCompleted(text=text):
                return Rendered((text,)) if text.strip() else _NOTHING
            case ReasoningCompleted(text=text):
                if self.verbosity == "text" or not text.strip():
                    return _NOTHING
                return Rendered((f"> 💭 _{_escape(_one_line(text, _REASONING_WIDTH))}_",))
            case ToolStarted() | ToolFinished():
                return self._tool(event)
            case PlanUpdated(entries=entries):
                return self._plan(entries)
            case StepFinished():
                return Rendered(flush=True)
            case PermissionRequested() | QuestionAsked():
                return Rendered(flush=True)  # the buttons come after what led to them
            case SessionRenamed():
                return _NOTHING
            case TurnEnded(stop_reason=reason, message=message):
                return self._turn_ended(reason, message)
            case _:
                return _NOTHING

    def _tool(self, event: ToolEvent) -> Rendered:
        failed = event.status == "error"
        if self.verbosity == "text" and not failed:
            return _NOTHING
        essential = event.tool.lower() in ESSENTIAL_TOOLS
        if self.verbosity == "essential" and not essential and not failed:
            return _NOTHING
        # One line per call: when it finishes (with its diff), or at its start for long-running
        # commands so the person sees what is running. A finished call that was shown at its
        # start is shown again only if it failed.
        if isinstance(event, ToolStarted):
            return (
                Rendered((format_tool(event),))
                if event.tool.lower() in _SHOW_AT_START
                else _NOTHING
            )
        if event.tool.lower() in _SHOW_AT_START and not failed:
            return _NOTHING
        return Rendered((format_tool(event),))

    def _plan(self, entries: Sequence[PlanEntry]) -> Rendered:
        if self.verbosity == "text":
            return _NOTHING
        current = _current_item(entries)
        text = current.content if current is not None else None
        if text is None or text == self._todo:
            self._todo = text
            return _NOTHING
        self._todo = text
        done = sum(1 for e in entries if e.status == "completed")
        return Rendered((f"☐ {_escape(_one_line(text, _SUMMARY_WIDTH))} ({done}/{len(entries)})",))

    def _turn_ended(self, reason: str, message: str | None) -> Rendered:
        if reason == "error":
            detail = _one_line(message or "the agent stopped with an error", _ERROR_WIDTH)
            return Rendered((f"⚠️ {detail}",), flush=True)
        notice = _STOP_NOTICES.get(reason)
        return Rendered((notice,) if notice else (), flush=True)


_SHOW_AT_START: Final = frozenset({"bash", "shell", "execute", "terminal", "task"})


@final
@attrs.frozen
class Footer:
    directory: str
    branch: str | None
    seconds: float
    model: str | None
    agent: str | None
    extras: tuple[str, ...] = ()
    """What the turn's hooks add at the end (its context use, its cost)."""


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s" if seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def format_footer(footer: Footer) -> str:
    """`-# app · main · 1m 12s · openai/gpt-5 · build` (Discord's small-text line)."""
    parts = [os.path.basename(footer.directory.rstrip("/")) or footer.directory]
    if footer.branch:
        parts.append(footer.branch)
    parts.append(format_duration(footer.seconds))
    if footer.model:
        parts.append(footer.model)
    if footer.agent:
        parts.append(footer.agent)
    parts.extend(footer.extras)
    return "-# " + " · ".join(_escape(part) for part in parts)
