"""The scheduling door: validate and store tasks, and run them when due.

The commands, the command line and the agent's tools all come through `Schedules`, so WHEN
means the same everywhere and a bad one is refused with the same words (`ScheduleError`, whose
message names what to fix) before anything is stored. Without a `RunTarget` (the command line
with no daemon) it still stores, lists, pauses and deletes; the daemon's runner runs the tasks
when it starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import tzinfo
from typing import Final, final

import attrs
import trio

from kimaki._audit import audit
from kimaki.schedules._runner import Runner
from kimaki.schedules._spec import NewTask, RunTarget, ScheduleError, StartedRun
from kimaki.schedules._when import next_cron_time, parse_when, resolve_timezone
from kimaki.store import ScheduledTask, ScheduledTasks, TaskRun, UnknownChannelError

__all__ = ["Schedules", "default_name"]

_NAME_LIMIT: Final = 80  # a thread is named "⏰ <name>" (Discord allows 100)


def default_name(prompt: str) -> str:
    """A task's name when none is given: the prompt's first line, clipped."""
    first = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    return first if len(first) <= _NAME_LIMIT else first[: _NAME_LIMIT - 1].rstrip() + "…"


@final
class Schedules:
    """Scheduled prompts, reminders and sleeping sessions: the one door for the commands, the
    command line and the agent's tools; `run` is the runner in the daemon's nursery.

    `clock` is the wall clock (Unix time; tests tie it to trio's clock); `local_tz` the zone
    of cron expressions given no `tz` (default: the machine's).
    """

    def __init__(
        self,
        *,
        store: ScheduledTasks,
        target: RunTarget | None,
        run_time_limit: float = 30 * 60.0,
        grace: float = 60 * 60.0,
        local_tz: tzinfo | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._local_tz = local_tz
        self._clock = clock
        self._target = target
        self._runner = (
            None
            if target is None
            else Runner(
                store=store,
                target=target,
                clock=clock,
                zone=self._zone,
                run_time_limit=run_time_limit,
                grace=grace,
            )
        )

    def _zone(self, name: str | None) -> tzinfo:
        return resolve_timezone(name, self._local_tz)

    def _changed(self) -> None:
        if self._runner is not None:
            self._runner.changed()

    # -- making tasks ------------------------------------------------------------------------

    async def add(self, task: NewTask) -> ScheduledTask:
        """Validate and store `task`; it runs at its first time. `ScheduleError` (nothing
        stored) says what to fix: the time, the timezone, the text, the channel."""
        stored = await self._store_task(self._validate(task, self._clock()))
        self._changed()
        return stored

    async def send_now(self, task: NewTask) -> StartedRun:
        """Queue `task`'s prompt in its thread (or a new one) now, as its author; nothing is
        stored and its `when` is not read. Needs the daemon (a run target)."""
        if self._target is None:
            raise ScheduleError("sending now needs the running daemon")
        prompt = task.prompt.strip()
        if not prompt:
            raise ScheduleError("the prompt is empty: give the text to send")
        record = ScheduledTask(
            channel_id=task.channel_id,
            prompt=prompt,
            next_run_at=self._clock(),
            created_by=task.created_by,
            thread_id=task.thread_id,
            name=task.name.strip() or default_name(prompt),
            kind="prompt",
            created_by_name=task.created_by_name,
            agent=task.agent,
            model=task.model,
            worktree=task.worktree,
        )
        return await self._target.start_prompt(record, prompt)

    async def sleep(
        self, *, thread_id: int, channel_id: int, until: str, reason: str, created_by_name: str
    ) -> ScheduledTask:
        """Wake the session of `thread_id` at `until` (a delay or an ISO time) with a message
        saying so and why, once; a person's message in the thread first ends the sleep."""
        if self._runner is None:
            raise ScheduleError("sleeping needs the running daemon")
        messages_before = self._runner.messages_seen(thread_id)
        new = NewTask(
            channel_id=channel_id,
            prompt=reason.strip() or "no reason given",
            when=until,
            created_by=0,
            created_by_name=created_by_name,
            name="sleep",
            thread_id=thread_id,
            kind="wake",
        )
        stored = await self._store_task(self._validate(new, self._clock()))
        if not self._runner.note_sleep(stored, messages_before=messages_before):
            return attrs.evolve(stored, enabled=False, last_status="cancelled")
        return stored

    def _validate(self, task: NewTask, now: float) -> ScheduledTask:
        prompt = task.prompt.strip()
        if not prompt:
            what = "the reminder's text" if task.kind == "remind" else "the prompt"
            raise ScheduleError(f"{what} is empty: give the text to send")
        if task.kind == "wake" and task.thread_id is None:
            raise ScheduleError("a sleep needs the thread of the session to wake")
        if task.tz is not None:
            self._zone(task.tz)  # an unknown zone is refused even for a one-off time
        when = parse_when(
            task.when,
            now=now,
            tz=task.tz,
            local_tz=self._local_tz,
            repeat=task.kind != "wake",
        )
        return ScheduledTask(
            channel_id=task.channel_id,
            prompt=prompt,
            next_run_at=when.first,
            created_by=task.created_by,
            thread_id=task.thread_id,
            schedule=when.cron,
            name=task.name.strip()[:_NAME_LIMIT] or default_name(prompt),
            kind=task.kind,
            tz=when.tz,
            created_by_name=task.created_by_name,
            reuse_thread=task.reuse_thread,
            mention_user_id=task.mention_user_id,
            agent=task.agent,
            model=task.model,
            worktree=task.worktree,
        )

    async def _store_task(self, task: ScheduledTask) -> ScheduledTask:
        try:
            stored = await self._store.add_scheduled_task(task)
        except UnknownChannelError:
            raise ScheduleError(
                f"channel {task.channel_id} is not a project channel: use a project's channel "
                "or one of its threads"
            ) from None
        _audit_task("schedule.added", stored, user_id=stored.created_by or None)
        return stored

    # -- reading -----------------------------------------------------------------------------

    async def tasks(self, *, channel_id: int | None = None) -> list[ScheduledTask]:
        """The tasks still to run (paused ones too), by next run; a channel's, or all. A sleep
        ended by a person's message is gone at once, though its row is written a moment later."""
        tasks = await self._store.list_scheduled_tasks(
            channel_id=channel_id, include_finished=False
        )
        ended = self._runner.ended_sleeps() if self._runner is not None else frozenset()
        return [task for task in tasks if task.task_id not in ended]

    async def task(self, task_id: int) -> ScheduledTask | None:
        return await self._store.get_scheduled_task(task_id)

    async def runs(self, task_id: int, *, limit: int = 10) -> list[TaskRun]:
        """A task's runs, newest first."""
        return await self._store.task_runs(task_id, limit=limit)

    # -- changing ----------------------------------------------------------------------------

    async def pause(self, task_id: int) -> ScheduledTask:
        """Stop a task from running until resumed (a run going on goes on)."""
        await self._unfinished(task_id)
        paused = await self._store.set_paused(task_id, True)
        if paused is None:
            raise ScheduleError(f"there is no task {task_id}")
        _audit_task("schedule.paused", paused)
        self._changed()
        return paused

    async def resume(self, task_id: int) -> ScheduledTask:
        """Run a paused task again: a repeating one from its next time after now; a one-off
        whose time passed while paused, now."""
        task = await self._unfinished(task_id)
        now = self._clock()
        if task.schedule is not None:
            next_run_at = next_cron_time(task.schedule, now, self._zone(task.tz))
        else:
            next_run_at = max(task.next_run_at, now)
        resumed = await self._store.set_paused(task_id, False, next_run_at=next_run_at)
        if resumed is None:
            raise ScheduleError(f"there is no task {task_id}")
        _audit_task("schedule.resumed", resumed)
        self._changed()
        return resumed

    async def delete(self, task_id: int) -> bool:
        """Delete a task and its history (a run going on goes on); False if there was none."""
        task = await self._store.get_scheduled_task(task_id)  # for the audit trail
        deleted = await self._store.delete_scheduled_task(task_id)
        if self._runner is not None:
            self._runner.forget(task_id)
        if deleted and task is not None:
            _audit_task("schedule.deleted", task)
        return deleted

    async def run_now(self, task_id: int) -> None:
        """Run a task once now, outside its schedule (paused or not); returns once its prompt
        is queued or its reminder posted. Refused while a run of it is going."""
        if self._runner is None or not self._runner.started:
            raise ScheduleError("running a task now needs the running daemon")
        task = await self._store.get_scheduled_task(task_id)
        if task is None:
            raise ScheduleError(f"there is no task {task_id}")
        await self._runner.run_now(task)

    async def _unfinished(self, task_id: int) -> ScheduledTask:
        task = await self._store.get_scheduled_task(task_id)
        if task is None:
            raise ScheduleError(f"there is no task {task_id}")
        if not task.enabled:
            raise ScheduleError(f"task {task_id} has already run (it does not repeat)")
        return task

    # -- the daemon --------------------------------------------------------------------------

    def message_arrived(self, thread_id: int) -> None:
        """A person's message in a thread: its sleeps end without waking it."""
        if self._runner is not None:
            self._runner.message_arrived(thread_id)

    async def stop_starting(self) -> None:
        """The daemon restarts in place or stops: start no more runs, and return once the runs
        being started are handed on (reminders posted, prompts queued in their threads, where
        the restart hands them over). What falls due from now on stays due for the next
        process, so a restart neither loses nor doubles a run. Call it before the thread
        pipeline is suspended; bound the wait (a post may wait for Discord's rate limit)."""
        if self._runner is not None:
            await self._runner.stop_starting()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The task runner, until cancelled (in the daemon's nursery)."""
        if self._runner is None:
            raise ScheduleError("the task runner needs a run target (the bot)")
        await self._runner.run(task_status=task_status)


def _audit_task(kind: str, task: ScheduledTask, *, user_id: int | None = None) -> None:
    """A change of the schedule, for the audit trail (what the task does, who made it; who
    paused or deleted it is the interaction's event)."""
    audit(
        kind,
        channel_id=task.channel_id,
        thread_id=task.thread_id,
        user_id=user_id,
        task_id=task.task_id,
        name=task.name,
        task_kind=task.kind,
        schedule=task.schedule,
        next_run_at=task.next_run_at,
        prompt=task.prompt,
        created_by_name=task.created_by_name,
    )
