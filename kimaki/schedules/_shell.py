"""What `kimaki send` and `kimaki task ...` do, over the scheduling door, and the JSON they
speak on the lock port.

`ShellTasks` runs in the daemon (behind its lock-port routes, `_routes.py`) or, with no daemon
running, in the shell's own process over the store (`_client.py`): both check the input the
same way, so a bad channel, a past time or a cron field out of range is refused with the same
line, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, final

import attrs

from kimaki._control_client import optional_id
from kimaki.schedules._spec import NewTask, RunResult, ScheduleError, StartedRun
from kimaki.store import ChannelRecord, ScheduledTask, ThreadRecord

__all__ = [
    "SendOutcome",
    "SendRequest",
    "ShellTasks",
    "TaskChannels",
    "TaskDoor",
    "command_line_author",
    "outcome_from_json",
    "outcome_json",
    "request_from_json",
    "request_json",
    "task_from_json",
    "task_json",
    "tasks_from_json",
]


class TaskDoor(Protocol):
    """The parts of `Schedules` the shell uses."""

    async def add(self, task: NewTask) -> ScheduledTask: ...

    async def send_now(self, task: NewTask) -> StartedRun: ...

    async def tasks(self, *, channel_id: int | None = None) -> list[ScheduledTask]: ...

    async def pause(self, task_id: int) -> ScheduledTask: ...

    async def resume(self, task_id: int) -> ScheduledTask: ...

    async def delete(self, task_id: int) -> bool: ...


class TaskChannels(Protocol):
    """Where a send may go: project channels and thread records (`kimaki.store.Places`)."""

    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...

    async def get_thread(self, thread_id: int) -> ThreadRecord | None: ...

    async def channel_of_directory(self, directory: Path) -> int | None: ...


def command_line_author(os_user: str) -> str:
    """How Discord shows who sent a prompt from the shell: the command line, and who ran it."""
    return f"command line ({os_user or 'unknown user'})"


@final
@attrs.frozen(kw_only=True)
class SendRequest:
    """One `kimaki send`: where (a project channel, by id or folder, and maybe a thread of it),
    what, and when (`send_at` None: now)."""

    prompt: str
    os_user: str
    channel_id: int | None = None
    directory: Path | None = None  # absolute: resolved where the command runs
    thread_id: int | None = None
    name: str = ""
    agent: str | None = None
    model: str | None = None
    worktree: str | None = None
    send_at: str | None = None
    tz: str | None = None
    wait: bool = False


@final
@attrs.frozen(kw_only=True)
class SendOutcome:
    """What a send did: a prompt sent now (its thread; with `wait`, how its turn ended), or a
    task stored for later."""

    thread_id: int | None = None
    result: RunResult | None = None
    task: ScheduledTask | None = None


@final
class ShellTasks:
    """The shell's commands over the door; `ScheduleError` says what to fix."""

    def __init__(self, door: TaskDoor, channels: TaskChannels) -> None:
        self._door = door
        self._channels = channels

    async def send(self, request: SendRequest) -> SendOutcome:
        """Send now (waiting for the turn when asked) or store a task for `send_at`."""
        task = await self._new_task(request)
        if request.send_at is not None:
            return SendOutcome(task=await self._door.add(task))
        started = await self._door.send_now(task)
        if not request.wait:
            return SendOutcome(thread_id=started.thread_id)
        return SendOutcome(thread_id=started.thread_id, result=await started.done)

    async def tasks(self) -> list[ScheduledTask]:
        return await self._door.tasks()

    async def pause(self, task_id: int) -> ScheduledTask:
        return await self._door.pause(task_id)

    async def resume(self, task_id: int) -> ScheduledTask:
        return await self._door.resume(task_id)

    async def delete(self, task_id: int) -> None:
        if not await self._door.delete(task_id):
            raise ScheduleError(f"there is no task {task_id} (see `kimaki task list`)")

    async def _new_task(self, request: SendRequest) -> NewTask:
        prompt = request.prompt.strip()
        if not prompt:
            raise ScheduleError("the prompt is empty: give --prompt TEXT, or pipe it on stdin")
        if request.tz is not None and request.send_at is None:
            raise ScheduleError("--tz goes with --send-at (a cron expression's timezone)")
        channel_id = await self._channel_id(request)
        if request.thread_id is not None:
            if request.worktree is not None:
                raise ScheduleError(
                    "--worktree is for a new thread; a thread keeps the folder it has"
                )
            thread = await self._channels.get_thread(request.thread_id)
            if thread is None:
                raise ScheduleError(
                    f"thread {request.thread_id} is not a thread of this bot's projects"
                )
            if channel_id is None:
                channel_id = thread.channel_id
            elif thread.channel_id != channel_id:
                raise ScheduleError(
                    f"thread {request.thread_id} is not in channel {channel_id}: leave out "
                    "--channel / --project, or name its own channel"
                )
        if channel_id is None:
            raise ScheduleError("say where: --channel ID, --project DIR, or --thread ID")
        return NewTask(
            channel_id=channel_id,
            prompt=prompt,
            when=request.send_at or "now",
            created_by=0,
            created_by_name=command_line_author(request.os_user),
            name=request.name.strip(),
            thread_id=request.thread_id,
            tz=request.tz,
            agent=request.agent,
            model=request.model,
            worktree=request.worktree,
        )

    async def _channel_id(self, request: SendRequest) -> int | None:
        if request.channel_id is not None and request.directory is not None:
            raise ScheduleError("give --channel or --project, not both")
        if request.directory is not None:
            channel_id = await self._channels.channel_of_directory(request.directory)
            if channel_id is None:
                raise ScheduleError(
                    f"{request.directory} is not a project: add it with "
                    f"`kimaki project add {request.directory}`"
                )
            return channel_id
        if request.channel_id is not None:
            channel = await self._channels.get_channel(request.channel_id)
            if channel is None or channel.channel_type != "text":
                raise ScheduleError(
                    f"channel {request.channel_id} is not a project channel of this bot "
                    "(see `kimaki project list`)"
                )
        return request.channel_id


# ---- JSON on the lock port (ids as strings, as Discord writes them)


def request_json(request: SendRequest) -> dict[str, Any]:
    return {
        "prompt": request.prompt,
        "os_user": request.os_user,
        "channel_id": _id_text(request.channel_id),
        "directory": None if request.directory is None else str(request.directory),
        "thread_id": _id_text(request.thread_id),
        "name": request.name,
        "agent": request.agent,
        "model": request.model,
        "worktree": request.worktree,
        "send_at": request.send_at,
        "tz": request.tz,
        "wait": request.wait,
    }


def request_from_json(data: dict[str, Any]) -> SendRequest:
    """The inverse of `request_json`; `ValueError` for anything else."""
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("prompt is required")
    directory = _optional_text(data, "directory")
    return SendRequest(
        prompt=prompt,
        os_user=_optional_text(data, "os_user") or "",
        channel_id=optional_id(data.get("channel_id")),
        directory=None if directory is None else Path(directory),
        thread_id=optional_id(data.get("thread_id")),
        name=_optional_text(data, "name") or "",
        agent=_optional_text(data, "agent"),
        model=_optional_text(data, "model"),
        worktree=_optional_text(data, "worktree"),
        send_at=_optional_text(data, "send_at"),
        tz=_optional_text(data, "tz"),
        wait=data.get("wait") in (True, "true"),
    )


def task_json(task: ScheduledTask) -> dict[str, Any]:
    """A stored task, as `kimaki task list --json` prints it (times: Unix seconds)."""
    return {
        "task_id": task.task_id,
        "name": task.name,
        "kind": task.kind,
        "channel_id": str(task.channel_id),
        "thread_id": _id_text(task.thread_id),
        "prompt": task.prompt,
        "schedule": task.schedule,
        "tz": task.tz,
        "next_run_at": task.next_run_at,
        "enabled": task.enabled,
        "paused": task.paused,
        "created_by": str(task.created_by),
        "created_by_name": task.created_by_name,
        "reuse_thread": task.reuse_thread,
        "mention_user_id": _id_text(task.mention_user_id),
        "agent": task.agent,
        "model": task.model,
        "worktree": task.worktree,
        "last_run_at": task.last_run_at,
        "last_status": task.last_status,
    }


def task_from_json(data: Any) -> ScheduledTask:
    """The inverse of `task_json`; `ValueError` for anything else."""
    try:
        kind = data.get("kind", "prompt")
        if kind not in ("prompt", "remind", "wake"):
            raise ValueError(f"not a task kind: {kind!r}")
        return ScheduledTask(
            task_id=optional_id(data.get("task_id")),
            name=str(data.get("name") or ""),
            kind=kind,
            channel_id=int(data["channel_id"]),
            thread_id=optional_id(data.get("thread_id")),
            prompt=str(data["prompt"]),
            schedule=data.get("schedule"),
            tz=data.get("tz"),
            next_run_at=float(data["next_run_at"]),
            enabled=bool(data.get("enabled", True)),
            paused=bool(data.get("paused", False)),
            created_by=int(data.get("created_by") or 0),
            created_by_name=str(data.get("created_by_name") or ""),
            reuse_thread=bool(data.get("reuse_thread", False)),
            mention_user_id=optional_id(data.get("mention_user_id")),
            agent=data.get("agent"),
            model=data.get("model"),
            worktree=data.get("worktree"),
            last_run_at=None if data.get("last_run_at") is None else float(data["last_run_at"]),
            last_status=data.get("last_status"),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a task: {exc!r}") from None


def tasks_from_json(items: Sequence[Any]) -> list[ScheduledTask]:
    return [task_from_json(item) for item in items]


def outcome_json(outcome: SendOutcome) -> dict[str, Any]:
    result = outcome.result
    return {
        "thread_id": _id_text(outcome.thread_id),
        "result": None
        if result is None
        else {"status": result.status, "answer": result.answer, "error": result.error},
        "task": None if outcome.task is None else task_json(outcome.task),
    }


def outcome_from_json(data: dict[str, Any]) -> SendOutcome:
    """The inverse of `outcome_json`; `ValueError` for anything else."""
    result = data.get("result")
    task = data.get("task")
    if result is not None:
        if not isinstance(result, dict) or result.get("status") not in (
            "answered",
            "failed",
            "interrupted",
            "timed out",
            "dropped",
        ):
            raise ValueError(f"not a run's result: {result!r}")
        result = RunResult(
            status=result["status"], answer=result.get("answer"), error=result.get("error")
        )
    return SendOutcome(
        thread_id=optional_id(data.get("thread_id")),
        result=result,
        task=None if task is None else task_from_json(task),
    )


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text")
    return value


def _id_text(value: int | None) -> str | None:
    return None if value is None else str(value)
