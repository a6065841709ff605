"""The turn skeleton every engine session shares; the engines fill in how their wire does it.

```
TurnSession (one per agent session; implements most of `kimaki.agents.EngineSession`)
├─ prompt():  lock ─ closed? ─ TurnInProgressError? ─ _prepare_turn ─ begin ─ send
│             (a failed send forgets the turn: no TurnEnded for a turn the agent never had)
│             ─ _turn_sent
├─ abort():   request_abort on the mapper ─ _request_abort ─ wait for the TurnEnded
│             (at most abort_wait) ─ else _abort_unanswered, and end it here as aborted
├─ aclose():  closed, forgotten by the directory, _closing, server released, events closed
└─ _server_lost(): the running turn ends with one line (what `Sessions.server_lost` calls)
```

The hooks are the only places the engines differ: OpenCode sends a prompt over HTTP and asks
the server for its state when an abort goes unanswered; ACP writes `session/prompt` on stdio
and answers pending permission requests on abort and close. What a turn is (its id, whether
the person aborted it, how it ends) is the mapper's (`kimaki.agents._turns.TurnMapper`); who
holds the server while it runs is `TurnKeeper`'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, final

import attrs
import trio

from kimaki.agents._directories import DirectoryState
from kimaki.agents._engine import AttachedFile, EventQueue, ModelRef
from kimaki.agents._errors import EngineError, TurnInProgressError, first_line
from kimaki.agents._events import EngineEvent
from kimaki.agents._turns import TurnKeeper, TurnMapper

__all__ = ["SendTurn", "TurnRequest", "TurnSession"]

DirT = TypeVar("DirT", bound=DirectoryState)
MapperT = TypeVar("MapperT", bound=TurnMapper)

SendTurn = Callable[[str], Awaitable[None]]
"""Sends a prepared prompt under the given turn id; returns once the agent has it."""


@final
@attrs.frozen
class TurnRequest:
    """What `prompt()` was asked to send (`agent`: the persona, not the agent program)."""

    text: str
    files: Sequence[AttachedFile]
    model: ModelRef | None
    agent: str | None


class TurnSession(ABC, Generic[DirT, MapperT]):
    """One agent session: the turn lifecycle both engines share.

    `touch`: any event pushes the server's idle stop back (not only a running turn);
    `abort_wait`: how long `abort()` waits for the agent to end the turn; `lost_fallback`: the
    line a turn ends with when its server went away without saying why.
    """

    def __init__(
        self,
        home: DirT,
        session_id: str,
        mapper: MapperT,
        *,
        touch: bool,
        abort_wait: float,
        lost_fallback: str,
    ) -> None:
        self._dir = home
        self.session_id = session_id
        self.directory = home.directory
        self.events = EventQueue()
        self._mapper = mapper
        self._prompt_lock = trio.Lock()
        self._turns = TurnKeeper(home.server, self.events, touch=touch)
        self._abort_wait = abort_wait
        self._lost_fallback = lost_fallback
        self._closed = False

    @property
    def title(self) -> str:
        return self._mapper.title

    @property
    def turn_id(self) -> str | None:
        return self._mapper.turn_id

    # ------------------------------------------------------------------ the interface

    async def prompt(
        self,
        text: str,
        files: Sequence[AttachedFile] = (),
        *,
        model: ModelRef | None = None,
        agent: str | None = None,
        turn_id: str | None = None,
    ) -> str:
        async with self._prompt_lock:
            self._check_idle()
            send = await self._prepare_turn(TurnRequest(text, files, model, agent))
            turn_id = turn_id if turn_id is not None else self.new_turn_id()
            self._mapper.begin_turn(turn_id)
            self._turns.begin()
            try:
                await send(turn_id)
            except BaseException:
                self._mapper.cancel_turn()
                self._turns.finish()
                raise
            self._turn_sent(turn_id)
            return turn_id

    @abstractmethod
    def new_turn_id(self) -> str: ...

    async def abort(self) -> None:
        turn_id = self._mapper.turn_id
        if turn_id is None:
            return
        self._mapper.request_abort()
        turn_over = self._turns.over
        await self._request_abort()
        with trio.move_on_after(self._abort_wait):
            await turn_over.wait()
            return
        await self._abort_unanswered()
        self._emit_all(self._mapper.end_turn(turn_id, "aborted"))

    async def aclose(self) -> None:
        self._closed = True
        self._dir.sessions.remove(self)
        self._closing()
        self._turns.release()
        self.events.close()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ the hooks

    @abstractmethod
    async def _prepare_turn(self, request: TurnRequest) -> SendTurn:
        """Under the prompt lock, before the turn exists: whatever may fail without a turn to
        end (the connection, the prompt's parts, selecting a model). Returns the send step."""

    def _turn_sent(self, turn_id: str) -> None:
        """The agent has turn `turn_id` (still under the prompt lock)."""

    @abstractmethod
    async def _request_abort(self) -> None:
        """Ask the agent to stop the running turn; a failure to ask is logged, not raised."""

    @abstractmethod
    async def _abort_unanswered(self) -> None:
        """The agent did not end the turn within `abort_wait`: the last look before it is
        ended here as aborted."""

    def _closing(self) -> None:
        """`aclose()`, before the events close: settle what waits on this session."""

    # ------------------------------------------------------------------ shared steps

    def _check_idle(self) -> None:
        """Under the prompt lock: a new turn may start here."""
        if self._closed:
            raise EngineError("this session was closed")
        if self._mapper.turn_id is not None:
            raise TurnInProgressError("the previous turn is still running")

    def _emit_all(self, events: list[EngineEvent]) -> None:
        self._turns.emit(events)

    def _server_lost(self, message: str) -> None:
        """The server went away (crashed, hung, given up, stopped): the running turn ends with
        one line, the first of `message`.

        Nothing is sent between turns: a notice left in the queue would be read as the end of
        the next turn, and the next prompt starts the server again anyway.
        """
        turn_id = self._mapper.turn_id
        if turn_id is None:
            return
        why = first_line(message) if message else self._lost_fallback
        self._emit_all(self._mapper.end_turn(turn_id, "error", why))
