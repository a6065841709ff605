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
    TurnEnded,
    Usage,
    relative_path,
    summary_line,
)
from kimaki.agents._turns import Turn, TurnTracker

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


def stop_reason(wire: Any, *, aborted: bool = False) -> StopReason:
    """The engine-neutral stop reason of a `session/prompt` answer's `stopReason`."""
    if aborted:
        return "aborted"
    reason = _STOP_REASONS.get(wire) if isinstance(wire, str) else None
    if reason is None:
        log.warning("unknown stop reason %r; taken as end_turn", wire)
        return "end_turn"
    return reason


def tool_summary(raw_input: Any, locations: Sequence[Any], directory: str = "") -> str:
    """The one line a person needs to know what a tool call does."""
    if isinstance(raw_input, dict):
        for key in ("command", "cmd"):
            value = raw_input.get(key)
            if isinstance(value, str) and value:
                return summary_line(value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
                return summary_line(" ".join(value))
        for key in ("file_path", "filePath", "path", "absolute_path", "notebook_path"):
            value = raw_input.get(key)
            if isinstance(value, str) and value:
                return relative_path(value, directory)
        for key in ("pattern", "url", "query", "description", "prompt"):
            value = raw_input.get(key)
            if isinstance(value, str) and value:
                return summary_line(value)
    for location in locations:
        if isinstance(location, dict) and isinstance(location.get("path"), str):
            path = relative_path(location["path"], directory)
            if path != ".":
                return path
    if isinstance(raw_input, dict) and raw_input:
        shown = {k: v for k, v in raw_input.items() if k != "cwd"}
        if shown:
            return summary_line(json.dumps(shown, ensure_ascii=False, sort_keys=True))
    return ""


def _text_of(content: Any) -> str | None:
    """The text of a content block; links as markdown links; None for what text cannot show."""
    if not isinstance(content, dict):
        return None
    kind = content.get("type")
    if kind == "text" and isinstance(content.get("text"), str):
        return str(content["text"])
    if kind == "resource_link" and isinstance(content.get("uri"), str):
        name = content.get("title") or content.get("name") or content["uri"]
        return f"[{name}]({content['uri']})"
    if kind == "resource" and isinstance(content.get("resource"), dict):
        text = content["resource"].get("text")
        return text if isinstance(text, str) else None
    return None


def _diff_stats(items: Iterable[Any], directory: str) -> DiffStats | None:
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "diff":
            continue
        path = item.get("path")
        new = item.get("newText")
        if not isinstance(path, str) or not isinstance(new, str):
            continue
        old = item.get("oldText")
        shown = relative_path(path, directory)
        if not isinstance(old, str):
            lines = new.count("\n") + (0 if new.endswith("\n") or not new else 1)
            return DiffStats(path=shown, lines=lines)
        old_lines, new_lines = old.splitlines(), new.splitlines()
        # A cheap measure: lines only in one side (a person wants the size, not the diff).
        added = len(new_lines) - len(set(new_lines) & set(old_lines))
        removed = len(old_lines) - len(set(old_lines) & set(new_lines))
        return DiffStats(path=shown, additions=max(0, added), deletions=max(0, removed))
    return None


@attrs.define
class _Tool:
    call_id: str
    part_id: str
    kind: str = "other"
    title: str = ""
    status: ToolStatus = "pending"
    raw_input: Any = None
    raw_output: Any = None
    content: list[Any] = attrs.Factory(list)
    locations: list[Any] = attrs.Factory(list)
    shown: tuple[str, str, str] | None = None
    finished: bool = False

    def merge(self, update: Mapping[str, Any]) -> None:
        if isinstance(update.get("kind"), str):
            self.kind = update["kind"]
        if isinstance(update.get("title"), str) and update["title"]:
            self.title = update["title"]
        status = _TOOL_STATUS.get(update.get("status"))  # type: ignore[arg-type]
        if status is not None:
            self.status = status
        if "rawInput" in update and update["rawInput"] is not None:
            self.raw_input = update["rawInput"]
        if "rawOutput" in update and update["rawOutput"] is not None:
            self.raw_output = update["rawOutput"]
        if isinstance(update.get("content"), list):
            self.content = update["content"]
        if isinstance(update.get("locations"), list):
            self.locations = update["locations"]

    def output(self) -> str | None:
        texts = [
            text
            for item in self.content
            if isinstance(item, dict) and item.get("type") == "content"
            for text in [_text_of(item.get("content"))]
            if text is not None
        ]
        if texts:
            return "\n".join(texts)
        raw = self.raw_output
        if isinstance(raw, str):
            return raw
        if isinstance(raw, dict) and isinstance(raw.get("output"), str):
            return str(raw["output"])
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
        self._open_message: Any = None
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
        """End turn `turn_id` if it is still the running one: the last text, then `TurnEnded`."""
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return []
        if turn.abort_requested and reason in ("end_turn", "error"):
            reason, message = "aborted", None
        out = self._close_part()
        self._turn = None
        out.append(TurnEnded(turn.id, reason, message))
        return out

    # ------------------------------------------------------------------ updates

    def handle(self, update: Mapping[str, Any]) -> list[EngineEvent]:
        kind = update.get("sessionUpdate")
        if kind == "session_info_update":
            title = update.get("title")
            if isinstance(title, str) and title and title != self.title:
                self.title = title
                return [SessionRenamed(title)]
            return []
        if self._turn is None:
            return []
        if kind == "agent_message_chunk":
            return self._chunk("text", update)
        if kind == "agent_thought_chunk":
            return self._chunk("reasoning", update)
        if kind in ("tool_call", "tool_call_update"):
            return self._tool(update)
        if kind == "plan":
            entries = update.get("entries")
            plan = PlanUpdated(tuple(_plan_entries(entries if isinstance(entries, list) else [])))
            return [*self._close_part(), plan]
        if kind == "usage_update":
            return _usage(update)
        return []

    def permission_tool(self, tool_call: Mapping[str, Any]) -> list[EngineEvent]:
        """A permission request's `toolCall`: what it adds to the call (its status stays)."""
        update = {
            key: value
            for key, value in tool_call.items()
            if key != "status" and value not in (None, [], "")
        }
        return self._tool({**update, "sessionUpdate": "tool_call_update"}) if self._turn else []

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

    def _chunk(self, kind: str, update: Mapping[str, Any]) -> list[EngineEvent]:
        text = _text_of(update.get("content"))
        if not text:
            return []
        message = update.get("messageId")
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

    def _tool(self, update: Mapping[str, Any]) -> list[EngineEvent]:
        call_id = update.get("toolCallId")
        if not isinstance(call_id, str) or not call_id:
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


def _plan_entries(entries: Iterable[Any]) -> Iterable[PlanEntry]:
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            yield PlanEntry(
                entry["content"],
                str(entry.get("status") or "pending"),
                str(entry.get("priority") or "medium"),
            )


def _usage(update: Mapping[str, Any]) -> list[EngineEvent]:
    used, size = update.get("used"), update.get("size")
    if not isinstance(used, int) or not isinstance(size, int):
        return []
    cost = update.get("cost")
    amount = cost.get("amount") if isinstance(cost, dict) else None
    return [
        Usage(
            input_tokens=used,
            cost=float(amount) if isinstance(amount, int | float) else 0.0,
            context_limit=size or None,
        )
    ]


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
        self.config_options: list[dict[str, Any]] = []
        self.modes: list[dict[str, Any]] = []
        self.current_mode: str | None = None
        self.commands: list[CommandInfo] | None = None

    @property
    def known(self) -> bool:
        return bool(self.config_options or self.modes)

    def take_session(self, result: Any) -> None:
        """The answer of `session/new`, `load` or `resume`."""
        if not isinstance(result, dict):
            return
        if isinstance(result.get("configOptions"), list):
            self.take_config_options(result["configOptions"])
        modes = result.get("modes")
        if isinstance(modes, dict):
            available = modes.get("availableModes")
            self.modes = (
                [m for m in available if isinstance(m, dict)] if isinstance(available, list) else []
            )
            current = modes.get("currentModeId")
            self.current_mode = current if isinstance(current, str) else None

    def take_config_options(self, options: Any) -> None:
        if isinstance(options, list):
            self.config_options = [o for o in options if isinstance(o, dict)]

    def take_update(self, update: Mapping[str, Any]) -> None:
        kind = update.get("sessionUpdate")
        if kind == "available_commands_update":
            commands = update.get("availableCommands")
            self.commands = [
                CommandInfo(str(c["name"]), str(c.get("description") or ""))
                for c in (commands if isinstance(commands, list) else [])
                if isinstance(c, dict) and isinstance(c.get("name"), str)
            ]
        elif kind == "current_mode_update":
            mode = update.get("currentModeId")
            if isinstance(mode, str):
                self.current_mode = mode
        elif kind == "config_option_update":
            self.take_config_options(update.get("configOptions"))

    def copy_from(self, other: Catalog) -> None:
        self.config_options = list(other.config_options)
        self.modes = list(other.modes)
        self.current_mode = other.current_mode
        if other.commands is not None:
            self.commands = list(other.commands)

    # ------------------------------------------------------------------ lookups

    def option(self, category: str) -> dict[str, Any] | None:
        for option in self.config_options:
            if option.get("type") == "select" and (
                option.get("category") == category or option.get("id") == category
            ):
                return option
        return None

    def _select_values(self, option: Mapping[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
        """(group id, option) pairs of a select option, flat or grouped."""
        out: list[tuple[str | None, dict[str, Any]]] = []
        for item in option.get("options") or []:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("options"), list):
                group = str(item.get("group", ""))
                out += [(group, o) for o in item["options"] if isinstance(o, dict)]
            elif isinstance(item.get("value"), str):
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
        current = option.get("currentValue")
        providers: dict[str, tuple[str, list[ModelInfo], str | None]] = {}
        group_names = {
            str(item.get("group")): str(item.get("name") or item.get("group"))
            for item in option.get("options") or []
            if isinstance(item, dict) and "group" in item
        }
        for group, item in self._select_values(option):
            provider, model = self._model_ref(group, item["value"])
            name = str(item.get("name") or model)
            provider_name = group_names.get(group or "", provider)
            if group is None and "/" in name and "/" in item["value"]:
                provider_name, _, name = name.partition("/")
            entry = providers.setdefault(provider, (provider_name, [], None))
            entry[1].append(ModelInfo(model, name))
            if item["value"] == current:
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
            if self._model_ref(group, item["value"]) == (ref.provider_id, ref.model_id):
                return str(option["id"]), str(item["value"])
        return None

    def current_model(self) -> ModelRef | None:
        option = self.option("model")
        if option is None or not isinstance(option.get("currentValue"), str):
            return None
        value = option["currentValue"]
        for group, item in self._select_values(option):
            if item["value"] == value:
                return ModelRef(*self._model_ref(group, value))
        return ModelRef(*self._model_ref(None, value))

    def agents(self) -> list[AgentInfo]:
        option = self.option("mode")
        if option is not None:
            return [
                AgentInfo(str(item["value"]), str(item.get("description") or item.get("name")))
                for _, item in self._select_values(option)
            ]
        return [
            AgentInfo(str(mode["id"]), str(mode.get("description") or mode.get("name") or ""))
            for mode in self.modes
            if isinstance(mode.get("id"), str)
        ]

    def current_agent(self) -> str | None:
        option = self.option("mode")
        if option is not None:
            value = option.get("currentValue")
            return value if isinstance(value, str) else None
        return self.current_mode

    def mode_choice(self, agent: str) -> tuple[str, str] | None:
        """How to select the agent/mode `agent`: ("config", id) or ("mode", id); None: not
        offered."""
        option = self.option("mode")
        if option is not None:
            if any(item["value"] == agent for _, item in self._select_values(option)):
                return "config", str(option["id"])
            return None
        if any(mode.get("id") == agent for mode in self.modes):
            return "mode", agent
        return None
