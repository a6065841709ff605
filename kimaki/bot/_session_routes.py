"""`kimaki session list` and `kimaki session read`: the threads' sessions, from the shell.

A list needs only the store (thread records and when each was last active), so it works with
no daemon running; the daemon adds each thread's live state: "running" (a turn is under way),
"idle" (its runtime is in memory, waiting), "evicted" (no runtime: rebuilt from its record on
the next message). Reading a session's messages asks its engine (`SessionTranscript`), so it
needs the running daemon and its engines.

```
GET /sessions?directory=DIR               → {"sessions": [...]}, most recently active first
GET /sessions/messages?thread_id=&limit=  → {"thread": {...}, "messages": [{"role", "text"}]}
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol, final
from urllib.parse import urlencode

import attrs

from kimaki._control import ControlServer
from kimaki._control_client import ControlClient, ControlError, json_route
from kimaki.agents import EngineError, HistoryEntry, SessionTranscript
from kimaki.bot._engines import UnknownEngineError
from kimaki.errors import KimakiError
from kimaki.store import ThreadRecord
from kimaki.threads import EngineRegistry

__all__ = [
    "DEFAULT_READ_LIMIT",
    "LiveThreads",
    "SessionError",
    "SessionRow",
    "SessionState",
    "SessionsClient",
    "ThreadIndex",
    "install_session_routes",
    "list_sessions",
    "read_session",
    "session_from_json",
    "session_json",
]

SessionState = Literal["running", "idle", "evicted"]
DEFAULT_READ_LIMIT: Final = 50


class SessionError(KimakiError, ValueError):
    """A session that cannot be listed or read as asked; `str()` is for the person."""


class ThreadIndex(Protocol):
    """The thread records, with when each was last active (`kimaki.store.Places`)."""

    async def list_threads(self) -> list[tuple[ThreadRecord, float]]: ...

    async def get_thread(self, thread_id: int) -> ThreadRecord | None: ...

    async def channel_of_directory(self, directory: Path) -> int | None: ...


class _LiveRuntime(Protocol):
    @property
    def running(self) -> object | None: ...


class _LiveRuntimes(Protocol):
    def get(self, thread_id: int) -> _LiveRuntime | None: ...


class LiveThreads(Protocol):
    """The runtimes in memory (`kimaki.threads.Threads`)."""

    @property
    def runtimes(self) -> _LiveRuntimes: ...


@final
@attrs.frozen
class SessionRow:
    """One thread and its session, as `kimaki session list` shows it."""

    thread_id: int
    channel_id: int | None
    session_id: str
    engine: str
    directory: Path
    last_activity: float  # Unix time
    state: SessionState


async def list_sessions(
    index: ThreadIndex, *, live: LiveThreads | None, directory: Path | None = None
) -> list[SessionRow]:
    """Every thread of the projects (or of the project at `directory`), most recently active
    first; with no `live` runtimes (no daemon) each is "evicted"."""
    channel_id = None
    if directory is not None:
        channel_id = await index.channel_of_directory(directory)
        if channel_id is None:
            raise SessionError(
                f"{directory} is not a project: add it with `kimaki project add {directory}`"
            )
    rows = [
        SessionRow(
            thread_id=record.thread_id,
            channel_id=record.channel_id,
            session_id=record.session_id,
            engine=record.engine,
            directory=record.directory,
            last_activity=last_activity,
            state=_state(live, record.thread_id),
        )
        for record, last_activity in await index.list_threads()
        if channel_id is None or record.channel_id == channel_id
    ]
    rows.sort(key=lambda row: row.last_activity, reverse=True)
    return rows


def _state(live: LiveThreads | None, thread_id: int) -> SessionState:
    runtime = None if live is None else live.runtimes.get(thread_id)
    if runtime is None:
        return "evicted"
    return "running" if runtime.running is not None else "idle"


async def read_session(
    index: ThreadIndex,
    engines: EngineRegistry,
    thread_id: int,
    *,
    limit: int = DEFAULT_READ_LIMIT,
) -> tuple[ThreadRecord, Sequence[HistoryEntry]]:
    """The thread's record and its session's last `limit` messages with text, oldest first,
    as its engine keeps them."""
    record = await index.get_thread(thread_id)
    if record is None:
        raise SessionError(f"thread {thread_id} is not a thread of this bot's projects")
    if not record.session_id:
        raise SessionError(f"thread {thread_id} has no session yet (nothing was sent)")
    try:
        engine = engines.get(record.engine)
    except UnknownEngineError:
        raise SessionError(
            f"thread {thread_id}'s engine {record.engine} is not run by this daemon"
        ) from None
    if not isinstance(engine, SessionTranscript):
        raise SessionError(f"the engine {record.engine} cannot show a session's messages")
    try:
        messages = await engine.recent_messages(record.directory, record.session_id, limit=limit)
    except EngineError as exc:
        raise SessionError(f"{record.engine} could not read the session: {exc}") from None
    return record, messages


def install_session_routes(
    control: ControlServer,
    token: str,
    *,
    index: ThreadIndex,
    live: LiveThreads,
    engines: EngineRegistry,
) -> None:
    """`GET /sessions` and `GET /sessions/messages` on the lock port, behind `token`."""

    async def listing(body: dict[str, Any]) -> dict[str, Any]:
        directory = body.get("directory")
        rows = await list_sessions(
            index, live=live, directory=Path(directory) if directory else None
        )
        return {"sessions": [session_json(row) for row in rows]}

    async def messages(body: dict[str, Any]) -> dict[str, Any]:
        thread_id = _positive_int(body.get("thread_id"), "thread_id")
        limit = _positive_int(body.get("limit") or DEFAULT_READ_LIMIT, "limit")
        record, entries = await read_session(index, engines, thread_id, limit=limit)
        return {
            "thread": {
                "thread_id": str(record.thread_id),
                "session_id": record.session_id,
                "engine": record.engine,
                "directory": str(record.directory),
            },
            "messages": [{"role": entry.role, "text": entry.text} for entry in entries],
        }

    control.add_route("GET", "/sessions", json_route(token, listing))
    control.add_route("GET", "/sessions/messages", json_route(token, messages))


def session_json(row: SessionRow) -> dict[str, Any]:
    """A row as `kimaki session list --json` prints it (ids as strings, times Unix seconds)."""
    return {
        "thread_id": str(row.thread_id),
        "channel_id": None if row.channel_id is None else str(row.channel_id),
        "session_id": row.session_id,
        "engine": row.engine,
        "directory": str(row.directory),
        "last_activity": row.last_activity,
        "state": row.state,
    }


def session_from_json(data: Any) -> SessionRow:
    """The inverse of `session_json`; `ValueError` for anything else."""
    try:
        state = data["state"]
        if state not in ("running", "idle", "evicted"):
            raise ValueError(f"not a session state: {state!r}")
        channel_id = data.get("channel_id")
        return SessionRow(
            thread_id=int(data["thread_id"]),
            channel_id=None if channel_id is None else int(channel_id),
            session_id=str(data["session_id"]),
            engine=str(data["engine"]),
            directory=Path(str(data["directory"])),
            last_activity=float(data["last_activity"]),
            state=state,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a session: {exc!r}") from None


@final
class SessionsClient:
    """The session routes of a running daemon, as `kimaki session` calls them."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client

    async def _call(self, path: str) -> dict[str, Any]:
        try:
            return await self._client.call(
                "GET",
                path,
                missing="the running daemon does not take session commands yet (still "
                "connecting to Discord?); try again in a moment",
            )
        except ControlError as exc:
            raise SessionError(str(exc)) from None

    async def list_sessions(self, *, directory: Path | None = None) -> list[SessionRow]:
        query = "" if directory is None else "?" + _query(directory=str(directory))
        data = await self._call("/sessions" + query)
        return [session_from_json(item) for item in data.get("sessions") or []]

    async def read(self, thread_id: int, *, limit: int = DEFAULT_READ_LIMIT) -> list[HistoryEntry]:
        data = await self._call("/sessions/messages?" + _query(thread_id=thread_id, limit=limit))
        entries = []
        for item in data.get("messages") or []:
            role = item.get("role") if isinstance(item, dict) else None
            if role not in ("user", "assistant"):
                raise SessionError(f"the daemon sent a message that is not one: {item!r}")
            entries.append(HistoryEntry(role=role, text=str(item.get("text") or "")))
        return entries


def _query(**values: object) -> str:
    return urlencode({key: str(value) for key, value in values.items()})


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number") from None
    if number <= 0:
        raise ValueError(f"{name} must be positive")
    return number
