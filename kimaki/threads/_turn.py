"""One thread's turns: `ThreadTurns`, the `TurnHandler` that joins an engine session to a
Discord thread.

```
run_turn(prompt, reached)
├─ the session: opened lazily from the thread's record, the one the prompt's place carries
│  (resumed after a restart; a new one, said in one line, when the engine no longer knows it)
├─ attachments downloaded, the prompt written with who sent each of its messages and what
│  each replied to; sent, then `reached()` (until then newer messages join the prompt)
├─ typing indicator every ~8 s, paused while a permission or question waits for a person
└─ engine events → Renderer → ThreadWriter (flushed at each completed text, step end and
   before anything interactive), until this turn's TurnEnded; then the footer; returns the
   outcome (status, the agent's final answer) for the prompt's `on_done`
interrupted(prompt)         (the runtime cancelled the turn: a new message, or /abort)
└─ deny open asks → abort the engine's turn → drop what the old turn still sends →
   flush what was already rendered, with "⏹ interrupted"
withdrawn(prompt)           (cancelled before `reached()`: sent again with newer messages)
└─ abort only a send cut short; say nothing
```

The order a person reads is the order things happened: everything is sent through the thread's
`ThreadWriter` (the runtime's task, and the agent's tool calls, which wait for the turn to have
handled what the agent said before them), and nothing the aborted turn produced after the
interruption reaches the thread.

A turn is handed what it uses (`TurnServices`: narrow protocols over the REST client, the
store's facets, the handled-events record and the engines), never the bot; it knows engines
only through `kimaki.agents`' engine interface.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, final

import attrs
import trio

from kimaki.agents import (
    AgentSetupError,
    AttachedFile,
    Engine,
    EngineError,
    EngineEvent,
    EngineSession,
    ModelRef,
    PermissionRequested,
    PermissionResolved,
    QuestionAsked,
    QuestionResolved,
    SessionNotFoundError,
    SessionRenamed,
    TextCompleted,
    ToolStarted,
    TurnEnded,
    TurnInProgressError,
    Usage,
    first_line,
)
from kimaki.discord.errors import RESTError
from kimaki.store import ChannelRecord, Preference, RunningTurn, ThreadRecord
from kimaki.threads._asks import Asks, CustomIds
from kimaki.threads._attachments import IMAGE_LIMIT, SAVED_TEXT_LIMIT, prepare_attachments
from kimaki.threads._delivery import ThreadWriter
from kimaki.threads._prompt import Place, Prompt, PromptFile, PromptOutcome
from kimaki.threads._render import VERBOSITY_LEVELS, Footer, Renderer, format_footer
from kimaki.threads._settings import ThreadSettings
from kimaki.threads._tools import ThreadTools, ToolButtons, ToolREST
from kimaki.turn_hooks import (
    NO_NOTES,
    TurnHook,
    TurnInfo,
    TurnNotes,
    TurnReport,
    joined_preamble,
)
from kimaki.worktrees import read_branch

__all__ = [
    "INTERRUPTED",
    "EngineLookup",
    "ThreadRecords",
    "ThreadTurns",
    "TurnHandover",
    "TurnPreferences",
    "TurnREST",
    "TurnServices",
    "TurnStart",
    "compose_prompt",
    "decode_sent_prompt",
    "encode_sent_prompt",
]

log = logging.getLogger("kimaki.threads")

INTERRUPTED: Final = "⏹ interrupted"
SESSION_REPLACED: Final = (
    "ℹ️ The agent no longer had this thread's session, so a new one started (it does not "
    "remember what was said before)."
)
_ABORT_TIMEOUT: Final = 15.0


class TurnREST(ToolREST, Protocol):
    """The Discord calls a thread's turns and tools make (`kimaki.discord.rest.RESTClient` is
    one)."""

    async def trigger_typing(self, channel_id: int) -> None: ...

    async def download(self, url: str, *, limit: int) -> bytes: ...


class ThreadRecords(Protocol):
    """The thread and channel records (`kimaki.store.Places` is one)."""

    async def get_thread(self, thread_id: int) -> ThreadRecord | None: ...

    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...

    async def put_thread(self, thread: ThreadRecord) -> None: ...


class TurnPreferences(Protocol):
    """Model and agent for a turn (`kimaki.store.Preferences` is one)."""

    async def effective_preference(
        self, *, session_id: str | None, channel_id: int | None
    ) -> Preference: ...


class TurnHandover(Protocol):
    """What a running turn leaves for a restart to follow (`kimaki.store.Handover` is one)."""

    async def clear_running_turn(self, thread_id: int) -> object: ...

    async def posted_parts(self, thread_id: int) -> set[str]: ...

    async def record_posted_parts(
        self, thread_id: int, parts: Iterable[tuple[str, int | None]]
    ) -> None: ...


class TurnStart(Protocol):
    """The point of no return of a turn: its messages handled and its turn recorded, in one
    write (the bot's `HandledEvents` is one)."""

    async def begin_turn(self, prompt: Prompt, turn: RunningTurn) -> None: ...


class EngineLookup(Protocol):
    """The engines by name (the bot's `Engines` is one)."""

    def get(self, name: str | None = ...) -> Engine: ...


@final
@attrs.frozen
class TurnServices:
    """What a thread's turns use, each part as narrow as they need it. Made once, by
    `Threads`, and shared by every thread's `ThreadTurns`."""

    rest: TurnREST
    records: ThreadRecords
    preferences: TurnPreferences
    handover: TurnHandover
    handled: TurnStart
    engines: EngineLookup
    custom_ids: CustomIds
    settings: ThreadSettings
    typing_limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(4))
    """Typing indicators are cosmetic: a burst of new turns shares a few concurrent calls."""
    hooks: tuple[TurnHook, ...] = ()
    """The capabilities that take part in every turn (`kimaki.turn_hooks`)."""


def compose_prompt(prompt: Prompt, attachments_texts: Sequence[str] = ()) -> str:
    """The text the agent receives: each message of the prompt in the order it was sent, with
    its attachments (`attachments_texts[i]` for part `i`), what it replied to, and who sent
    it from where. Messages that joined while the first had not reached the agent are said to
    be several, so the agent reads them as a conversation, not one author's text."""
    parts = prompt.parts
    composed = [
        _compose_part(part, attachments_texts[index] if index < len(attachments_texts) else "")
        for index, part in enumerate(parts)
    ]
    if len(parts) > 1:
        composed.insert(
            0, f"<discord>{len(parts)} messages arrived together, in the order sent:</discord>"
        )
    return "\n\n".join(composed)


def _compose_part(prompt: Prompt, attachments_text: str) -> str:
    parts = [prompt.text.strip()] if prompt.text.strip() else []
    if attachments_text:
        parts.append(attachments_text)
    if prompt.reply_to is not None:
        quoted = "\n".join("> " + line for line in prompt.reply_to.content.splitlines()[:40])
        parts.append(f"(In reply to {prompt.reply_to.author_name}:)\n{quoted}")
    if prompt.source == "scheduled":
        # A scheduled run or the command line (no Discord user: id 0); its author name says so.
        ids = [f"Discord user id {prompt.author_id}"] if prompt.author_id else []
        if prompt.thread_id is not None:
            ids.append(f"thread id {prompt.thread_id}")
        where = f" ({', '.join(ids)})" if ids else ""
        parts.append(f"<discord>From {prompt.author_name}{where}</discord>")
        return "\n\n".join(parts)
    origin = f"From {prompt.author_name} (Discord user id {prompt.author_id}"
    if prompt.message_id is not None:
        origin += f", message id {prompt.message_id}"
    if prompt.thread_id is not None:
        origin += f", thread id {prompt.thread_id}"
    parts.append(f"<discord>{origin})</discord>")
    return "\n\n".join(parts)


@final
@attrs.frozen
class TurnOutcome:
    stop_reason: str
    model: str | None
    message: str | None = None  # the engine's reason, for an error
    answer: str | None = None


@final
@attrs.define
class _FollowState:
    """What following one turn carries from event to event."""

    model: str | None = None
    flush_due: bool = False
    # The agent's texts since its last tool call (its final answer, once the turn is over),
    # and the last text it said at all (the answer when it ended on a tool call).
    since_tool: list[str] = attrs.Factory(list)
    last_text: str | None = None
    usage: list[Usage] = attrs.Factory(list)

    @property
    def answer(self) -> str | None:
        return "\n\n".join(self.since_tool) if self.since_tool else self.last_text


@final
class ThreadTurns:
    """The `TurnHandler` of one thread. Made by `Threads` when the thread becomes active;
    `nursery` (the registry's) takes what outlives a turn."""

    def __init__(
        self,
        thread_id: int,
        services: TurnServices,
        nursery: trio.Nursery,
        *,
        tool_buttons: ToolButtons,
    ) -> None:
        self._services = services
        self._tool_buttons = tool_buttons
        self.thread_id = thread_id
        self._record: ThreadRecord | None = None
        self._session: EngineSession | None = None
        self._renderer = Renderer()
        self._posted: set[str] = set()
        self._writer = ThreadWriter(services.rest, thread_id, on_posted=self._parts_posted)
        self.asks = Asks(
            thread_id,
            self._writer,
            rest=services.rest,
            custom_ids=services.custom_ids,
            permission_timeout=services.settings.permission_timeout,
            nursery=nursery,
        )
        self._turn_id: str | None = None
        # A prompt was handed to the engine and the turn is not over (see `withdrawn`).
        self._sending = False
        self._taken = False  # see `prompt_taken`
        # A withdrawn prompt's running-turn record, kept until the next one replaces it.
        self._stale_record = False
        # Said instead of "⏹ interrupted" when the daemon stops (SIGTERM) mid-turn.
        self._stop_notice: str | None = None
        # Said instead of "⏹ interrupted" by the next interruption only (a time limit).
        self._interrupt_notice: str | None = None
        # Why the last `_open_session` found no session (said in the thread already).
        self._open_failure: str | None = None
        # The session was made by the last `_open_session` and has had no turn yet.
        self._fresh_session = False
        # The running turn, as the hooks know it, and what it has used so far.
        self._info: TurnInfo | None = None
        self._state: _FollowState | None = None

    @property
    def session(self) -> EngineSession | None:
        return self._session

    def tool_context(self, session_id: str) -> ThreadTools | None:
        """This thread for the tools of engine session `session_id`, if it is the thread's."""
        session, record = self._session, self._record
        if session is None or record is None or session.session_id != session_id:
            return None
        return ThreadTools(
            record=record,
            writer=self._writer,
            asks=self.asks,
            button_sets=self._tool_buttons,
            rest=self._services.rest,
            data_dir=self._services.settings.data_dir,
        )

    # ---- TurnHandler

    @property
    def turn_started(self) -> bool:
        """The engine took the running prompt (a restart can follow it)."""
        return self._turn_id is not None

    @property
    def prompt_taken(self) -> bool:
        """The engine took the prompt of the current `run_turn`, even if its turn is over
        (the answer may still be flushing): an in-place restart must not send it again."""
        return self._taken

    @property
    def withdrawn_record(self) -> bool:
        return self._stale_record

    def stopping(self, notice: str) -> None:
        self._stop_notice = notice

    def interrupt_notice(self, notice: str | None) -> None:
        """Say `notice` instead of "⏹ interrupted" if the running turn is interrupted next (a
        scheduled run past its time limit); None takes it back."""
        self._interrupt_notice = notice

    async def run_turn(self, prompt: Prompt, reached: Callable[[], None]) -> PromptOutcome:
        started = trio.current_time()
        self._taken = False
        self._interrupt_notice = None  # meant for an earlier turn
        session = await self._open_session(prompt.place)
        if session is None:
            if prompt.resume_turn_id is not None:  # said in the thread; not tried again
                await self._forget_turn()
            return PromptOutcome("failed", error=self._open_failure)
        record = self._record
        assert record is not None
        await self._apply_verbosity(record, prompt.place)
        preference = await self._services.preferences.effective_preference(
            session_id=session.session_id, channel_id=record.channel_id
        )
        # A scheduled run may name its own persona and model.
        model, agent = prompt.model or preference.model, prompt.agent or preference.agent
        outcome: TurnOutcome | None = None
        refused: EngineError | None = None
        prepared: tuple[str, Sequence[AttachedFile]] | None = None
        if prompt.resume_turn_id is None:
            prepared = await self._prompt_content(prompt)
            info = self._turn_info(prompt, record, session, prepared[0])
            refusal = await self._admit(info)
            if refusal is not None:
                await self._writer.say(refusal)
                return PromptOutcome("failed", error=refusal)
        else:
            info = self._turn_info(prompt, record, session, prompt.text)
        self._info, self._state = info, _FollowState()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._typing)
            try:
                if prepared is not None:
                    await self._send(session, prompt, prepared, model, agent)
                else:
                    await self._resume(session, prompt, model, agent)
            except EngineError as exc:
                refused = exc
            else:
                self._taken = True
                reached()  # from now on a new message interrupts this turn
                outcome = await self._follow(session, nursery)
            nursery.cancel_scope.cancel()
        if refused is not None:
            # Said outside the nursery: its cancelled scope would swallow the line.
            await self._forget_turn()
            line = failure_line("The agent could not take the message", refused)
            await self._writer.say(line)
            self._info = self._state = None
            return PromptOutcome("failed", error=first_line(str(refused)))
        # Whatever still waits for a person is moot once the agent ended the turn.
        await self.asks.cancel_all("the turn ended")
        notes = await self._turn_over(
            outcome.stop_reason if outcome is not None else "lost",
            model=(outcome.model if outcome is not None else None) or model,
            error=outcome.message if outcome is not None else None,
        )
        if outcome is not None and outcome.stop_reason == "end_turn":
            footer = Footer(
                directory=str(record.directory),
                branch=await trio.to_thread.run_sync(read_branch, record.directory),
                seconds=trio.current_time() - started,
                model=outcome.model or model,
                agent=agent,
                extras=notes.footer,
            )
            self._writer.add(format_footer(footer))
        for line in notes.lines:
            self._writer.add(line)
        await self._writer.flush()
        # Forgotten only once the answer is out: an in-place restart while it is still being
        # sent (a rate limit can hold it for seconds) has the next process follow the turn and
        # post what is missing, rather than lose it.
        with trio.CancelScope(shield=True):
            await self._forget_turn()
        return prompt_outcome(outcome)

    async def _send(
        self,
        session: EngineSession,
        prompt: Prompt,
        prepared: tuple[str, Sequence[AttachedFile]],
        model: str | None,
        agent: str | None,
    ) -> None:
        text, files = prepared
        assert self._info is not None
        preamble = await self._preamble(self._info)
        if preamble:
            text = f"{preamble}\n\n{text}"
        turn = RunningTurn(
            self.thread_id,
            session.session_id,
            session.new_turn_id(),
            time.time(),
            prompt.message_id,
            prompt=encode_sent_prompt(text, files),
        )
        # The point of no return, before the send and in one write: the prompt's messages are
        # handled (a replay must not prompt again) and its turn is running (the next process,
        # should this one die now, asks the agent for it and sends it if it never arrived).
        # Shielded: once written, the turn is this process's to send or the next one's.
        with trio.CancelScope(shield=True):
            await self._services.handled.begin_turn(prompt, turn)
            self._turn_id = turn.turn_id
            self._stale_record = False
        await self._start(session, text, files, _model_ref(model), agent, turn.turn_id)

    async def _resume(
        self, session: EngineSession, prompt: Prompt, model: str | None, agent: str | None
    ) -> None:
        """A turn recorded by an earlier process: follow it, skipping what was posted, or, if
        that process died before the agent got the prompt, send it now."""
        assert prompt.resume_turn_id is not None
        self._posted |= await self._services.handover.posted_parts(self.thread_id)
        self._turn_id = prompt.resume_turn_id
        if await session.resume_turn(prompt.resume_turn_id):
            return
        log.info(
            "thread %d: turn %s never reached the agent; sending it now",
            self.thread_id,
            prompt.resume_turn_id,
        )
        await self._start(
            session, prompt.text, prompt.files, _model_ref(model), agent, prompt.resume_turn_id
        )

    async def interrupted(self, prompt: Prompt) -> None:
        notice, self._interrupt_notice = self._interrupt_notice, None
        await self.asks.cancel_all("a new message interrupted the turn")
        if self._session is not None:
            await self._abort(self._session)
        await self._forget_turn()
        notes = await self._turn_over("interrupted", model=None, error=None)
        for line in notes.lines:
            self._writer.add(line)
        self._writer.add(self._stop_notice or notice or INTERRUPTED)
        await self._writer.flush()

    async def withdrawn(self, prompt: Prompt) -> None:
        # Newer messages arrived before the engine had `prompt`: it is sent again with them.
        # Nothing was shown for it; only a send cut short may have reached the engine. Its
        # running-turn record stays until the joined prompt's replaces it, so the messages
        # recorded as handled are never in memory alone.
        if self._session is not None and self._sending:
            await self._abort(self._session)
        self._sending = False
        self._stale_record = self._turn_id is not None
        self._turn_id = None
        self._info = self._state = None  # its turn never ran: nothing to report

    async def _abort(self, session: EngineSession) -> None:
        """Stop the engine's turn (bounded) and drop what it still sends."""
        with trio.move_on_after(_ABORT_TIMEOUT):
            try:
                await session.abort()
            except EngineError as exc:
                log.warning("thread %d: abort failed: %s", self.thread_id, exc)
        self._drop_old_events(session)

    async def _forget_turn(self) -> None:
        self._stale_record = False
        self._sending = False
        self._turn_id = None
        self._posted.clear()
        await self._services.handover.clear_running_turn(self.thread_id)

    async def evicted(self) -> None:
        if self._stale_record:  # its prompt was dropped (/abort, /clear-queue) meanwhile
            await self._forget_turn()
        session, self._session = self._session, None
        if session is not None:
            await session.aclose()

    # ---- the session

    async def _open_session(self, place: Place | None) -> EngineSession | None:
        """The thread's session: the one open, or one opened from the thread's record, the
        record the prompt's place carries if it does (else read now: a restored prompt)."""
        if self._session is not None:
            return self._session
        records = self._services.records
        self._open_failure = None
        if place is not None and place.thread is not None:
            record: ThreadRecord | None = place.thread
        else:
            record = await records.get_thread(self.thread_id)
        if record is None:
            log.warning("thread %d has no record; ignoring its prompt", self.thread_id)
            self._open_failure = "the thread is not a session of this bot"
            return None
        try:
            engine = self._services.engines.get(record.engine)
            if record.session_id:
                try:
                    session = await engine.open_session(
                        record.directory, resume_id=record.session_id
                    )
                except SessionNotFoundError:
                    session = await engine.open_session(record.directory)
                    await self._writer.say(SESSION_REPLACED)
            else:
                session = await engine.open_session(record.directory)
        except (EngineError, LookupError) as exc:
            self._open_failure = first_line(str(exc))
            await self._writer.say(failure_line("The agent could not be started", exc))
            return None
        if session.session_id != record.session_id:
            self._fresh_session = True
            record = attrs.evolve(record, session_id=session.session_id)
            await records.put_thread(record)
        self._record = record
        self._session = session
        return session

    async def _start(
        self,
        session: EngineSession,
        text: str,
        files: Sequence[AttachedFile],
        model: ModelRef | None,
        agent: str | None,
        turn_id: str,
    ) -> None:
        self._sending = True  # the engine may have the prompt from here on
        try:
            await session.prompt(text, files, model=model, agent=agent, turn_id=turn_id)
        except TurnInProgressError:
            # A turn from before (its abort did not finish) still runs: stop it, then retry.
            with trio.move_on_after(_ABORT_TIMEOUT):
                await session.abort()
            self._drop_old_events(session)
            await session.prompt(text, files, model=model, agent=agent, turn_id=turn_id)

    def _drop_old_events(self, session: EngineSession) -> None:
        """Discard what the interrupted turn left in the queue (its end included)."""
        while True:
            try:
                event = session.events.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            if isinstance(event, PermissionResolved):
                self.asks.engine_resolved_permission(event.request_id)

    async def _apply_verbosity(self, record: ThreadRecord, place: Place | None) -> None:
        """The verbosity of the thread's project channel: as the prompt's place found it (the
        router read it for this message), else read now."""
        channel: ChannelRecord | None = None
        if place is not None and place.project.channel_id == record.channel_id:
            channel = place.project
        elif record.channel_id is not None:
            channel = await self._services.records.get_channel(record.channel_id)
        wanted = channel.verbosity if channel is not None else None
        self._renderer.verbosity = next(
            (level for level in VERBOSITY_LEVELS if level == wanted), "essential"
        )

    async def _prompt_content(self, prompt: Prompt) -> tuple[str, Sequence[AttachedFile]]:
        """The text and files of every message in `prompt`: each message's attachments are
        described right after its own text."""
        rest = self._services.rest

        async def fetch(url: str) -> bytes:
            return await rest.download(url, limit=max(IMAGE_LIMIT, SAVED_TEXT_LIMIT))

        attachments_texts: list[str] = []
        files: list[AttachedFile] = []
        for part in prompt.parts:
            files.extend(part.files)
            if not part.attachments:
                attachments_texts.append("")
                continue
            prepared = await prepare_attachments(
                part.attachments, fetch=fetch, save_dir=self._services.settings.attachments_dir
            )
            attachments_texts.append(prepared.text)
            files.extend(prepared.files)
            for line in prepared.refused:
                self._writer.add(f"📎 {line}")
        if any(part.attachments for part in prompt.parts):
            await self._writer.flush()
        return compose_prompt(prompt, attachments_texts), files

    # ---- following the turn

    async def _follow(self, session: EngineSession, nursery: trio.Nursery) -> TurnOutcome | None:
        """Render the turn's events until its `TurnEnded`. Each batch (the events already
        queued) is handled holding the writer's lock, so a tool's message waits for what the
        agent said before it (see `kimaki.threads._delivery`)."""
        state = self._state if self._state is not None else _FollowState()
        events = session.events
        with self._writer.following(events):
            while True:
                try:
                    event: EngineEvent | None = await events.receive()
                except trio.EndOfChannel:
                    return None
                async with self._writer.handling():
                    while event is not None:
                        outcome = await self._handle(session, event, state, nursery)
                        if outcome is not None:
                            return outcome  # flushed with the footer
                        # As `receive()` does: a cancelled turn takes no more events.
                        await trio.lowlevel.checkpoint_if_cancelled()
                        try:
                            event = events.receive_nowait()
                        except trio.WouldBlock:
                            event = None
                        except trio.EndOfChannel:
                            return None

    async def _handle(
        self,
        session: EngineSession,
        event: EngineEvent,
        state: _FollowState,
        nursery: trio.Nursery,
    ) -> TurnOutcome | None:
        """One event of the turn: rendered, buffered, flushed where due; the outcome at its end."""
        if isinstance(event, TurnEnded) and event.turn_id != self._turn_id:
            return None  # the late end of an interrupted turn
        if isinstance(event, TextCompleted) and event.part_id in self._posted:
            return None  # posted before a restart
        if isinstance(event, Usage):
            state.usage.append(event)
            if event.model:
                state.model = event.model
        if self._info is not None:
            self._observe(self._info, event)
        if isinstance(event, TextCompleted) and event.text.strip():
            state.since_tool.append(event.text.strip())
            state.last_text = event.text.strip()
        elif isinstance(event, ToolStarted):
            state.since_tool.clear()
        rendered = self._renderer.render(event)
        part_id = event.part_id if isinstance(event, TextCompleted) else None
        for block in rendered.blocks:
            self._writer.add(block, part_id=part_id)
        state.flush_due = state.flush_due or rendered.flush or isinstance(event, TextCompleted)
        if isinstance(event, PermissionRequested | QuestionAsked):
            state.flush_due = False
            await self._writer.flush()  # what led to the question comes before it
        match event:
            case PermissionRequested():
                await self.asks.ask_permission(session, event, nursery)
            case QuestionAsked():
                await self.asks.ask_questions(session, event)
            case PermissionResolved(request_id=request_id):
                self.asks.engine_resolved_permission(request_id)
            case QuestionResolved(request_id=request_id):
                self.asks.engine_resolved_question(request_id)
            case SessionRenamed():
                pass
            case TurnEnded(stop_reason=reason, message=message):
                return TurnOutcome(reason, state.model, message, state.answer)
        # Coalesce: while more events are already waiting (a burst, or the end of the turn),
        # keep buffering, so a step and its footer go out as one message and the channel's
        # 5-messages-per-5-seconds limit is spent on what matters.
        if state.flush_due and session.events.statistics().pending == 0:
            state.flush_due = False
            await self._writer.flush()
        return None

    # ---- the hooks

    def _turn_info(
        self, prompt: Prompt, record: ThreadRecord, session: EngineSession, text: str
    ) -> TurnInfo:
        first, self._fresh_session = self._fresh_session, False
        return TurnInfo(
            thread_id=self.thread_id,
            channel_id=record.channel_id,
            directory=record.directory,
            engine=record.engine,
            session_id=session.session_id,
            author_id=prompt.author_id,
            source=prompt.source,
            first_turn=first,
            text=text,
            started_at=time.time(),
        )

    async def _admit(self, info: TurnInfo) -> str | None:
        for hook in self._services.hooks:
            try:
                refusal = await hook.admit(info)
            except Exception:
                log.exception("thread %d: a turn hook's admit failed", self.thread_id)
                continue
            if refusal is not None:
                return refusal
        return None

    async def _preamble(self, info: TurnInfo) -> str:
        texts: list[str] = []
        for hook in self._services.hooks:
            try:
                texts.append(await hook.preamble(info))
            except Exception:
                log.exception("thread %d: a turn hook's preamble failed", self.thread_id)
        return joined_preamble(texts)

    def _observe(self, info: TurnInfo, event: EngineEvent) -> None:
        for hook in self._services.hooks:
            try:
                hook.observe(info, event)
            except Exception:
                log.exception("thread %d: a turn hook's observe failed", self.thread_id)

    async def _turn_over(
        self, stop_reason: str, *, model: str | None, error: str | None
    ) -> TurnNotes:
        """Tell the hooks the running turn is over (once); what they add to its end."""
        info, state = self._info, self._state
        self._info = self._state = None
        if info is None or state is None or not self._services.hooks:
            return NO_NOTES
        report = TurnReport(
            stop_reason=stop_reason,
            model=state.model or model,
            seconds=max(0.0, time.time() - info.started_at),
            usage=tuple(state.usage),
            error=error,
        )
        footer: list[str] = []
        lines: list[str] = []
        with trio.CancelScope(shield=True):  # an interrupted turn's end is still told
            for hook in self._services.hooks:
                try:
                    notes = await hook.ended(info, report)
                except Exception:
                    log.exception("thread %d: a turn hook's ended failed", self.thread_id)
                    continue
                footer.extend(notes.footer)
                lines.extend(notes.lines)
        return TurnNotes(footer=tuple(footer), lines=tuple(lines))

    async def _typing(self) -> None:
        services = self._services
        interval = services.settings.typing_interval
        while True:
            if not self.asks.waiting:
                # Cosmetic, so it never crowds out what matters: a burst of new turns shares
                # a few concurrent typing calls instead of opening one request each at once.
                async with services.typing_limiter:
                    try:
                        await services.rest.trigger_typing(self.thread_id)
                    except RESTError as exc:
                        log.debug("thread %d: typing indicator failed: %s", self.thread_id, exc)
            await trio.sleep(interval)

    async def _parts_posted(self, part_ids: Sequence[str], message_id: int) -> None:
        self._posted.update(part_ids)
        if self._turn_id is not None:
            await self._services.handover.record_posted_parts(
                self.thread_id, [(part_id, message_id or None) for part_id in part_ids]
            )


def encode_sent_prompt(text: str, files: Sequence[AttachedFile]) -> str:
    """What a turn sends, for its running-turn record (`decode_sent_prompt` reads it)."""
    return json.dumps(
        {
            "text": text,
            "files": [
                {
                    "filename": file.filename,
                    "mime": file.mime,
                    "data": base64.b64encode(file.data).decode("ascii"),
                }
                for file in files
            ],
        }
    )


def decode_sent_prompt(payload: str | None) -> tuple[str, tuple[PromptFile, ...]]:
    """The text and files of `encode_sent_prompt`; nothing for a record without them."""
    if not payload:
        return "", ()
    data = json.loads(payload)
    files = tuple(
        PromptFile(str(item["filename"]), str(item["mime"]), base64.b64decode(item["data"]))
        for item in data.get("files") or ()
    )
    return str(data.get("text") or ""), files


def prompt_outcome(outcome: TurnOutcome | None) -> PromptOutcome:
    """How a followed turn ended, as its prompt's waiter sees it. No outcome: the session's
    events ended first (the agent server went away)."""
    if outcome is None:
        return PromptOutcome("failed", error="the agent's session ended before the turn did")
    reason, answer = outcome.stop_reason, outcome.answer
    if reason == "end_turn":
        return PromptOutcome("answered", answer=answer)
    if reason == "aborted":
        return PromptOutcome("interrupted", answer=answer)
    error = first_line(outcome.message) if outcome.message else _STOP_REASONS.get(reason, reason)
    return PromptOutcome("failed", answer=answer, error=error)


_STOP_REASONS: Final = {
    "error": "the agent stopped with an error",
    "max_tokens": "the agent reached its output limit",
    "max_turn_requests": "the agent reached its limit of requests for one turn",
    "refused": "the agent refused",
}


def failure_line(what: str, exc: Exception) -> str:
    """One line in the thread for an engine that could not do `what`: the first line of the
    reason (the server's stderr after it is for the log), or, for a setup error, the reason
    alone, since it names the fix."""
    reason = first_line(str(exc))
    if isinstance(exc, AgentSetupError):
        return f"⚠️ {reason}"
    return f"⚠️ {what}: {reason}"


def _model_ref(text: str | None) -> ModelRef | None:
    if not text:
        return None
    try:
        return ModelRef.parse(text)
    except ValueError:
        return None
