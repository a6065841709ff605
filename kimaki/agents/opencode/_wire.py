"""OpenCode's wire shapes: the events and records the engine uses, decoded into attrs classes.

Shapes follow `opencode serve` 1.18.33 (its `GET /doc`, and events recorded from the binary).
Only what the engine reads is decoded; unknown event types (the burst of `plugin.added` on
every connection, `session.diff`, `file.watcher.updated`, ...) decode to None and are dropped.
A known type with a broken shape raises `MalformedEvent`; the event pump logs it and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final, final

import attrs

from kimaki.errors import KimakiError

__all__ = [
    "MalformedEvent",
    "MessageInfo",
    "PartDelta",
    "PartUpdated",
    "PermissionAsked",
    "PermissionReplied",
    "QuestionAsked",
    "QuestionResolvedWire",
    "ReasoningPart",
    "ServerConnected",
    "SessionErrorEvent",
    "SessionIdle",
    "SessionInfo",
    "SessionStatusEvent",
    "SessionUpdated",
    "StepFinishPart",
    "TextPart",
    "TodoUpdated",
    "TokenCounts",
    "ToolPart",
    "WireError",
    "WireEvent",
    "WireQuestion",
    "decode_event",
    "decode_message",
    "decode_part",
    "decode_session",
]


class MalformedEvent(KimakiError, ValueError):
    """A known event type whose payload does not have the documented shape."""


# ----------------------------------------------------------------------------- helpers


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEvent(f"{what} is not an object")
    return value


def _str(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise MalformedEvent(f"{key!r} is not a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


# ----------------------------------------------------------------------------- records


@final
@attrs.frozen
class WireError:
    """A session or message error: `name` is OpenCode's class (e.g. `MessageAbortedError`)."""

    name: str
    message: str

    @classmethod
    def decode(cls, value: Any) -> WireError | None:
        if not isinstance(value, dict):
            return None
        data = value.get("data")
        message = data.get("message") if isinstance(data, dict) else None
        name = value.get("name")
        name = name if isinstance(name, str) else "UnknownError"
        return cls(name, message if isinstance(message, str) else name)


@final
@attrs.frozen
class TokenCounts:
    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @classmethod
    def decode(cls, value: Any) -> TokenCounts:
        if not isinstance(value, dict):
            return cls()
        cache = value.get("cache")
        cache = cache if isinstance(cache, dict) else {}
        return cls(
            _int(value, "input"),
            _int(value, "output"),
            _int(value, "reasoning"),
            _int(cache, "read"),
            _int(cache, "write"),
        )


@final
@attrs.frozen
class SessionInfo:
    id: str
    title: str
    directory: str
    parent_id: str | None = None


def decode_session(value: Any) -> SessionInfo:
    obj = _obj(value, "session")
    return SessionInfo(
        id=_str(obj, "id"),
        title=_str(obj, "title", ""),
        directory=_str(obj, "directory", ""),
        parent_id=_opt_str(obj, "parentID"),
    )


@final
@attrs.frozen
class MessageInfo:
    id: str
    session_id: str
    role: str
    parent_id: str | None = None
    completed: bool = False
    finish: str | None = None
    error: WireError | None = None
    provider_id: str | None = None
    model_id: str | None = None
    tokens: TokenCounts | None = None
    cost: float = 0.0


def decode_message(value: Any) -> MessageInfo:
    obj = _obj(value, "message")
    time = obj.get("time")
    completed = isinstance(time, dict) and isinstance(time.get("completed"), int | float)
    cost = obj.get("cost")
    return MessageInfo(
        id=_str(obj, "id"),
        session_id=_str(obj, "sessionID"),
        role=_str(obj, "role"),
        parent_id=_opt_str(obj, "parentID"),
        completed=completed,
        finish=_opt_str(obj, "finish"),
        error=WireError.decode(obj.get("error")),
        provider_id=_opt_str(obj, "providerID"),
        model_id=_opt_str(obj, "modelID"),
        tokens=TokenCounts.decode(obj["tokens"]) if "tokens" in obj else None,
        cost=float(cost) if isinstance(cost, int | float) else 0.0,
    )


@final
@attrs.frozen
class TextPart:
    id: str
    message_id: str
    text: str
    ended: bool
    synthetic: bool = False


@final
@attrs.frozen
class ReasoningPart:
    id: str
    message_id: str
    text: str
    ended: bool


@final
@attrs.frozen
class ToolPart:
    id: str
    message_id: str
    call_id: str
    tool: str
    status: str
    input: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    title: str = ""
    output: str | None = None
    error: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@final
@attrs.frozen
class StepFinishPart:
    id: str
    message_id: str
    reason: str
    tokens: TokenCounts
    cost: float = 0.0


@final
@attrs.frozen
class OtherPart:
    """A part the engine does not render (step-start, snapshot, patch, file, ...)."""

    id: str
    message_id: str
    type: str


Part = TextPart | ReasoningPart | ToolPart | StepFinishPart | OtherPart


def _ended(obj: Mapping[str, Any]) -> bool:
    time = obj.get("time")
    return isinstance(time, dict) and isinstance(time.get("end"), int | float)


def decode_part(value: Any) -> Part:
    obj = _obj(value, "part")
    part_id = _str(obj, "id")
    message_id = _str(obj, "messageID")
    kind = _str(obj, "type")
    if kind == "text":
        return TextPart(
            part_id, message_id, _str(obj, "text", ""), _ended(obj), obj.get("synthetic") is True
        )
    if kind == "reasoning":
        return ReasoningPart(part_id, message_id, _str(obj, "text", ""), _ended(obj))
    if kind == "tool":
        state = _obj(obj.get("state"), "tool state")
        raw_input = state.get("input")
        metadata = state.get("metadata")
        return ToolPart(
            id=part_id,
            message_id=message_id,
            call_id=_str(obj, "callID", ""),
            tool=_str(obj, "tool"),
            status=_str(state, "status"),
            input=raw_input if isinstance(raw_input, dict) else {},
            title=_str(state, "title", "") if isinstance(state.get("title"), str) else "",
            output=_opt_str(state, "output"),
            error=_opt_str(state, "error"),
            metadata=metadata if isinstance(metadata, dict) else {},
        )
    if kind == "step-finish":
        cost = obj.get("cost")
        return StepFinishPart(
            part_id,
            message_id,
            _str(obj, "reason", ""),
            TokenCounts.decode(obj.get("tokens")),
            float(cost) if isinstance(cost, int | float) else 0.0,
        )
    return OtherPart(part_id, message_id, kind)


# ----------------------------------------------------------------------------- events


@final
@attrs.frozen
class ServerConnected:
    pass


@final
@attrs.frozen
class ServerHeartbeat:
    pass


@final
@attrs.frozen
class SessionUpdated:
    session_id: str
    info: SessionInfo


@final
@attrs.frozen
class MessageUpdated:
    session_id: str
    info: MessageInfo


@final
@attrs.frozen
class PartUpdated:
    session_id: str
    part: Part


@final
@attrs.frozen
class PartDelta:
    session_id: str
    message_id: str
    part_id: str
    field: str
    delta: str


@final
@attrs.frozen
class SessionStatusEvent:
    """`status` is `idle`, `busy` or `retry` (then `attempt` and `message` say more)."""

    session_id: str
    status: str
    attempt: int = 0
    message: str = ""


@final
@attrs.frozen
class SessionIdle:
    session_id: str


@final
@attrs.frozen
class SessionErrorEvent:
    session_id: str | None
    error: WireError | None


@final
@attrs.frozen
class PermissionAsked:
    id: str
    session_id: str
    permission: str
    patterns: tuple[str, ...]
    always: tuple[str, ...]
    metadata: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    call_id: str | None = None
    message_id: str | None = None


@final
@attrs.frozen
class PermissionReplied:
    session_id: str
    request_id: str
    reply: str


@final
@attrs.frozen
class WireQuestion:
    question: str
    header: str
    options: tuple[tuple[str, str], ...]
    multiple: bool
    custom: bool


@final
@attrs.frozen
class QuestionAsked:
    id: str
    session_id: str
    questions: tuple[WireQuestion, ...]
    call_id: str | None = None


@final
@attrs.frozen
class QuestionResolvedWire:
    """`question.replied` (with answers) or `question.rejected` (answers None)."""

    session_id: str
    request_id: str
    answers: tuple[tuple[str, ...], ...] | None


@final
@attrs.frozen
class TodoItem:
    content: str
    status: str
    priority: str


@final
@attrs.frozen
class TodoUpdated:
    session_id: str
    todos: tuple[TodoItem, ...]


WireEvent = (
    ServerConnected
    | ServerHeartbeat
    | SessionUpdated
    | MessageUpdated
    | PartUpdated
    | PartDelta
    | SessionStatusEvent
    | SessionIdle
    | SessionErrorEvent
    | PermissionAsked
    | PermissionReplied
    | QuestionAsked
    | QuestionResolvedWire
    | TodoUpdated
)


def _session_updated(p: Mapping[str, Any]) -> WireEvent:
    info = decode_session(p.get("info"))
    return SessionUpdated(_str(p, "sessionID", info.id), info)


def _message_updated(p: Mapping[str, Any]) -> WireEvent:
    info = decode_message(p.get("info"))
    return MessageUpdated(_str(p, "sessionID", info.session_id), info)


def _part_updated(p: Mapping[str, Any]) -> WireEvent:
    return PartUpdated(_str(p, "sessionID"), decode_part(p.get("part")))


def _part_delta(p: Mapping[str, Any]) -> WireEvent:
    return PartDelta(
        _str(p, "sessionID"),
        _str(p, "messageID"),
        _str(p, "partID"),
        _str(p, "field"),
        _str(p, "delta"),
    )


def _session_status(p: Mapping[str, Any]) -> WireEvent:
    status = _obj(p.get("status"), "status")
    return SessionStatusEvent(
        _str(p, "sessionID"),
        _str(status, "type"),
        _int(status, "attempt"),
        _str(status, "message", "") if isinstance(status.get("message"), str) else "",
    )


def _session_idle(p: Mapping[str, Any]) -> WireEvent:
    return SessionIdle(_str(p, "sessionID"))


def _session_error(p: Mapping[str, Any]) -> WireEvent:
    return SessionErrorEvent(_opt_str(p, "sessionID"), WireError.decode(p.get("error")))


def _permission_asked(p: Mapping[str, Any]) -> WireEvent:
    tool = p.get("tool")
    tool = tool if isinstance(tool, dict) else {}
    metadata = p.get("metadata")
    return PermissionAsked(
        id=_str(p, "id"),
        session_id=_str(p, "sessionID"),
        permission=_str(p, "permission", ""),
        patterns=_strings(p.get("patterns")),
        always=_strings(p.get("always")),
        metadata=metadata if isinstance(metadata, dict) else {},
        call_id=_opt_str(tool, "callID"),
        message_id=_opt_str(tool, "messageID"),
    )


def _permission_replied(p: Mapping[str, Any]) -> WireEvent:
    return PermissionReplied(_str(p, "sessionID"), _str(p, "requestID"), _str(p, "reply"))


def _question(value: Any) -> WireQuestion:
    obj = _obj(value, "question")
    options = obj.get("options")
    pairs: list[tuple[str, str]] = []
    for option in options if isinstance(options, list) else []:
        if isinstance(option, dict) and isinstance(option.get("label"), str):
            description = option.get("description")
            pairs.append((option["label"], description if isinstance(description, str) else ""))
    return WireQuestion(
        question=_str(obj, "question"),
        header=_str(obj, "header", "") if isinstance(obj.get("header"), str) else "",
        options=tuple(pairs),
        multiple=obj.get("multiple") is True,
        custom=obj.get("custom") is not False,
    )


def _question_asked(p: Mapping[str, Any]) -> WireEvent:
    questions = p.get("questions")
    if not isinstance(questions, list):
        raise MalformedEvent("'questions' is not a list")
    tool = p.get("tool")
    return QuestionAsked(
        _str(p, "id"),
        _str(p, "sessionID"),
        tuple(_question(q) for q in questions),
        _opt_str(tool, "callID") if isinstance(tool, dict) else None,
    )


def _question_replied(p: Mapping[str, Any]) -> WireEvent:
    answers = p.get("answers")
    decoded = tuple(_strings(a) for a in answers) if isinstance(answers, list) else ()
    return QuestionResolvedWire(_str(p, "sessionID"), _str(p, "requestID"), decoded)


def _question_rejected(p: Mapping[str, Any]) -> WireEvent:
    return QuestionResolvedWire(_str(p, "sessionID"), _str(p, "requestID"), None)


def _todo_updated(p: Mapping[str, Any]) -> WireEvent:
    todos = p.get("todos")
    items = [
        TodoItem(
            _str(t, "content", ""),
            _str(t, "status", "pending"),
            _str(t, "priority", "medium"),
        )
        for t in (todos if isinstance(todos, list) else [])
        if isinstance(t, dict)
    ]
    return TodoUpdated(_str(p, "sessionID"), tuple(items))


_DECODERS: Final[dict[str, Callable[[Mapping[str, Any]], WireEvent]]] = {
    "server.connected": lambda p: ServerConnected(),
    "server.heartbeat": lambda p: ServerHeartbeat(),
    "session.created": _session_updated,
    "session.updated": _session_updated,
    "message.updated": _message_updated,
    "message.part.updated": _part_updated,
    "message.part.delta": _part_delta,
    "session.status": _session_status,
    "session.idle": _session_idle,
    "session.error": _session_error,
    "permission.asked": _permission_asked,
    "permission.replied": _permission_replied,
    "question.asked": _question_asked,
    "question.replied": _question_replied,
    "question.rejected": _question_rejected,
    "todo.updated": _todo_updated,
}


def decode_event(data: str) -> WireEvent | None:
    """Decode one SSE `data` payload; None for event types the engine does not use.

    Raises `MalformedEvent` for bad JSON or a known type with a broken shape.
    """
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    obj = _obj(payload, "event")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MalformedEvent("event without a type")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return None
    try:
        return decoder(_obj(obj.get("properties"), "properties"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedEvent(f"{kind}: {exc!r}") from None
