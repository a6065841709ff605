"""The scheduling door on a real SQLite store (conftest.py's `store_db`, whose calls run
inline so trio's autojump clock never jumps past one), with a recording run target and a wall
clock that moves with trio's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from typing import Any

import attrs
import trio

from kimaki.schedules import RunResult, Schedules, StartedRun
from kimaki.store import ScheduledTask, ScheduledTasks
from kimaki.store._database import Database
from kimaki.store._places import Places

CHANNEL = 1_300_000_000_000_000_001
THREAD = 1_300_000_000_000_000_002


@attrs.define
class PromptCall:
    """One `start_prompt`: when (wall clock), for which task, with what text; `finish`
    ends its turn."""

    at: float
    task: ScheduledTask
    text: str
    thread_id: int
    _ended: trio.Event = attrs.Factory(trio.Event)
    _result: RunResult | None = None

    def finish(self, status: Any = "answered", answer: str | None = "done") -> None:
        self._result = RunResult(status=status, answer=answer)
        self._ended.set()

    async def wait(self) -> RunResult:
        await self._ended.wait()
        assert self._result is not None
        return self._result


@attrs.define
class Post:
    at: float
    channel_id: int
    content: str
    mention_user_id: int | None


@attrs.define
class RecordingTarget:
    """A `RunTarget` that records what reaches "Discord"; a channel task's run gets a new
    thread id, a thread task's run its thread."""

    clock: Callable[[], float]
    prompts: list[PromptCall] = attrs.Factory(list)
    posts: list[Post] = attrs.Factory(list)
    interrupts: list[tuple[int, str]] = attrs.Factory(list)
    fail_next: Exception | None = None
    _next_thread: int = 1_400_000_000_000_000_000
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def start_prompt(self, task: ScheduledTask, text: str) -> StartedRun:
        await trio.lowlevel.checkpoint()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if task.thread_id is not None:
            thread_id = task.thread_id
        else:
            self._next_thread += 1
            thread_id = self._next_thread
        call = PromptCall(self.clock(), task, text, thread_id)
        self.prompts.append(call)
        self._wake()
        return StartedRun(thread_id=thread_id, done=call.wait())

    async def interrupt(self, thread_id: int, notice: str) -> None:
        await trio.lowlevel.checkpoint()
        self.interrupts.append((thread_id, notice))
        self._wake()

    async def post(self, channel_id: int, content: str, *, mention_user_id: int | None) -> None:
        await trio.lowlevel.checkpoint()
        self.posts.append(Post(self.clock(), channel_id, content, mention_user_id))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, check: Callable[[], bool]) -> None:
        """Until `check()` holds (checked after each thing the target is asked to do)."""
        while not check():
            await self._changed.wait()


@attrs.define
class Harness:
    """A door over the store, the target, and a wall clock that moves with trio's."""

    db: Database
    tasks: ScheduledTasks
    places: Places
    target: RecordingTarget
    base: float
    t0: float
    make: Callable[..., Schedules]

    def now(self) -> float:
        return self.base + trio.current_time() - self.t0

    async def sleep_until(self, wall: float) -> None:
        await trio.sleep_until(self.t0 + (wall - self.base))


def harness(db: Database, base: float, tz: tzinfo | None = None) -> Harness:
    t0 = trio.current_time()

    def clock() -> float:
        return base + trio.current_time() - t0

    target = RecordingTarget(clock)
    tasks = ScheduledTasks(db)

    def make(**kwargs: Any) -> Schedules:
        kwargs.setdefault("local_tz", tz)
        return Schedules(store=tasks, target=target, clock=clock, **kwargs)

    return Harness(db, tasks, Places(db), target, base, t0, make)
