"""The bot's side of scheduling: a run's prompt through the thread pipeline (`ThreadRunTarget`),
how its turn ended (`Prompt.on_done`), reminders, wakes, and a person's message in a thread
ending that thread's sleeps (the router's `ThreadArrivals`).

The scheduler's runner (kimaki.schedules) is not used here: these tests call the target as the
runner does when a task is due, so they hold whatever the runner's state is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from kimaki.agents import ModelRef
from kimaki.bot._schedule_target import ThreadRunTarget
from kimaki.schedules import RunResult, ScheduleError, StartedRun
from kimaki.store import ScheduledTask
from kimaki.testing.bot import BotHarness, bot_paragraphs, said
from kimaki.testing.engine import FakeEngine, hold_long_jobs
from kimaki.testing.script import Fail, Hold, Say, Tool, TurnScript
from kimaki.threads import INTERRUPTED, Prompt, PromptDone, PromptOutcome, ThreadRuntimes

TIME_LIMIT = "⏱ This scheduled run took longer than its 30 min limit: stopped."


def target_of(harness: BotHarness) -> ThreadRunTarget:
    threads = harness.bot.threads
    return ThreadRunTarget(
        threads=threads,
        places=harness.store.places,
        rest=harness.rest,
        worktrees_dir=harness.project_dir.parent / "worktrees",
    )


def task(harness: BotHarness, prompt: str, **fields: Any) -> ScheduledTask:
    values: dict[str, Any] = {
        "channel_id": harness.project.channel_id,
        "prompt": prompt,
        "next_run_at": 0.0,
        "created_by": int(harness.alice.id),
        "created_by_name": "alice",
        "task_id": 7,
        "name": "ci check",
    }
    values.update(fields)
    return ScheduledTask(**values)


async def result_of(run: StartedRun) -> RunResult:
    with trio.fail_after(10):
        return await run.done


async def open_thread(harness: BotHarness, text: str) -> str:
    message = harness.alice.send_message(harness.channel_id, text)
    return await harness.thread_of(message)


async def test_a_due_task_opens_its_thread_and_prompts_the_agent(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    target = target_of(harness)
    run = await target.start_prompt(task(harness, "check CI"), "check CI")
    thread = await harness.emulator.wait_for_thread(harness.channel_id)
    assert thread["name"] == "⏰ ci check"
    assert int(thread["id"]) == run.thread_id
    result = await result_of(run)
    assert result == RunResult("answered", answer="echo: check CI")
    assert await run.done == result  # awaited again: the same result
    assert target.live_runs == 0  # an ended run is not kept
    lines = bot_paragraphs(harness.emulator, thread["id"])
    # Who sent it comes first, then the agent's answer.
    assert lines[0] == "⏰ Scheduled task #7 “ci check”, by alice:\ncheck CI"
    assert lines.index("echo: check CI") > 0
    [prompt] = fake_engine.prompts
    assert prompt.first_line == "check CI"
    assert (
        f"From alice (scheduled task #7) (Discord user id {harness.alice.id}, "
        f"thread id {thread['id']})" in prompt.text
    )
    record = await harness.store.places.get_thread(run.thread_id)
    assert record is not None
    assert record.channel_id == harness.project.channel_id


async def test_a_send_from_the_command_line_is_named_by_its_first_line(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    sent = task(
        harness,
        "summarise the logs",
        task_id=None,
        name="",
        created_by=0,
        created_by_name="command line (bob)",
    )
    run = await target_of(harness).start_prompt(sent, "summarise the logs\nplease")
    thread = await harness.emulator.wait_for_thread(harness.channel_id)
    assert thread["name"] == "summarise the logs"
    assert (await result_of(run)).status == "answered"
    lines = bot_paragraphs(harness.emulator, thread["id"])
    assert lines[0] == "💬 Sent by command line (bob):\nsummarise the logs\nplease"
    # No Discord user behind it: the agent is not handed a user id of 0.
    assert "<discord>From command line (bob) (thread id" in fake_engine.prompts[0].text
    assert "user id 0" not in fake_engine.prompts[0].text


async def test_a_run_queues_behind_a_running_turn_instead_of_interrupting_it(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    release = hold_long_jobs(fake_engine)
    thread_id = await open_thread(harness, "long job")
    await harness.emulator.wait_for_message(thread_id, said("working"))
    run = await target_of(harness).start_prompt(
        task(harness, "nightly check", thread_id=int(thread_id)), "nightly check"
    )
    assert run.thread_id == int(thread_id)
    await harness.emulator.wait_for_message(
        thread_id, said("📋 Queued at position 1 (after 1 turn).")
    )
    assert fake_engine.aborts == 0
    assert [p.first_line for p in fake_engine.prompts] == ["long job"]
    release.set()
    assert await result_of(run) == RunResult("answered", answer="echo: nightly check")
    assert [p.first_line for p in fake_engine.prompts] == ["long job", "nightly check"]
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert lines.index("echo: long job") < lines.index("echo: nightly check")


async def test_the_time_limit_aborts_the_run_with_a_line(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.add_turns(TurnScript(Say("starting the audit"), Hold()))
    target = target_of(harness)
    run = await target.start_prompt(task(harness, "audit"), "audit")
    thread_id = str(run.thread_id)
    await harness.emulator.wait_for_message(thread_id, said("starting the audit"))
    await target.interrupt(run.thread_id, TIME_LIMIT)
    result = await result_of(run)
    assert result.status == "timed out"
    assert fake_engine.aborts == 1
    await harness.emulator.wait_for_message(thread_id, said(TIME_LIMIT))
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert INTERRUPTED not in lines
    assert lines.index("starting the audit") < lines.index(TIME_LIMIT)
    # The notice was for that turn only: a person's next message is interrupted as usual.
    fake_engine.add_turns(TurnScript(Say("on it"), Hold()))
    harness.alice.send_message(thread_id, "one more thing")
    await harness.emulator.wait_for_message(thread_id, said("on it"))
    harness.alice.send_message(thread_id, "never mind")
    await harness.emulator.wait_for_message(thread_id, said("echo: never mind"))
    assert bot_paragraphs(harness.emulator, thread_id).count(INTERRUPTED) == 1


async def test_a_run_still_queued_at_its_time_limit_leaves_the_persons_turn_alone(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    release = hold_long_jobs(fake_engine)
    thread_id = await open_thread(harness, "long job")
    await harness.emulator.wait_for_message(thread_id, said("working"))
    target = target_of(harness)
    run = await target.start_prompt(task(harness, "lint", thread_id=int(thread_id)), "lint")
    await target.interrupt(int(thread_id), TIME_LIMIT)
    assert (await result_of(run)).status == "timed out"
    await harness.emulator.wait_for_message(thread_id, said(TIME_LIMIT))
    assert fake_engine.aborts == 0
    assert harness.bot.threads.queued(int(thread_id)) == ()
    release.set()
    await harness.emulator.wait_for_message(thread_id, said("echo: long job"))
    assert [p.first_line for p in fake_engine.prompts] == ["long job"]


async def test_interrupt_without_a_run_of_its_own_touches_nothing(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    release = hold_long_jobs(fake_engine)
    thread_id = await open_thread(harness, "long job")
    await harness.emulator.wait_for_message(thread_id, said("working"))
    await target_of(harness).interrupt(int(thread_id), TIME_LIMIT)
    release.set()
    await harness.emulator.wait_for_message(thread_id, said("echo: long job"))
    assert fake_engine.aborts == 0
    assert TIME_LIMIT not in bot_paragraphs(harness.emulator, thread_id)


async def test_a_reminder_is_posted_with_its_mention_and_pings_only_that_person(
    harness: BotHarness,
) -> None:
    target = target_of(harness)
    alice = harness.alice.id
    await target.post(
        harness.project.channel_id, "🔔 water the plants <@999>", mention_user_id=int(alice)
    )
    message = await harness.emulator.wait_for_message(harness.channel_id)
    assert message["content"] == f"🔔 <@{alice}> water the plants <@999>"
    assert harness.emulator.state.notified[message["id"]]["users"] == [alice]
    await target.post(harness.project.channel_id, "⚠️ a run was missed", mention_user_id=None)
    notice = await harness.emulator.wait_for_message(harness.channel_id, after=message)
    assert notice["content"] == "⚠️ a run was missed"
    with pytest.raises(ScheduleError, match="could not post in channel 424242"):
        await target.post(424242, "🔔 nobody hears this", mention_user_id=None)


async def test_a_wake_prompts_the_sleeping_session_in_its_thread(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    thread_id = await open_thread(harness, "wait for the deploy")
    await harness.emulator.wait_for_message(thread_id, said("echo: wait for the deploy"))
    text = "woke after sleeping until 10:30, reason: the deploy takes a while"
    wake = task(
        harness,
        text,
        kind="wake",
        thread_id=int(thread_id),
        task_id=9,
        name="",
        created_by=0,
        created_by_name="the agent",
    )
    run = await target_of(harness).start_prompt(wake, text)
    assert await result_of(run) == RunResult("answered", answer=f"echo: {text}")
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert f"⏰ {text}" in lines
    assert lines.index(f"⏰ {text}") < lines.index(f"echo: {text}")
    first, second = fake_engine.prompts
    assert second.session_id == first.session_id  # the same conversation, woken


async def test_a_person_writing_in_a_thread_ends_its_sleeps(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    schedules = harness.bot.schedules  # the scheduler compose_bot wired to the router
    thread_id = await open_thread(harness, "start")
    await harness.emulator.wait_for_message(thread_id, said("echo: start"))

    async def sleeping() -> list[int]:
        tasks = await schedules.tasks(channel_id=harness.project.channel_id)
        return [t.thread_id or 0 for t in tasks if t.kind == "wake"]

    await schedules.sleep(
        thread_id=int(thread_id),
        channel_id=harness.project.channel_id,
        until="1h",
        reason="waiting for CI",
        created_by_name="the agent",
    )
    assert await sleeping() == [int(thread_id)]
    # The bot's own lines, and people who may not drive it, end nothing. (Routed in gateway
    # order: once the thread opened after them has its answer, they were routed.)
    await harness.rest.create_message(int(thread_id), "a line of the bot")
    harness.stranger().send_message(thread_id, "hello?")
    other = await open_thread(harness, "elsewhere")
    await harness.emulator.wait_for_message(other, said("echo: elsewhere"))
    assert await sleeping() == [int(thread_id)]
    harness.alice.send_message(thread_id, "any news?")
    await harness.emulator.wait_for_message(thread_id, said("echo: any news?"))
    assert await sleeping() == []


async def test_the_run_result_carries_the_agents_final_answer(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.add_turns(
        TurnScript(
            Say("looking at the pipeline"),
            Tool("bash", "gh run list"),
            Say("CI is green"),
            Say("3 runs passed"),
        )
    )
    run = await target_of(harness).start_prompt(task(harness, "check CI"), "check CI")
    assert await result_of(run) == RunResult("answered", answer="CI is green\n\n3 runs passed")


async def test_a_failing_turn_fails_the_run_with_its_reason(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.add_turns(TurnScript(Say("trying"), Fail("rate limited by the provider")))
    run = await target_of(harness).start_prompt(task(harness, "check CI"), "check CI")
    result = await result_of(run)
    assert (result.status, result.error) == ("failed", "rate limited by the provider")
    assert result.answer == "trying"


async def test_a_run_dropped_by_clear_queue_or_an_abort_says_so(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    release = hold_long_jobs(fake_engine)
    thread_id = await open_thread(harness, "long job")
    await harness.emulator.wait_for_message(thread_id, said("working"))
    target = target_of(harness)
    queued = await target.start_prompt(task(harness, "a", thread_id=int(thread_id)), "a")
    harness.bot.threads.clear_queue(int(thread_id))
    assert (await result_of(queued)).status == "dropped"
    release.set()
    await harness.emulator.wait_for_message(thread_id, said("echo: long job"))

    fake_engine.add_turns(TurnScript(Say("begun"), Hold()))
    running = await target.start_prompt(task(harness, "b", thread_id=int(thread_id)), "b")
    await harness.emulator.wait_for_message(thread_id, said("begun"))
    assert harness.bot.threads.interrupt(int(thread_id))  # /abort
    assert (await result_of(running)).status == "interrupted"
    await harness.emulator.wait_for_message(thread_id, said(INTERRUPTED))


async def test_the_tasks_persona_and_model_reach_the_engine(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    run = await target_of(harness).start_prompt(
        task(harness, "review", agent="plan", model="fake/model-2"), "review"
    )
    await result_of(run)
    [prompt] = fake_engine.prompts
    assert (prompt.agent, prompt.model) == ("plan", ModelRef.parse("fake/model-2"))


async def test_a_run_with_nowhere_to_go_is_refused_before_anything_is_posted(
    harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    target = target_of(harness)
    with pytest.raises(ScheduleError, match="no longer a project channel"):
        await target.start_prompt(task(harness, "x", channel_id=424242), "x")
    with pytest.raises(ScheduleError, match="no longer a session of this bot"):
        await target.start_prompt(task(harness, "x", thread_id=515151), "x")
    assert harness.emulator.state.messages.get(harness.channel_id, {}) == {}
    assert fake_engine.prompts == []
    # A task whose runs share a thread, when that thread is gone, opens a new one.
    shared = task(harness, "y", thread_id=515151, reuse_thread=True)
    run = await target.start_prompt(shared, "y")
    assert run.thread_id != 515151
    assert (await result_of(run)).status == "answered"


async def test_a_run_with_a_worktree_name_works_in_a_new_worktree(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    project = harness.project_dir
    for args in (
        ("init", "-q", "-b", "main"),
        ("-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "0"),
    ):
        await trio.run_process(["git", *args], cwd=project)
    target = target_of(harness)
    first = await target.start_prompt(task(harness, "a", worktree="nightly"), "a")
    second = await target.start_prompt(task(harness, "b", worktree="nightly"), "b")
    assert (await result_of(first)).status == (await result_of(second)).status == "answered"
    directories = [prompt.directory for prompt in fake_engine.prompts]
    assert directories[0] != project
    assert directories[0].name == "nightly"
    assert directories[1] != directories[0]  # one worktree per run


async def test_a_run_when_the_bot_is_stopping_is_dropped(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    thread_id = await open_thread(harness, "hello")
    await harness.emulator.wait_for_message(thread_id, said("echo: hello"))
    harness.bot.threads.runtimes.close()
    run = await target_of(harness).start_prompt(
        task(harness, "late", thread_id=int(thread_id)), "late"
    )
    assert await result_of(run) == RunResult("dropped", error="the bot is stopping")


async def test_prompts_keep_their_on_done_out_of_the_stored_queue() -> None:
    told: list[PromptOutcome] = []
    prompt = Prompt("a", 1, "alice", source="scheduled", agent="plan", on_done=told.append)
    stored = prompt.to_json()
    assert "on_done" not in stored
    assert Prompt.from_json(stored) == attrs.evolve(prompt, on_done=None)
    # A joined prompt tells each waiting part, once.
    joined = prompt.joined(Prompt("b", 2, "bob", on_done=told.append))
    joined.finish(PromptOutcome("answered", answer="ok"))
    assert told == [PromptOutcome("answered", answer="ok")] * 2


# ---- the runtime's side of `on_done`, with a scripted handler (no Discord)


@attrs.define
class GatedHandler:
    """Takes a prompt once `take` is set (until then newer messages join it), then runs the
    turn until `finish` is set; a prompt saying "bug" raises in its turn."""

    take: trio.Event = attrs.Factory(trio.Event)
    finish: trio.Event = attrs.Factory(trio.Event)
    sent: list[str] = attrs.Factory(list)
    turn_started: bool = False
    prompt_taken: bool = False
    withdrawn_record: bool = False

    def stopping(self, notice: str) -> None: ...

    async def run_turn(self, prompt: Prompt, reached: Callable[[], None]) -> PromptOutcome:
        if "bug" in prompt.text:
            raise RuntimeError("a bug in the turn")
        await self.take.wait()
        self.sent.append("+".join(part.text for part in prompt.parts))
        reached()
        await self.finish.wait()
        return PromptOutcome("answered", answer=f"done: {self.sent[-1]}")

    async def interrupted(self, prompt: Prompt) -> None: ...

    async def withdrawn(self, prompt: Prompt) -> None: ...

    async def evicted(self) -> None: ...


def recorder() -> tuple[list[tuple[str, PromptOutcome]], Callable[[str], PromptDone]]:
    told: list[tuple[str, PromptOutcome]] = []

    def on_done(name: str) -> PromptDone:
        return lambda outcome: told.append((name, outcome))

    return told, on_done


async def test_a_prompt_joined_by_a_newer_message_is_told_once_when_the_joined_turn_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    told, on_done = recorder()
    handler = GatedHandler()
    async with trio.open_nursery() as nursery:
        runtimes = ThreadRuntimes(nursery, lambda _: handler)
        runtimes.submit(1, Prompt("run", 0, "schedule", source="scheduled", on_done=on_done("run")))
        await trio.sleep(1)  # the engine has not taken it yet: the next message joins it
        runtimes.submit(1, Prompt("hi", 2, "alice", message_id=5, on_done=on_done("hi")))
        await trio.sleep(1)
        assert told == []  # withdrawn and served again, joined: not over
        handler.take.set()
        handler.finish.set()
        await trio.sleep(1)
        assert handler.sent == ["run+hi"]
        answered = PromptOutcome("answered", answer="done: run+hi")
        assert told == [("run", answered), ("hi", answered)]
        nursery.cancel_scope.cancel()


async def test_a_bug_fails_the_prompt_and_stopping_ends_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    told, on_done = recorder()
    handler = GatedHandler()
    handler.take.set()
    async with trio.open_nursery() as nursery:
        runtimes = ThreadRuntimes(nursery, lambda _: handler)
        runtimes.submit(1, Prompt("bug", 0, "a", queued=True, on_done=on_done("bug")))
        runtimes.submit(1, Prompt("long", 0, "a", queued=True, on_done=on_done("long")))
        runtimes.submit(1, Prompt("after", 0, "a", queued=True, on_done=on_done("after")))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()  # the daemon goes away without stopping the turns
    assert told == [
        ("bug", PromptOutcome("failed", error="the turn failed (see the daemon's log)")),
        ("long", PromptOutcome("interrupted", error="the bot stopped")),
        ("after", PromptOutcome("dropped", error="the bot stopped")),
    ]


async def test_a_prompt_handed_over_to_the_next_process_is_not_told(
    autojump_clock: trio.testing.MockClock,
) -> None:
    told, on_done = recorder()
    handler = GatedHandler()
    handler.take.set()
    async with trio.open_nursery() as nursery:
        runtimes = ThreadRuntimes(nursery, lambda _: handler)
        runtimes.submit(1, Prompt("long", 0, "a", on_done=on_done("long")))
        runtimes.submit(1, Prompt("next", 0, "a", queued=True, on_done=on_done("next")))
        await trio.sleep(1)
        runtime = runtimes.get(1)
        assert runtime is not None
        running, pending = runtime.suspend()
        await trio.sleep(1)
        assert running is not None
        assert [prompt.text for prompt in pending] == ["next"]
        nursery.cancel_scope.cancel()
    assert told == []
