"""Thread runtimes on trio's clock: order, abort on new message, queueing, idle eviction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from kimaki.sessions import Prompt, ThreadRuntimes

IDLE = 15 * 60


def prompt(text: str, *, queued: bool = False) -> Prompt:
    return Prompt(text=text, author_id=1, author_name="ana", queued=queued)


@attrs.define
class FakeHandler:
    """Records what the runtime asks of it; each turn runs until the test releases it."""

    thread_id: int
    log: list[str]
    releases: dict[str, trio.Event]
    started: dict[str, trio.Event]
    fail_on: set[str] = attrs.Factory(set)
    evict_gate: trio.Event | None = None

    async def run_turn(self, p: Prompt) -> None:
        self.log.append(f"{self.thread_id}:start {p.text}")
        self.started.setdefault(p.text, trio.Event()).set()
        if p.text in self.fail_on:
            raise RuntimeError("bug in the turn")
        await self.releases.setdefault(p.text, trio.Event()).wait()
        self.log.append(f"{self.thread_id}:done {p.text}")

    async def interrupted(self, p: Prompt) -> None:
        await trio.sleep(1)  # e.g. the abort request to the engine; runs shielded
        self.log.append(f"{self.thread_id}:interrupted {p.text}")
        self.started.setdefault(f"interrupted {p.text}", trio.Event()).set()

    async def evicted(self) -> None:
        self.log.append(f"{self.thread_id}:evicted")
        if self.evict_gate is not None:
            await self.evict_gate.wait()


@attrs.define
class Harness:
    runtimes: ThreadRuntimes
    log: list[str]
    releases: dict[str, trio.Event]
    started: dict[str, trio.Event]
    handlers: list[FakeHandler]

    def release(self, text: str) -> None:
        self.releases.setdefault(text, trio.Event()).set()

    async def until_started(self, text: str) -> None:
        await self.started.setdefault(text, trio.Event()).wait()


@asynccontextmanager
async def harness(**handler_options: object) -> AsyncIterator[Harness]:
    log: list[str] = []
    releases: dict[str, trio.Event] = {}
    started: dict[str, trio.Event] = {}
    handlers: list[FakeHandler] = []

    def factory(thread_id: int) -> FakeHandler:
        handler = FakeHandler(thread_id, log, releases, started, **handler_options)  # type: ignore[arg-type]
        handlers.append(handler)
        return handler

    # A deadline in virtual time: with autojump_clock, a runtime that hangs fails the test at
    # once instead of blocking the suite.
    with trio.fail_after(IDLE * 100):
        async with trio.open_nursery() as nursery:
            runtimes = ThreadRuntimes(nursery, factory, idle_timeout=IDLE)
            yield Harness(runtimes, log, releases, started, handlers)
            nursery.cancel_scope.cancel()


async def test_queued_prompts_are_served_one_at_a_time_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        assert h.runtimes.submit(7, prompt("a")) == 0
        assert h.runtimes.submit(7, prompt("b", queued=True)) == 1
        assert h.runtimes.submit(7, prompt("c", queued=True)) == 2
        await h.until_started("a")
        h.release("b")
        h.release("c")
        h.release("a")
        await h.until_started("c")
        await trio.testing.wait_all_tasks_blocked()
        assert h.log == ["7:start a", "7:done a", "7:start b", "7:done b", "7:start c", "7:done c"]


async def test_new_message_aborts_the_running_turn_before_the_new_one_starts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.runtimes.submit(7, prompt("long job"))
        await h.until_started("long job")
        h.runtimes.submit(7, prompt("stop, do this instead"))
        await h.until_started("stop, do this instead")
        assert h.log == [
            "7:start long job",
            "7:interrupted long job",
            "7:start stop, do this instead",
        ]
        # The aborted turn never resumes, even if its engine finishes later.
        h.release("long job")
        await trio.testing.wait_all_tasks_blocked()
        assert "7:done long job" not in h.log
        assert h.runtimes.statistics().turns_interrupted == 1


async def test_interrupting_prompt_goes_ahead_of_queued_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.runtimes.submit(7, prompt("a"))
        h.runtimes.submit(7, prompt("later", queued=True))
        await h.until_started("a")
        h.runtimes.submit(7, prompt("now"))
        await h.until_started("now")
        h.release("now")
        await h.until_started("later")
        assert h.log == [
            "7:start a",
            "7:interrupted a",
            "7:start now",
            "7:done now",
            "7:start later",
        ]


async def test_queued_prompt_on_an_idle_thread_starts_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        assert h.runtimes.submit(7, prompt("x", queued=True)) == 0
        await h.until_started("x")


async def test_threads_run_concurrently(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        h.runtimes.submit(1, prompt("one"))
        h.runtimes.submit(2, prompt("two"))
        await h.until_started("one")
        await h.until_started("two")
        assert h.runtimes.statistics().running_turns == 2


async def test_idle_runtime_is_evicted_and_rebuilt_on_the_next_prompt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.release("first")
        h.runtimes.submit(7, prompt("first"))
        await h.until_started("first")
        await trio.sleep(IDLE - 1)
        assert h.runtimes.get(7) is not None
        await trio.sleep(2)
        assert h.runtimes.get(7) is None
        assert h.log[-1] == "7:evicted"
        assert h.runtimes.statistics().evictions == 1

        h.release("second")
        h.runtimes.submit(7, prompt("second"))
        await h.until_started("second")
        assert len(h.handlers) == 2  # rebuilt from scratch (the handler reloads from the store)


async def test_a_running_turn_is_never_evicted(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        h.runtimes.submit(7, prompt("waiting on a permission"))
        await h.until_started("waiting on a permission")
        await trio.sleep(IDLE * 4)
        assert h.runtimes.get(7) is not None
        assert "7:evicted" not in h.log
        h.release("waiting on a permission")
        await trio.sleep(IDLE + 1)
        assert h.runtimes.get(7) is None


async def test_prompt_arriving_while_an_eviction_saves_state_is_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    async with harness(evict_gate=gate) as h:
        h.release("a")
        h.runtimes.submit(7, prompt("a"))
        await trio.sleep(IDLE + 1)  # evicting, blocked in evicted()
        assert h.log[-1] == "7:evicted"
        h.runtimes.submit(7, prompt("b"))
        await h.until_started("b")
        gate.set()


async def test_abort_without_a_new_prompt_and_clear_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.runtimes.submit(7, prompt("a"))
        h.runtimes.submit(7, prompt("q1", queued=True))
        h.runtimes.submit(7, prompt("q2", queued=True))
        h.runtimes.submit(7, prompt("q3", queued=True))
        await h.until_started("a")
        runtime = h.runtimes.get(7)
        assert runtime is not None
        assert [p.text for p in runtime.clear_queue(2)] == ["q2"]
        assert runtime.clear_queue(9) == []
        assert [p.text for p in runtime.pending] == ["q1", "q3"]
        assert [p.text for p in runtime.clear_queue()] == ["q1", "q3"]
        assert runtime.interrupt()
        await h.until_started("interrupted a")
        assert h.log == ["7:start a", "7:interrupted a"]
        assert not runtime.interrupt()


async def test_a_failing_turn_does_not_kill_the_thread(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(fail_on={"broken"}) as h:
        h.runtimes.submit(7, prompt("broken"))
        h.runtimes.submit(7, prompt("next", queued=True))
        await h.until_started("next")
        assert h.log == ["7:start broken", "7:start next"]
