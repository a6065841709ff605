"""A scripted in-memory engine, for fast tests of everything above the engine interface.

It keeps the promises of `kimaki.agents.Engine` that the bot relies on: one ordered event
queue per session for its whole life, `prompt()` returning a turn id once accepted and
refusing a second turn while one runs, `abort()` returning after the turn's `TurnEnded`,
`SessionNotFoundError` for a session it does not know, permissions and questions answered
through the session.

What the agent "does" in a turn is said in the script vocabulary of `kimaki.testing.script`,
the one the fake OpenCode and the fake ACP agent play too: `add_turns` queues `TurnScript`s for
the next prompts, in order. Past them a responder runs: an async function given the
`RunningTurn`, which `play`s actions and can act on an answer (`ask_permission`, `ask`). The
default responder echoes the prompt's first line.

```python
async with open_fake_engine() as engine:
    engine.add_turns(TurnScript(Say("Let me look."), Tool("bash", "make test"), Say("Done.")))

    async def responder(turn: RunningTurn) -> None:
        if await turn.ask_permission("bash", ["git push"]) == "reject":
            await turn.play(Say("I will not push."))

    engine.responder = responder
```
"""

from __future__ import annotations

import difflib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, final

import attrs
import trio

from kimaki.agents import (
    AgentInfo,
    AttachedFile,
    CommandInfo,
    DiffStats,
    EngineError,
    EngineEvent,
    EngineRequestError,
    EngineSession,
    EventQueue,
    ModelInfo,
    ModelRef,
    PermissionReply,
    PermissionRequested,
    PermissionResolved,
    PlanEntry,
    PlanUpdated,
    ProviderModels,
    Question,
    QuestionAsked,
    QuestionResolved,
    ReasoningCompleted,
    SessionNotFoundError,
    SessionRenamed,
    StepFinished,
    TextCompleted,
    ToolFinished,
    ToolStarted,
    TurnEnded,
    TurnInProgressError,
    Usage,
)
from kimaki.agents._events import StopReason
from kimaki.testing.script import (
    Action,
    Ask,
    ContextUsage,
    Diff,
    Fail,
    Hold,
    Plan,
    Rename,
    Say,
    ScriptError,
    Step,
    Stop,
    Think,
    Tool,
    TurnScript,
    supported_by,
)

__all__ = [
    "FakeEngine",
    "FakeSession",
    "PromptRecord",
    "Responder",
    "RunningTurn",
    "drive_turn",
    "echo",
    "hold_long_jobs",
    "open_fake_engine",
    "texts",
    "until_turn_end",
]


@final
@attrs.frozen
class PromptRecord:
    """A prompt as it reached the engine."""

    session_id: str
    turn_id: str
    text: str
    files: tuple[AttachedFile, ...]
    model: ModelRef | None
    agent: str | None
    directory: Path
    at: float
    # `time.monotonic()` when it arrived: comparable across processes (benchmarks).
    monotonic_at: float = 0.0

    @property
    def first_line(self) -> str:
        return next((line for line in self.text.splitlines() if line.strip()), "")


_DEFAULT_STEP = Step()  # what a step the script does not count reports


class _TurnOver(Exception):
    """Raised through a responder where the turn ends (`Stop`, `Fail`, a refused ask)."""


@final
class RunningTurn:
    """One running turn, as a responder drives it: `play` the script vocabulary, or ask and act
    on the answer."""

    # What this wire can say of the script vocabulary (the rest are other wires' faults).
    PLAYS: ClassVar = (Say, Think, Tool, Ask, Plan, ContextUsage, Step, Rename, Hold, Stop, Fail)

    def __init__(self, session: FakeSession, record: PromptRecord) -> None:
        self.session = session
        self.record = record
        self.turn_id = record.turn_id
        self._parts = itertools.count(1)
        self.stop_reason: StopReason = "end_turn"
        self.end_message: str | None = None
        # Everything emitted, re-sent to a session that resumes the turn after a restart.
        self.history: list[EngineEvent] = []
        # Something was said since the last step: a turn that ends normally ends that step,
        # as a model's last step does.
        self.open_step = False

    @property
    def prompt(self) -> str:
        return self.record.text

    def _part(self) -> str:
        return f"{self.turn_id}-part-{next(self._parts)}"

    def emit(self, event: EngineEvent) -> None:
        """Send one engine event as is (the wire itself, for what no action says)."""
        self.history.append(event)
        self.session.events.send_nowait(event)

    def _say(self, event: EngineEvent) -> None:
        self.emit(event)
        self.open_step = True

    def _step(self, step: Step = _DEFAULT_STEP) -> None:
        self.emit(StepFinished(self._part(), "stop"))
        usage = Usage(
            input_tokens=step.input,
            output_tokens=step.output,
            reasoning_tokens=step.reasoning,
            cache_read_tokens=step.cache_read,
            cache_write_tokens=step.cache_write,
            cost=step.cost,
            model="fake/model-1",
        )
        self.emit(usage)
        self.open_step = False

    def _ending(self, reason: StopReason, message: str | None = None) -> None:
        self.stop_reason = reason
        self.end_message = message

    def _end(self, reason: StopReason, message: str | None = None) -> None:
        self._ending(reason, message)
        raise _TurnOver

    async def play(self, *actions: Action) -> None:
        """Do `actions` in order, as engine events. `Stop`, `Fail`, a rejected `Tool(ask=True)`
        and a dismissed `Ask` end the turn there: neither the rest nor the responder goes on."""
        supported_by([TurnScript(*actions)], self.PLAYS, "the fake engine")
        for action in actions:
            match action:
                case Say(text=text):
                    self._say(TextCompleted(self._part(), text))
                case Think(text=text):
                    self._say(ReasoningCompleted(self._part(), text))
                case Tool():
                    await self._tool(action)
                case Ask(questions=questions):
                    if await self.ask(questions) is None:
                        self._end("end_turn")
                case Plan(entries=entries):
                    self.emit(PlanUpdated(tuple(PlanEntry(*entry) for entry in entries)))
                case ContextUsage(used=used, size=size, cost=cost):
                    # ACP's shape: what the window holds, and the session's running cost.
                    self.emit(Usage(context_used=used, context_limit=size, session_cost=cost))
                case Step():
                    self._step(action)
                case Rename(title=title):
                    self.session.title = title
                    self.emit(SessionRenamed(title))
                case Hold(ignore_cancel=ignore_cancel):
                    if ignore_cancel:
                        raise ScriptError("the fake engine's abort always ends a Hold")
                    await self.session._engine._release.wait()
                case Stop(reason=reason, message=message):
                    self._end(reason, message)
                case Fail(message=message):
                    self._end("error", message)

    async def _tool(self, tool: Tool) -> None:
        part = self._part()
        fields: dict[str, Any] = {
            "part_id": part,
            "call_id": tool.call_id or f"call-{part}",
            "tool": tool.name,
            "title": tool.title,
            "input_summary": tool.title,
        }
        self._say(ToolStarted(**fields, status="running"))
        if tool.ask:
            reply = await self.ask_permission(tool.name, tool.patterns, always=tool.always)
            if reply == "reject":
                self.emit(ToolFinished(**fields, status="error", error="rejected by the user"))
                self._end("end_turn")
        self.emit(
            ToolFinished(
                **fields,
                status="completed" if tool.error is None else "error",
                error=tool.error,
                output=tool.output or None,
                diff=None if tool.diff is None else _diff_stats(tool.diff),
            )
        )

    async def ask_permission(
        self, permission: str, patterns: Sequence[str] = (), *, always: Sequence[str] = ()
    ) -> PermissionReply:
        """Ask and wait for the answer (`reply_permission` on the session), for a responder that
        acts on it."""
        request_id = f"perm-{next(_ids)}"
        answered = self.session._open_request(request_id)
        self.emit(
            PermissionRequested(
                request_id=request_id,
                permission=permission,
                title=" ".join(patterns) or permission,
                patterns=tuple(patterns),
                always=tuple(always),
            )
        )
        reply: PermissionReply = await answered.receive()
        return reply

    async def ask(self, questions: Sequence[Question]) -> list[list[str]] | None:
        """Ask questions; the answers (one list per question), or None when rejected."""
        request_id = f"question-{next(_ids)}"
        answered = self.session._open_request(request_id)
        self.emit(QuestionAsked(request_id=request_id, questions=tuple(questions)))
        answers: list[list[str]] | None = await answered.receive()
        return answers


def _diff_stats(diff: Diff) -> DiffStats:
    """What a person is shown of a change: lines written, or lines added and removed."""
    if diff.old is None:
        return DiffStats(path=diff.path, lines=len(diff.new.splitlines()))
    changes = [
        line[0]
        for line in difflib.ndiff(diff.old.splitlines(), diff.new.splitlines())
        if line[:1] in "+-"
    ]
    return DiffStats(path=diff.path, additions=changes.count("+"), deletions=changes.count("-"))


Responder = Callable[[RunningTurn], Awaitable[None]]


async def echo(turn: RunningTurn) -> None:
    """The default agent: answers `echo: <first line of the prompt>`."""
    await turn.play(Say(f"echo: {turn.record.first_line}"))


def hold_long_jobs(engine: FakeEngine) -> trio.Event:
    """Make `engine` say "working" for a prompt with "long" in it and hold that turn until the
    returned event is set, then echo; other prompts are echoed at once."""
    release = trio.Event()

    async def long_turn(turn: RunningTurn) -> None:
        if "long" in turn.prompt:
            await turn.play(Say("working"), Step())
            await release.wait()
        await echo(turn)

    engine.responder = long_turn
    return release


_ids = itertools.count(1)


@final
class FakeSession:
    def __init__(self, engine: FakeEngine, session_id: str, directory: Path, title: str) -> None:
        self._engine = engine
        self.session_id = session_id
        self.directory = directory
        self.title = title
        self.events = EventQueue()
        self.closed = False
        self.closed_event = trio.Event()
        self._turn: RunningTurn | None = None
        self._turn_scope: trio.CancelScope | None = None
        self._turn_over = trio.Event()
        self._requests: dict[str, trio.MemorySendChannel[Any]] = {}

    @property
    def running(self) -> bool:
        return self._turn is not None

    async def prompt(
        self,
        text: str,
        files: Sequence[AttachedFile] = (),
        *,
        model: ModelRef | None = None,
        agent: str | None = None,
        turn_id: str | None = None,
    ) -> str:
        self._engine.sends += 1
        self._engine._changed.unpark_all()
        await self._engine._answer()
        if self._engine.prompt_error is not None:
            raise self._engine.prompt_error
        if self._turn is not None:
            raise TurnInProgressError("the previous turn is still running")
        turn_id = turn_id if turn_id is not None else self.new_turn_id()
        record = PromptRecord(
            self.session_id,
            turn_id,
            text,
            tuple(files),
            model,
            agent,
            self.directory,
            trio.current_time(),
            time.monotonic(),
        )
        turn = RunningTurn(self, record)
        self._turn = turn
        self._turn_over = trio.Event()
        self._engine._record(record)
        self._engine._nursery.start_soon(self._run_turn, turn)
        return turn_id

    async def _run_turn(self, turn: RunningTurn) -> None:
        self._engine._running[turn.turn_id] = turn
        with trio.CancelScope() as scope:
            self._turn_scope = scope
            try:
                if self._engine._scripts:
                    await turn.play(*self._engine._scripts.pop(0).actions)
                else:
                    await self._engine.responder(turn)
                if turn.open_step:
                    turn._step()
            except _TurnOver:
                pass
            except Exception as exc:  # a responder's bug shows as the turn's error
                turn._ending("error", f"{type(exc).__name__}: {exc}")
        del self._engine._running[turn.turn_id]
        # The turn may have moved to a session that resumed it after a restart.
        session = turn.session
        for send in session._requests.values():
            send.close()
        session._requests.clear()
        reason: StopReason = "aborted" if scope.cancelled_caught else turn.stop_reason
        session._turn = None
        session._turn_scope = None
        ended = TurnEnded(turn.turn_id, reason, turn.end_message)
        self._engine._finished[turn.turn_id] = (*turn.history, ended)
        session.events.send_nowait(ended)
        session._turn_over.set()

    def new_turn_id(self) -> str:
        return f"turn-{next(_ids)}"

    async def resume_turn(self, turn_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        if self._turn is not None:
            raise TurnInProgressError("the previous turn is still running")
        self._engine.resumed.append(turn_id)
        self._engine._changed.unpark_all()
        turn = self._engine._running.get(turn_id)
        if turn is None:
            # Over already (as OpenCode does, replay what it did), or never prompted: as
            # OpenCode, whose session then has no message of the turn, say so.
            finished = self._engine._finished.get(turn_id)
            if finished is None:
                return False
            for event in finished:
                self.events.send_nowait(event)
            return True
        previous, turn.session = turn.session, self
        self._turn, self._turn_scope = turn, previous._turn_scope
        self._turn_over, self._requests = previous._turn_over, previous._requests
        previous._turn = previous._turn_scope = None
        for event in turn.history:
            self.events.send_nowait(event)
        return True

    async def abort(self) -> None:
        self._engine.aborts += 1
        if self._turn_scope is None:
            await trio.lowlevel.checkpoint()
            return
        self._turn_scope.cancel()
        await self._turn_over.wait()

    def _open_request(self, request_id: str) -> trio.MemoryReceiveChannel[Any]:
        send, receive = trio.open_memory_channel[Any](1)
        self._requests[request_id] = send
        return receive

    def _answer(self, request_id: str, value: Any) -> None:
        send = self._requests.pop(request_id, None)
        if send is None:
            raise EngineRequestError(f"no open request {request_id}")
        send.send_nowait(value)
        send.close()

    async def reply_permission(self, request_id: str, reply: PermissionReply) -> None:
        await trio.lowlevel.checkpoint()
        self._engine.permission_replies.append((request_id, reply))
        self._answer(request_id, reply)
        self.events.send_nowait(PermissionResolved(request_id, reply))

    async def answer_question(self, request_id: str, answers: Sequence[Sequence[str]]) -> None:
        await trio.lowlevel.checkpoint()
        chosen = [list(answer) for answer in answers]
        self._engine.question_answers.append((request_id, chosen))
        self._answer(request_id, chosen)
        self.events.send_nowait(
            QuestionResolved(request_id, tuple(tuple(answer) for answer in chosen))
        )

    async def reject_question(self, request_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self._engine.question_answers.append((request_id, None))
        self._answer(request_id, None)
        self.events.send_nowait(QuestionResolved(request_id, None))

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self.closed = True
        self.closed_event.set()
        if self._engine._live.get(self.session_id) is self:
            del self._engine._live[self.session_id]


@final
class FakeEngine:
    """Build with `open_fake_engine()`; its turns run in that block's nursery."""

    name = "fake"

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.responder: Responder = echo
        self.prompts: list[PromptRecord] = []
        self.sessions_opened: list[tuple[Path, str | None]] = []
        self.permission_replies: list[tuple[str, PermissionReply]] = []
        self.question_answers: list[tuple[str, list[list[str]] | None]] = []
        self.aborts = 0
        self.resumed: list[str] = []
        self.sends = 0  # calls of `prompt()` (counted before `held_until` is waited for)
        # Until this event is set, opening a session and taking a prompt wait for it, as with
        # an agent server still starting (after a restart) or slow to answer; a call cancelled
        # while it waits never reached the engine.
        self.held_until: trio.Event | None = None
        # Raised by `prompt()` while set, as a real engine does when its server went away
        # between opening the session and taking the prompt.
        self.prompt_error: EngineError | None = None
        self._known: dict[str, tuple[Path, str]] = {}
        self._live: dict[str, FakeSession] = {}
        self._running: dict[str, RunningTurn] = {}
        self._scripts: list[TurnScript] = []
        self._release = trio.Event()
        self._finished: dict[str, tuple[EngineEvent, ...]] = {}
        self._changed = trio.lowlevel.ParkingLot()
        self._ids = itertools.count(1)
        self.models = (
            ProviderModels(
                "fake", "Fake", (ModelInfo("model-1", "Model One"), ModelInfo("model-2", "Two"))
            ),
        )

    def add_turns(self, *turns: TurnScript) -> None:
        """Script the next prompts' turns, in order, across sessions (`ScriptError` for an
        action this wire cannot say); the responder answers the prompts after them."""
        self._scripts.extend(supported_by(turns, RunningTurn.PLAYS, "the fake engine"))

    def release(self) -> None:
        """Let every turn held by a `Hold` go on."""
        self._release.set()
        self._release = trio.Event()

    async def _answer(self) -> None:
        if self.held_until is None:
            await trio.lowlevel.checkpoint()
        else:
            await self.held_until.wait()

    def _record(self, record: PromptRecord) -> None:
        self.prompts.append(record)
        self._changed.unpark_all()

    async def wait_for_prompts(self, count: int) -> list[PromptRecord]:
        """The first `count` prompts, once that many reached the engine."""
        while len(self.prompts) < count:
            await self._changed.park()
        return self.prompts[:count]

    async def wait_for_sends(self, count: int) -> None:
        """Until `prompt()` was called `count` times (the bot is sending, or sent)."""
        while self.sends < count:
            await self._changed.park()

    async def wait_for_resume(self, count: int = 1) -> list[str]:
        """The ids of the first `count` turns resumed after a restart."""
        while len(self.resumed) < count:
            await self._changed.park()
        return self.resumed[:count]

    def session(self, session_id: str) -> FakeSession:
        """The live session object the bot holds for `session_id`."""
        return self._live[session_id]

    def forget(self, session_id: str) -> None:
        """Lose a session, as an engine whose storage was wiped would."""
        self._known.pop(session_id, None)

    async def open_session(
        self, directory: Path, *, resume_id: str | None = None, title: str | None = None
    ) -> FakeSession:
        await self._answer()
        self.sessions_opened.append((directory, resume_id))
        if resume_id is not None:
            known = self._known.get(resume_id)
            if known is None:
                raise SessionNotFoundError(f"no session {resume_id}")
            session = FakeSession(self, resume_id, known[0], known[1])
        else:
            session_id = f"ses_fake{next(self._ids):04d}"
            session = FakeSession(self, session_id, directory, title or "")
            self._known[session_id] = (directory, title or "")
        self._live[session.session_id] = session
        return session

    async def list_models(self, directory: Path) -> Sequence[ProviderModels]:
        await trio.lowlevel.checkpoint()
        return self.models

    async def list_agents(self, directory: Path) -> Sequence[AgentInfo]:
        await trio.lowlevel.checkpoint()
        return (AgentInfo("build", "Builds things"), AgentInfo("plan", "Plans only"))

    async def list_commands(self, directory: Path) -> Sequence[CommandInfo]:
        await trio.lowlevel.checkpoint()
        return (CommandInfo("init", "Write AGENTS.md"),)


@asynccontextmanager
async def open_fake_engine() -> AsyncIterator[FakeEngine]:
    async with trio.open_nursery() as nursery:
        engine = FakeEngine(nursery)
        yield engine
        nursery.cancel_scope.cancel()


async def until_turn_end(
    events: EventQueue,
    *,
    on_event: Callable[[EngineEvent], Awaitable[None]] | None = None,
    within: float = 10,
) -> list[EngineEvent]:
    """Collect events up to and including the next `TurnEnded` (calling `on_event` on each);
    fails after `within` seconds, or if the stream ends first."""
    collected: list[EngineEvent] = []
    with trio.fail_after(within):
        async for event in events:
            collected.append(event)
            if on_event is not None:
                await on_event(event)
            if isinstance(event, TurnEnded):
                return collected
    raise AssertionError(f"the event stream ended before the turn: {collected}")


async def drive_turn(
    session: EngineSession,
    text: str,
    *,
    permission: PermissionReply | None = None,
    **options: Any,
) -> list[EngineEvent]:
    """Prompt any engine's session and collect the turn's events up to its `TurnEnded`,
    answering every permission request with `permission` (end-to-end tests of real agents,
    so it waits up to a minute)."""

    async def answer(event: EngineEvent) -> None:
        if isinstance(event, PermissionRequested) and permission is not None:
            await session.reply_permission(event.request_id, permission)

    turn_id = await session.prompt(text, **options)
    events = await until_turn_end(session.events, on_event=answer, within=60)
    ended = events[-1]
    assert isinstance(ended, TurnEnded)
    assert ended.turn_id == turn_id, (ended, turn_id)
    return events


def texts(events: Sequence[EngineEvent]) -> list[str]:
    """The final texts of a turn's answer parts."""
    return [event.text for event in events if isinstance(event, TextCompleted)]
