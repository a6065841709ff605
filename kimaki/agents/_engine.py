"""The engine interface: what the daemon asks of any coding agent, and nothing more.

```
Engine ........................... one per kind of agent (OpenCode, an ACP agent)
├─ open_session(directory, resume_id=None) -> EngineSession
├─ list_models(directory) / list_agents(directory) / list_commands(directory)
EngineSession .................... one agent session, bound to one Discord thread
├─ prompt(text, files, model=, agent=) -> turn id      (returns once the agent accepted it)
├─ abort()                                             (returns once the turn is over)
├─ resume_turn(turn id)                                (after an in-place restart)
├─ reply_permission(id, "once" | "always" | "reject")
├─ answer_question(id, answers) / reject_question(id)
└─ events: EventQueue  ->  engine-neutral events (kimaki.agents._events), in order
```

Rendering, queueing and delivery see only this. Each session has one ordered stream of events
for its whole life (several turns); `TurnEnded.turn_id` ties an end to the `prompt()` that
started it.

`EventQueue` never blocks its producer: one engine connection (an SSE stream, an agent's stdout)
feeds every session of a directory, so one slow Discord thread must not stall the others. It
is unbounded for events that carry state, and drops text/reasoning deltas beyond a bound: the
`*Completed` event of the same part carries the whole text anyway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Literal, Protocol, final

import attrs
import trio

from kimaki.agents._events import EngineEvent, ReasoningDelta, TextDelta

__all__ = [
    "AgentInfo",
    "AttachedFile",
    "CommandInfo",
    "Engine",
    "EngineSession",
    "EventQueue",
    "EventQueueStatistics",
    "ModelInfo",
    "ModelRef",
    "PermissionReply",
    "ProviderModels",
]

PermissionReply = Literal["once", "always", "reject"]


class AttachedFile(Protocol):
    """A file sent with a prompt (e.g. `kimaki.threads.PromptFile`): images go as data URLs."""

    @property
    def filename(self) -> str: ...

    @property
    def mime(self) -> str: ...

    @property
    def data(self) -> bytes: ...


@final
@attrs.frozen
class ModelRef:
    provider_id: str
    model_id: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """`provider/model` (the model id may itself contain slashes)."""
        provider, sep, model = text.partition("/")
        if not sep or not provider or not model:
            raise ValueError(f"a model is written provider/model, not {text!r}")
        return cls(provider, model)

    def __str__(self) -> str:
        return f"{self.provider_id}/{self.model_id}"


@final
@attrs.frozen
class ModelInfo:
    id: str
    name: str
    context_limit: int | None = None


@final
@attrs.frozen
class ProviderModels:
    provider_id: str
    name: str
    models: tuple[ModelInfo, ...]
    default_model: str | None = None


@final
@attrs.frozen
class AgentInfo:
    """`primary` agents can run a session; the others are only called by an agent."""

    name: str
    description: str = ""
    primary: bool = True


@final
@attrs.frozen
class CommandInfo:
    name: str
    description: str = ""


@final
@attrs.frozen
class EventQueueStatistics:
    pending: int
    delivered: int
    deltas_dropped: int
    closed: bool


@final
class EventQueue:
    """An ordered, never-blocking event stream with one consumer at a time.

    Iterating (`async for event in queue`) may stop and start again: a turn handler reads until
    its `TurnEnded`, the next one continues from there.
    """

    def __init__(self, *, max_pending_deltas: int = 4096) -> None:
        self._items: deque[EngineEvent] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._max_pending_deltas = max_pending_deltas
        self._pending_deltas = 0
        self._delivered = 0
        self._dropped = 0

    def send_nowait(self, event: EngineEvent) -> None:
        if self._closed:
            return
        if isinstance(event, TextDelta | ReasoningDelta):
            if self._pending_deltas >= self._max_pending_deltas:
                self._dropped += 1
                return
            self._pending_deltas += 1
        self._items.append(event)
        self._lot.unpark_all()

    def close(self) -> None:
        """No more events: receivers get what is queued, then the iteration ends."""
        self._closed = True
        self._lot.unpark_all()

    async def receive(self) -> EngineEvent:
        """The next event; raises `trio.EndOfChannel` once closed and drained."""
        while not self._items:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        event = self.receive_nowait()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return event

    def receive_nowait(self) -> EngineEvent:
        if not self._items:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        event = self._items.popleft()
        if isinstance(event, TextDelta | ReasoningDelta):
            self._pending_deltas -= 1
        self._delivered += 1
        return event

    def __aiter__(self) -> AsyncIterator[EngineEvent]:
        return self

    async def __anext__(self) -> EngineEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def statistics(self) -> EventQueueStatistics:
        return EventQueueStatistics(len(self._items), self._delivered, self._dropped, self._closed)


class EngineSession(Protocol):
    """One agent session in one directory. Events arrive on `events` in order."""

    @property
    def session_id(self) -> str: ...

    @property
    def directory(self) -> Path: ...

    @property
    def title(self) -> str: ...

    @property
    def events(self) -> EventQueue: ...

    async def prompt(
        self,
        text: str,
        files: Sequence[AttachedFile] = (),
        *,
        model: ModelRef | None = None,
        agent: str | None = None,
        turn_id: str | None = None,
    ) -> str:
        """Start a turn; returns its id (the `turn_id` of its `TurnEnded`).

        `turn_id`: an id from `new_turn_id()`, reserved (and recorded) before the send, so a
        daemon killed during it can later ask `resume_turn` whether the agent has the turn.
        Raises `TurnInProgressError` while the previous turn runs, `EngineUnavailableError`
        when the agent server cannot be started.
        """
        ...

    def new_turn_id(self) -> str:
        """A fresh id for the next `prompt(turn_id=...)`."""
        ...

    async def resume_turn(self, turn_id: str) -> bool:
        """Follow turn `turn_id`, started before the daemon restarted.

        Its events arrive on `events` as for a turn `prompt()` started, ending with its
        `TurnEnded`; parts finished before the restart are sent again with their ids (a
        renderer skips what it posted). A turn the agent no longer runs ends with an error.
        Returns False, following nothing, when the agent never received the turn (the daemon
        stopped before its prompt was sent): the caller sends it, with the same id.
        """
        ...

    async def abort(self) -> None:
        """Stop the running turn (no-op when idle); returns once it ended (`TurnEnded` sent)."""
        ...

    async def reply_permission(self, request_id: str, reply: PermissionReply) -> None: ...

    async def answer_question(self, request_id: str, answers: Sequence[Sequence[str]]) -> None: ...

    async def reject_question(self, request_id: str) -> None: ...

    async def aclose(self) -> None:
        """Stop routing events to this object (the agent keeps the session for resuming)."""
        ...


class Engine(Protocol):
    @property
    def name(self) -> str: ...

    async def open_session(
        self, directory: Path, *, resume_id: str | None = None, title: str | None = None
    ) -> EngineSession:
        """A new session in `directory`, or the stored one `resume_id`.

        Raises `SessionNotFoundError` when the engine no longer knows `resume_id`.
        """
        ...

    async def list_models(self, directory: Path) -> Sequence[ProviderModels]: ...

    async def list_agents(self, directory: Path) -> Sequence[AgentInfo]: ...

    async def list_commands(self, directory: Path) -> Sequence[CommandInfo]: ...
