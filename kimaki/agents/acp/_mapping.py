"""ACP `session/update`s → engine-neutral events, and what a session advertises.

ACP streams chunks and never says a text is complete, so a text (or thought) part is complete
when something else a person sees comes: a tool call, a plan, the other kind of chunk, a chunk
of another message, or the end of the turn. Part ids are `<turn id>:<n>` for texts and
`<turn id>:<toolCallId>` for tool calls, stable for the turn.

Content outside a turn (the tail of an abandoned turn, a replayed history) is dropped; what the
agent advertises (modes, config options, commands) and titles are taken whenever they come.

Stop reasons: `end_turn` → end_turn, `max_tokens`, `max_turn_requests`, `refusal` → refused,
`cancelled` → aborted (and any end of a turn the person aborted).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, final

import attrs

from kimaki.agents._engine import AgentInfo, CommandInfo, ModelInfo, ModelRef, ProviderModels
from kimaki.agents._events import (
    DiffStats,
    EngineEvent,
    PlanEntry,
    PlanUpdated,
    ReasoningCompleted,
    ReasoningDelta,
    SessionRenamed,
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
from kimaki.agents.acp._wire import (
    AgentMessageChunk,
    AgentThoughtChunk,
    AvailableCommandsUpdate,
    ConfigOption,
    ConfigOptionUpdate,
    ConfigSelect,
    ContentBlock,
    CurrentModeUpdate,
    EmbeddedResource,
    JsonValue,
    PlanUpdate,
    ResourceLink,
    SelectGroup,
    SelectOption,
    SessionInfoUpdate,
    SessionMode,
    SessionState,
    SessionUpdate,
    TextContent,
    ToolCallContent,
    ToolCallLocation,
    ToolCallUpdate,
    ToolContent,
    ToolDiff,
    UsageUpdate,
)

__all__ = ["Catalog", "UpdateMapper", "stop_reason", "tool_summary"]

log = logging.getLogger("kimaki.acp")

_STOP_REASONS: Final[Mapping[str, StopReason]] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "max_turn_requests": "max_turn_requests",
    "refusal": "refused",
    "cancelled": "aborted",
}
_TOOL_STATUS: Final[Mapping[str, ToolStatus]] = {
    "pending": "pending",
    "in_progress": "running",
    "completed": "completed",
    "failed": "error",
}


def stop_reason(wire: str | None, *, aborted: bool = False) -> StopReason:
    """The engine-neutral stop reason of a `session/prompt` answer's `stopReason`."""
    if aborted:
        return "aborted"
    reason = _STOP_REASONS.get(wire) if wire is not None else None
    if reason is None:
        log.warning("unknown stop reason %r; taken as end_turn", wire)
        return "end_turn"
    return reason


def tool_summary(
    raw_input: JsonValue, locations: Sequence[ToolCallLocation], directory: str = ""
) -> str:
    """The one line a person needs to know what a tool call does."""
    if isinstance(raw_input, dict):
        for key in ("command", "cmd"):
            value = raw_input.get(key)
            if isinstance(value, str) and value:
                return summary_line(value)
            if isinstance(value, list) and value:
                words = [v for v in value if isinstance(v, str)]
                if len(words) == len(value):
                    return summary_line(" ".join(words))
        for key in ("file_path", "filePath", "path", "absolute_path", "notebook_path"):
            value = raw_input.get(key)
            if isinstance(value, str) and value:
                return relative_path(value, directory)
        for key in ("pattern", "url", "query", "description", "prompt"):
            value = raw_input.get(key)
            if isinstance(value, str) and value:
                return summary_line(value)
    for location in locations:
        path = relative_path(location.path, directory)
        if path != ".":
            return path
    if isinstance(raw_input, dict) and raw_input:
        shown = {k: v for k, v in raw_input.items() if k != "cwd"}
        if shown:
            return summary_line(json.dumps(shown, ensure_ascii=False, sort_keys=True))
    return ""


def _text_of(content: ContentBlock) -> str | None:
    """The text of a content block; links as markdown links; None for what text cannot show."""
    if isinstance(content, TextContent):
        return content.text
    if isinstance(content, ResourceLink):
        return f"[{content.title or content.name or content.uri}]({content.uri})"
    if isinstance(content, EmbeddedResource):
        return content.resource.text
    return None


def _diff_stats(items: Iterable[ToolCallContent], directory: str) -> DiffStats | None:
    for item in items:
        if not isinstance(item, ToolDiff):
            continue
        new, old = item.new_text, item.old_text
        shown = relative_path(item.path, directory)
        if old is None:
            lines = new.count("\n") + (0 if new.endswith("\n") or not new else 1)
            return DiffStats(path=shown, lines=lines)
        old_lines, new_lines = old.splitlines(), new.splitlines()
        # A cheap measure: lines only in one side (a person wants the size, not the diff).
        added = len(new_lines) - len(set(new_lines) & set(old_lines))
        removed = len(old_lines) - len(set(old_lines) & set(new_lines))
        return DiffStats(path=shown, additions=max(0, added), deletions=max(0, removed))
    return None


def _given(value: JsonValue) -> JsonValue:
    """None for a value that says nothing (null, an empty list or string)."""
    return None if value is None or value == [] or value == "" else value


@attrs.define
class _Tool:
    call_id: str
    part_id: str
    kind: str = "other"
    title: str = ""
    status: ToolStatus = "pending"
    raw_input: JsonValue = None
    raw_output: JsonValue = None
    content: tuple[ToolCallContent, ...] = ()
    locations: tuple[ToolCallLocation, ...] = ()
    shown: tuple[str, str, str] | None = None
    finished: bool = False

    def merge(self, update: ToolCallUpdate) -> None:
        if update.kind is not None:
            self.kind = update.kind
        if update.title:
            self.title = update.title
        status = _TOOL_STATUS.get(update.status) if update.status is not None else None
        if status is not None:
            self.status = status
        if update.raw_input is not None:
            self.raw_input = update.raw_input
        if update.raw_output is not None:
            self.raw_output = update.raw_output
        if update.content is not None:
            self.content = update.content
        if update.locations is not None:
            self.locations = update.locations

    def output(self) -> str | None:
        texts = [
            text
            for item in self.content
            if isinstance(item, ToolContent)
            for text in [_text_of(item.content)]
            if text is not None
        ]
        if texts:
            return "\n".join(texts)
        raw = self.raw_output
        if isinstance(raw, str):
            return raw
        if isinstance(raw, dict):
            output = raw.get("output")
            if isinstance(output, str):
                return output
        return None


@attrs.define
class _Turn(Turn):
    parts: int = 0


@final
class UpdateMapper(TurnTracker[_Turn]):
    """Pure state machine for one session: updates in, engine-neutral events out. No I/O."""

    def __init__(self, *, title: str = "", directory: str = "") -> None:
        self.title = title
        self._directory = directory
        self._turn: _Turn | None = None
        self._open_kind: str | None = None  # "text" | "reasoning"
        self._open_part: str | None = None
        self._open_message: str | None = None
        self._open_text: list[str] = []
        self._tools: dict[str, _Tool] = {}

    # ------------------------------------------------------------------ turns

    def begin_turn(self, turn_id: str) -> None:
        self._turn = _Turn(turn_id)
        self._open_kind = self._open_part = self._open_message = None
        self._open_text = []
        self._tools.clear()

    def end_turn(
        self, turn_id: str, reason: StopReason, message: str | None = None
    ) -> list[EngineEvent]:
        """End turn `turn_id` if it is still the running one: the last text, then `TurnEnded`.

        A turn the person aborted ends `aborted` however the agent ended it (ACP agents may
        answer a cancelled prompt with `end_turn`, or fail it).
        """
        if self.abort_requested and reason in ("end_turn", "error"):
            reason, message = "aborted", None
        return super().end_turn(turn_id, reason, message)

    def _close_parts(self) -> list[EngineEvent]:
        return self._close_part()

    # ------------------------------------------------------------------ updates

    def handle(self, update: SessionUpdate) -> list[EngineEvent]:
        if isinstance(update, SessionInfoUpdate):
            title = update.title
            if title and title != self.title:
                self.title = title
                return [SessionRenamed(title)]
            return []
        if self._turn is None:
            return []
        if isinstance(update, AgentMessageChunk):
            return self._chunk("text", update)
        if isinstance(update, AgentThoughtChunk):
            return self._chunk("reasoning", update)
        if isinstance(update, ToolCallUpdate):
            return self._tool(update)
        if isinstance(update, PlanUpdate):
            plan = PlanUpdated(
                tuple(
                    PlanEntry(entry.content, entry.status or "pending", entry.priority or "medium")
                    for entry in update.entries
                )
            )
            return [*self._close_part(), plan]
        if isinstance(update, UsageUpdate):
            # `cost` is the session's running total, not this step's: the usage hook takes
            # the difference between turns.
            usage = Usage(
                context_used=update.used,
                context_limit=update.size or None,
                session_cost=update.cost.amount if update.cost is not None else None,
            )
            return [usage]
        return []

    def permission_tool(self, tool_call: ToolCallUpdate) -> list[EngineEvent]:
        """A permission request's `toolCall`: what it adds to the call (its status stays)."""
        if self._turn is None:
            return []
        update = ToolCallUpdate(
            tool_call.tool_call_id,
            title=tool_call.title or None,
            kind=tool_call.kind or None,
            content=tool_call.content or None,
            locations=tool_call.locations or None,
            raw_input=_given(tool_call.raw_input),
            raw_output=_given(tool_call.raw_output),
        )
        return self._tool(update)

    def _close_part(self) -> list[EngineEvent]:
        if self._open_part is None:
            return []
        text = "".join(self._open_text)
        part_id, kind = self._open_part, self._open_kind
        self._open_kind = self._open_part = self._open_message = None
        self._open_text = []
        if kind == "reasoning":
            return [ReasoningCompleted(part_id, text)]
        return [TextCompleted(part_id, text)]

    def _new_part_id(self) -> str:
        assert self._turn is not None
        self._turn.parts += 1
        return f"{self._turn.id}:{self._turn.parts}"

    def _chunk(self, kind: str, update: AgentMessageChunk | AgentThoughtChunk) -> list[EngineEvent]:
        text = _text_of(update.content)
        if not text:
            return []
        message = update.message_id
        out: list[EngineEvent] = []
        if self._open_kind != kind or (message is not None and message != self._open_message):
            out += self._close_part()
            self._open_kind, self._open_part = kind, self._new_part_id()
            self._open_message = message
        assert self._open_part is not None
        self._open_text.append(text)
        if kind == "reasoning":
            out.append(ReasoningDelta(self._open_part, text))
        else:
            out.append(TextDelta(self._open_part, text))
        return out

    def _tool(self, update: ToolCallUpdate) -> list[EngineEvent]:
        call_id = update.tool_call_id
        if not call_id:
            return []
        assert self._turn is not None
        out = self._close_part()
        tool = self._tools.get(call_id)
        new = tool is None
        if tool is None:
            tool = self._tools[call_id] = _Tool(call_id, f"{self._turn.id}:{call_id}")
        if tool.finished:
            return out
        tool.merge(update)
        summary = tool_summary(tool.raw_input, tool.locations, self._directory)
        fields: dict[str, Any] = {
            "part_id": tool.part_id,
            "call_id": call_id,
            "tool": tool.kind if tool.kind != "other" else "tool",
            "title": tool.title or summary,
            "input_summary": summary or tool.title,
            "status": tool.status,
        }
        if new:
            started = tool.status if tool.status in ("pending", "running") else "running"
            out.append(ToolStarted(**{**fields, "status": started}))
        if tool.status in ("completed", "error"):
            tool.finished = True
            output = tool.output()
            out.append(
                ToolFinished(
                    **fields,
                    error=(output or "failed") if tool.status == "error" else None,
                    output=output,
                    diff=_diff_stats(tool.content, self._directory),
                )
            )
            return out
        shown = (tool.status, fields["title"], fields["input_summary"])
        if not new and shown != tool.shown:
            out.append(ToolUpdated(**fields))
        tool.shown = shown
        return out


# ---------------------------------------------------------------------- what a session offers


@final
class Catalog:
    """Modes, config options and commands as the agent last advertised them for a session.

    Models and agents (kimaki's words) are ACP config options of category `model` and `mode`,
    or the older `modes` state. A model value `provider/model` is shown as that provider's
    model; a value without a slash belongs to a provider named after the agent.
    """

    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name
        self.config_options: tuple[ConfigOption, ...] = ()
        self.modes: tuple[SessionMode, ...] = ()
        self.current_mode: str | None = None
        self.commands: list[CommandInfo] | None = None

    @property
    def known(self) -> bool:
        return bool(self.config_options or self.modes)

    def take_session(self, state: SessionState) -> None:
        """The answer of `session/new`, `load`, `resume` or `set_config_option`."""
        self.take_config_options(state.config_options)
        if state.modes is not None:
            self.modes = state.modes.available_modes
            self.current_mode = state.modes.current_mode_id

    def take_config_options(self, options: tuple[ConfigOption, ...] | None) -> None:
        if options is not None:
            self.config_options = options

    def take_update(self, update: SessionUpdate) -> None:
        if isinstance(update, AvailableCommandsUpdate):
            self.commands = [
                CommandInfo(command.name, command.description)
                for command in update.available_commands
            ]
        elif isinstance(update, CurrentModeUpdate):
            self.current_mode = update.current_mode_id
        elif isinstance(update, ConfigOptionUpdate):
            self.take_config_options(update.config_options)

    def copy_from(self, other: Catalog) -> None:
        self.config_options = other.config_options
        self.modes = other.modes
        self.current_mode = other.current_mode
        if other.commands is not None:
            self.commands = list(other.commands)

    # ------------------------------------------------------------------ lookups

    def option(self, category: str) -> ConfigSelect | None:
        for option in self.config_options:
            if isinstance(option, ConfigSelect) and category in (option.category, option.id):
                return option
        return None

    def _select_values(self, option: ConfigSelect) -> list[tuple[str | None, SelectOption]]:
        """(group id, option) pairs of a select option, flat or grouped."""
        out: list[tuple[str | None, SelectOption]] = []
        for item in option.options:
            if isinstance(item, SelectGroup):
                out += [(item.group, o) for o in item.options]
            else:
                out.append((None, item))
        return out

    def _model_ref(self, group: str | None, value: str) -> tuple[str, str]:
        if group:
            return group, value
        provider, sep, model = value.partition("/")
        if sep and provider and model:
            return provider, model
        return self.agent_name, value

    def models(self) -> list[ProviderModels]:
        option = self.option("model")
        if option is None:
            return []
        current = option.current_value
        providers: dict[str, tuple[str, list[ModelInfo], str | None]] = {}
        group_names = {
            item.group: item.name or item.group
            for item in option.options
            if isinstance(item, SelectGroup)
        }
        for group, item in self._select_values(option):
            provider, model = self._model_ref(group, item.value)
            name = item.name or model
            provider_name = group_names.get(group or "", provider)
            if group is None and "/" in name and "/" in item.value:
                provider_name, _, name = name.partition("/")
            entry = providers.setdefault(provider, (provider_name, [], None))
            entry[1].append(ModelInfo(model, name))
            if item.value == current:
                providers[provider] = (entry[0], entry[1], model)
        return [
            ProviderModels(provider, name, tuple(models), default)
            for provider, (name, models, default) in providers.items()
        ]

    def model_value(self, ref: ModelRef) -> tuple[str, str] | None:
        """(config id, value) that selects `ref`, or None when the agent does not offer it."""
        option = self.option("model")
        if option is None:
            return None
        for group, item in self._select_values(option):
            if self._model_ref(group, item.value) == (ref.provider_id, ref.model_id):
                return option.id, item.value
        return None

    def current_model(self) -> ModelRef | None:
        option = self.option("model")
        if option is None or option.current_value is None:
            return None
        value = option.current_value
        for group, item in self._select_values(option):
            if item.value == value:
                return ModelRef(*self._model_ref(group, value))
        return ModelRef(*self._model_ref(None, value))

    def agents(self) -> list[AgentInfo]:
        option = self.option("mode")
        if option is not None:
            return [
                AgentInfo(item.value, item.description or item.name)
                for _, item in self._select_values(option)
            ]
        return [AgentInfo(mode.id, mode.description or mode.name) for mode in self.modes]

    def current_agent(self) -> str | None:
        option = self.option("mode")
        if option is not None:
            return option.current_value
        return self.current_mode

    def mode_choice(self, persona: str) -> tuple[str, str] | None:
        """How to select `persona` (what kimaki calls an agent, ACP a mode): ("config", id) or
        ("mode", id); None: not offered. Not the agent program, whose name is `agent_name`."""
        option = self.option("mode")
        if option is not None:
            if any(item.value == persona for _, item in self._select_values(option)):
                return "config", option.id
            return None
        if any(mode.id == persona for mode in self.modes):
            return "mode", persona
        return None
