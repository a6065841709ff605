"""How a scheduled run reaches Discord: `ThreadRunTarget`, the scheduler's `RunTarget` over the
thread pipeline and the REST client.

```
start_prompt(task, text)
├─ the thread: the task's own, or a new "⏰ <name>" thread in its project channel (in a new
│  worktree when the task names one)
├─ a line in the thread saying who sent what (a person through /schedule, the command line,
│  the agent's own sleep), so the people there see where the prompt came from
└─ Threads.submit(queued): served like a person's queued message, behind a running turn;
   the prompt's `on_done` resolves the run's `done` (its status and the agent's answer)
interrupt(thread_id, notice)   the run's turn past its time limit: aborted, saying `notice`
post(channel_id, text)         a reminder (with its mention), a missed run's notice
```

The scheduler is below the bot and blind to threads; the pipeline is blind to the scheduler:
a `Prompt` only carries an `on_done` callback, and this module turns its `PromptOutcome` into
the scheduler's `RunResult`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Final, Protocol, final

import trio

from kimaki._redact import redact
from kimaki.discord.errors import RESTError
from kimaki.discord.markdown import split_message
from kimaki.discord.models import AllowedMentions, Channel
from kimaki.schedules import RunResult, ScheduleError, StartedRun
from kimaki.store import ChannelRecord, ScheduledTask, ThreadRecord
from kimaki.threads import Prompt, PromptOutcome
from kimaki.worktrees import Worktree, WorktreeError, create_worktree

__all__ = [
    "RunNotices",
    "TargetPlaces",
    "TargetREST",
    "TargetThreads",
    "ThreadRunTarget",
    "task_thread_name",
]

log = logging.getLogger("kimaki.schedules")

SCHEDULED_MARKER: Final = "⏰ "
_NO_PINGS: Final = AllowedMentions()


class RunNotices(Protocol):
    """A thread's live turn handler, as far as a time limit goes (`ThreadTurns` is one)."""

    def interrupt_notice(self, notice: str | None) -> None: ...


class TargetThreads(Protocol):
    """The thread pipeline's door, as a scheduled run uses it (`kimaki.threads.Threads`)."""

    def submit(self, thread_id: int, prompt: Prompt) -> int: ...

    async def start_thread(
        self, project: ChannelRecord, *, name: str, worktree: Worktree | None = ...
    ) -> Channel: ...

    async def record(self, thread_id: int) -> ThreadRecord | None: ...

    def interrupt(self, thread_id: int) -> bool: ...

    def queued(self, thread_id: int) -> tuple[Prompt, ...]: ...

    def clear_queue(self, thread_id: int, position: int | None = ...) -> list[Prompt]: ...

    def turns(self, thread_id: int) -> RunNotices | None: ...


class TargetPlaces(Protocol):
    """The project channels (`kimaki.store.Places` is one)."""

    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...


class TargetREST(Protocol):
    """The one Discord call of a run: a message (`kimaki.discord.rest.RESTClient` is one)."""

    async def create_message(
        self,
        channel_id: int,
        content: str | None = ...,
        *,
        allowed_mentions: AllowedMentions | None = ...,
    ) -> object: ...


def task_thread_name(task: ScheduledTask, text: str) -> str:
    """A run's new thread: "⏰ <name>" for a stored task; a direct send (`kimaki send`, no
    task id) is named as a person's message would be, by its name or its first line."""
    if task.task_id is None:
        return task.name or text
    return SCHEDULED_MARKER + (task.name or text)


@final
class _Run:
    """One run's prompt: its `on_done` (this object, called by the pipeline once) and its
    `done` (awaiting this object: the `RunResult`)."""

    def __init__(self, task: ScheduledTask, thread_id: int, forget: Callable[[_Run], None]) -> None:
        self.task = task
        self.thread_id = thread_id
        self.timed_out = False
        self._forget = forget
        self._result: RunResult | None = None
        self._ended = trio.Event()

    def __call__(self, outcome: PromptOutcome) -> None:
        if self._result is not None:
            return  # told twice (it should not be): the first word stands
        status = outcome.status
        if self.timed_out and status in ("interrupted", "dropped"):
            self._result = RunResult("timed out", outcome.answer, outcome.error)
        else:
            self._result = RunResult(status, outcome.answer, outcome.error)
        self._ended.set()
        self._forget(self)

    @property
    def over(self) -> bool:
        return self._result is not None

    def owns(self, prompt: Prompt) -> bool:
        return any(part.on_done is self for part in prompt.parts)

    async def _wait(self) -> RunResult:
        await self._ended.wait()
        assert self._result is not None
        return self._result

    def __await__(self) -> Generator[Any, None, RunResult]:
        # A coroutine only when awaited: a run nobody waits for leaves none un-awaited.
        return self._wait().__await__()


@final
class ThreadRunTarget:
    """The scheduler's `RunTarget` (`kimaki.schedules.RunTarget`): a run's prompt goes into the
    thread pipeline as a queued prompt, and its turn's outcome comes back as the run's result."""

    def __init__(
        self,
        *,
        threads: TargetThreads,
        places: TargetPlaces,
        rest: TargetREST,
        worktrees_dir: Path,
    ) -> None:
        self._threads = threads
        self._places = places
        self._rest = rest
        self._worktrees_dir = worktrees_dir
        # The runs whose prompt is not over yet, by thread, oldest first.
        self._runs: dict[int, list[_Run]] = {}

    async def start_prompt(self, task: ScheduledTask, text: str) -> StartedRun:
        """Queue `text` for `task`'s thread (a new "⏰ <name>" thread for a channel task), after
        a line saying who sent it. Raises `ScheduleError` when there is nowhere to run it (the
        channel is no longer a project, the thread is gone, the worktree cannot be made)."""
        thread_id = await self._thread_for(task, text)
        run = _Run(task, thread_id, self._forget)
        await self._send(thread_id, _announcement(task, text), _NO_PINGS)
        prompt = Prompt(
            text=text,
            author_id=task.created_by,
            author_name=_author(task),
            queued=True,
            source="scheduled",
            thread_id=thread_id,
            agent=task.agent,
            model=task.model,
            on_done=run,
        )
        try:
            position = self._threads.submit(thread_id, prompt)
        except trio.ClosedResourceError:
            run(PromptOutcome("dropped", error="the bot is stopping"))
            return StartedRun(thread_id, run)
        if not run.over:  # held until its `on_done` forgets it
            self._runs.setdefault(thread_id, []).append(run)
        if position > 0:
            ahead = "1 turn" if position == 1 else f"{position} turns"
            line = f"📋 Queued at position {position} (after {ahead})."
            try:
                await self._send(thread_id, line, _NO_PINGS)
            except ScheduleError as exc:  # cosmetic: the run is queued all the same
                log.warning("thread %d: %s", thread_id, exc)
        return StartedRun(thread_id, run)

    async def interrupt(self, thread_id: int, notice: str) -> None:
        """End this target's run in `thread_id`: its running turn is aborted with `notice`
        instead of "⏹ interrupted"; a run still queued (behind a person's turn) is taken out
        of the queue, and `notice` said. A person's turn is never touched."""
        runs = self._live_runs(thread_id)
        if not runs:
            log.debug("thread %d: no scheduled run to interrupt", thread_id)
            return
        queued = self._threads.queued(thread_id)
        running = [run for run in runs if not any(run.owns(prompt) for prompt in queued)]
        if running:
            run = running[0]
            run.timed_out = True
            turns = self._threads.turns(thread_id)
            if turns is not None:
                turns.interrupt_notice(notice)
            if not self._threads.interrupt(thread_id) and turns is not None:
                turns.interrupt_notice(None)  # over in the same instant: its result stands
            return
        # All still queued: the oldest has waited longest, so its time ran out first.
        run = runs[0]
        position = next(i for i, prompt in enumerate(queued, 1) if run.owns(prompt))
        run.timed_out = True
        self._threads.clear_queue(thread_id, position)
        try:
            await self._send(thread_id, notice, _NO_PINGS)
        except ScheduleError as exc:  # the run is over all the same
            log.warning("thread %d: %s", thread_id, exc)

    async def post(self, channel_id: int, content: str, *, mention_user_id: int | None) -> None:
        """Post `content` (a reminder), pinging `mention_user_id` and nobody else: the mention
        goes after a leading emoji ("🔔 <@user> text") or first, unless `content` has it.
        Raises `ScheduleError` when Discord refuses it (the channel is gone)."""
        mentions = _NO_PINGS
        if mention_user_id is not None:
            mentions = AllowedMentions(users=(mention_user_id,))
            content = _with_mention(content, mention_user_id)
        await self._send(channel_id, content, mentions)

    # ----

    def _live_runs(self, thread_id: int) -> list[_Run]:
        return [run for run in self._runs.get(thread_id, ()) if not run.over]

    def _forget(self, run: _Run) -> None:
        """A run is over: the target holds only the runs it may still interrupt."""
        runs = self._runs.get(run.thread_id)
        if runs is not None and run in runs:
            runs.remove(run)
            if not runs:
                del self._runs[run.thread_id]

    @property
    def live_runs(self) -> int:
        """How many runs' prompts are queued or running (for tests and statistics)."""
        return sum(len(runs) for runs in self._runs.values())

    async def _thread_for(self, task: ScheduledTask, text: str) -> int:
        if task.thread_id is not None:
            if await self._threads.record(task.thread_id) is not None:
                return task.thread_id
            if not task.reuse_thread:
                raise ScheduleError(
                    f"thread {task.thread_id} is no longer a session of this bot "
                    "(deleted, or its project was removed)"
                )
            # The thread the task's runs shared is gone: the next one opens a new one.
        project = await self._places.get_channel(task.channel_id)
        if project is None:
            raise ScheduleError(f"channel {task.channel_id} is no longer a project channel")
        worktree = None
        if task.worktree:
            try:
                worktree = await create_worktree(
                    project.directory, self._worktrees_dir, task.worktree
                )
            except WorktreeError as exc:
                raise ScheduleError(f"no worktree {task.worktree!r} for this run: {exc}") from exc
        try:
            thread = await self._threads.start_thread(
                project, name=task_thread_name(task, text), worktree=worktree
            )
        except RESTError as exc:
            raise ScheduleError(
                f"could not open a thread in channel {project.channel_id}: {exc}"
            ) from exc
        return thread.id

    async def _send(self, channel_id: int, content: str, mentions: AllowedMentions) -> None:
        """Post `content` (split to Discord's limit); a refusal is the run's `ScheduleError`."""
        try:
            for chunk in split_message(redact(content)):
                if chunk.strip():
                    await self._rest.create_message(channel_id, chunk, allowed_mentions=mentions)
        except RESTError as exc:
            raise ScheduleError(f"could not post in channel {channel_id}: {exc}") from exc


def _author(task: ScheduledTask) -> str:
    """Who the agent is told sent a run's prompt."""
    who = task.created_by_name or "someone"
    if task.kind == "wake":
        return f"{who} (the end of your own sleep)"
    if task.task_id is None:
        return who
    return f"{who} (scheduled task #{task.task_id})"


def _announcement(task: ScheduledTask, text: str) -> str:
    """The line the thread shows for a run's prompt: who sent it, then the prompt."""
    who = task.created_by_name or "someone"
    if task.kind == "wake":
        return SCHEDULED_MARKER + text
    if task.task_id is None:
        return f"💬 Sent by {who}:\n{text}"
    name = f" “{task.name}”" if task.name else ""
    return f"{SCHEDULED_MARKER}Scheduled task #{task.task_id}{name}, by {who}:\n{text}"


def _with_mention(content: str, user_id: int) -> str:
    mention = f"<@{user_id}>"
    if mention in content:
        return content
    first, _, rest = content.partition(" ")
    if first and rest and not any(char.isalnum() for char in first):
        return f"{first} {mention} {rest}"
    return f"{mention} {content}"
