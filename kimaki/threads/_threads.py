"""Threads: the door of the thread pipeline. It opens a project's threads, keeps their records,
and owns the runtime of every active thread (and the turns it serves).

```
Threads.run (a nursery: the runtimes, and what outlives a turn)
├─ what the previous process left running or queued, submitted again first (restore)
├─ ThreadRuntimes ─ one ThreadRuntime per active thread, driving its ThreadTurns (the
│  TurnHandler: engine session ⇄ renderer ⇄ ThreadWriter, and its Asks)
└─ ToolButtons ─── the buttons agent tools posted, open until pressed or a new message
```

Agent tools reach a thread through `tool_context(session_id)`: the `ThreadTools` of the live
runtime whose engine session made the call, bound to that thread and its project channel.

A thread's record (`ThreadRecord`: session id, engine, directory, parent channel) lives in the
store, so a thread outlives its runtime: an evicted or restarted thread is rebuilt from it on
the next prompt.

`Threads` is handed only what it uses: narrow protocols over the REST client, the store's
facets (places, preferences, handover), the handled-events record, the engines and the custom
ids of the bot's interactions, plus the settings values. It knows nothing of the bot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, final

import attrs
import trio

from kimaki._audit import audit
from kimaki._redact import redact
from kimaki.agents import EngineSession
from kimaki.discord.errors import HTTPError
from kimaki.discord.models import Channel
from kimaki.store import ChannelRecord, QueuedPrompt, RunningTurn, ThreadRecord, WorktreeRecord
from kimaki.threads._asks import AskContext, Asks, CustomIds
from kimaki.threads._delivery import FLUSH_BOUND
from kimaki.threads._prompt import Place, Prompt
from kimaki.threads._runtime import RuntimeStatistics, ThreadRuntimes
from kimaki.threads._settings import ThreadSettings
from kimaki.threads._tools import ToolButtons
from kimaki.threads._turn import (
    EngineLookup,
    ThreadRecords,
    ThreadTurns,
    TurnHandover,
    TurnPreferences,
    TurnREST,
    TurnServices,
    TurnStart,
    decode_sent_prompt,
)
from kimaki.tools._spec import ToolContext
from kimaki.turn_hooks import TurnHook
from kimaki.worktrees import Worktree, WorktreeError, create_worktree, is_git_repository

__all__ = [
    "EngineRegistry",
    "RestartHandover",
    "ThreadPlaces",
    "Threads",
    "ThreadsREST",
    "thread_name",
]

log = logging.getLogger("kimaki.threads")

WORKTREE_MARKER: Final = "⎇ "
THREAD_ALREADY_CREATED: Final = 160004
"""Discord's error code for a second thread from one message."""
_UNTITLED: Final = "New session"
# How long an in-place restart waits for cancelled turns to unwind (a started flush finishes).
_UNWIND_BOUND: Final = FLUSH_BOUND + 5.0


class ThreadsREST(TurnREST, Protocol):
    """The Discord calls of the pipeline: its turns', and opening threads
    (`kimaki.discord.rest.RESTClient` is one)."""

    async def start_thread(self, channel_id: int, name: str) -> Channel: ...

    async def start_thread_from_message(
        self, channel_id: int, message_id: int, name: str
    ) -> Channel: ...

    async def get_channel(self, channel_id: int) -> Channel: ...


class ThreadPlaces(ThreadRecords, Protocol):
    """The records of threads and their worktrees (`kimaki.store.Places` is one)."""

    async def delete_thread(self, thread_id: int) -> object: ...

    async def put_worktree(self, worktree: WorktreeRecord) -> None: ...


class RestartHandover(TurnHandover, Protocol):
    """What an in-place restart hands over: running turns and queues
    (`kimaki.store.Handover` is one)."""

    async def running_turns(self) -> list[RunningTurn]: ...

    async def take_queued_prompts(self) -> list[QueuedPrompt]: ...

    async def save_queued_prompts(
        self,
        thread_id: int,
        payloads: Sequence[Any],
        *,
        message_ids: Iterable[int] = ...,
        clear_running_turn: bool = ...,
    ) -> None: ...


class EngineRegistry(EngineLookup, Protocol):
    """The engines by name, and which one a new thread gets by default (the bot's `Engines`)."""

    @property
    def default(self) -> str: ...


def thread_name(text: str, *, marker: str = "") -> str:
    """A thread name from the first non-empty line of `text`: at most 100 characters."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "") or _UNTITLED
    # Redacted before it is cut: a secret cut in two is no longer one the redactor knows.
    name = marker + " ".join(redact(line).split())
    return name if len(name) <= 100 else name[:99].rstrip() + "…"


@final
class Threads:
    """Create, then `await nursery.start(threads.run)` before the first prompt."""

    def __init__(
        self,
        *,
        rest: ThreadsREST,
        places: ThreadPlaces,
        preferences: TurnPreferences,
        handover: RestartHandover,
        handled: TurnStart,
        engines: EngineRegistry,
        custom_ids: CustomIds,
        settings: ThreadSettings,
        hooks: Sequence[TurnHook] = (),
    ) -> None:
        self._rest = rest
        self._places = places
        self._handover = handover
        self._engines = engines
        self._settings = settings
        self._services = TurnServices(
            rest=rest,
            records=places,
            preferences=preferences,
            handover=handover,
            handled=handled,
            engines=engines,
            custom_ids=custom_ids,
            settings=settings,
            hooks=tuple(hooks),
        )
        self._custom_ids = custom_ids
        self._runtimes: ThreadRuntimes[ThreadTurns] | None = None
        self._tool_buttons: ToolButtons | None = None

    @property
    def runtimes(self) -> ThreadRuntimes[ThreadTurns]:
        if self._runtimes is None:
            raise RuntimeError("Threads.run has not started")
        return self._runtimes

    @property
    def tool_buttons(self) -> ToolButtons:
        """The buttons agent tools posted, open in every thread."""
        if self._tool_buttons is None:
            raise RuntimeError("Threads.run has not started")
        return self._tool_buttons

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            services = self._services
            buttons = ToolButtons(
                rest=self._rest, custom_ids=self._custom_ids, submit=self.submit, nursery=nursery
            )
            self._tool_buttons = buttons
            self._runtimes = ThreadRuntimes(
                nursery,
                lambda thread_id: ThreadTurns(thread_id, services, nursery, tool_buttons=buttons),
                idle_timeout=self._settings.idle_timeout,
            )
            try:
                # Before anything else reaches the runtimes (replayed messages come after):
                # what the previous process left running or queued, in order.
                await self._restore()
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._runtimes.close()

    async def _restore(self) -> None:
        # Their places are read by their turns: the records may have changed since.
        for turn in await self._handover.running_turns():
            log.info("thread %d: following turn %s again", turn.thread_id, turn.turn_id)
            # What was sent, to send again if the agent never got it.
            text, files = decode_sent_prompt(turn.prompt)
            self.submit(
                turn.thread_id,
                Prompt(
                    text=text,
                    files=files,
                    author_id=0,
                    author_name="",
                    message_id=turn.prompt_message_id,
                    source="resume",
                    thread_id=turn.thread_id,
                    resume_turn_id=turn.turn_id,
                ),
            )
        queued = await self._handover.take_queued_prompts()
        for item in sorted(queued, key=lambda q: (q.thread_id, q.position)):
            try:
                prompt = Prompt.from_json(item.payload)
            except (TypeError, ValueError) as exc:
                log.warning("thread %d: a queued prompt could not be read: %s", item.thread_id, exc)
                continue
            # As it was: a prompt that interrupts still does, and a message replayed after the
            # RESUME joins it if it has not reached the engine (arrival order).
            self.submit(item.thread_id, prompt)
        if queued:
            log.info("%d queued prompt(s) taken over from before the restart", len(queued))

    async def suspend_for_restart(self) -> None:
        """Hand running turns and queues to the next process (an in-place restart).

        Running turns keep running in their agent servers: their records were saved when they
        started, and the next process follows them. A prompt the engine has not taken yet goes
        back to the front of its queue, and every queue is saved.
        """
        runtimes = self.runtimes
        runtimes.close()
        suspended = [(runtime, *runtime.suspend()) for runtime in runtimes.runtimes()]
        # Let the cancelled turns unwind first: a send the engine answered in the same instant
        # still records its turn (shielded), and must then be followed, not sent again.
        with trio.move_on_after(_UNWIND_BOUND):
            await runtimes.wait_for_turns([runtime for runtime, _, _ in suspended])
        for runtime, running, pending in suspended:
            handler = runtime.handler
            # Not sent again once the engine took it: a turn to follow, or one that is over
            # and still flushing its answer.
            started = handler.turn_started or handler.prompt_taken
            if running is not None and not started:
                pending.insert(0, running)
            stale = not started and handler.withdrawn_record
            if pending or stale:
                # Their messages are handled from here on (the next process serves the queue),
                # in the same write, so the replay of those messages finds them taken. With no
                # turn started, a running-turn record left by a withdrawn prompt (now in the
                # queue) goes in that write too, or the next process would send it twice.
                await self._handover.save_queued_prompts(
                    runtime.thread_id,
                    [prompt.to_json() for prompt in pending],
                    message_ids=[
                        message_id for prompt in pending for message_id in prompt.message_ids
                    ],
                    clear_running_turn=stale,
                )
        log.info("thread runtimes handed over for the restart")

    async def stop_turns(self, notice: str) -> None:
        """The daemon is stopping: interrupt every running turn, saying `notice` instead of
        "interrupted", and wait until they have ended."""
        runtimes = self.runtimes
        runtimes.close()
        busy = [runtime for runtime in runtimes.runtimes() if runtime.running is not None]
        for runtime in busy:
            runtime.handler.stopping(notice)
            runtime.clear_queue()
            runtime.interrupt()
        await runtimes.wait_for_turns(busy)

    def statistics(self) -> RuntimeStatistics:
        return self.runtimes.statistics()

    # ---- threads

    async def start_thread(
        self,
        project: ChannelRecord,
        *,
        name: str,
        prompt: Prompt | None = None,
        from_message_id: int | None = None,
        directory: Path | None = None,
        session_id: str | None = None,
        engine: str | None = None,
        worktree: Worktree | None = None,
    ) -> Channel:
        """A public thread in `project` (from a message, or standalone), recorded and prompted.

        With `worktree` (or automatic worktrees on for the channel), the thread works in the
        worktree: its name gets the marker and the store keeps the mapping.
        """
        rest = self._rest
        notice = None
        if worktree is None and directory is None and session_id is None and project.auto_worktrees:
            worktree, notice = await self._automatic_worktree(project, name)
        title = thread_name(name, marker=WORKTREE_MARKER if worktree is not None else "")
        if from_message_id is not None:
            thread = await self._thread_from_message(project.channel_id, from_message_id, title)
        else:
            thread = await rest.start_thread(project.channel_id, title)
        if worktree is not None:
            directory = worktree.path
            await self._places.put_worktree(
                WorktreeRecord(
                    thread_id=thread.id,
                    project_directory=project.directory,
                    directory=worktree.path,
                    branch=worktree.branch,
                    base_branch=worktree.base,
                )
            )
        record = ThreadRecord(
            thread_id=thread.id,
            session_id=session_id or "",
            engine=engine or project.engine or self._engines.default,
            directory=directory or project.directory,
            channel_id=project.channel_id,
        )
        await self._places.put_thread(record)
        if notice is not None:
            await rest.create_message(thread.id, notice)
        if prompt is not None:
            self._submit_first(Place(project, record), prompt)
        return thread

    async def open_existing_thread(
        self, project: ChannelRecord, message_id: int, prompt: Prompt
    ) -> bool:
        """True if the message's thread exists already (a message replayed after a crash):
        its prompt goes to that thread instead of opening another.

        The prompt had not reached the agent, or the message would be known as handled and
        would not have come this far.
        """
        record = await self._places.get_thread(message_id)
        if record is None or record.channel_id != project.channel_id:
            return False
        log.info("message %d: its thread was opened before a restart; prompting it", message_id)
        self._submit_first(Place(project, record), prompt)
        return True

    async def _thread_from_message(self, channel_id: int, message_id: int, title: str) -> Channel:
        rest = self._rest
        try:
            return await rest.start_thread_from_message(channel_id, message_id, title)
        except HTTPError as exc:
            if exc.code != THREAD_ALREADY_CREATED:
                raise
        # An earlier process opened it and died before recording it: that thread is this one
        # (a thread started from a message has the message's id).
        log.info("message %d: its thread exists already; using it", message_id)
        return await rest.get_channel(message_id)

    def _submit_first(self, place: Place, prompt: Prompt) -> None:
        assert place.thread is not None
        thread_id = place.thread.thread_id
        try:
            self.submit(thread_id, attrs.evolve(prompt, thread_id=thread_id, place=place))
        except trio.ClosedResourceError:
            log.info("thread %d: stopping, so its first prompt is not served", thread_id)

    async def _automatic_worktree(
        self, project: ChannelRecord, name: str
    ) -> tuple[Worktree | None, str | None]:
        """A worktree for a new thread of a git project, or why there is none."""
        if not await is_git_repository(project.directory):
            return None, None
        try:
            worktree = await create_worktree(
                project.directory, self._settings.worktrees_dir, thread_name(name)
            )
        except WorktreeError as exc:
            log.warning("channel %d: no automatic worktree: %s", project.channel_id, exc)
            return None, f"⚠️ No worktree for this thread ({exc}); working in the project."
        return worktree, None

    async def record(self, thread_id: int) -> ThreadRecord | None:
        return await self._places.get_thread(thread_id)

    async def adopt_thread(self, project: ChannelRecord, thread_id: int) -> ThreadRecord:
        """A record for a thread someone opened by hand under a project channel."""
        record = ThreadRecord(
            thread_id=thread_id,
            session_id="",
            engine=project.engine or self._engines.default,
            directory=project.directory,
            channel_id=project.channel_id,
        )
        await self._places.put_thread(record)
        return record

    async def forget(self, thread_id: int) -> None:
        """The thread was deleted: stop its turn and drop its record."""
        runtime = self.runtimes.get(thread_id)
        if runtime is not None:
            runtime.interrupt()
            runtime.clear_queue()
        await self._places.delete_thread(thread_id)

    # ---- prompts

    def submit(self, thread_id: int, prompt: Prompt) -> int:
        """Hand `prompt` to the thread's runtime; its queue position (0: now / next).

        A prompt with its `place` (a routed message) is served without reading the thread's
        records again; one without (a command's) has its turn read them. A person's new
        message dismisses what agent tools left open in the thread: buttons, and questions.
        Raises `trio.ClosedResourceError` once the bot is stopping.
        """
        position = self.runtimes.submit(thread_id, prompt)
        audit(
            "turn.queued",
            thread_id=thread_id,
            user_id=prompt.author_id or None,
            source=prompt.source,
            position=position,
            message_ids=list(prompt.message_ids),
        )
        if prompt.source == "message" and prompt.message_id is not None:
            self.tool_buttons.dismiss(thread_id)
            asks = self.asks(thread_id)
            if asks is not None:
                asks.dismiss_tool_questions()
        return position

    def interrupt(self, thread_id: int) -> bool:
        runtime = self.runtimes.get(thread_id)
        return runtime is not None and runtime.interrupt()

    def clear_queue(self, thread_id: int, position: int | None = None) -> list[Prompt]:
        runtime = self.runtimes.get(thread_id)
        return [] if runtime is None else runtime.clear_queue(position)

    def queued(self, thread_id: int) -> tuple[Prompt, ...]:
        runtime = self.runtimes.get(thread_id)
        return () if runtime is None else runtime.pending

    def turns(self, thread_id: int) -> ThreadTurns | None:
        """The live handler of a thread (None when it has no runtime now)."""
        runtime = self.runtimes.get(thread_id)
        return None if runtime is None else runtime.handler

    def asks(self, thread_id: int) -> Asks | None:
        """What the thread's turn waits for a person about (None when it has no runtime now):
        the bot routes the clicks on permission buttons and question menus here."""
        turns = self.turns(thread_id)
        return None if turns is None else turns.asks

    def tool_context(self, session_id: str) -> ToolContext | None:
        """The thread whose live runtime holds engine session `session_id`, as that session's
        tools see it (`kimaki.tools.ToolContext`); None when no runtime has the session (it
        ended, or its thread went idle)."""
        for runtime in self.runtimes.runtimes():
            tools = runtime.handler.tool_context(session_id)
            if tools is not None:
                return tools
        return None

    async def press_tool_button(
        self, ctx: AskContext, thread_id: int, payload: Any, choice: str
    ) -> None:
        """A press on a button an agent tool posted in `thread_id` (the bot routes it here)."""
        await self.tool_buttons.press(ctx, thread_id, payload, choice)

    async def session(self, thread_id: int) -> EngineSession:
        """The thread's engine session (opened or resumed now if its runtime is idle)."""
        turns = self.turns(thread_id)
        if turns is not None and turns.session is not None:
            return turns.session
        record = await self._places.get_thread(thread_id)
        if record is None:
            raise LookupError(f"thread {thread_id} has no session")
        engine = self._engines.get(record.engine)
        return await engine.open_session(record.directory, resume_id=record.session_id or None)
