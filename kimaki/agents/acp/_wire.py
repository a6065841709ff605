"""ACP's wire shapes: what the engine reads from an agent, decoded into attrs records in one place.

Shapes follow the ACP v1 schema (`schema/v1/schema.json` of agentclientprotocol/
agent-client-protocol). Only what the engine reads is decoded, by one cattrs converter
(camelCase on the wire, snake_case here); unknown fields are ignored, and an unknown kind of
update, content or config option decodes to an `Unknown*`/`Other*` record the engine skips,
since the protocol grows and an agent newer than kimaki must keep working.

How forgiving it is follows the schema's own deserialisation hints, as ACP's reference SDK
does (`x-deserialize-default-on-error`, `x-deserialize-skip-invalid-items`):

- a field with a default here takes that default when its value is wrong (a `null` title, a
  status of the wrong type), and a list drops the items it cannot read;
- a field without one (an update's `sessionId`, a tool call's `toolCallId`, a chunk's
  `content`) makes the whole message malformed: `decode` raises `MalformedMessage` naming the
  message and the path (`session/update: invalid value for type, expected str @
  $.update.toolCallId`). The engine logs and skips a malformed notification and answers a
  malformed request with an invalid-params error.

Fields the schema requires but the engine can do without (a tool call's title, a permission
option's name) have defaults here, so a sloppy agent loses nothing it did not have to.

Answers to the engine's requests go through `decode_answer`: one that is not an object reads
as an empty one (agents answer `null` where the schema has `{}`), so only the fields an
answer cannot lack (`protocolVersion` of `initialize`) can make it malformed.

What the engine sends (prompts, answers to the agent's requests) is written as plain dicts
where it is sent: those shapes are checked against the schema by the tests' fake agent.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias, TypeVar, final

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import format_exception

from kimaki.errors import KimakiError

__all__ = [
    "AgentMessageChunk",
    "AgentThoughtChunk",
    "AuthMethod",
    "AvailableCommand",
    "AvailableCommandsUpdate",
    "ConfigOption",
    "ConfigOptionUpdate",
    "ConfigSelect",
    "ContentBlock",
    "CurrentModeUpdate",
    "EmbeddedResource",
    "EmptyAnswer",
    "InitializeResult",
    "JsonValue",
    "MalformedMessage",
    "OtherConfigOption",
    "OtherContent",
    "OtherToolContent",
    "PermissionOption",
    "PermissionRequest",
    "PlanEntry",
    "PlanUpdate",
    "PromptResult",
    "ReadTextFile",
    "ResourceLink",
    "SelectGroup",
    "SelectOption",
    "SessionInfo",
    "SessionInfoUpdate",
    "SessionList",
    "SessionMode",
    "SessionNotification",
    "SessionState",
    "SessionUpdate",
    "TextContent",
    "ToolCallContent",
    "ToolCallLocation",
    "ToolCallUpdate",
    "ToolContent",
    "ToolDiff",
    "UnknownUpdate",
    "UsageUpdate",
    "UserMessageChunk",
    "WriteTextFile",
    "auth_methods",
    "decode",
    "decode_answer",
    "decode_update",
]

T = TypeVar("T")

log = logging.getLogger("kimaki.acp")

JsonValue: TypeAlias = dict[str, "JsonValue"] | list["JsonValue"] | str | int | float | bool | None
"""Opaque JSON the protocol leaves free (a tool's `rawInput`): read with isinstance checks."""


_RAW: Final = "kimaki.acp.raw"  # field metadata: opaque JSON, taken as it is


class MalformedMessage(KimakiError, ValueError):
    """A message from the agent lacks what the engine cannot do without, or has it in the
    wrong type. The text names the message and the path of each problem."""


# ----------------------------------------------------------------------------- content


@final
@attrs.frozen
class TextContent:
    text: str


@final
@attrs.frozen
class ResourceLink:
    uri: str
    name: str = ""
    title: str | None = None


@final
@attrs.frozen
class ResourceContents:
    """An embedded resource: its text, or (for binary data) none."""

    uri: str = ""
    text: str | None = None


@final
@attrs.frozen
class EmbeddedResource:
    resource: ResourceContents


@final
@attrs.frozen
class OtherContent:
    """Content text cannot show (`image`, `audio`) or of a kind newer than kimaki."""

    type: str


ContentBlock: TypeAlias = TextContent | ResourceLink | EmbeddedResource | OtherContent


# ----------------------------------------------------------------------------- tool calls


@final
@attrs.frozen
class ToolContent:
    """Content a tool produced (`type: content`)."""

    content: ContentBlock


@final
@attrs.frozen
class ToolDiff:
    """A file a tool changed (`type: diff`); no `old_text` for a new file."""

    path: str
    new_text: str
    old_text: str | None = None


@final
@attrs.frozen
class OtherToolContent:
    """A terminal (kimaki offers none) or a kind newer than kimaki."""

    type: str


ToolCallContent: TypeAlias = ToolContent | ToolDiff | OtherToolContent


@final
@attrs.frozen
class ToolCallLocation:
    path: str
    line: int | None = None


@final
@attrs.frozen
class ToolCallUpdate:
    """A `tool_call`, a `tool_call_update` or a permission request's `toolCall`: what it says
    about the call; None where it says nothing (the call keeps what it had)."""

    tool_call_id: str
    title: str | None = None
    kind: str | None = None
    status: str | None = None
    content: tuple[ToolCallContent, ...] | None = None
    locations: tuple[ToolCallLocation, ...] | None = None
    raw_input: JsonValue = attrs.field(default=None, metadata={_RAW: True})
    raw_output: JsonValue = attrs.field(default=None, metadata={_RAW: True})


# ----------------------------------------------------------------------------- session updates


@attrs.frozen
class _Chunk:
    content: ContentBlock
    message_id: str | None = None


@final
@attrs.frozen
class UserMessageChunk(_Chunk):
    pass


@final
@attrs.frozen
class AgentMessageChunk(_Chunk):
    pass


@final
@attrs.frozen
class AgentThoughtChunk(_Chunk):
    pass


@final
@attrs.frozen
class PlanEntry:
    content: str
    status: str = "pending"
    priority: str = "medium"


@final
@attrs.frozen
class PlanUpdate:
    entries: tuple[PlanEntry, ...] = ()


@final
@attrs.frozen
class AvailableCommand:
    name: str
    description: str = ""


@final
@attrs.frozen
class AvailableCommandsUpdate:
    available_commands: tuple[AvailableCommand, ...] = ()


@final
@attrs.frozen
class CurrentModeUpdate:
    current_mode_id: str


@final
@attrs.frozen
class SelectOption:
    value: str
    name: str = ""
    description: str | None = None


@final
@attrs.frozen
class SelectGroup:
    group: str = ""
    name: str = ""
    options: tuple[SelectOption, ...] = ()


SelectItem: TypeAlias = SelectOption | SelectGroup


@final
@attrs.frozen
class ConfigSelect:
    """A select config option (`type: select`): a model or mode picker, among others."""

    id: str
    name: str = ""
    category: str | None = None
    current_value: str | None = None
    options: tuple[SelectItem, ...] = ()


@final
@attrs.frozen
class OtherConfigOption:
    """A config option kimaki does not use (`boolean`, or newer)."""

    type: str


ConfigOption: TypeAlias = ConfigSelect | OtherConfigOption


@final
@attrs.frozen
class ConfigOptionUpdate:
    """None: the update carried no list (the options stay as they were)."""

    config_options: tuple[ConfigOption, ...] | None = None


@final
@attrs.frozen
class SessionInfoUpdate:
    title: str | None = None


@final
@attrs.frozen
class Cost:
    amount: float
    currency: str = ""


@final
@attrs.frozen
class UsageUpdate:
    used: int
    size: int
    cost: Cost | None = None


@final
@attrs.frozen
class UnknownUpdate:
    """A `sessionUpdate` kimaki does not know (newer than it): skipped."""

    kind: str


SessionUpdate: TypeAlias = (
    UserMessageChunk
    | AgentMessageChunk
    | AgentThoughtChunk
    | ToolCallUpdate
    | PlanUpdate
    | AvailableCommandsUpdate
    | CurrentModeUpdate
    | ConfigOptionUpdate
    | SessionInfoUpdate
    | UsageUpdate
    | UnknownUpdate
)


@final
@attrs.frozen
class SessionNotification:
    """The params of `session/update`."""

    session_id: str
    update: SessionUpdate


# ----------------------------------------------------------------------------- agent requests


@final
@attrs.frozen
class PermissionOption:
    option_id: str
    name: str = ""
    kind: str = ""


@final
@attrs.frozen
class PermissionRequest:
    """The params of `session/request_permission`."""

    session_id: str
    tool_call: ToolCallUpdate = ToolCallUpdate("")
    options: tuple[PermissionOption, ...] = ()


@final
@attrs.frozen
class ReadTextFile:
    """The params of `fs/read_text_file` (`line` is 1-based)."""

    session_id: str
    path: str
    line: int | None = None
    limit: int | None = None


@final
@attrs.frozen
class WriteTextFile:
    """The params of `fs/write_text_file`."""

    session_id: str
    path: str
    content: str


# ----------------------------------------------------------------------------- answers


@final
@attrs.frozen
class Capability:
    """A capability the agent advertises by an object (`sessionCapabilities.resume`)."""


@final
@attrs.frozen
class PromptCapabilities:
    image: bool = False
    embedded_context: bool = False


@final
@attrs.frozen
class McpCapabilities:
    http: bool = False
    sse: bool = False


@final
@attrs.frozen
class SessionCapabilities:
    list: Capability | None = None
    resume: Capability | None = None


@final
@attrs.frozen
class AgentCapabilitiesWire:
    load_session: bool = False
    prompt_capabilities: PromptCapabilities = PromptCapabilities()
    mcp_capabilities: McpCapabilities = McpCapabilities()
    session_capabilities: SessionCapabilities = SessionCapabilities()


@final
@attrs.frozen
class Implementation:
    name: str = ""
    version: str = ""


@final
@attrs.frozen
class AuthMethod:
    id: str = ""
    name: str = ""
    description: str | None = None

    @property
    def label(self) -> str:
        """How a person would recognise it: its description, else its name, else its id."""
        return self.description or self.name or self.id


@final
@attrs.frozen
class InitializeResult:
    protocol_version: int
    agent_capabilities: AgentCapabilitiesWire = AgentCapabilitiesWire()
    agent_info: Implementation | None = None
    auth_methods: tuple[AuthMethod, ...] = ()


@final
@attrs.frozen
class SessionMode:
    id: str
    name: str = ""
    description: str | None = None


@final
@attrs.frozen
class ModeState:
    current_mode_id: str | None = None
    available_modes: tuple[SessionMode, ...] = ()


@final
@attrs.frozen
class SessionState:
    """The answer of `session/new` (with its id), `session/load`, `session/resume` and
    `session/set_config_option`: the session's modes and config options, None where the
    answer did not say (what was known stays)."""

    session_id: str | None = None
    modes: ModeState | None = None
    config_options: tuple[ConfigOption, ...] | None = None


@final
@attrs.frozen
class PromptResult:
    """The answer of `session/prompt`; None for a stop reason it lacks."""

    stop_reason: str | None = None


@final
@attrs.frozen
class SessionInfo:
    session_id: str
    title: str | None = None
    updated_at: str | None = None


@final
@attrs.frozen
class SessionList:
    """The answer of `session/list`: one page."""

    sessions: tuple[SessionInfo, ...] = ()
    next_cursor: str | None = None


@final
@attrs.frozen
class EmptyAnswer:
    """An answer the engine reads nothing from (`session/set_mode`)."""


@final
@attrs.frozen
class _AuthMethods:
    auth_methods: tuple[AuthMethod, ...] = ()


# ----------------------------------------------------------------------------- the converter

_converter: Final = cattrs.Converter(detailed_validation=True, forbid_extra_keys=False)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _strict(kind: type[Any]) -> Callable[[Any, Any], Any]:
    """No coercion: cattrs would turn 5 into "5" and "false" into True."""

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise TypeError(f"expected {kind.__name__}, not {type(value).__name__}")

    return structure


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number, not {type(value).__name__}")


def _passthrough(value: Any, _: Any) -> Any:
    return value


def _is_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _make_tuple(tp: Any) -> Callable[[Any, Any], Any]:
    """A list, without the items that cannot be read (`x-deserialize-skip-invalid-items`)."""
    item_type = typing.get_args(tp)[0]

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, not {type(value).__name__}")
        item = _converter.get_structure_hook(item_type)
        out = []
        for raw in value:
            try:
                out.append(item(raw, item_type))
            except Exception:  # a bad item is dropped, as the schema says
                continue
        return tuple(out)

    return structure


def _tagged(
    key: str, classes: Mapping[str, type[Any]], other: Callable[[str], Any]
) -> Callable[[Any, Any], Any]:
    """A union told apart by the string at `key`; an unknown one becomes `other(tag)`."""

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, not {type(value).__name__}")
        tag = value.get(key)
        if not isinstance(tag, str):
            raise ValueError(f"{key!r} is missing or not a string")
        cls = classes.get(tag)
        if cls is None:
            return other(tag)
        return _converter.get_structure_hook(cls)(value, cls)

    return structure


def _select_item(value: Any, _: Any) -> SelectItem:
    """A select's options are flat (`value`) or grouped (`group` with `options`)."""
    cls: type[SelectItem] = SelectOption
    if isinstance(value, dict) and isinstance(value.get("options"), list):
        cls = SelectGroup
    item: SelectItem = _converter.get_structure_hook(cls)(value, cls)
    return item


def _forgiving(
    hook: Callable[[Any, Any], Any], tp: Any, default: Any, name: str
) -> Callable[[Any, Any], Any]:
    """A field with a default takes it when its value is wrong (the schema's
    `x-deserialize-default-on-error`); the debug log says so, for a sloppy agent."""

    def structure(value: Any, _: Any) -> Any:
        try:
            return hook(value, tp)
        except Exception as exc:
            if value is not None:
                log.debug("%s: %.200r is not read (%s): taken as %r", name, value, exc, default)
            return default

    return structure


def _is_record(cls: Any) -> bool:
    return attrs.has(cls) and cls.__module__ == __name__


def _make_record(cls: Any) -> Callable[[Any, Any], Any]:
    attrs.resolve_types(cls)
    overrides: dict[str, Any] = {}
    for field in attrs.fields(cls):
        hook: Callable[[Any, Any], Any] | None = None
        if field.metadata.get(_RAW):
            hook = _passthrough
        elif field.default is not attrs.NOTHING:  # (records here use no factories)
            inner = _converter.get_structure_hook(field.type)
            hook = _forgiving(inner, field.type, field.default, f"{cls.__name__}.{field.name}")
        overrides[field.name] = override(rename=_camel(field.name), struct_hook=hook)
    return make_dict_structure_fn(cls, _converter, _cattrs_forbid_extra_keys=False, **overrides)


_converter.register_structure_hook(str, _strict(str))
_converter.register_structure_hook(int, _strict(int))
_converter.register_structure_hook(bool, _strict(bool))
_converter.register_structure_hook(float, _structure_float)
_converter.register_structure_hook_factory(_is_tuple, _make_tuple)
_converter.register_structure_hook_factory(_is_record, _make_record)
_converter.register_structure_hook_func(
    lambda tp: tp == ContentBlock,
    _tagged(
        "type",
        {"text": TextContent, "resource_link": ResourceLink, "resource": EmbeddedResource},
        OtherContent,
    ),
)
_converter.register_structure_hook_func(
    lambda tp: tp == ToolCallContent,
    _tagged("type", {"content": ToolContent, "diff": ToolDiff}, OtherToolContent),
)
_converter.register_structure_hook_func(
    lambda tp: tp == ConfigOption,
    _tagged("type", {"select": ConfigSelect}, OtherConfigOption),
)
_converter.register_structure_hook_func(lambda tp: tp == SelectItem, _select_item)
_converter.register_structure_hook_func(
    lambda tp: tp == SessionUpdate,
    _tagged(
        "sessionUpdate",
        {
            "user_message_chunk": UserMessageChunk,
            "agent_message_chunk": AgentMessageChunk,
            "agent_thought_chunk": AgentThoughtChunk,
            "tool_call": ToolCallUpdate,
            "tool_call_update": ToolCallUpdate,
            "plan": PlanUpdate,
            "available_commands_update": AvailableCommandsUpdate,
            "current_mode_update": CurrentModeUpdate,
            "config_option_update": ConfigOptionUpdate,
            "session_info_update": SessionInfoUpdate,
            "usage_update": UsageUpdate,
        },
        UnknownUpdate,
    ),
)


def _problem(exc: BaseException, tp: Any) -> str:
    """One problem, in the words of the hook that found it (`expected str, not int`)."""
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return str(exc)
    return format_exception(exc, tp)


def _wire_path(problem: str) -> str:
    """`... @ $.update.tool_call_id` → `... @ $.update.toolCallId`: the path as it was sent."""
    text, at, path = problem.rpartition(" @ ")
    if not at:
        return problem
    return f"{text} @ " + ".".join(_camel(part) for part in path.split("."))


def _structure(value: object, tp: Any, what: str) -> Any:
    try:
        return _converter.structure(value, tp)
    except Exception as exc:
        problems = cattrs.transform_error(exc, path="$", format_exception=_problem)
        raise MalformedMessage(f"{what}: {'; '.join(map(_wire_path, problems))}") from None


# ----------------------------------------------------------------------------- entry points


def decode(cls: type[T], value: object, what: str) -> T:
    """The message `value` (decoded JSON) as `cls`; `what` names it in the error.

    Raises `MalformedMessage` when it lacks a field `cls` cannot do without, or has one of the
    wrong type.
    """
    result: T = _structure(value, cls, what)
    return result


def decode_answer(cls: type[T], value: object, what: str) -> T:
    """An answer to one of the engine's requests; one that is not an object reads as `{}`."""
    return decode(cls, value if isinstance(value, dict) else {}, what)


def decode_update(value: object) -> SessionUpdate:
    """One `update` of a `session/update` (what the mapper takes)."""
    update: SessionUpdate = _structure(value, SessionUpdate, "session/update")
    return update


def auth_methods(value: object) -> tuple[AuthMethod, ...]:
    """The ways to log in an `auth_required` error names in its data: `{authMethods: [...]}`
    or the bare list; none when it names none."""
    if isinstance(value, list):
        value = {"authMethods": value}
    try:
        return decode_answer(_AuthMethods, value, "auth_required").auth_methods
    except MalformedMessage:
        return ()
