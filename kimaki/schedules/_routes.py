"""The daemon's side of the lock port for scheduling: `kimaki send` and `kimaki task ...` run
while the daemon is up.

Through the daemon, an immediate send reaches its thread's prompt channel at once, and a new
task wakes the runner (which sleeps until the next due task) instead of waiting for a restart.
The routes want the daemon's control token (`kimaki._control_client`).

```
POST /schedules/send           a SendRequest → a SendOutcome (with "wait": when the turn ends)
GET  /schedules/tasks          → {"tasks": [...]}: the tasks not finished, by next run
POST /schedules/tasks/pause    {"task_id"} → {"task": ...}
POST /schedules/tasks/resume   {"task_id"} → {"task": ...}
POST /schedules/tasks/delete   {"task_id"} → {}
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kimaki._control import ControlServer
from kimaki._control_client import JsonAction, json_route, optional_id
from kimaki._http import Request, Response
from kimaki.schedules._shell import (
    ShellTasks,
    outcome_json,
    request_from_json,
    task_json,
)
from kimaki.schedules._spec import ScheduleError

__all__ = ["install_schedule_routes"]


def install_schedule_routes(control: ControlServer, tasks: ShellTasks, token: str) -> None:
    """The scheduling routes above on the lock port, behind the daemon's control `token`."""

    async def send(body: dict[str, Any]) -> dict[str, Any]:
        return outcome_json(await tasks.send(request_from_json(body)))

    async def list_tasks(body: dict[str, Any]) -> dict[str, Any]:
        return {"tasks": [task_json(task) for task in await tasks.tasks()]}

    async def pause(body: dict[str, Any]) -> dict[str, Any]:
        return {"task": task_json(await tasks.pause(_task_id(body)))}

    async def resume(body: dict[str, Any]) -> dict[str, Any]:
        return {"task": task_json(await tasks.resume(_task_id(body)))}

    async def delete(body: dict[str, Any]) -> dict[str, Any]:
        await tasks.delete(_task_id(body))
        return {}

    def route(action: JsonAction) -> Callable[[Request], Awaitable[Response]]:
        return json_route(token, action, refused=(ScheduleError, ValueError))

    control.add_route("POST", "/schedules/send", route(send))
    control.add_route("GET", "/schedules/tasks", route(list_tasks))
    control.add_route("POST", "/schedules/tasks/pause", route(pause))
    control.add_route("POST", "/schedules/tasks/resume", route(resume))
    control.add_route("POST", "/schedules/tasks/delete", route(delete))


def _task_id(body: dict[str, Any]) -> int:
    task_id = optional_id(body.get("task_id"))
    if task_id is None:
        raise ValueError("task_id is required")
    return task_id
