"""The task runner: one task in the daemon's nursery that sleeps until the next due task.

It sleeps on trio's clock until the store's earliest due time (woken early when a task is
added, paused, resumed, deleted, or a sleep is cancelled), claims each due run in one store
transaction that also moves the task on, and only then starts it: a run is never started twice,
across restarts too. A run that was being watched when the daemon stopped is recorded as
"restarted" by the next process (its turn was handed over, not lost).

Before an in-place restart (or a stop) the bot calls `stop_starting`: no run is claimed from then
on, and the runs being started are let finish starting (a reminder posted, a prompt queued in its
thread, which the restart then hands over), so a run due meanwhile is still due for the next
process; a run is never claimed by a process that can no longer start it.

Runs of one task never overlap: an occurrence due while the previous run is still going is
recorded as skipped. A run missed by less than the grace period runs once, late, saying so
where it runs; an older miss is skipped, with a line in the log and in the task's channel.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo
from typing import Final, final

import trio
from cronsim import CronSim, CronSimError

from kimaki.schedules._spec import RunTarget, ScheduleError, StartedRun
from kimaki.schedules._when import describe_time, next_cron_time
from kimaki.store import ScheduledTask, ScheduledTasks, TaskRun

__all__ = ["Runner", "format_duration", "wake_text"]

log = logging.getLogger("kimaki.schedules")

# The runner sleeps until the next due time, but looks at the wall clock again at least this
# often: trio's clock is monotonic and stands still while the machine is suspended, and a task
# written by another process (the command line with the daemon down) is seen within this.
_RECHECK: Final = 60.0
# A run this late (or later) says so where it runs.
_LATE_NOTICE: Final = 60.0


def format_duration(seconds: float) -> str:
    """`1 h 5 min`, `30 min`, `45 s`: a duration for a line in Discord."""
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min")) if n]
    if secs and not days and not hours:
        parts.append(f"{secs} s")
    return " ".join(parts) or "0 s"


def wake_text(task: ScheduledTask, zone: tzinfo) -> str:
    """What a woken session is sent: when it slept until, and why it slept."""
    return (
        f"woke after sleeping until {describe_time(task.next_run_at, zone)}, reason: {task.prompt}"
    )


def _discord_time(at: float) -> str:
    return f"<t:{int(at)}:f>"


def _place(task: ScheduledTask) -> int:
    return task.thread_id if task.thread_id is not None else task.channel_id


@final
class Runner:
    """Runs the stored tasks when due, with `target` (the bot's way into Discord)."""

    def __init__(
        self,
        *,
        store: ScheduledTasks,
        target: RunTarget,
        clock: Callable[[], float],
        zone: Callable[[str | None], tzinfo],
        run_time_limit: float,
        grace: float,
    ) -> None:
        self._store = store
        self._target = target
        self._clock = clock
        self._zone = zone
        self._run_time_limit = run_time_limit
        self._grace = grace
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._running: set[int] = set()  # task ids with a run going
        # Sleeps ("wake" tasks) by thread, so a person's message can end them at once; and a
        # count of messages per thread, so a sleep stored while a message arrived ends too.
        self._sleeps: dict[int, set[int]] = {}
        self._messages: dict[int, int] = {}
        self._cancelled: set[int] = set()  # sleeps ended, not yet written
        self._to_cancel: list[int] = []
        # `stop_starting`: claim nothing more; and the runs between their claim and their
        # hand-on (a reminder posted, a prompt queued), which it waits for.
        self._holding = False
        self._starting = 0
        self._all_started = trio.lowlevel.ParkingLot()

    # -- from the door -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._nursery is not None

    def changed(self) -> None:
        """The stored tasks changed: look at the next due time again."""
        self._changed.set()

    async def stop_starting(self) -> None:
        """Claim no more runs, and return once every run being started is handed on: its
        reminder posted, its prompt in its thread's queue (where a restart hands it over).
        A run due from now on stays due, for the next process. For an in-place restart or a
        stop, before the thread pipeline is suspended; the caller bounds the wait."""
        self._holding = True
        self.changed()
        while self._starting:
            await self._all_started.park()

    def _begin_start(self) -> None:
        self._starting += 1

    def _end_start(self) -> None:
        self._starting -= 1
        if not self._starting:
            self._all_started.unpark_all()

    def is_running(self, task_id: int) -> bool:
        return task_id in self._running

    def messages_seen(self, thread_id: int) -> int:
        return self._messages.get(thread_id, 0)

    def note_sleep(self, task: ScheduledTask, *, messages_before: int) -> bool:
        """Know of a stored sleep, so a message in its thread ends it. False if a message
        arrived while it was being stored (it is ended at once: the agent slept before it
        could see that message)."""
        assert task.task_id is not None
        assert task.thread_id is not None
        if self.messages_seen(task.thread_id) != messages_before:
            self._cancel([task.task_id])
            return False
        self._sleeps.setdefault(task.thread_id, set()).add(task.task_id)
        self.changed()
        return True

    def forget(self, task_id: int) -> None:
        for ids in self._sleeps.values():
            ids.discard(task_id)
        self.changed()

    def ended_sleeps(self) -> frozenset[int]:
        """Sleeps a person's message ended, whose rows are not written yet."""
        return frozenset(self._cancelled)

    def message_arrived(self, thread_id: int) -> None:
        """A person wrote in the thread: its sleeps end (none of them wakes it)."""
        self._messages[thread_id] = self._messages.get(thread_id, 0) + 1
        ids = self._sleeps.pop(thread_id, None)
        if ids:
            self._cancel(ids)

    def _cancel(self, task_ids: Iterable[int]) -> None:
        for task_id in task_ids:
            if task_id not in self._cancelled:
                self._cancelled.add(task_id)
                self._to_cancel.append(task_id)
        self.changed()

    async def run_now(self, task: ScheduledTask) -> None:
        """Start one run of `task` now, outside its schedule; returns once it has started
        (its prompt queued, its reminder posted). Its schedule is unchanged."""
        assert task.task_id is not None
        if self._nursery is None:
            raise ScheduleError("the task runner is not running (is the daemon up?)")
        if self._holding:
            raise ScheduleError("kimaki is restarting or stopping: run it again in a moment")
        if task.task_id in self._running:
            raise ScheduleError(f"task {task.task_id} is running already: wait for it to end")
        self._running.add(task.task_id)  # at once: the runner will not start it meanwhile
        self._begin_start()
        try:
            run = await self._store.start_run(
                TaskRun(task.task_id, started_at=self._clock(), status="running")
            )
        except BaseException:
            self._running.discard(task.task_id)
            self._end_start()
            raise
        if run is None:
            self._running.discard(task.task_id)
            self._end_start()
            raise ScheduleError(f"there is no task {task.task_id}")
        # `_execute` forgets the run when it ends, even if it could not start, and ends its
        # start (`_end_start`) once it is handed on.
        await self._nursery.start(self._execute, task, run, True)

    # -- the runner --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run tasks when due until cancelled; started once the previous process's unfinished
        runs are recorded and the sleeps are known."""
        abandoned = await self._store.abandon_running_runs(
            ended_at=self._clock(), status="restarted", error="kimaki restarted during the run"
        )
        if abandoned:
            log.info("%d scheduled run(s) were going when kimaki last stopped", abandoned)
        for task in await self._store.list_scheduled_tasks(include_finished=False):
            if task.kind == "wake" and task.thread_id is not None and task.task_id is not None:
                self._sleeps.setdefault(task.thread_id, set()).add(task.task_id)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                await self._loop()
            finally:
                self._nursery = None

    async def _loop(self) -> None:
        while True:
            # A fresh event before reading the store: a change made while reading wakes us.
            self._changed = trio.Event()
            await self._write_cancellations()
            if self._holding:  # restarting or stopping: what is due stays due
                await self._changed.wait()
                continue
            await self._start_due()
            next_at = await self._store.next_due_at()
            delay = math.inf if next_at is None else next_at - self._clock()
            if delay > 0:
                with trio.move_on_after(min(delay, _RECHECK)):
                    await self._changed.wait()

    async def _write_cancellations(self) -> None:
        while self._to_cancel:
            task_id = self._to_cancel.pop(0)
            if await self._store.finish_task(task_id, "cancelled"):
                log.info("sleep %d ended by a new message in its thread", task_id)

    async def _start_due(self) -> None:
        self._begin_start()  # `stop_starting` waits for a claim under way, and its notices
        try:
            now = self._clock()
            for task in await self._store.due_scheduled_tasks(now):
                assert task.task_id is not None
                if self._holding:
                    return
                if task.task_id in self._cancelled:
                    continue  # written by the next `_write_cancellations`
                try:
                    await self._start_one(task, now)
                except CronSimError as e:  # an expression stored by an older kimaki, say
                    log.warning("scheduled task %d cannot be rescheduled: %s", task.task_id, e)
                    await self._store.finish_task(task.task_id, "failed")
        finally:
            self._end_start()

    async def _start_one(self, task: ScheduledTask, now: float) -> None:
        assert task.task_id is not None
        due_at = task.next_run_at
        latest = due_at
        next_run_at: float | None = None
        if task.schedule is not None:
            zone = self._zone(task.tz)
            latest = max(due_at, _previous_cron_time(task.schedule, now, zone))
            next_run_at = next_cron_time(task.schedule, now, zone)
        late_by = now - latest
        nursery = self._nursery
        assert nursery is not None

        if task.task_id in self._running:
            await self._claim_skipped(task, now, next_run_at, "the previous run was still going")
            log.info("scheduled task %d: skipped a run, the previous one is going", task.task_id)
            return
        if late_by > self._grace:
            missed = format_duration(late_by)
            if await self._claim_skipped(
                task, now, next_run_at, f"missed by {missed} (grace {self._grace_text})"
            ):
                log.warning(
                    "scheduled task %d (%s) skipped: missed by %s, more than the grace period",
                    task.task_id,
                    task.name,
                    missed,
                )
                then = "" if next_run_at is None else f" Next run: {_discord_time(next_run_at)}."
                await self._post_notice(
                    task,
                    f"⏰ **{task.name}** was due {_discord_time(latest)} but kimaki was not "
                    f"running; skipped it (missed by {missed}, more than the "
                    f"{self._grace_text} grace period).{then}",
                )
            return

        self._running.add(task.task_id)  # before the claim: a "run now" meanwhile is refused
        try:
            run = await self._store.claim_due_run(
                TaskRun(task.task_id, started_at=now, status="running", late_by=max(0.0, late_by)),
                due_at=due_at,
                next_run_at=next_run_at,
            )
        except BaseException:
            self._running.discard(task.task_id)
            raise
        if run is None:
            self._running.discard(task.task_id)
            return  # deleted, paused or moved since it was read
        if task.kind == "wake" and task.thread_id is not None:
            self._sleeps.get(task.thread_id, set()).discard(task.task_id)
        if late_by >= _LATE_NOTICE:
            await self._post_notice(
                task,
                f"⏰ **{task.name}** was due {_discord_time(latest)}; running it "
                f"{format_duration(late_by)} late (kimaki was not running then).",
            )
        self._begin_start()  # ended by `_execute` once the run is handed on
        nursery.start_soon(self._execute, task, run, False)

    @property
    def _grace_text(self) -> str:
        return format_duration(self._grace)

    async def _claim_skipped(
        self, task: ScheduledTask, now: float, next_run_at: float | None, why: str
    ) -> bool:
        assert task.task_id is not None
        run = TaskRun(task.task_id, started_at=now, status="skipped", ended_at=now, error=why)
        claimed = await self._store.claim_due_run(
            run, due_at=task.next_run_at, next_run_at=next_run_at
        )
        return claimed is not None

    async def _post_notice(self, task: ScheduledTask, content: str) -> None:
        try:
            await self._target.post(_place(task), content, mention_user_id=None)
        except Exception:
            log.warning(
                "could not post a notice for scheduled task %s", task.task_id, exc_info=True
            )

    async def _execute(
        self,
        task: ScheduledTask,
        run: TaskRun,
        report_start: bool,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """One run: the reminder posted, or the prompt queued and its turn watched (within
        the time limit, for a scheduled prompt). `report_start`: a failure to start is
        raised to the caller (run now) rather than only recorded. Its caller began a start
        (`_begin_start`): it ends once the run is handed on, or could not start."""
        assert task.task_id is not None
        starting = True
        try:
            try:
                if task.kind == "remind":
                    await self._target.post(
                        _place(task),
                        _reminder_text(task),
                        mention_user_id=task.mention_user_id,
                    )
                    task_status.started()
                    await self._finish(run, "posted")  # before a restart reads it as cut short
                    return
                text = wake_text(task, self._zone(None)) if task.kind == "wake" else task.prompt
                started = await self._target.start_prompt(task, text)
            except Exception as e:
                log.warning("scheduled task %d could not start: %s", task.task_id, e)
                await self._finish(run, "failed", error=str(e) or type(e).__name__)
                if report_start:
                    raise
                return
            task_status.started()
            starting = False
            self._end_start()
            await self._watch(task, run, started)
        finally:
            self._running.discard(task.task_id)
            if starting:
                self._end_start()

    async def _watch(self, task: ScheduledTask, run: TaskRun, started: StartedRun) -> None:
        assert task.task_id is not None
        assert run.run_id is not None
        done = started.done
        try:
            await self._store.set_run_thread(run.run_id, started.thread_id)
            if task.reuse_thread and task.thread_id is None:
                await self._store.set_task_thread(task.task_id, started.thread_id)
        except BaseException:
            if inspect.iscoroutine(done):
                done.close()  # never awaited (the runner is stopping): no warning
            raise
        # The time limit is for scheduled prompts; a woken session goes on like any turn.
        limit = self._run_time_limit if task.kind == "prompt" else math.inf
        with trio.move_on_after(limit) as scope:
            result = await done
        if scope.cancelled_caught:
            log.info("scheduled task %d passed its time limit", task.task_id)
            try:
                await self._target.interrupt(
                    started.thread_id,
                    f"⏰ Stopped **{task.name}**: the run passed its time limit "
                    f"({format_duration(limit)}).",
                )
            except Exception:
                log.warning("could not stop scheduled task %d", task.task_id, exc_info=True)
            await self._finish(run, "timed out", error=f"over the {format_duration(limit)} limit")
            return
        await self._finish(run, result.status, error=result.error)

    async def _finish(self, run: TaskRun, status: str, *, error: str | None = None) -> None:
        assert run.run_id is not None
        await self._store.finish_run(run.run_id, status=status, ended_at=self._clock(), error=error)


def _reminder_text(task: ScheduledTask) -> str:
    mention = f"<@{task.mention_user_id}> " if task.mention_user_id is not None else ""
    return f"🔔 {mention}{task.prompt}"


def _previous_cron_time(cron: str, at: float, zone: tzinfo) -> float:
    """The latest time `cron` matches at or before `at` (-inf if never)."""
    start = datetime.fromtimestamp(math.floor(at) + 1, zone)
    try:
        return next(CronSim(cron, start, reverse=True)).timestamp()
    except StopIteration:
        return -math.inf
