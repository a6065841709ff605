"""The shell's side of scheduling: the running daemon through the lock port (`TasksClient`),
or, with no daemon of this data dir, the store itself (`open_direct_tasks`).

Both answer the same calls with the same records (`TaskOperations`), so `kimaki task list`
prints the same whether or not a daemon runs. Without a daemon only what needs no Discord can
be done: a task is stored (the runner sends it when the daemon starts), listed, paused,
resumed or deleted; an immediate send needs the daemon (`DaemonNotRunningError`, exit 69).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Protocol, final

from kimaki._control_client import ControlClient, ControlError, DaemonNotRunningError
from kimaki.schedules._schedules import Schedules
from kimaki.schedules._shell import (
    SendOutcome,
    SendRequest,
    ShellTasks,
    outcome_from_json,
    request_json,
    task_from_json,
    tasks_from_json,
)
from kimaki.schedules._spec import ScheduleError
from kimaki.store import ScheduledTask, Store

__all__ = ["TaskOperations", "TasksClient", "open_direct_tasks"]

NO_DAEMON: Final = (
    "the daemon is not running, so nothing can be sent now: start it (`kimaki`), or "
    "schedule the prompt with --send-at"
)


class TaskOperations(Protocol):
    """What `kimaki send` and `kimaki task` call, through the daemon or directly."""

    async def send(self, request: SendRequest) -> SendOutcome: ...

    async def tasks(self) -> list[ScheduledTask]: ...

    async def pause(self, task_id: int) -> ScheduledTask: ...

    async def resume(self, task_id: int) -> ScheduledTask: ...

    async def delete(self, task_id: int) -> None: ...


@final
class TasksClient:
    """The scheduling routes of a running daemon (`install_schedule_routes`); the daemon's
    refusals come back as `ScheduleError` with its line."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, waits: bool = False
    ) -> dict[str, Any]:
        try:
            return await self._client.call(
                method,
                path,
                body,
                waits=waits,
                missing="the running daemon does not take scheduling commands yet (still "
                "connecting to Discord?); try again in a moment",
            )
        except ControlError as exc:
            raise ScheduleError(str(exc)) from None

    async def send(self, request: SendRequest) -> SendOutcome:
        data = await self._call("POST", "/schedules/send", request_json(request), waits=True)
        return outcome_from_json(data)

    async def tasks(self) -> list[ScheduledTask]:
        return tasks_from_json((await self._call("GET", "/schedules/tasks")).get("tasks") or [])

    async def pause(self, task_id: int) -> ScheduledTask:
        data = await self._call("POST", "/schedules/tasks/pause", {"task_id": task_id})
        return task_from_json(data.get("task"))

    async def resume(self, task_id: int) -> ScheduledTask:
        data = await self._call("POST", "/schedules/tasks/resume", {"task_id": task_id})
        return task_from_json(data.get("task"))

    async def delete(self, task_id: int) -> None:
        await self._call("POST", "/schedules/tasks/delete", {"task_id": task_id})


@final
class _DirectTasks:
    """`ShellTasks` over this process's own store, with no daemon to send anything now."""

    def __init__(self, tasks: ShellTasks) -> None:
        self._tasks = tasks

    async def send(self, request: SendRequest) -> SendOutcome:
        if request.send_at is None:
            raise DaemonNotRunningError(NO_DAEMON)
        return await self._tasks.send(request)

    async def tasks(self) -> list[ScheduledTask]:
        return await self._tasks.tasks()

    async def pause(self, task_id: int) -> ScheduledTask:
        return await self._tasks.pause(task_id)

    async def resume(self, task_id: int) -> ScheduledTask:
        return await self._tasks.resume(task_id)

    async def delete(self, task_id: int) -> None:
        await self._tasks.delete(task_id)


@asynccontextmanager
async def open_direct_tasks(database_path: Path) -> AsyncIterator[TaskOperations]:
    """The tasks in the store at `database_path`, for the shell when no daemon runs (the
    runner of the next daemon sends what is due, or missed within the grace period)."""
    async with await Store.open(database_path) as store:
        door = Schedules(store=store.schedules, target=None)
        yield _DirectTasks(ShellTasks(door, store.places))
