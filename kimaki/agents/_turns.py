"""Turn bookkeeping every engine session shares, whatever its protocol.

A session runs one turn at a time. Its mapper (wire events → engine events) tracks which turn
runs and whether the person asked to abort it (`TurnTracker`); the session keeps the
directory's server from an idle stop while the turn runs and wakes `abort()` when it ends
(`TurnKeeper`). How a turn starts and ends on the wire is each engine's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, final

import attrs
import trio

from kimaki.agents._engine import EventQueue
from kimaki.agents._errors import first_line
from kimaki.agents._events import EngineEvent, TurnEnded
from kimaki.agents._supervisor import AgentServer

__all__ = ["Turn", "TurnKeeper", "TurnTracker"]


@attrs.define
class Turn:
    """The running turn as a mapper sees it; engines subclass it with what they track."""

    id: str
    abort_requested: bool = False


TurnT = TypeVar("TurnT", bound=Turn)


class TurnTracker(Generic[TurnT]):
    """The mapper's side: which turn runs (None between turns) and whether it was aborted.

    Subclasses set `_turn` (None in `__init__`, a new turn in their `begin_turn`, None again
    when it ends), since what a new turn resets is theirs.
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

    def server_lost(
        self, message: str, end_turn: Callable[[str], list[EngineEvent]], *, fallback: str
    ) -> None:
        """The server went away (crashed, hung, given up, stopped): the running turn ends
        with one line, `end_turn` with the first line of `message` (or `fallback`).

        Nothing is sent between turns: a notice left in the queue would be read as the end
        of the next turn, and the next prompt starts the server again anyway.
        """
        self.emit(end_turn(first_line(message) if message else fallback))
