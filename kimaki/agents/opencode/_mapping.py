"""OpenCode wire events → engine-neutral events, for one session, with the turn's boundaries.

A turn is identified by the id of the user message that started it: the engine generates it
and passes it as `messageID` to `prompt_async`, so every assistant message of the turn names it
as its `parentID`. That is what makes the boundaries exact on a stream that is shared and
reordered by nothing but time:

- Before the turn's user message appears on the stream, `session.idle` / `session.error` belong
  to the previous turn (an aborted turn sends its idle twice) and are ignored.
- Parts are accepted only from assistant messages whose parent is the running turn, so the
  late final text of an aborted turn never lands in the next one.
- The first idle after that ends the turn, with a stop reason from what the turn saw:
  `MessageAbortedError` → aborted (not an error), `MessageOutputLengthError` or finish `length`
  → max_tokens, `ContentFilterError` or finish `content-filter` → refused, another error →
  error, otherwise end_turn.

Only completed text is final: deltas stream, the part's `time.end` makes it `TextCompleted`.
Replaying a message list (after the event stream reconnected) goes through the same code;
parts already final are not sent again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, final

import attrs

from kimaki.agents._events import (
    DiffStats,
    EngineEvent,
    PermissionRequested,
    PermissionResolved,
    PlanEntry,
    PlanUpdated,
    Question,
    QuestionAsked,
    QuestionOption,
    QuestionResolved,
    ReasoningCompleted,
    ReasoningDelta,
    Retrying,
    SessionRenamed,
    StepFinished,
    StopReason,
    TextCompleted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    ToolStatus,
    ToolUpdated,
    Usage,
    relative_path,
    summary_line,
)
from kimaki.agents._turns import Turn, TurnTracker
from kimaki.agents.opencode._wire import (
    MessageInfo,
    MessageUpdated,
    OtherPart,
    Part,
    PartDelta,
    PartUpdated,
    PermissionAsked,
    PermissionReplied,
    QuestionResolvedWire,
    ReasoningPart,
    SessionErrorEvent,
    SessionIdle,
    SessionStatusEvent,
    SessionUpdated,
    StepFinishPart,
    TextPart,
    TodoUpdated,
    ToolPart,
    WireError,
    WireEvent,
)
from kimaki.agents.opencode._wire import QuestionAsked as WireQuestionAsked

__all__ = ["ContextLimits", "SessionMapper", "input_summary"]

log = logging.getLogger("kimaki.opencode")

ContextLimits = Callable[[str | None, str | None], int | None]

_MAX_REMEMBERED_MESSAGES: Final = 2048
_TOOL_STATUSES: Final[frozenset[str]] = frozenset({"pending", "running", "completed", "error"})


@attrs.define
class _Turn(Turn):
    confirmed: bool = False
    error: WireError | None = None
    finish: str | None = None


@attrs.frozen
class _Message:
    role: str
    parent_id: str | None
    provider_id: str | None
    model_id: str | None


def input_summary(tool: str, tool_input: Mapping[str, Any], directory: str = "") -> str:
    """The one line a person needs to know what a tool call does."""
    if not tool_input:
        return ""
    if tool == "bash" and isinstance(tool_input.get("command"), str):
        return summary_line(tool_input["command"])
    for key in ("filePath", "path"):
        if isinstance(tool_input.get(key), str):
            return relative_path(tool_input[key], directory)
    for key in ("pattern", "url", "query", "description"):
        if isinstance(tool_input.get(key), str):
            return summary_line(tool_input[key])
    if tool == "todowrite" and isinstance(tool_input.get("todos"), list):
        return f"{len(tool_input['todos'])} todos"
    if tool == "question":
        return ""
    return summary_line(json.dumps(tool_input, ensure_ascii=False, sort_keys=True))


def _diff_stats(part: ToolPart, directory: str) -> DiffStats | None:
    metadata = part.metadata
    filediff = metadata.get("filediff")
    if isinstance(filediff, dict):
        additions = filediff.get("additions")
        deletions = filediff.get("deletions")
        return DiffStats(
            path=input_summary(part.tool, {"filePath": filediff.get("file")}, directory) or None,
            additions=additions if isinstance(additions, int) else None,
            deletions=deletions if isinstance(deletions, int) else None,
        )
    if part.tool == "write" and isinstance(part.input.get("content"), str):
        content: str = part.input["content"]
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        return DiffStats(path=input_summary("write", part.input, directory) or None, lines=lines)
    return None


def _stop_reason(turn: _Turn) -> tuple[StopReason, str | None]:
    error = turn.error
    if error is not None:
        if error.name == "MessageAbortedError":
            return "aborted", None
        if error.name == "MessageOutputLengthError":
            return "max_tokens", None
        if error.name == "ContentFilterError":
            return "refused", error.message
        return "error", error.message
    if turn.abort_requested:
        return "aborted", None
    if turn.finish == "length":
        return "max_tokens", None
    if turn.finish == "content-filter":
        return "refused", None
    return "end_turn", None


@final
class SessionMapper(TurnTracker[_Turn]):
    """Pure state machine: wire events in, engine-neutral events out. No I/O."""

    def __init__(
        self,
        session_id: str,
        *,
        title: str = "",
        directory: str = "",
        context_limits: ContextLimits | None = None,
    ) -> None:
        self.session_id = session_id
        self.title = title
        self._directory = directory
        self._context_limits = context_limits or (lambda provider, model: None)
        self._turn: _Turn | None = None
        self._messages: dict[str, _Message] = {}
        self._part_kinds: dict[str, str] = {}
        self._streamed: dict[str, str] = {}
        self._final_parts: set[str] = set()
        self._tools: dict[str, tuple[str, str, str]] = {}

    # ------------------------------------------------------------------ turns

    @property
    def turn_confirmed(self) -> bool:
        return self._turn is not None and self._turn.confirmed

    def begin_turn(self, message_id: str) -> None:
        """Call before sending the prompt whose `messageID` is `message_id`."""
        self._turn = _Turn(message_id)
        self._part_kinds.clear()
        self._streamed.clear()
        self._final_parts.clear()
        self._tools.clear()

    def _finish_turn(self) -> list[EngineEvent]:
        """The stream (or the server's state) says the turn is over: why, from what it saw."""
        turn = self._turn
        assert turn is not None
        return self.end_turn(turn.id, *_stop_reason(turn))

    # ------------------------------------------------------------------ events

    def handle(self, event: WireEvent) -> list[EngineEvent]:
        if isinstance(event, PartDelta):
            return self._delta(event)
        if isinstance(event, PartUpdated):
            return self._part(event.part)
        if isinstance(event, MessageUpdated):
            return self._message(event.info)
        if isinstance(event, SessionIdle):
            return self._idle()
        if isinstance(event, SessionStatusEvent):
            if event.status == "idle":
                return self._idle()
            if event.status == "retry" and self.turn_confirmed:
                return [Retrying(event.attempt, event.message)]
            return []
        if isinstance(event, SessionErrorEvent):
            if self._turn is not None and self._turn.confirmed and self._turn.error is None:
                self._turn.error = event.error
            return []
        if isinstance(event, PermissionAsked):
            return [_permission(event)]
        if isinstance(event, PermissionReplied):
            if event.reply in ("once", "always", "reject"):
                return [PermissionResolved(event.request_id, event.reply)]  # type: ignore[arg-type]
            return []
        if isinstance(event, WireQuestionAsked):
            return [_question(event)]
        if isinstance(event, QuestionResolvedWire):
            return [QuestionResolved(event.request_id, event.answers)]
        if isinstance(event, TodoUpdated):
            entries = tuple(PlanEntry(t.content, t.status, t.priority) for t in event.todos)
            return [PlanUpdated(entries)]
        if isinstance(event, SessionUpdated):
            if event.info.title and event.info.title != self.title:
                self.title = event.info.title
                return [SessionRenamed(event.info.title)]
            return []
        return []

    def replay(self, messages: Iterable[tuple[MessageInfo, list[Part]]]) -> list[EngineEvent]:
        """Feed a fetched message list (after missing events): parts not yet final are sent."""
        out: list[EngineEvent] = []
        for info, parts in messages:
            out += self._message(info)
            for part in parts:
                out += self._part(part)
        return out

    def settle(self, *, busy: bool, lost: str | None = None) -> list[EngineEvent]:
        """After `replay`, given the server's status: end the turn if the server is idle.

        `lost`: the server that ran the turn is gone (not the one answering now), so a turn
        its messages do not show as finished ends with this error.
        """
        turn = self._turn
        if turn is None:
            return []
        if lost is not None and turn.finish is None and turn.error is None:
            return self.end_turn(turn.id, "error", lost)
        if busy:
            return []
        if turn.confirmed:
            return self._finish_turn()
        return self.end_turn(turn.id, "error", "the agent did not start this turn")

    def _idle(self) -> list[EngineEvent]:
        if self._turn is None or not self._turn.confirmed:
            return []
        return self._finish_turn()

    def _remember(self, info: MessageInfo) -> None:
        self._messages[info.id] = _Message(
            info.role, info.parent_id, info.provider_id, info.model_id
        )
        if len(self._messages) > _MAX_REMEMBERED_MESSAGES:
            del self._messages[next(iter(self._messages))]

    def _message(self, info: MessageInfo) -> list[EngineEvent]:
        self._remember(info)
        turn = self._turn
        if turn is None:
            return []
        if info.id == turn.id or info.parent_id == turn.id:
            turn.confirmed = True
        if info.role == "assistant" and info.parent_id == turn.id:
            if info.finish is not None:
                turn.finish = info.finish
            if info.error is not None and turn.error is None:
                turn.error = info.error
        return []

    def _in_turn(self, message_id: str) -> bool:
        turn = self._turn
        if turn is None:
            return False
        message = self._messages.get(message_id)
        if message is None:  # missed its message.updated (a reconnect): trust the turn
            return True
        return message.role == "assistant" and message.parent_id == turn.id

    def _delta(self, event: PartDelta) -> list[EngineEvent]:
        if event.field != "text" or not self._in_turn(event.message_id):
            return []
        if event.part_id in self._final_parts or not event.delta:
            return []
        kind = self._part_kinds.get(event.part_id, "text")
        if kind not in ("text", "reasoning"):
            return []
        self._streamed[event.part_id] = self._streamed.get(event.part_id, "") + event.delta
        if kind == "reasoning":
            return [ReasoningDelta(event.part_id, event.delta)]
        return [TextDelta(event.part_id, event.delta)]

    def _part(self, part: Part) -> list[EngineEvent]:
        if not self._in_turn(part.message_id):
            return []
        if isinstance(part, TextPart):
            self._part_kinds[part.id] = "text"
            if part.synthetic:
                return []
            return self._text(part.id, part.text, part.ended, TextDelta, TextCompleted)
        if isinstance(part, ReasoningPart):
            self._part_kinds[part.id] = "reasoning"
            return self._text(part.id, part.text, part.ended, ReasoningDelta, ReasoningCompleted)
        if isinstance(part, ToolPart):
            self._part_kinds[part.id] = "tool"
            return self._tool(part)
        if isinstance(part, StepFinishPart):
            if part.id in self._final_parts:
                return []
            self._final_parts.add(part.id)
            message = self._messages.get(part.message_id)
            limit = (
                self._context_limits(message.provider_id, message.model_id)
                if message is not None
                else None
            )
            tokens = part.tokens
            usage = Usage(
                tokens.input,
                tokens.output,
                tokens.reasoning,
                tokens.cache_read,
                tokens.cache_write,
                part.cost,
                limit,
                _model_name(message),
            )
            return [StepFinished(part.id, part.reason), usage]
        assert isinstance(part, OtherPart)
        self._part_kinds[part.id] = part.type
        return []

    def _text(
        self,
        part_id: str,
        text: str,
        ended: bool,
        delta_type: type[TextDelta] | type[ReasoningDelta],
        final_type: type[TextCompleted] | type[ReasoningCompleted],
    ) -> list[EngineEvent]:
        if part_id in self._final_parts:
            return []
        if ended:
            self._final_parts.add(part_id)
            self._streamed.pop(part_id, None)
            return [final_type(part_id, text)]
        # Servers that send growing snapshots instead of deltas: stream the new suffix.
        streamed = self._streamed.get(part_id, "")
        if len(text) > len(streamed) and text.startswith(streamed):
            self._streamed[part_id] = text
            return [delta_type(part_id, text[len(streamed) :])]
        return []

    def _tool(self, part: ToolPart) -> list[EngineEvent]:
        if part.id in self._final_parts or part.status not in _TOOL_STATUSES:
            return []
        status: ToolStatus = part.status  # type: ignore[assignment]
        summary = input_summary(part.tool, part.input, self._directory)
        title = part.title or summary
        fields: dict[str, Any] = {
            "part_id": part.id,
            "call_id": part.call_id,
            "tool": part.tool,
            "title": title,
            "input_summary": summary,
            "status": status,
        }
        out: list[EngineEvent] = []
        seen = self._tools.get(part.id)
        if seen is None:
            started = status if status in ("pending", "running") else "running"
            out.append(ToolStarted(**{**fields, "status": started}))
        if part.status in ("completed", "error"):
            self._final_parts.add(part.id)
            self._tools.pop(part.id, None)
            out.append(
                ToolFinished(
                    **fields,
                    error=part.error,
                    output=part.output,
                    diff=_diff_stats(part, self._directory),
                )
            )
            return out
        state = (status, title, summary)
        if seen is not None and seen != state:
            out.append(ToolUpdated(**fields))
        self._tools[part.id] = state
        return out


def _permission(event: PermissionAsked) -> PermissionRequested:
    command = event.metadata.get("command")
    if isinstance(command, str) and command:
        title = summary_line(command)
    elif event.patterns:
        title = summary_line(", ".join(event.patterns))
    else:
        title = event.permission
    return PermissionRequested(
        request_id=event.id,
        permission=event.permission,
        title=title,
        patterns=event.patterns,
        always=event.always,
        call_id=event.call_id,
    )


def _question(event: WireQuestionAsked) -> QuestionAsked:
    questions = tuple(
        Question(
            question=q.question,
            header=q.header,
            options=tuple(QuestionOption(label, description) for label, description in q.options),
            multiple=q.multiple,
            custom=q.custom,
        )
        for q in event.questions
    )
    return QuestionAsked(event.id, questions, event.call_id)


def _model_name(message: _Message | None) -> str | None:
    if message is None or not message.provider_id or not message.model_id:
        return None
    return f"{message.provider_id}/{message.model_id}"
