"""The task runner on trio's autojump clock, over the real store: tasks fire at their time,
repeat by cron across a DST change, pause and resume, never overlap, stop at the time limit,
catch up after downtime (once, within the grace; skipped with a notice past it), and a
restart neither loses nor doubles a run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing
from schedules_harness import CHANNEL, THREAD, harness

from kimaki.schedules import NewTask, ScheduleError, Schedules
from kimaki.store import ScheduledTask, TaskRun
from kimaki.store._database import Database

PARIS = ZoneInfo("Europe/Paris")
BASE = datetime(2030, 1, 7, 8, 0, tzinfo=UTC).timestamp()  # a Monday, 08:00 UTC
GUARD = 30 * 86400.0  # a hang would fail here, not hang the suite


def new(when: str, prompt: str = "check CI", **kwargs: object) -> NewTask:
    fields: dict[str, object] = {
        "channel_id": CHANNEL,
        "prompt": prompt,
        "when": when,
        "created_by": 7,
        "created_by_name": "Ada",
    }
    fields.update(kwargs)
    return NewTask(**fields)  # type: ignore[arg-type]


async def settle() -> None:
    """Until the runner has recorded what it was just told (every task waits again)."""
    await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def running(door: Schedules) -> AsyncIterator[None]:
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(door.run)
            yield
            nursery.cancel_scope.cancel()


async def test_one_shot_and_relative_fire_at_their_time(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    async with running(door):
        later = await door.add(new("2h30m", "relative"))
        at = await door.add(new("2030-01-07T09:00:00+00:00", "absolute"))
        assert [t.name for t in await door.tasks()] == ["absolute", "relative"]
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)
        assert at.task_id is not None
        assert [r.status for r in await door.runs(at.task_id)] == ["running"]
        h.target.prompts[0].finish()
        await h.target.wait_for(lambda: len(h.target.prompts) == 2)
        h.target.prompts[1].finish()
    first, second = h.target.prompts
    assert (first.text, first.at) == ("absolute", BASE + 3600)
    assert (second.text, second.at) == ("relative", BASE + 9000)
    assert first.task.created_by_name == "Ada"
    # A one-off is done once it ran: no longer listed, kept with its history.
    assert await door.tasks() == []
    assert later.task_id is not None
    kept = await door.task(at.task_id)
    assert kept is not None
    assert kept.enabled is False
    assert [r.status for r in await door.runs(at.task_id)] == ["answered"]


async def test_run_history_records_how_a_turn_ended(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    async with running(door):
        task = await door.add(new("10m"))
        assert task.task_id is not None
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)
        h.target.prompts[0].finish("failed")
        await h.sleep_until(BASE + 3600)
        runs = await door.runs(task.task_id)
    assert len(runs) == 1
    assert runs[0].status == "failed"
    assert runs[0].started_at == BASE + 600
    assert runs[0].ended_at == BASE + 600
    assert runs[0].thread_id == h.target.prompts[0].thread_id
    stored = await door.task(task.task_id)
    assert stored is not None
    assert (stored.last_status, stored.last_run_at) == ("failed", BASE + 600)


async def test_cron_across_a_dst_change(store_db: Database, autojump_clock: trio.abc.Clock) -> None:
    # Friday 2030-03-29 12:00 in Paris; summer time starts on Sunday the 31st at 02:00.
    base = datetime(2030, 3, 29, 12, 0, tzinfo=PARIS).timestamp()
    h = harness(store_db, base, tz=PARIS)
    door = h.make()
    async with running(door):
        task = await door.add(new("0 9 * * *", "daily"))
        assert task.schedule == "0 9 * * *"
        await h.target.wait_for(lambda: len(h.target.prompts) == 3)
        for call in h.target.prompts:
            call.finish()
    fired = [datetime.fromtimestamp(c.at, PARIS) for c in h.target.prompts]
    assert [f.strftime("%d %H:%M %Z") for f in fired] == [
        "30 09:00 CET",
        "31 09:00 CEST",
        "01 09:00 CEST",
    ]
    assert h.target.prompts[1].at - h.target.prompts[0].at == 23 * 3600
    assert all(c.thread_id != h.target.prompts[0].thread_id for c in h.target.prompts[1:])


async def test_pause_and_resume(store_db: Database, autojump_clock: trio.abc.Clock) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    async with running(door):
        task = await door.add(new("0 * * * *", "hourly"))  # first at 09:00
        assert task.task_id is not None
        paused = await door.pause(task.task_id)
        assert paused.paused
        await h.sleep_until(BASE + 3 * 3600 + 60)  # 11:01: 09:00, 10:00, 11:00 passed
        assert h.target.prompts == []
        assert [t.paused for t in await door.tasks()] == [True]  # still listed, to resume
        resumed = await door.resume(task.task_id)
        assert resumed.next_run_at == BASE + 4 * 3600  # 12:00, not a burst of missed runs
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)
        h.target.prompts[0].finish()
    assert h.target.prompts[0].at == BASE + 4 * 3600
    with pytest.raises(ScheduleError, match="there is no task 999"):
        await door.pause(999)


async def test_runs_never_overlap(store_db: Database, autojump_clock: trio.abc.Clock) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make(run_time_limit=3 * 3600)
    async with running(door):
        task = await door.add(new("0 * * * *", "hourly"))
        assert task.task_id is not None
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)  # 09:00, still going
        with pytest.raises(ScheduleError, match="running already"):
            await door.run_now(task.task_id)
        await h.sleep_until(BASE + 2 * 3600 + 60)  # 10:00 came while it ran
        assert len(h.target.prompts) == 1
        h.target.prompts[0].finish()
        await h.target.wait_for(lambda: len(h.target.prompts) == 2)  # 11:00
        h.target.prompts[1].finish()
        await settle()
        runs = await door.runs(task.task_id)
    assert h.target.prompts[1].at == BASE + 3 * 3600
    assert [(r.status, r.error) for r in reversed(runs)] == [
        ("answered", None),
        ("skipped", "the previous run was still going"),
        ("answered", None),
    ]


async def test_time_limit_aborts_the_turn_with_a_line(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make(run_time_limit=30 * 60.0)
    async with running(door):
        task = await door.add(new("10m", "long job", name="nightly build"))
        assert task.task_id is not None
        await h.target.wait_for(lambda: len(h.target.interrupts) == 1)
        stopped_at = h.now()
        await settle()
        runs = await door.runs(task.task_id)
    thread_id, notice = h.target.interrupts[0]
    assert thread_id == h.target.prompts[0].thread_id
    assert notice == "⏰ Stopped **nightly build**: the run passed its time limit (30 min)."
    assert stopped_at == BASE + 600 + 1800
    assert (runs[0].status, runs[0].error) == ("timed out", "over the 30 min limit")


async def test_run_now_runs_once_outside_the_schedule(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    with pytest.raises(ScheduleError, match="needs the running daemon"):
        await door.run_now(1)
    async with running(door):
        task = await door.add(new("0 9 * * *", "daily"))
        assert task.task_id is not None
        await door.run_now(task.task_id)
        assert [c.at for c in h.target.prompts] == [BASE]
        h.target.prompts[0].finish()
        with pytest.raises(ScheduleError, match="there is no task 12345"):
            await door.run_now(12345)
    stored = await door.task(task.task_id)
    assert stored is not None
    assert stored.next_run_at == task.next_run_at  # its schedule unchanged


async def test_a_task_deleted_while_due_does_not_run(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    task = await door.add(new("1h"))
    other = await door.add(new("2h", "the other"))
    assert task.task_id is not None
    # Due at start: deleted between the runner reading it and claiming it.
    await h.sleep_until(BASE + 3 * 3600)
    due = await h.tasks.due_scheduled_tasks(h.now())
    assert [t.task_id for t in due] == [task.task_id, other.task_id]
    assert await door.delete(task.task_id)
    claimed = await h.tasks.claim_due_run(
        TaskRun(task.task_id, started_at=h.now(), status="running"),
        due_at=task.next_run_at,
        next_run_at=None,
    )
    assert claimed is None
    async with running(door):
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)
        h.target.prompts[0].finish()
    assert [c.text for c in h.target.prompts] == ["the other"]
    assert not await door.delete(task.task_id)


async def test_a_task_deleted_before_its_time_wakes_nothing(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    async with running(door):
        task = await door.add(new("1h"))
        later = await door.add(new("3h", "later"))
        assert task.task_id is not None
        assert later.task_id is not None
        await h.sleep_until(BASE + 1800)
        assert await door.delete(task.task_id)
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)
        h.target.prompts[0].finish()
    assert [(c.text, c.at) for c in h.target.prompts] == [("later", BASE + 3 * 3600)]


async def test_catch_up_within_the_grace_runs_once_late_saying_so(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    # Stored while the daemon was down (the command line): an hourly task and a one-off.
    offline = h.make()
    hourly = await offline.add(new("*/10 * * * *", "every ten minutes", name="poll"))
    once = await offline.add(new("5m", "once", name="one-off"))
    assert hourly.task_id is not None
    assert once.task_id is not None
    await h.sleep_until(BASE + 1500)  # 08:25: missed 08:10 and 08:20, and the one-off
    door = h.make(grace=3600.0)
    async with running(door):
        await h.target.wait_for(lambda: len(h.target.prompts) == 2)
        for call in h.target.prompts:
            call.finish()
        notices = [p.content for p in h.target.posts]
        await h.target.wait_for(lambda: len(h.target.prompts) == 3)  # 08:30, on time
        h.target.prompts[2].finish()
        await settle()
    assert sorted(c.text for c in h.target.prompts[:2]) == ["every ten minutes", "once"]
    assert all(c.at == BASE + 1500 for c in h.target.prompts[:2])
    assert h.target.prompts[2].at == BASE + 1800
    assert sorted(notices) == [
        f"⏰ **one-off** was due <t:{int(BASE + 300)}:f>; running it 20 min late "
        "(kimaki was not running then).",
        f"⏰ **poll** was due <t:{int(BASE + 1200)}:f>; running it 5 min late "
        "(kimaki was not running then).",
    ]
    runs = await door.runs(hourly.task_id)
    assert [(r.late_by, r.status) for r in runs] == [(0.0, "answered"), (300.0, "answered")]


async def test_catch_up_past_the_grace_is_skipped_with_a_notice(
    store_db: Database, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    offline = h.make()
    daily = await offline.add(new("0 9 * * *", "daily", name="standup"))
    assert daily.task_id is not None
    await h.sleep_until(BASE + 3 * 3600)  # 11:00: 09:00 was missed by 2 h
    door = h.make(grace=3600.0)
    async with running(door):
        await h.target.wait_for(lambda: len(h.target.posts) == 1)
        stored = await door.task(daily.task_id)
    assert h.target.prompts == []
    post = h.target.posts[0]
    assert post.channel_id == CHANNEL
    tomorrow = BASE + 25 * 3600
    assert post.content == (
        f"⏰ **standup** was due <t:{int(BASE + 3600)}:f> but kimaki was not running; "
        f"skipped it (missed by 2 h, more than the 1 h grace period). "
        f"Next run: <t:{int(tomorrow)}:f>."
    )
    assert stored is not None
    assert stored.next_run_at == tomorrow
    runs = await door.runs(daily.task_id)
    assert [(r.status, r.error) for r in runs] == [("skipped", "missed by 2 h (grace 1 h)")]
    assert "skipped: missed by 2 h" in caplog.text


async def test_restart_neither_loses_nor_doubles_a_run(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    first = h.make()
    async with running(first):
        going = await first.add(new("10m", "going at the restart"))
        assert going.task_id is not None
        due_during = await first.add(new("1h", "due during the restart"))
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)
    # The old process is gone (its run's turn was handed over); the new one starts 10 s late.
    await h.sleep_until(BASE + 3610)
    second = h.make()
    async with running(second):
        await h.target.wait_for(lambda: len(h.target.prompts) == 2)
        await h.sleep_until(BASE + 86400)
    assert [c.text for c in h.target.prompts] == ["going at the restart", "due during the restart"]
    assert h.target.prompts[1].at == BASE + 3610
    assert due_during.task_id is not None
    assert [r.status for r in await second.runs(going.task_id)] == ["restarted"]
    assert h.target.posts == []  # 10 s late says nothing


async def test_reminders_post_with_their_mention(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    async with running(door):
        task = await door.add(
            new("15m", "stand up and stretch", kind="remind", thread_id=THREAD, mention_user_id=9)
        )
        assert task.task_id is not None
        await h.target.wait_for(lambda: len(h.target.posts) == 1)
        await settle()
    post = h.target.posts[0]
    assert (post.channel_id, post.content, post.mention_user_id, post.at) == (
        THREAD,
        "🔔 <@9> stand up and stretch",
        9,
        BASE + 900,
    )
    assert h.target.prompts == []
    assert [r.status for r in await door.runs(task.task_id)] == ["posted"]


async def test_reuse_thread_sends_later_runs_to_the_first_runs_thread(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    async with running(door):
        await door.add(new("0 * * * *", "hourly", reuse_thread=True))
        await door.add(new("0 * * * *", "fresh each time"))
        await h.target.wait_for(lambda: len(h.target.prompts) == 4)
        for call in h.target.prompts:
            call.finish()
    reused = [c.thread_id for c in h.target.prompts if c.text == "hourly"]
    fresh = [c.thread_id for c in h.target.prompts if c.text == "fresh each time"]
    assert reused[0] == reused[1]
    assert fresh[0] != fresh[1]


async def test_a_run_that_cannot_start_is_recorded_and_the_runner_goes_on(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    h.target.fail_next = RuntimeError("Discord said no")
    async with running(door):
        broken = await door.add(new("10m", "first"))
        await door.add(new("20m", "second"))
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)
        h.target.prompts[0].finish()
    assert h.target.prompts[0].text == "second"
    assert broken.task_id is not None
    runs = await door.runs(broken.task_id)
    assert [(r.status, r.error) for r in runs] == [("failed", "Discord said no")]


async def test_sleep_wakes_once_and_a_message_cancels_it(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    async with running(door):
        kept = await door.sleep(
            thread_id=THREAD,
            channel_id=CHANNEL,
            until="2030-01-07T09:00Z",
            reason="waiting for CI",
            created_by_name="the agent",
        )
        other_thread = THREAD + 1
        cancelled = await door.sleep(
            thread_id=other_thread,
            channel_id=CHANNEL,
            until="30m",
            reason="nothing",
            created_by_name="the agent",
        )
        door.message_arrived(other_thread)
        await h.target.wait_for(lambda: len(h.target.prompts) == 1)
        h.target.prompts[0].finish()
        await h.sleep_until(BASE + 86400)
        gone = await door.task(cancelled.task_id or 0)
    (woken,) = h.target.prompts
    assert woken.thread_id == THREAD
    assert woken.at == BASE + 3600
    assert woken.text == "woke after sleeping until 2030-01-07 09:00 UTC, reason: waiting for CI"
    assert kept.kind == "wake"
    assert gone is not None
    assert (gone.enabled, gone.last_status) == (False, "cancelled")
    with pytest.raises(ScheduleError, match="repeats"):
        await door.sleep(
            thread_id=THREAD, channel_id=CHANNEL, until="0 9 * * *", reason="", created_by_name=""
        )


async def test_bad_input_is_refused_and_nothing_stored(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    refusals = {
        "channel 42 is not a project channel": new("10m", channel_id=42),
        "is in the past": new("2029-01-01T00:00Z"),
        "the minute field": new("99 * * * *"),
        "unknown timezone 'Nowhere/Land'": new("0 9 * * *", tz="Nowhere/Land"),
        "the prompt is empty": new("10m", "   "),
        "the reminder's text is empty": new("10m", "", kind="remind"),
    }
    for says, task in refusals.items():
        with pytest.raises(ScheduleError, match=says):
            await door.add(task)
    assert await h.tasks.list_scheduled_tasks() == []


async def test_the_command_line_door_stores_without_a_daemon(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = Schedules(store=h.tasks, target=None, clock=h.now, local_tz=PARIS)
    task = await door.add(new("0 9 * * 1-5", "weekday mornings", tz="Europe/Paris"))
    assert task.tz == "Europe/Paris"
    assert datetime.fromtimestamp(task.next_run_at, PARIS) == datetime(
        2030, 1, 8, 9, 0, tzinfo=PARIS
    )
    assert task.task_id is not None
    assert [t.task_id for t in await door.tasks(channel_id=CHANNEL)] == [task.task_id]
    assert await door.tasks(channel_id=CHANNEL + 5) == []
    with pytest.raises(ScheduleError, match="needs the running daemon"):
        await door.send_now(new(""))
    with pytest.raises(ScheduleError, match="needs the running daemon"):
        await door.run_now(task.task_id)
    assert await door.delete(task.task_id)


async def test_send_now_queues_at_once_and_stores_nothing(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door = h.make()
    started = await door.send_now(new("", "deploy it\nthen report", created_by_name="cli (ada)"))
    (call,) = h.target.prompts
    assert call.text == "deploy it\nthen report"
    assert (call.task.name, call.task.created_by_name) == ("deploy it", "cli (ada)")
    assert started.thread_id == call.thread_id
    call.finish(answer="deployed")
    result = await started.done
    assert result.answer == "deployed"
    assert await h.tasks.list_scheduled_tasks() == []


async def test_a_message_while_the_sleep_is_stored_ends_it(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    door: Schedules | None = None

    class MessageDuringTheWrite:
        """The store, with a person's message arriving while the sleep is written."""

        def __getattr__(self, name: str) -> object:
            return getattr(h.tasks, name)

        async def add_scheduled_task(self, task: ScheduledTask) -> ScheduledTask:
            assert door is not None
            door.message_arrived(THREAD)
            return await h.tasks.add_scheduled_task(task)

    door = Schedules(store=MessageDuringTheWrite(), target=h.target, clock=h.now)  # type: ignore[arg-type]
    async with running(door):
        task = await door.sleep(
            thread_id=THREAD, channel_id=CHANNEL, until="1h", reason="r", created_by_name="agent"
        )
        assert (task.enabled, task.last_status) == (False, "cancelled")
        await h.sleep_until(BASE + 2 * 3600)
    assert h.target.prompts == []


async def test_a_sleep_from_before_a_restart_still_ends_on_a_message(
    store_db: Database, autojump_clock: trio.abc.Clock
) -> None:
    h = harness(store_db, BASE, tz=UTC)
    first = h.make()
    async with running(first):
        await first.sleep(
            thread_id=THREAD, channel_id=CHANNEL, until="1h", reason="r", created_by_name="agent"
        )
    second = h.make()
    async with running(second):
        second.message_arrived(THREAD)
        await h.sleep_until(BASE + 2 * 3600)
    assert h.target.prompts == []
    assert await second.tasks() == []
