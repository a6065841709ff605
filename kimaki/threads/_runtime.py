"""Thread runtimes: one task per active Discord thread, serving its prompts one at a time.

```
ThreadRuntimes (owns a nursery)
└─ ThreadRuntime.run, one per active thread
     wait for a prompt (under the idle timeout) → serve it in its own CancelScope → repeat
```

Prompts reach the engine in the order their messages arrived (the router submits in gateway
order), always:

- **Abort on new message**: `submit()` of an interrupting prompt cancels the running turn's
  scope. If the engine already had the running prompt (the handler said so through the
  `reached` callback), the runtime waits for the turn to unwind, then calls the handler's
  `interrupted()` (shielded: it tells the engine to abort and posts "interrupted"), then serves
  the new prompt.
- **Join until the engine has it**: messages that arrive while the previous one has not reached
  the engine (it is being prepared, a turn is being aborted, a replayed burst after a RESUME, a
  runtime being rebuilt) join it as *one* prompt (`Prompt.joined`), each part with its author
  and message id, instead of starting turns that are aborted before anyone sees them. A
  running prompt that had not reached the engine is withdrawn quietly (`withdrawn()`) and
  served again at the head of the joined prompt.
- **Queue mode**: a prompt with `queued=True` waits behind the running turn and behind the
  interrupting prompt, if any; queued prompts keep their order. On an idle thread it is
  served at once, like any other message (and later messages may join it).
- **Told how it ended**: each prompt's `on_done` (see `Prompt.finish`) hears once how it
  ended: its turn's outcome (the handler's), "interrupted", "dropped" when it leaves the
  queue unserved (`clear_queue`, `/abort` while it was being joined), or "failed" when a bug
  ended its turn. A withdrawn prompt is not ended (it is served again, joined), nor is one
  handed over to the next process by `suspend`.
- **Idle eviction**: waiting for the next prompt happens under `trio.move_on_after(idle)`.
  When it fires with nothing pending, the runtime deregisters itself (synchronously, so a
  prompt arriving at that moment starts a fresh runtime instead of being lost) and returns.
  A running turn — including one waiting on a permission or question — is never evicted,
  because the idle timer only runs between turns.

Prompts wait in a deque rather than a memory channel: an interrupting prompt goes ahead of the
queued ones, and a newer message joins the prompt still waiting, which a channel cannot
express. The pending prompts that interrupt come first, then the queued ones; one receiver per
thread; the router only submits.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, final

import attrs
import trio

from kimaki.threads._prompt import Prompt, PromptOutcome

__all__ = [
    "RuntimeStatistics",
    "ThreadRuntime",
    "ThreadRuntimes",
    "TurnHandler",
    "TurnHandlerFactory",
]

log = logging.getLogger("kimaki.threads")


class TurnHandler(Protocol):
    """What a runtime drives: the engine session and the Discord rendering of one thread.

    Everything the runtime and the thread registry ask of it is here (the registry reads
    `turn_started` and `prompt_taken` to hand a thread over to the next process, and tells it
    `stopping()` when the daemon stops), so nothing needs to know which class implements it.
    """

    @property
    def turn_started(self) -> bool:
        """The engine took the running prompt and its turn is not over: a restart can follow
        it instead of sending the prompt again."""

    @property
    def prompt_taken(self) -> bool:
        """The engine took the prompt of the current `run_turn`, even if its turn is over (the
        answer may still be flushing): an in-place restart must not send it again."""

    @property
    def withdrawn_record(self) -> bool:
        """A withdrawn prompt's running-turn record is still stored (until the prompt that
        joined it replaces it): a hand-over must drop it with the queue it saves."""

    def stopping(self, notice: str) -> None:
        """The daemon is stopping: when the running turn is cancelled, say `notice` instead of
        "interrupted"."""

    async def run_turn(self, prompt: Prompt, reached: Callable[[], None]) -> PromptOutcome | None:
        """Send `prompt` and render the turn until it ends. Cancelled on interrupt.

        Call `reached()` as soon as the engine has the prompt (a turn it follows included):
        until then, a newer message cancels the turn and joins this prompt instead. Returns
        how the turn ended, for the prompt's `on_done` (None: "answered", no answer known).
        """

    async def interrupted(self, prompt: Prompt) -> None:
        """The turn for `prompt` was cancelled: abort the engine, flush, say so. Shielded."""

    async def withdrawn(self, prompt: Prompt) -> None:
        """The turn for `prompt` was cancelled before it called `reached()`, because newer
        messages arrived: it is served again with them, as one prompt. Undo what was started
        (abort the engine if a send was under way) and say nothing. Shielded."""

    async def evicted(self) -> None:
        """The runtime is going away idle: persist what must survive. Shielded."""


TurnHandlerFactory = Callable[[int], TurnHandler]
"""Makes the handler of a thread (by its id) when the thread becomes active."""

H = TypeVar("H", bound=TurnHandler)
"""The handler type a registry makes: its owner gets its own handlers back, never downcast."""


@final
@attrs.frozen
class RuntimeStatistics:
    active_runtimes: int
    running_turns: int
    queued_prompts: int
    turns_served: int
    turns_interrupted: int
    evictions: int


@attrs.define
class _Counters:
    turns_served: int = 0
    turns_interrupted: int = 0
    evictions: int = 0


@final
@attrs.define
class _Turn:
    """The turn being served, and what decides how it ends if it is cancelled."""

    prompt: Prompt
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    # The engine has the prompt (a followed turn always has it).
    reached: bool = False
    # Cancelled by `interrupt()` (/abort, the daemon stopping): dropped, never joined.
    abandoned: bool = False
    # `run_turn` has returned: what remains is saying how it ended.
    unwound: bool = False

    def mark_reached(self) -> None:
        self.reached = True


@final
class ThreadRuntime(Generic[H]):
    """Serves one thread's prompts. Created and owned by `ThreadRuntimes`."""

    def __init__(
        self,
        thread_id: int,
        handler: H,
        *,
        idle_timeout: float,
        on_exit: Callable[[ThreadRuntime[H]], None],
        counters: _Counters,
        on_turn_over: Callable[[], None] = lambda: None,
    ) -> None:
        self.thread_id = thread_id
        self._handler = handler
        self._idle_timeout = idle_timeout
        self._on_exit = on_exit
        self._counters = counters
        self._pending: deque[Prompt] = deque()
        self._wakeup = trio.Event()
        self._turn: _Turn | None = None
        self._closed = False
        self._suspended = False
        self._on_turn_over = on_turn_over

    @property
    def handler(self) -> H:
        return self._handler

    @property
    def running(self) -> Prompt | None:
        """The prompt whose turn is running, if any."""
        return None if self._turn is None else self._turn.prompt

    @property
    def pending(self) -> tuple[Prompt, ...]:
        return tuple(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, prompt: Prompt) -> int:
        """Accept `prompt`; return its position in the queue (0 = served next / now).

        An interrupting prompt (`queued=False`) cancels the running turn and is served next,
        after any interrupting prompt still waiting (it joins that one) and ahead of the
        queued ones. A queued one waits behind all of them; the caller shows the person its
        position. Nothing is ever put ahead of a prompt that arrived before it and
        interrupts.
        """
        if self._closed:
            raise RuntimeError("submit() to an evicted runtime")
        busy = self._turn is not None or bool(self._pending)
        if not busy:
            # Nothing to wait behind: served now, so a message right after it may join it.
            self._pending.append(attrs.evolve(prompt, queued=False))
            self._wakeup.set()
            return 0
        if prompt.queued:
            # Turns that will run before this one, the running one included.
            position = len(self._pending) + (self._turn is not None)
            self._pending.append(prompt)
            self._wakeup.set()
            return position
        # Interrupting prompts wait at the front in arrival order; the last one, unless it
        # follows a turn already in the engine, has not reached the engine: join it.
        ahead = 0
        while ahead < len(self._pending) and not self._pending[ahead].queued:
            ahead += 1
        last = self._pending[ahead - 1] if ahead else None
        if last is not None and last.resume_turn_id is None and prompt.resume_turn_id is None:
            self._pending[ahead - 1] = last.joined(prompt)
        else:
            self._pending.insert(ahead, prompt)
        if self._turn is not None:
            self._turn.scope.cancel()
        self._wakeup.set()
        return 0

    def interrupt(self) -> bool:
        """Cancel the running turn without a new prompt (`/abort`). True if one was running."""
        turn = self._turn
        if turn is None:
            return False
        # Dropped, even if a new message cancelled it first: it does not join that one.
        turn.abandoned = True
        if turn.unwound:
            return False  # over already; saying so is under way
        turn.scope.cancel()
        return True

    def suspend(self) -> tuple[Prompt | None, list[Prompt]]:
        """Stop serving without a word to anyone (the daemon restarts in place).

        The running turn is cancelled *without* `interrupted()`: the agent keeps working, and
        the next process follows the turn. Returns the running prompt and the queue, which the
        caller hands over; the runtime leaves the registry at once.
        """
        self._suspended = True
        running = self.running
        pending = list(self._pending)
        self._pending.clear()
        if self._turn is not None:
            self._turn.scope.cancel()
        self._close()
        self._wakeup.set()
        return running, pending

    def clear_queue(self, position: int | None = None) -> list[Prompt]:
        """Drop queued prompts (all, or the one at 1-based `position`); return what was dropped."""
        if position is None:
            dropped = list(self._pending)
            self._pending.clear()
        elif not 1 <= position <= len(self._pending):
            dropped = []
        else:
            dropped = [self._pending[position - 1]]
            del self._pending[position - 1]
        for prompt in dropped:
            prompt.finish(PromptOutcome("dropped"))
        return dropped

    async def run(self) -> None:
        try:
            while not self._suspended:
                prompt = await self._next_prompt()
                if prompt is None:
                    return
                await self._serve(prompt)
        finally:
            self._close()
            if not self._suspended:
                # Cancelled from outside (the daemon stopping): what waited is never served.
                dropped = list(self._pending)
                self._pending.clear()
                for prompt in dropped:
                    prompt.finish(PromptOutcome("dropped", error="the bot stopped"))

    async def _next_prompt(self) -> Prompt | None:
        with trio.move_on_after(self._idle_timeout):
            while not self._pending and not self._suspended:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
        if self._suspended:
            return None
        if not self._pending:
            # Idle: leave the registry now, before any await, so that a prompt arriving while
            # we persist starts a new runtime rather than landing in this one.
            self._close()
            self._counters.evictions += 1
            log.debug("thread %d idle for %.0f s: evicted", self.thread_id, self._idle_timeout)
            try:
                with trio.CancelScope(shield=True):
                    await self._handler.evicted()
            except Exception:
                log.exception("thread %d: saving state on eviction failed", self.thread_id)
            return None
        return self._pending.popleft()

    async def _serve(self, prompt: Prompt) -> None:
        # A followed turn (an in-place restart) is in the engine already: nothing joins it.
        turn = _Turn(prompt, reached=prompt.resume_turn_id is not None)
        self._turn = turn
        if self._pending and not self._pending[0].queued:
            # Interrupted before it started: only a followed turn can be (any other prompt is
            # joined by the newer one), handed over with the message that was interrupting it.
            turn.scope.cancel()
        # How the prompt ended, for its `on_done`; None while it is not over here.
        outcome: PromptOutcome | None = None
        carried_on = False  # served again (joined) or handed over: not over
        try:
            with turn.scope:
                result = await self._handler.run_turn(prompt, turn.mark_reached)
            turn.unwound = True
            if turn.scope.cancelled_caught and self._suspended:
                carried_on = True  # handed to the next process: the agent goes on, nobody is told
            elif turn.scope.cancelled_caught and self._superseded(turn):
                try:
                    with trio.CancelScope(shield=True):
                        await self._handler.withdrawn(prompt)
                finally:
                    # The messages are served even if withdrawing failed.
                    carried_on = self._rejoin(turn)
                    if not carried_on:
                        outcome = PromptOutcome("dropped")
            elif turn.scope.cancelled_caught:
                self._counters.turns_interrupted += 1
                outcome = PromptOutcome("interrupted")
                with trio.CancelScope(shield=True):
                    await self._handler.interrupted(prompt)
            else:
                self._counters.turns_served += 1
                outcome = result if result is not None else PromptOutcome("answered")
        except Exception:
            # A bug in one turn must not take the thread, or the daemon, down with it; the
            # handler reports engine errors itself, so this is only ever a bug.
            log.exception("thread %d: turn failed", self.thread_id)
            if outcome is None and not carried_on:
                outcome = PromptOutcome("failed", error="the turn failed (see the daemon's log)")
        finally:
            self._turn = None
            if outcome is None and not carried_on and not self._suspended:
                # Cancelled from outside (the daemon stopping): it will not be served.
                outcome = PromptOutcome("interrupted", error="the bot stopped")
            if outcome is not None:
                prompt.finish(outcome)
            self._on_turn_over()

    def _superseded(self, turn: _Turn) -> bool:
        """Whether a cancelled turn's prompt, which the engine never had, goes back to be
        served with the newer messages that cancelled it. Not when the engine had it or when
        `/abort` dropped it: then the turn counts as interrupted."""
        if turn.reached or turn.abandoned or not self._pending:
            return False
        newer = self._pending[0]
        return not newer.queued and newer.resume_turn_id is None

    def _rejoin(self, turn: _Turn) -> bool:
        """The turn's prompt was withdrawn: it heads the newer messages again (they arrived
        after it), as one prompt, unless the runtime was handed over meanwhile (`suspend` took
        it) or `/abort` came while it was being withdrawn. False when it is dropped (`/abort`)."""
        if self._suspended:
            return True
        if turn.abandoned:
            return False
        prompt = turn.prompt
        newer = self._pending[0] if self._pending else None
        if newer is not None and not newer.queued and newer.resume_turn_id is None:
            # The interrupting prompts that arrived during this turn wait at the front.
            self._pending[0] = prompt.joined(newer)
        else:  # the newer messages were cleared from the queue meanwhile
            self._pending.appendleft(attrs.evolve(prompt, queued=False))
        log.debug("thread %d: newer messages joined the prompt not yet sent", self.thread_id)
        return True

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_exit(self)


@final
class ThreadRuntimes(Generic[H]):
    """The registry of live thread runtimes, and the nursery that owns them.

    `submit()` is synchronous (the router only sends): it finds the thread's runtime or starts
    one, so prompts for a thread are served in the order they were submitted.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        handler_factory: Callable[[int], H],
        *,
        idle_timeout: float = 15 * 60,
    ) -> None:
        if not idle_timeout > 0 or math.isnan(idle_timeout):
            raise ValueError("idle_timeout must be positive")
        self._nursery = nursery
        self._factory = handler_factory
        self._idle_timeout = idle_timeout
        self._runtimes: dict[int, ThreadRuntime[H]] = {}
        self._counters = _Counters()
        self._closed = False
        self._turn_over = trio.lowlevel.ParkingLot()

    def _turn_ended(self) -> None:
        self._turn_over.unpark_all()

    def runtimes(self) -> list[ThreadRuntime[H]]:
        return list(self._runtimes.values())

    async def wait_for_turns(self, runtimes: list[ThreadRuntime[H]]) -> None:
        """Return once none of `runtimes` is serving a turn (interrupted ones included)."""
        while any(runtime.running is not None for runtime in runtimes):
            await self._turn_over.park()

    def close(self) -> None:
        """Accept no more prompts (the daemon is stopping); running ones are cancelled by the
        nursery's owner."""
        self._closed = True

    def get(self, thread_id: int) -> ThreadRuntime[H] | None:
        return self._runtimes.get(thread_id)

    def __len__(self) -> int:
        return len(self._runtimes)

    def submit(self, thread_id: int, prompt: Prompt) -> int:
        """Route `prompt` to its thread's runtime, starting one if needed.

        Returns the queue position, as `ThreadRuntime.submit` does. Raises
        `trio.ClosedResourceError` after `close()`.
        """
        if self._closed:
            raise trio.ClosedResourceError("thread runtimes are closed: the bot is stopping")
        runtime = self._runtimes.get(thread_id)
        if runtime is None:
            runtime = ThreadRuntime(
                thread_id,
                self._factory(thread_id),
                idle_timeout=self._idle_timeout,
                on_exit=self._forget,
                counters=self._counters,
                on_turn_over=self._turn_ended,
            )
            self._runtimes[thread_id] = runtime
            self._nursery.start_soon(runtime.run, name=f"thread-{thread_id}")
        return runtime.submit(prompt)

    def _forget(self, runtime: ThreadRuntime[H]) -> None:
        if self._runtimes.get(runtime.thread_id) is runtime:
            del self._runtimes[runtime.thread_id]

    def statistics(self) -> RuntimeStatistics:
        runtimes = list(self._runtimes.values())
        return RuntimeStatistics(
            active_runtimes=len(runtimes),
            running_turns=sum(1 for r in runtimes if r.running is not None),
            queued_prompts=sum(len(r.pending) for r in runtimes),
            turns_served=self._counters.turns_served,
            turns_interrupted=self._counters.turns_interrupted,
            evictions=self._counters.evictions,
        )
