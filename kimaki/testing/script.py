"""One script vocabulary for the three fake agents: what the agent does in a turn.

A test writes a turn once, as a `TurnScript` of actions, and whichever fake it runs plays it
over its own wire:

- `kimaki.testing.engine.FakeEngine`, in memory: engine events (`TextCompleted`, `ToolStarted`,
  `PermissionRequested` ...), for tests of everything above the engine interface;
- `kimaki.testing.opencode.FakeOpenCode`: OpenCode's HTTP routes and SSE events;
- `kimaki.testing.acp_agent`: ACP JSON-RPC on stdio, from a child process (the script reaches
  it as JSON: `to_json` / `from_json`).

```python
TurnScript(Say("Let me look."), Tool("bash", "make test", output="ok"), Say("Done."))
```

Each fake says which actions its wire can carry (`supported_by` and the fake's `PLAYS`); one
it cannot is refused with `ScriptError` when the script is handed to it, never skipped in
silence. Fields one wire has no place for (an ACP tool's `kind` over OpenCode, a `Say`'s
`delay` over ACP) are ignored by that wire, as each field's comment says.

Stop reasons are the engine's own (`kimaki.agents.StopReason`: `end_turn`, `max_tokens`,
`max_turn_requests`, `refused`, `aborted`, `error`); each fake says them in its wire's words
(ACP `refusal`, OpenCode finish `length` ...), so a test checks the mapping back.

This module imports nothing of kimaki at run time but the root of its errors: the fake ACP
agent, a child process started by many tests, reads it and should start fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from kimaki.errors import KimakiError

if TYPE_CHECKING:
    from kimaki.agents import Question, StopReason

__all__ = [
    "DEFAULT_PERMISSION_OPTIONS",
    "Action",
    "Ask",
    "ClientRequest",
    "ContextUsage",
    "Crash",
    "Diff",
    "DropStream",
    "Fail",
    "Hold",
    "Malformed",
    "Plan",
    "ReadFile",
    "Recall",
    "Rename",
    "Say",
    "ScriptError",
    "Step",
    "Stop",
    "Think",
    "Tool",
    "TurnScript",
    "WriteFile",
    "from_json",
    "supported_by",
    "to_json",
]

# The permission choices an ACP agent offers unless a `Tool` says others.
DEFAULT_PERMISSION_OPTIONS: Final[tuple[Mapping[str, str], ...]] = (
    {"optionId": "allow-once", "name": "Allow once", "kind": "allow_once"},
    {"optionId": "allow-always", "name": "Always allow", "kind": "allow_always"},
    {"optionId": "reject-once", "name": "Reject", "kind": "reject_once"},
    {"optionId": "reject-always", "name": "Always reject", "kind": "reject_always"},
)


class ScriptError(KimakiError, ValueError):
    """A script a fake cannot play: an action its wire has no way to say."""


# ----------------------------------------------------------------------------- what is said


@final
@attrs.frozen
class Say:
    """Answer text. It streams in pieces of `chunk` characters (0: the fake's own way, eight at
    a time over OpenCode, all at once over ACP), `delay` seconds apart (OpenCode only);
    `message_id` is the ACP `messageId` of its chunks."""

    text: str
    chunk: int = 0
    delay: float = 0.0
    message_id: str | None = None


@final
@attrs.frozen
class Think:
    """Reasoning, shown apart from the answer."""

    text: str


@final
@attrs.frozen
class Diff:
    """What a file-changing tool did to `path`: `old` is None for a new file."""

    path: str
    old: str | None
    new: str


@final
@attrs.frozen
class Tool:
    """A tool call, from start to end: `error` makes it fail with that message.

    `name` is the tool (OpenCode's `tool`, ACP's `kind`); `title` is the engine's one line about
    it (the fake engine's summary too). With `ask`, permission is asked once it runs: allowed,
    it completes; rejected, it fails and the turn ends (`end_turn`); ACP's cancelled answer
    ends the turn `aborted`. `patterns`/`always` are what is asked for (OpenCode and the fake
    engine), `options` the choices offered (ACP). `announce=False` leaves the call unannounced
    until the permission request names it, as some ACP agents do.
    """

    name: str
    title: str = ""
    input: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    output: str = ""
    error: str | None = None
    call_id: str | None = None  # generated when None
    locations: tuple[str, ...] = ()  # ACP
    diff: Diff | None = None  # ACP and the fake engine
    metadata: Mapping[str, Any] | None = attrs.field(default=None, hash=False)  # OpenCode
    ask: bool = False
    patterns: tuple[str, ...] = ()
    always: tuple[str, ...] = ()
    options: tuple[Mapping[str, str], ...] = attrs.field(
        default=DEFAULT_PERMISSION_OPTIONS, hash=False
    )
    announce: bool = True


@final
@attrs.frozen
class Ask:
    """The question tool: answered, the turn goes on; dismissed, it ends (`end_turn`)."""

    questions: tuple[Question, ...]


@final
@attrs.frozen(init=False)
class Plan:
    """The agent's whole todo list as it stands: entries `(content, status)` or
    `(content, status, priority)`."""

    entries: tuple[tuple[str, ...], ...]

    def __init__(self, *entries: tuple[str, ...]) -> None:
        self.__attrs_init__(tuple(tuple(entry) for entry in entries))


@final
@attrs.frozen
class ContextUsage:
    """How full the context window is: `used` of `size` tokens, and what it cost."""

    used: int
    size: int
    cost: float | None = None


@final
@attrs.frozen
class Step:
    """One model step ends here (the fake engine's `StepFinished` and `Usage`, OpenCode's
    `step-finish`; ACP has no steps and says nothing). The fake engine and OpenCode end the
    last step of a turn themselves, with the default counts. The counts and `cost` are what
    the step reports as used (OpenCode's `tokens` and `cost`)."""

    input: int = 10
    output: int = 5
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float = 0.0


@final
@attrs.frozen
class Rename:
    """The agent retitles its session."""

    title: str


# ----------------------------------------------------------------------------- how it ends


@final
@attrs.frozen
class Hold:
    """Work on until the turn is aborted, or (the fake engine and OpenCode) the test calls the
    fake's `release()`. With `ignore_cancel` (ACP), not even a cancel ends it: an agent that
    never answers one."""

    ignore_cancel: bool = False


@final
@attrs.frozen
class Stop:
    """End the turn here with this reason (and message, where the wire has one)."""

    reason: StopReason
    message: str | None = None


@final
@attrs.frozen
class Fail:
    """End the turn with an error: OpenCode's `session.error` named `name`, ACP's JSON-RPC error
    `code`, the fake engine's `TurnEnded("error", message)`."""

    message: str = "scripted failure"
    name: str = "APIError"
    code: int = -32603


@final
@attrs.frozen
class Crash:
    """The agent's process dies: ACP exits with `code` after writing `stderr`; OpenCode exits 70
    (as a process) or calls its `on_crash` (in process)."""

    code: int = 3
    stderr: str = "fake agent: scripted crash"


# ----------------------------------------------------------------------------- wire faults


@final
@attrs.frozen
class Malformed:
    """A raw line on the wire that is not a valid message (OpenCode: SSE `data`)."""

    data: str = "{not json"


@final
@attrs.frozen
class DropStream:
    """OpenCode: end every event stream; with `until_turn_end`, refuse new ones until the turn
    is over."""

    until_turn_end: bool = True


@final
@attrs.frozen
class ClientRequest:
    """ACP: ask the client `method` (one it may not offer) and record what came back."""

    method: str = "terminal/create"
    params: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@final
@attrs.frozen
class ReadFile:
    """ACP: ask the client for a file and say what came back (`read: <text>` or
    `read error <code>: <message>` and a newline)."""

    path: str
    line: int | None = None
    limit: int | None = None


@final
@attrs.frozen
class WriteFile:
    """ACP: ask the client to write a file and say `written` or the error."""

    path: str
    content: str


@final
@attrs.frozen
class Recall:
    """ACP: say the earlier prompts of this session, joined by ` | ` (what a resumed session
    remembers)."""


Action = (
    Say
    | Think
    | Tool
    | Ask
    | Plan
    | ContextUsage
    | Step
    | Rename
    | Hold
    | Stop
    | Fail
    | Crash
    | Malformed
    | DropStream
    | ClientRequest
    | ReadFile
    | WriteFile
    | Recall
)


@final
@attrs.frozen(init=False)
class TurnScript:
    """What the agent does in one turn, in order. The fakes take turns in the order given,
    across sessions; a prompt past the last one gets the fake's default answer."""

    actions: tuple[Action, ...]

    def __init__(self, *actions: Action) -> None:
        self.__attrs_init__(tuple(actions))


def supported_by(
    turns: Iterable[TurnScript], plays: tuple[type[Action], ...], fake: str
) -> list[TurnScript]:
    """`turns` as a list, after checking `fake` can play every action (`ScriptError` if not)."""
    turns = list(turns)
    for turn in turns:
        if not isinstance(turn, TurnScript):
            raise ScriptError(f"{fake} plays TurnScript objects, not {turn!r}")
        for action in turn.actions:
            if not isinstance(action, plays):
                raise ScriptError(f"{fake} cannot play {type(action).__name__}")
    return turns


# ----------------------------------------------------------------------------- as JSON

_TAG: Final = "script"
_CLASSES: Final[Mapping[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        Say,
        Think,
        Diff,
        Tool,
        Plan,
        ContextUsage,
        Step,
        Rename,
        Hold,
        Stop,
        Fail,
        Crash,
        Malformed,
        DropStream,
        ClientRequest,
        ReadFile,
        WriteFile,
        Recall,
        TurnScript,
    )
}


def to_json(value: Any) -> Any:
    """A script value as JSON data: each object tagged with its class, tuples as lists."""
    if attrs.has(type(value)):
        if type(value).__name__ not in _CLASSES:
            raise ScriptError(f"{type(value).__name__} cannot be written as JSON")
        data = {
            field.name: to_json(getattr(value, field.name)) for field in attrs.fields(type(value))
        }
        return {_TAG: type(value).__name__, **data}
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: to_json(item) for key, item in value.items()}
    return value


def from_json(data: Any) -> Any:
    """The value `to_json` wrote: tagged objects rebuilt, lists as tuples (mappings stay as
    they are, as a tool's input would be)."""
    if isinstance(data, list):
        return tuple(from_json(item) for item in data)
    if isinstance(data, dict) and isinstance(data.get(_TAG), str):
        cls = _CLASSES[data[_TAG]]
        fields = {key: from_json(item) for key, item in data.items() if key != _TAG}
        if "__attrs_init__" not in vars(cls):
            return cls(**fields)
        value = object.__new__(cls)  # a class whose own `__init__` takes positional parts
        value.__attrs_init__(**fields)
        return value
    return data
