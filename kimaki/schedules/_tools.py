"""The agent's scheduling tools: `schedule`, `list_schedules`, `cancel_schedule`, `sleep`.

They join the `kimaki` tool server's box (the composition root adds `schedule_tools(door)` to
it) and go through the scheduling door like `/schedule` and `kimaki send --send-at` do, so one
set of rules (WHEN's syntax, the errors that say what to fix) holds for people, scripts and
agents. As for every tool, the thread and project channel come from the calling session's
`ToolContext`, never from the model's arguments: an agent schedules, lists and cancels in its
own project channel only, and sleeps only in its own thread.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal, Protocol, final

from kimaki.schedules._spec import NewTask, ScheduleError
from kimaki.schedules._when import parse_delay
from kimaki.store import ScheduledTask
from kimaki.tools import ToolContext, ToolError, ToolResult, ToolSpec, _args

__all__ = ["ScheduleDoor", "agent_author", "schedule_tools"]

PROMPT_LIMIT: Final = 4000
WHEN_LIMIT: Final = 200
# A thread is named "⏰ <name>"; Discord's limit for a thread name is 100.
NAME_LIMIT: Final = 90
REASON_LIMIT: Final = 500
TZ_LIMIT: Final = 64
PREVIEW: Final = 80  # how much of a task's prompt a listing shows

WHEN_SYNTAX: Final = (
    "an ISO 8601 time with an offset or Z (2030-01-31T09:00:00+01:00), a delay (10m, 2h30m, "
    "1d), or a 5-field cron expression for a repeating task (0 9 * * 1-5)"
)


class ScheduleDoor(Protocol):
    """What the tools use of `Schedules` (the door satisfies it; tests may pass a fake)."""

    async def add(self, task: NewTask) -> ScheduledTask: ...

    async def tasks(self, *, channel_id: int | None = None) -> list[ScheduledTask]: ...

    async def task(self, task_id: int) -> ScheduledTask | None: ...

    async def delete(self, task_id: int) -> bool: ...

    async def sleep(
        self, *, thread_id: int, channel_id: int, until: str, reason: str, created_by_name: str
    ) -> ScheduledTask: ...


def agent_author(thread_id: int) -> str:
    """Who made a task, as `/tasks` and the run's thread show it: the agent of a thread."""
    return f"agent in thread {thread_id}"


def schedule_tools(
    door: ScheduleDoor,
    *,
    now: Callable[[], float] = time.time,
    local_tz: dt.tzinfo | None = None,
) -> tuple[ToolSpec, ...]:
    """The four tools, bound to `door`. `now` and `local_tz` (None: the machine's timezone) only
    shape how times read in the results ("2030-01-31T09:00:00+01:00, in 2h 30m")."""
    clock = _Clock(now, local_tz)
    return (
        ToolSpec(
            name="schedule",
            description=SCHEDULE_DESCRIPTION,
            input_schema=SCHEDULE_SCHEMA,
            run=_refusals(lambda ctx, arguments: _schedule(door, clock, ctx, arguments)),
        ),
        ToolSpec(
            name="list_schedules",
            description=LIST_DESCRIPTION,
            input_schema={"type": "object", "properties": {}},
            run=_refusals(lambda ctx, arguments: _list(door, clock, ctx)),
        ),
        ToolSpec(
            name="cancel_schedule",
            description=CANCEL_DESCRIPTION,
            input_schema=CANCEL_SCHEMA,
            run=_refusals(lambda ctx, arguments: _cancel(door, ctx, arguments)),
        ),
        ToolSpec(
            name="sleep",
            description=SLEEP_DESCRIPTION,
            input_schema=SLEEP_SCHEMA,
            run=_refusals(lambda ctx, arguments: _sleep(door, clock, ctx, arguments)),
        ),
    )


def _refusals(
    run: Callable[[ToolContext, Mapping[str, Any]], Awaitable[ToolResult]],
) -> Callable[[ToolContext, Mapping[str, Any]], Awaitable[ToolResult]]:
    """The door's `ScheduleError` says what to fix: the model reads it as the tool's error
    (the box would otherwise treat it as a failure and point at the log)."""

    async def refusing(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
        try:
            return await run(ctx, arguments)
        except ScheduleError as exc:
            raise ToolError(str(exc)) from exc

    return refusing


@final
class _Clock:
    """Times as the results say them: in the task's zone (a cron task's `tz`) or the local
    one, with the offset, and how far from now."""

    def __init__(self, now: Callable[[], float], local_tz: dt.tzinfo | None) -> None:
        self.now = now
        self._local_tz = local_tz

    def at(self, when: float, tz: str | None = None) -> str:
        zone = self._zone(tz)
        local = (
            dt.datetime.fromtimestamp(when, zone)
            if zone is not None
            else dt.datetime.fromtimestamp(when).astimezone()
        )
        return f"{local.isoformat(timespec='seconds')} ({_relative(when - self.now())})"

    def _zone(self, tz: str | None) -> dt.tzinfo | None:
        if tz:
            try:
                return zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                pass  # stored by the door, so valid; a removed zone falls back to local
        return self._local_tz


def _relative(seconds: float) -> str:
    """`seconds` from now, to the minute (to the second under a minute): "in 2h 30m"."""
    ahead = seconds >= 0
    left = round(abs(seconds))
    if left < 60:
        text = f"{left}s"
    else:
        minutes = round(left / 60)
        days, minutes = divmod(minutes, 24 * 60)
        hours, minutes = divmod(minutes, 60)
        parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
        text = " ".join(parts)
    return f"in {text}" if ahead else f"{text} ago"


# schedule


SCHEDULE_DESCRIPTION: Final = (
    "Schedule a prompt for later, once or repeating: at that time it is sent as a new message "
    "(queued behind a running turn, never interrupting one). By default it arrives in this "
    'thread, so this session continues with it; with where="channel" each run opens a new '
    'thread "⏰ <name>" in the project channel instead (a fresh session; for recurring jobs '
    "like a daily CI check). Write the prompt so it stands on its own. `when`: "
    f"{WHEN_SYNTAX}; cron repeats in the machine's timezone unless `tz` names one "
    "(Europe/Paris). Returns the task's id and its next run; call current_time first if the "
    "time depends on today's date."
)

SCHEDULE_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {
        "prompt": {
            "type": "string",
            "description": "What to send when the task runs.",
            "minLength": 1,
            "maxLength": PROMPT_LIMIT,
        },
        "when": {
            "type": "string",
            "description": f"When: {WHEN_SYNTAX}.",
            "minLength": 1,
            "maxLength": WHEN_LIMIT,
        },
        "name": {
            "type": "string",
            "description": "A short name for listings and threads (default: the prompt's "
            "first line).",
            "maxLength": NAME_LIMIT,
        },
        "where": {
            "type": "string",
            "enum": ["thread", "channel"],
            "default": "thread",
            "description": "thread: runs arrive in this thread; channel: each run opens a new "
            "thread in the project channel.",
        },
        "tz": {
            "type": "string",
            "description": "An IANA timezone (Area/City) for a cron expression.",
            "maxLength": TZ_LIMIT,
        },
    },
    "required": ["prompt", "when"],
}


async def _schedule(
    door: ScheduleDoor, clock: _Clock, ctx: ToolContext, arguments: Mapping[str, Any]
) -> ToolResult:
    prompt = _args.required_text(arguments, "prompt", limit=PROMPT_LIMIT).strip()
    when = _args.required_text(arguments, "when", limit=WHEN_LIMIT).strip()
    name = _args.optional_text(arguments, "name", limit=NAME_LIMIT)
    where = _args.where(arguments)
    tz = _args.optional_text(arguments, "tz", limit=TZ_LIMIT)
    task = await door.add(
        NewTask(
            channel_id=ctx.channel_id,
            prompt=prompt,
            when=when,
            created_by=0,  # no Discord user: the author's name says which agent
            created_by_name=agent_author(ctx.thread_id),
            name=(name or "").strip(),
            thread_id=ctx.thread_id if where == "thread" else None,
            tz=tz.strip() if tz else None,
        )
    )
    lines = [f'Scheduled task {task.task_id} "{task.name}".']
    if task.schedule is not None:
        lines.append(
            f"Repeats: {task.schedule} ({task.tz or 'machine timezone'}); "
            f"next run {clock.at(task.next_run_at, task.tz)}."
        )
    else:
        lines.append(f"Runs once, at {clock.at(task.next_run_at)}.")
    lines.append(
        "It arrives in this thread."
        if task.thread_id is not None
        else f'Each run opens a new thread "⏰ {task.name}" in the project channel.'
    )
    lines.append(f"To cancel: cancel_schedule with id {task.task_id}.")
    return ToolResult("\n".join(lines))


# list_schedules


LIST_DESCRIPTION: Final = (
    "List the scheduled tasks of this project channel (its threads' included), soonest first: "
    "id, name, next run, whether it repeats, where it runs, who made it, how its last run "
    "ended. Use it before scheduling something that may exist already, and to find the id "
    "cancel_schedule needs."
)


def _where_it_runs(task: ScheduledTask, thread_id: int) -> str:
    place = (
        "this thread"
        if task.thread_id == thread_id
        else "the project channel"
        if task.thread_id is None
        else f"thread {task.thread_id}"
    )
    if task.kind == "remind":
        return f"a reminder posted in {place}"
    if task.thread_id is None:
        return "in one thread for all runs" if task.reuse_thread else "in a new thread per run"
    return f"in {place}"


def _describe(task: ScheduledTask, clock: _Clock, thread_id: int) -> str:
    if task.kind == "wake":
        return f"- {task.task_id}: this thread sleeps until {clock.at(task.next_run_at)}"
    repeats = "once"
    if task.schedule is not None:
        repeats = f"repeats {task.schedule} ({task.tz or 'machine timezone'})"
    state = "paused" if task.paused else f"next {clock.at(task.next_run_at, task.tz)}"
    line = (
        f'- {task.task_id}: "{task.name}", {state}, {repeats}, '
        f"{_where_it_runs(task, thread_id)}, by {task.created_by_name or 'unknown'}"
    )
    if task.last_run_at is not None:
        line += f"; last run {clock.at(task.last_run_at)}: {task.last_status or 'running'}"
    prompt = " ".join(task.prompt.split())
    if len(prompt) > PREVIEW:
        prompt = prompt[: PREVIEW - 1].rstrip() + "…"
    return f"{line}\n  {prompt}"


async def _list(door: ScheduleDoor, clock: _Clock, ctx: ToolContext) -> ToolResult:
    tasks = [
        task
        for task in await door.tasks(channel_id=ctx.channel_id)
        # Other threads' sleeps are theirs: neither this agent's business nor to cancel.
        if task.kind != "wake" or task.thread_id == ctx.thread_id
    ]
    if not tasks:
        return ToolResult("No scheduled tasks in this project channel.")
    count = f"{len(tasks)} scheduled task" + ("" if len(tasks) == 1 else "s")
    lines = [f"{count} in this project channel, soonest first:"]
    lines += [_describe(task, clock, ctx.thread_id) for task in tasks]
    return ToolResult("\n".join(lines))


# cancel_schedule


CANCEL_DESCRIPTION: Final = (
    "Cancel (delete) a scheduled task of this project channel by its id (list_schedules shows "
    "the ids): a repeating task stops, a one-off never runs. Cancelling this thread's own "
    "sleep ends it without waking the session."
)

CANCEL_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {
        "id": {
            "type": "integer",
            "minimum": 1,
            "description": "The task's id, from schedule's result or list_schedules.",
        }
    },
    "required": ["id"],
}


def _task_id(arguments: Mapping[str, Any]) -> int:
    value = arguments.get("id")
    if value is None:
        raise ToolError("`id` is required: the task's number, from list_schedules")
    if isinstance(value, str) and value.strip().lstrip("#").isdigit():
        value = int(value.strip().lstrip("#"))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ToolError(f"`id` must be a task's number (from list_schedules), not {value!r}")
    return value


async def _cancel(door: ScheduleDoor, ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    task_id = _task_id(arguments)
    task = await door.task(task_id)
    # Another channel's task is refused as if it did not exist: its existence is not this
    # agent's to learn; nor is another thread's sleep.
    if (
        task is None
        or task.channel_id != ctx.channel_id
        or (task.kind == "wake" and task.thread_id != ctx.thread_id)
    ):
        raise ToolError(f"no task {task_id} in this project channel; list_schedules shows them")
    if not task.enabled:
        raise ToolError(f'task {task_id} "{task.name}" has run already; nothing is left to cancel')
    if not await door.delete(task_id):
        raise ToolError(f"task {task_id} is gone already (cancelled, or it just ran)")
    what = "sleep" if task.kind == "wake" else "task"
    return ToolResult(f'Cancelled {what} {task_id} "{task.name}".')


# sleep


SLEEP_DESCRIPTION: Final = (
    "Pause this session until later: after `duration` (10m, 2h30m, 1d) or at `until` (an ISO "
    '8601 time with an offset or Z), this thread gets one message, "woke after sleeping until '
    '…, reason: …", and you continue from it. End your turn right after calling it. Any new '
    "message in the thread cancels the sleep (you get that message instead). Use it to wait "
    "for something slow (a CI run, a deploy, a person's day to start) instead of polling."
)

SLEEP_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {
        "duration": {
            "type": "string",
            "description": "How long to sleep: 10m, 2h30m, 1d. Give this or `until`.",
            "maxLength": WHEN_LIMIT,
        },
        "until": {
            "type": "string",
            "description": "When to wake: an ISO 8601 time with an offset or Z. Give this or "
            "`duration`.",
            "maxLength": WHEN_LIMIT,
        },
        "reason": {
            "type": "string",
            "description": "Why, and what to do on waking: shown in the wake-up message.",
            "minLength": 1,
            "maxLength": REASON_LIMIT,
        },
    },
    "required": ["reason"],
}


def _wake_time(arguments: Mapping[str, Any]) -> tuple[Literal["duration", "until"], str]:
    duration = _args.optional_text(arguments, "duration", limit=WHEN_LIMIT)
    until = _args.optional_text(arguments, "until", limit=WHEN_LIMIT)
    if duration is not None and until is not None:
        raise ToolError("give `duration` or `until`, not both")
    if duration is not None:
        duration = duration.strip()
        # Only a delay: a cron expression repeats, a sleep ends once; a time goes in `until`.
        if parse_delay(duration) is None:
            raise ToolError(f"`duration` must be a delay like 10m, 2h30m or 1d, not {duration!r}")
        return "duration", duration
    if until is not None:
        return "until", until.strip()
    raise ToolError("give `duration` (10m, 2h30m, 1d) or `until` (an ISO 8601 time)")


async def _sleep(
    door: ScheduleDoor, clock: _Clock, ctx: ToolContext, arguments: Mapping[str, Any]
) -> ToolResult:
    which, until = _wake_time(arguments)
    reason = _args.required_text(arguments, "reason", limit=REASON_LIMIT).strip()
    try:
        task = await door.sleep(
            thread_id=ctx.thread_id,
            channel_id=ctx.channel_id,
            until=until,
            reason=reason,
            created_by_name=agent_author(ctx.thread_id),
        )
    except ScheduleError as exc:
        raise ToolError(f"`{which}`: {exc}") from exc
    if not task.enabled:
        # A person wrote while the sleep was being stored: that message is the next prompt.
        return ToolResult(
            "Not sleeping: a new message arrived in this thread just now, and it cancels the "
            "sleep. End your turn; that message comes next."
        )
    return ToolResult(
        f"Sleeping until {clock.at(task.next_run_at)} (task {task.task_id}). End your turn "
        "now: this thread will get a message saying you woke, with your reason, and you "
        "continue from it. A new message in the thread before then cancels the sleep."
    )
