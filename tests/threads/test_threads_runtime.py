"""Thread runtimes on trio's clock: arrival order, abort on new message, messages joining a
prompt the engine does not have yet, queueing, idle eviction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given, settings

from kimaki.store import ChannelRecord, ThreadRecord
from kimaki.threads import AttachmentInfo, Place, Prompt, QuotedMessage, ThreadRuntimes

IDLE = 15 * 60


def prompt(text: str, *, queued: bool = False) -> Prompt:
    return Prompt(text=text, author_id=1, author_name="ana", queued=queued)


def label(p: Prompt) -> str:
    """A prompt as the tests name it: its messages' texts, joined by "+"."""
    return "+".join(part.text for part in p.parts)


@attrs.define
class FakeHandler:
    """Records what the runtime asks of it. The engine takes a prompt at once unless the test
    holds it (`Harness.hold`); each turn then runs until the test releases it."""

    thread_id: int
    log: list[str]
    releases: dict[str, trio.Event]
    started: dict[str, trio.Event]
    holds: dict[str, trio.Event]
    engine: list[str]
    fail_on: set[str] = attrs.Factory(set)
    evict_gate: trio.Event | None = None
    # The rest of the `TurnHandler` protocol (the registry's, for restarts and stopping).
    turn_started: bool = False
    prompt_taken: bool = False

    def stopping(self, notice: str) -> None:
        self.log.append(f"{self.thread_id}:stopping")

    async def run_turn(self, p: Prompt, reached: Callable[[], None]) -> None:
        text = label(p)
        self.log.append(f"{self.thread_id}:start {text}")
        self.started.setdefault(text, trio.Event()).set()
        if text in self.fail_on:
            raise RuntimeError("bug in the turn")
        hold = self.holds.get(text)
        if hold is not None:
            await hold.wait()  # the engine is slow to take it: newer messages may join it
        self.engine.append(text)
        reached()
        await self.releases.setdefault(text, trio.Event()).wait()
        self.log.append(f"{self.thread_id}:done {text}")

    async def interrupted(self, p: Prompt) -> None:
        await trio.sleep(1)  # e.g. the abort request to the engine; runs shielded
        self.log.append(f"{self.thread_id}:interrupted {label(p)}")
        self.started.setdefault(f"interrupted {label(p)}", trio.Event()).set()

    async def withdrawn(self, p: Prompt) -> None:
        await trio.sleep(1)  # e.g. aborting a send cut short; runs shielded
        self.log.append(f"{self.thread_id}:withdrawn {label(p)}")

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
    holds: dict[str, trio.Event]
    # What reached the engine, in order: one entry per prompt.
    engine: list[str]

    def release(self, text: str) -> None:
        self.releases.setdefault(text, trio.Event()).set()

    def hold(self, text: str) -> None:
        """The engine will not take the prompt named `text` until `let_through(text)`."""
        self.holds[text] = trio.Event()

    def let_through(self, text: str) -> None:
        self.holds[text].set()

    async def until_started(self, text: str) -> None:
        await self.started.setdefault(text, trio.Event()).wait()


@asynccontextmanager
async def harness(**handler_options: object) -> AsyncIterator[Harness]:
    log: list[str] = []
    releases: dict[str, trio.Event] = {}
    started: dict[str, trio.Event] = {}
    handlers: list[FakeHandler] = []
    holds: dict[str, trio.Event] = {}
    engine: list[str] = []

    def factory(thread_id: int) -> FakeHandler:
        handler = FakeHandler(
            thread_id,
            log,
            releases,
            started,
            holds,
            engine,
            **handler_options,  # type: ignore[arg-type]
        )
        handlers.append(handler)
        return handler

    # A deadline in virtual time: with autojump_clock, a runtime that hangs fails the test at
    # once instead of blocking the suite.
    with trio.fail_after(IDLE * 100):
        async with trio.open_nursery() as nursery:
            runtimes = ThreadRuntimes(nursery, factory, idle_timeout=IDLE)
            yield Harness(runtimes, log, releases, started, handlers, holds, engine)
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


# ---- arrival order


async def test_two_messages_on_an_idle_thread_reach_the_engine_as_one_prompt_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.release("a")
        h.runtimes.submit(7, prompt("a"))
        await h.until_started("a")
        await trio.testing.wait_all_tasks_blocked()  # idle again, the runtime still alive
        assert h.runtimes.submit(7, prompt("stop")) == 0
        assert h.runtimes.submit(7, prompt("do X instead")) == 0
        await h.until_started("stop+do X instead")
        assert h.engine == ["a", "stop+do X instead"]
        assert not any("interrupted" in line for line in h.log)


async def test_a_message_joins_one_that_the_engine_has_not_taken_yet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.hold("stop")
        h.runtimes.submit(7, prompt("stop"))
        await h.until_started("stop")  # being prepared: the engine does not have it
        h.runtimes.submit(7, prompt("do X instead"))
        await h.until_started("stop+do X instead")
        assert h.engine == ["stop+do X instead"]
        # Withdrawn without a word: nothing was shown for it, nothing is "interrupted".
        assert h.log == ["7:start stop", "7:withdrawn stop", "7:start stop+do X instead"]
        assert h.runtimes.statistics().turns_interrupted == 0


async def test_two_messages_on_a_busy_thread_interrupt_once_and_arrive_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.runtimes.submit(7, prompt("long job"))
        await h.until_started("long job")
        h.runtimes.submit(7, prompt("stop"))
        h.runtimes.submit(7, prompt("do X instead"))
        await h.until_started("stop+do X instead")
        assert h.engine == ["long job", "stop+do X instead"]
        assert h.log == [
            "7:start long job",
            "7:interrupted long job",
            "7:start stop+do X instead",
        ]


async def test_messages_during_an_abort_join_the_prompt_that_interrupted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.runtimes.submit(7, prompt("long job"))
        await h.until_started("long job")
        h.runtimes.submit(7, prompt("stop"))
        await trio.sleep(0.5)  # the engine is being told to abort (it takes 1 s here)
        assert h.log == ["7:start long job"]
        h.runtimes.submit(7, prompt("then X"))
        h.runtimes.submit(7, prompt("and Y"))
        await h.until_started("stop+then X+and Y")
        assert h.engine == ["long job", "stop+then X+and Y"]


async def test_a_prompt_the_engine_took_is_interrupted_not_joined(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.hold("stop")
        h.runtimes.submit(7, prompt("stop"))
        await h.until_started("stop")
        # The engine takes it, and in the same instant the next message arrives: the runtime
        # sees the send completed and aborts it rather than sending it twice.
        h.let_through("stop")
        h.runtimes.submit(7, prompt("do X instead"))
        await h.until_started("do X instead")
        assert h.engine == ["stop", "do X instead"]
        assert "7:interrupted stop" in h.log


async def test_an_interrupt_racing_a_queued_prompt_joins_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.runtimes.submit(7, prompt("a"))
        assert h.runtimes.submit(7, prompt("q", queued=True)) == 1
        await h.until_started("a")
        h.hold("q")
        h.release("a")
        await h.until_started("q")  # its turn has begun; the engine does not have it yet
        h.runtimes.submit(7, prompt("now"))
        await h.until_started("q+now")
        # The queued message is not lost to the interruption: it goes first, with "now".
        assert h.engine == ["a", "q+now"]
        assert not any("interrupted" in line for line in h.log)


async def test_queued_prompts_stay_behind_the_interrupting_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.runtimes.submit(7, prompt("a"))
        await h.until_started("a")
        h.runtimes.submit(7, prompt("b"))
        assert h.runtimes.submit(7, prompt("q1", queued=True)) == 2
        h.runtimes.submit(7, prompt("c"))
        assert h.runtimes.submit(7, prompt("q2", queued=True)) == 3
        await h.until_started("b+c")
        h.release("b+c")
        h.release("q1")
        await h.until_started("q2")
        assert h.engine == ["a", "b+c", "q1", "q2"]


async def test_abort_drops_a_prompt_not_yet_sent_instead_of_joining_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.hold("a")
        h.runtimes.submit(7, prompt("a"))
        await h.until_started("a")
        runtime = h.runtimes.get(7)
        assert runtime is not None
        assert runtime.interrupt()  # /abort
        h.runtimes.submit(7, prompt("b"))
        await h.until_started("b")
        assert h.engine == ["b"]
        assert h.log == ["7:start a", "7:interrupted a", "7:start b"]


async def test_a_followed_turn_is_interrupted_never_joined(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        resumed = attrs.evolve(prompt("followed"), source="resume", resume_turn_id="turn-1")
        h.hold("followed")  # the agent server is not back yet after the restart
        h.runtimes.submit(7, resumed)
        await h.until_started("followed")
        h.runtimes.submit(7, prompt("new"))
        await h.until_started("new")
        assert h.log == ["7:start followed", "7:interrupted followed", "7:start new"]


async def test_a_handed_over_interrupting_prompt_interrupts_the_followed_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        # What an in-place restart restores: the turn that was running, then the message that
        # was interrupting it, then the queue; then a message replayed after the RESUME.
        resumed = attrs.evolve(prompt("followed"), source="resume", resume_turn_id="turn-1")
        h.runtimes.submit(7, resumed)
        h.runtimes.submit(7, prompt("b"))
        h.runtimes.submit(7, prompt("q", queued=True))
        h.runtimes.submit(7, prompt("replayed"))
        await h.until_started("b+replayed")
        h.release("b+replayed")
        await h.until_started("q")
        assert h.engine == ["followed", "b+replayed", "q"]
        assert "7:interrupted followed" in h.log


async def test_a_joined_prompt_keeps_every_part_through_the_store_format() -> None:
    first = Prompt(
        text="stop",
        author_id=1,
        author_name="ana",
        message_id=101,
        attachments=(AttachmentInfo(1, "a.png", "https://cdn/a.png", 10, "image/png"),),
        thread_id=9,
    )
    second = Prompt(
        text="do X",
        author_id=2,
        author_name="bob",
        message_id=102,
        reply_to=QuotedMessage("ana", "stop", 101),
        attachments=(AttachmentInfo(2, "b.txt", "https://cdn/b.txt", 5, "text/plain"),),
        thread_id=9,
    )
    third = attrs.evolve(second, text="and Y", message_id=103, reply_to=None, attachments=())
    joined = first.joined(second).joined(third)
    assert [(p.author_name, p.message_id, p.text) for p in joined.parts] == [
        ("ana", 101, "stop"),
        ("bob", 102, "do X"),
        ("bob", 103, "and Y"),
    ]
    assert joined.message_ids == (101, 102, 103)
    restored = Prompt.from_json(json.loads(json.dumps(joined.to_json())))
    assert restored == joined
    assert [p.attachments for p in restored.parts] == [
        first.attachments,
        second.attachments,
        (),
    ]
    with pytest.raises(ValueError, match="resumed"):
        first.joined(attrs.evolve(second, resume_turn_id="turn-1"))


def test_a_prompts_place_is_the_newest_and_is_not_stored() -> None:
    """A joined prompt goes where its newest message was routed (the freshest records); a
    queue handed to the next process leaves the place out, to be read again there."""
    project = ChannelRecord(channel_id=1, directory=Path("/p"), guild_id=2, app_id=3)
    thread = ThreadRecord(thread_id=9, session_id="s", engine="fake", directory=Path("/p"))
    older = Place(project, thread)
    newer = Place(attrs.evolve(project, verbosity="text"), thread)
    first = attrs.evolve(prompt("a"), place=older)
    second = attrs.evolve(prompt("b"), place=newer)
    assert first.joined(second).place is newer
    assert first.joined(prompt("c")).place is older
    assert "place" not in first.to_json()
    assert Prompt.from_json(first.to_json()).place is None
    assert Prompt.from_json(first.to_json()) == first  # the place is not part of equality


@attrs.define
class ScriptedEngine:
    """A handler whose engine takes a prompt, and ends a turn, only when the script says so."""

    received: list[tuple[str, ...]] = attrs.Factory(list)
    takes: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    ends: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    free: bool = False
    turn_started: bool = False
    prompt_taken: bool = False

    def stopping(self, notice: str) -> None:
        pass

    async def run_turn(self, p: Prompt, reached: Callable[[], None]) -> None:
        if not self.free:
            await self.takes.park()
        self.received.append(tuple(part.text for part in p.parts))
        reached()
        if not self.free:
            await self.ends.park()

    async def interrupted(self, p: Prompt) -> None:
        await trio.sleep(1)

    async def withdrawn(self, p: Prompt) -> None:
        await trio.sleep(1)

    async def evicted(self) -> None:
        await trio.lowlevel.checkpoint()

    def run_freely(self) -> None:
        self.free = True
        self.takes.unpark_all()
        self.ends.unpark_all()


_steps = st.lists(
    st.sampled_from(["message", "queued", "take", "end", "settle", "wait"]), max_size=30
)


@settings(max_examples=300, deadline=None)
@given(_steps)
def test_any_interleaving_of_arrivals_is_served_in_arrival_order(steps: list[str]) -> None:
    engine = ScriptedEngine()
    arrivals: list[tuple[str, bool]] = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            runtimes = ThreadRuntimes(nursery, lambda _: engine, idle_timeout=IDLE)
            for step in steps:
                if step in ("message", "queued"):
                    text = f"m{len(arrivals)}"
                    arrivals.append((text, step == "queued"))
                    runtimes.submit(7, prompt(text, queued=step == "queued"))
                elif step == "take":
                    engine.takes.unpark()
                elif step == "end":
                    engine.ends.unpark()
                elif step == "settle":
                    await trio.testing.wait_all_tasks_blocked()
                else:
                    await trio.sleep(0.5)  # halfway through an abort
            engine.run_freely()
            await trio.sleep(10)
            assert runtimes.statistics().running_turns == 0
            assert runtimes.statistics().queued_prompts == 0
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    served = [text for received in engine.received for text in received]
    # Every message reaches the engine exactly once.
    assert sorted(served) == sorted(text for text, _ in arrivals)
    position = {text: index for index, text in enumerate(served)}
    for later, (text, queued) in enumerate(arrivals):
        for earlier_text, earlier_queued in arrivals[:later]:
            if queued or earlier_queued == queued:
                # Messages of a kind keep their order, and a queued message waits behind
                # everything that arrived before it; only an interrupting message goes ahead
                # of queued ones that were waiting.
                assert position[earlier_text] < position[text], (served, arrivals)
