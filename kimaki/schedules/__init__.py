"""Scheduled prompts, reminders and sleeping sessions (issue #15).

`Schedules` is the door: the commands (`/schedule`, `/remind`, `/tasks`), the command line
(`kimaki send --send-at`, `kimaki task ...`) and the agent's tools all go through it; its
`run` is the task runner in the daemon's nursery. WHEN (`parse_when`) is one syntax for all of
them: an ISO 8601 time with an offset, a delay (`10m`, `2h30m`, `1d`), or a 5-field cron
expression.
"""

from __future__ import annotations

from kimaki.schedules._schedules import Schedules
from kimaki.schedules._spec import NewTask, RunResult, RunTarget, ScheduleError, StartedRun
from kimaki.schedules._tools import schedule_tools
from kimaki.schedules._when import When, machine_timezone, parse_when, resolve_timezone

__all__ = [
    "NewTask",
    "RunResult",
    "RunTarget",
    "ScheduleError",
    "Schedules",
    "StartedRun",
    "When",
    "machine_timezone",
    "parse_when",
    "resolve_timezone",
    "schedule_tools",
]
