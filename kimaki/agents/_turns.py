"""Turn bookkeeping every engine session shares, whatever its protocol.

A session runs one turn at a time. Its mapper (wire events → engine events) tracks which turn
runs, whether the person asked to abort it and how it ends (`TurnTracker`, the `TurnMapper`
the session skeleton drives); the session keeps the directory's server from an idle stop
while the turn runs and wakes `abort()` when it ends (`TurnKeeper`). How a turn starts and
ends on the wire is each engine's own.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar, final

import attrs
import trio

from kimaki.agents._engine import EventQueue
from kimaki.agents._events import EngineEvent, StopReason, TurnEnded
from kimaki.agents._supervisor import AgentServer

__all__ = ["Turn", "TurnKeeper", "TurnMapper", "TurnTracker"]


@attrs.define
class Turn:
    """The running turn as a mapper sees it; engines subclass it with what they track."""

    id: str
    abort_requested: bool = False


class TurnMapper(Protocol):
    """A session's mapper as the turn skeleton (`kimaki.agents._session`) drives it."""

    @property
    def title(self) -> str: ...

    @property
    def turn_id(self) -> str | None: ...

    def begin_turn(self, turn_id: str) -> None:
        """Call before sending the prompt of turn `turn_id`."""
        ...

    def cancel_turn(self) -> None: ...

    def request_abort(self) -> None: ...

    def end_turn(
        self, turn_id: str, reason: StopReason, message: str | None = None
    ) -> list[EngineEvent]: ...


TurnT = TypeVar("TurnT", bound=Turn)


class TurnTracker(Generic[TurnT]):
    """The mapper's side: which turn runs (None between turns), whether it was aborted, and
    its end.

    Subclasses set `_turn` (None in `__init__`, a new turn in their `begin_turn`), since what
    a new turn resets is theirs; `end_turn` sets it to None again.
    """

    _turn: TurnT | None

    @property
    def turn_id(self) -> str | None:
        return self._turn.id if self._turn is not None else None

    @property
    def abort_requested(self) -> bool:
        return self._turn is not None and self._turn.abort_requested

    def cancel_turn(self) -> None:
        """The prompt never reached the agent: forget the turn without an end event."""
        self._turn = None

    def request_abort(self) -> None:
        if self._turn is not None:
            self._turn.abort_requested = True

    def end_turn(
        self, turn_id: str, reason: StopReason, message: str | None = None
    ) -> list[EngineEvent]:
        """End turn `turn_id` if it is still the running one: what it left open, then its
        `TurnEnded`. Nothing for a turn that is over (a late end of an abandoned turn)."""
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return []
        out = self._close_parts()
        self._turn = None
        out.append(TurnEnded(turn.id, reason, message))
        return out

    def _close_parts(self) -> list[EngineEvent]:
        """The events that complete what the turn left open, sent before its end."""
        return []


@final
class TurnKeeper:
    """The session's side: the server is held from a turn's start to its `TurnEnded` (an idle
    stop must not cut a running turn), and `over` is set when it ends (what `abort()` waits
    for before ending the turn itself).

    `touch`: activity (any event) also pushes the server's idle stop back.
    """

    def __init__(self, server: AgentServer[Any], events: EventQueue, *, touch: bool) -> None:
        self._server = server
        self._events = events
        self._touch = touch
        self._holding = False
        self.over = trio.Event()

    def begin(self) -> None:
        """A turn starts: a new `over`, and the server held."""
        self.over = trio.Event()
        if not self._holding:
            self._holding = True
            self._server.hold()

    def release(self) -> None:
        """Let the server go idle again (the turn ended, or the session closed)."""
        if self._holding:
            self._holding = False
            self._server.release()

    def finish(self) -> None:
        """The turn is over (ended, or never started): release, and wake who waits for it."""
        self.release()
        self.over.set()

    def emit(self, events: list[EngineEvent]) -> None:
        """Deliver `events` in order; a `TurnEnded` among them finishes the turn first."""
        for event in events:
            if isinstance(event, TurnEnded):
                self.finish()
            self._events.send_nowait(event)
        if events and self._touch:
            self._server.touch()
