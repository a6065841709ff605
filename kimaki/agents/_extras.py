"""What only some engines can do, as optional capabilities checked with `isinstance`.

The `Engine` protocol is the least every agent offers; a slash command that needs more asks
the engine of its thread whether it has it, and answers "not supported by this engine" when
it does not:

```python
engine = bot.engines.get(record.engine)
if not isinstance(engine, SessionUndo):
    ...  # tell the person, ephemerally
```

```
SessionCatalog ..... list_sessions(directory, search=, limit=)       /resume autocomplete
SessionTranscript .. recent_messages(directory, session_id, limit=)  /resume replays history
SessionUndo ........ undo(directory, session_id) / redo(...)         /undo, /redo
SessionCompaction .. compact(directory, session_id, model=)          /compact
ServerRestart ...... restart_server(directory)                       /restart-agent-server
TerminalAttach ..... attach_command(directory, session_id)           /session-id
KnownProjects ...... known_projects()                                /add-project autocomplete
ServerRetire ....... server_directories() / retire_server(directory)  /mcp (a policy change)
```

Every method takes the directory (and session id) rather than an open `EngineSession`: the
commands run whether or not the thread's session is open, and opening one only to undo a
turn would start an agent server for nothing. Failures raise `kimaki.agents.EngineError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, final, runtime_checkable

import attrs

from kimaki.agents._engine import ModelRef

__all__ = [
    "HistoryEntry",
    "KnownProjects",
    "ServerRestart",
    "ServerRetire",
    "SessionCatalog",
    "SessionCompaction",
    "SessionSummary",
    "SessionTranscript",
    "SessionUndo",
    "TerminalAttach",
    "UndoResult",
]


@final
@attrs.frozen
class SessionSummary:
    """A stored session of a directory; `updated_at` is Unix time in seconds."""

    session_id: str
    title: str
    updated_at: float


@final
@attrs.frozen
class HistoryEntry:
    """One message of a session as text: what the person asked, or what the agent answered."""

    role: Literal["user", "assistant"]
    text: str


@final
@attrs.frozen
class UndoResult:
    """What `undo`/`redo` did. `changed` is False when there was nothing to undo or redo;
    `prompt` is the text of the person's message the session now stops before (undo)."""

    changed: bool
    prompt: str = ""


@runtime_checkable
class SessionCatalog(Protocol):
    async def list_sessions(
        self, directory: Path, *, search: str = "", limit: int = 25
    ) -> Sequence[SessionSummary]:
        """Top-level sessions of `directory`, most recently updated first."""
        ...


@runtime_checkable
class SessionTranscript(Protocol):
    async def recent_messages(
        self, directory: Path, session_id: str, *, limit: int = 10
    ) -> Sequence[HistoryEntry]:
        """The last `limit` messages with text, oldest first."""
        ...


@runtime_checkable
class SessionUndo(Protocol):
    async def undo(self, directory: Path, session_id: str) -> UndoResult:
        """Take back the last turn (its messages and, where the agent tracks them, its edits)."""
        ...

    async def redo(self, directory: Path, session_id: str) -> UndoResult:
        """Bring back what the last `undo` took back (before the next prompt makes it final)."""
        ...


@runtime_checkable
class SessionCompaction(Protocol):
    async def compact(
        self, directory: Path, session_id: str, *, model: ModelRef | None = None
    ) -> None:
        """Replace the session's history with a summary, to free context; returns when done."""
        ...


@runtime_checkable
class ServerRestart(Protocol):
    async def restart_server(self, directory: Path) -> None:
        """Stop the agent server of `directory` and start it again (running turns end)."""
        ...


@runtime_checkable
class TerminalAttach(Protocol):
    def attach_command(self, directory: Path, session_id: str) -> str:
        """A shell command that opens the same session in the agent's terminal client."""
        ...


@runtime_checkable
class KnownProjects(Protocol):
    async def known_projects(self) -> Sequence[Path]:
        """Project directories the agent has worked in (quick: no server is started for it)."""
        ...


@runtime_checkable
class ServerRetire(Protocol):
    """Engines whose running agent servers can be told that what they were started with (their
    MCP servers) changed: each stops once its running turns end, and the next turn starts one
    with the new (ACP sessions resume in it)."""

    def server_directories(self) -> Sequence[Path]:
        """The directories with an agent server running or starting."""
        ...

    def retire_server(self, directory: Path) -> None: ...
