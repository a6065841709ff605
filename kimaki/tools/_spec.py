"""What a tool is: a name, a description for the model, a JSON schema, and one coroutine.

A tool runs in the daemon, never in the agent's process: the agent's MCP client calls the tool
server (`kimaki mcp-tools`, a relay), which forwards the call to the daemon's lock port with its
grant. The daemon finds the thread the call belongs to and hands the tool a `ToolContext` for
it: everything a tool can do is a method there, bound to that thread and its project channel,
so no argument the model invents can point a tool elsewhere.

A later capability adds a tool by writing one module with one `ToolSpec` and adding it to the
`ToolBox` the composition root builds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, final

import attrs

from kimaki.agents import Question
from kimaki.errors import KimakiError

__all__ = [
    "ButtonChoice",
    "HistoryEntry",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "ToolSpec",
    "Where",
]

Where = Literal["thread", "channel"]
ButtonStyleName = Literal["primary", "secondary", "success", "danger"]


class ToolError(KimakiError):
    """A tool call that cannot be done as asked: its message goes back to the model as the
    tool's error result (it says what to change), never to Discord or the log as a traceback."""


@final
@attrs.frozen
class ToolResult:
    text: str
    is_error: bool = False


@final
@attrs.frozen
class ButtonChoice:
    label: str
    style: ButtonStyleName = "secondary"


@final
@attrs.frozen
class HistoryEntry:
    message_id: int
    author: str
    time: str  # ISO 8601, UTC
    content: str


class ToolContext(Protocol):
    """One thread, as its tools see it (made by the daemon per call, for the calling session).

    Writes go through the thread's ordered delivery: a message posted here appears after the
    agent's text so far, and before the turn's final answer.
    """

    @property
    def thread_id(self) -> int: ...

    @property
    def channel_id(self) -> int:
        """The thread's project channel."""
        ...

    @property
    def directory(self) -> Path:
        """The session's directory (the project's, or the thread's worktree)."""
        ...

    @property
    def data_dir(self) -> Path:
        """The daemon's data dir: never readable through a tool."""
        ...

    async def post(self, content: str, *, where: Where = "thread") -> int:
        """Post `content` (split under Discord's limit); the id of the (first) message."""
        ...

    async def upload(self, path: Path, data: bytes, content: str | None) -> int:
        """Upload `data` as a file named after `path` to the thread, with `content` above it."""
        ...

    async def buttons(self, prompt: str, buttons: Sequence[ButtonChoice]) -> int:
        """Post `prompt` with `buttons` under it; presses become prompts in the thread."""
        ...

    async def ask(self, questions: Sequence[Question]) -> Sequence[Sequence[str]] | None:
        """Ask with the thread's question menus; the chosen labels per question, or None when
        a new message in the thread dismissed the questions."""
        ...

    async def history(
        self, *, where: Where, limit: int, before: int | None
    ) -> Sequence[HistoryEntry]:
        """Up to `limit` messages before message `before` (newest first)."""
        ...


ToolRun = Callable[[ToolContext, Mapping[str, Any]], Awaitable[ToolResult]]


@final
@attrs.frozen
class ToolSpec:
    """One tool. `input_schema` is the JSON schema the model sees; `run` validates anyway (a
    model may send anything) and raises `ToolError` with what to fix."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    run: ToolRun = attrs.field(repr=False)
