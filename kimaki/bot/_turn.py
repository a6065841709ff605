"""One thread's turns: the `TurnHandler` that joins an engine session to a Discord thread.

```
run_turn(prompt, reached)
├─ the session: opened lazily from the thread's record (resumed after a restart; a new one,
│  said in one line, when the engine no longer knows it)
├─ attachments downloaded, the prompt written with who sent each of its messages and what
│  each replied to; sent, then `reached()` (until then newer messages join the prompt)
├─ typing indicator every ~8 s, paused while a permission or question waits for a person
└─ engine events → Renderer → ThreadWriter (flushed at each completed text, step end and
   before anything interactive), until this turn's TurnEnded; then the footer
interrupted(prompt)         (the runtime cancelled the turn: a new message, or /abort)
└─ deny open asks → abort the engine's turn → drop what the old turn still sends →
   flush what was already rendered, with "⏹ interrupted"
withdrawn(prompt)           (cancelled before `reached()`: sent again with newer messages)
└─ abort only a send cut short; say nothing
```

The order a person reads is the order things happened: everything is sent from the runtime's
task, and nothing the aborted turn produced after the interruption reaches the thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, final

import attrs
import trio

from kimaki.agents import (
    AgentSetupError,
    AttachedFile,
    EngineError,
    EngineSession,
    ModelRef,
    PermissionRequested,
    PermissionResolved,
    QuestionAsked,
    QuestionResolved,
    SessionNotFoundError,
    SessionRenamed,
    TextCompleted,
    TurnEnded,
    TurnInProgressError,
    Usage,
)
from kimaki.agents._errors import first_line
from kimaki.bot._asks import Asks
from kimaki.bot._delivery import ThreadWriter
from kimaki.discord.errors import HTTPError, NetworkError
from kimaki.sessions import Prompt, prepare_attachments
from kimaki.sessions._attachments import IMAGE_LIMIT, SAVED_TEXT_LIMIT
from kimaki.sessions._render import VERBOSITY_LEVELS, Footer, Renderer, format_footer
from kimaki.store import RunningTurn, ThreadRecord
from kimaki.worktrees import read_branch

if TYPE_CHECKING:
    from kimaki.bot._bot import Bot

__all__ = ["INTERRUPTED", "ThreadTurns", "compose_prompt"]

log = logging.getLogger("kimaki.session")

INTERRUPTED: Final = "⏹ interrupted"
SESSION_REPLACED: Final = (
    "ℹ️ The agent no longer had this thread's session, so a new one started (it does not "
    "remember what was said before)."
)
_ABORT_TIMEOUT: Final = 15.0


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


@final
class ThreadTurns:
    """The `TurnHandler` of one thread. Made by `Threads` when the thread becomes active."""

    def __init__(self, bot: Bot, thread_id: int) -> None:
        self._bot = bot
        self.thread_id = thread_id
        self._record: ThreadRecord | None = None
        self._session: EngineSession | None = None
        self._renderer = Renderer()
        self._posted: set[str] = set()
        self._writer = ThreadWriter(bot.rest, thread_id, on_posted=self._parts_posted)
        self.asks = Asks(bot, thread_id, self._writer)
        self._turn_id: str | None = None
        # A prompt was handed to the engine and the turn is not over (see `withdrawn`).
        self._sending = False
        self._taken = False  # see `prompt_taken`
        # Said instead of "⏹ interrupted" when the daemon stops (SIGTERM) mid-turn.
        self.stop_notice: str | None = None

    @property
    def session(self) -> EngineSession | None:
        return self._session

    @property
    def turn_started(self) -> bool:
        """The engine took the running prompt (a restart can follow it)."""
        return self._turn_id is not None

    @property
    def prompt_taken(self) -> bool:
        """The engine took the prompt of the current `run_turn`, even if its turn is over
        (the answer may still be flushing): an in-place restart must not send it again."""
        return self._taken

    # ---- TurnHandler

    async def run_turn(self, prompt: Prompt, reached: Callable[[], None]) -> None:
        started = trio.current_time()
        self._taken = False
        session = await self._open_session()
        if session is None:
            return
        record = self._record
        assert record is not None
        store = self._bot.store
        await self._apply_verbosity(record)
        preference = await store.effective_preference(
            session_id=session.session_id, channel_id=record.channel_id
        )
        outcome: TurnOutcome | None = None
        refused: EngineError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._typing)
            try:
                if prompt.resume_turn_id is not None:
                    # Started before an in-place restart: follow it, skipping what was posted.
                    self._posted |= await store.posted_parts(self.thread_id)
                    self._turn_id = prompt.resume_turn_id
                    await session.resume_turn(prompt.resume_turn_id)
                else:
                    text, files = await self._prompt_content(prompt)
                    model = _model_ref(preference.model)
                    # The point of no return: a replay of this message must not prompt again.
                    await self._bot.handled.record_prompt(prompt)
                    self._turn_id = await self._start(session, text, files, model, preference.agent)
            except EngineError as exc:
                refused = exc
            else:
                self._taken = True
                reached()  # from now on a new message interrupts this turn
                # Kept until the turn ends, so a restart in place can follow it; shielded, as
                # the agent has the prompt now: a restart that cancelled this write while it
                # waited for the store would leave nothing to follow and the answer unsent.
                with trio.CancelScope(shield=True):
                    await store.save_running_turn(
                        RunningTurn(
                            self.thread_id,
                            session.session_id,
                            self._turn_id,
                            time.time(),
                            prompt.message_id,
                        )
                    )
                outcome = await self._follow(session, nursery)
            nursery.cancel_scope.cancel()
        if refused is not None:
            # Said outside the nursery: its cancelled scope would swallow the line.
            await self._forget_turn()
            await self._writer.say(failure_line("The agent could not take the message", refused))
            return
        # Whatever still waits for a person is moot once the agent ended the turn.
        await self.asks.cancel_all("the turn ended")
        if outcome is not None and outcome.stop_reason == "end_turn":
            footer = Footer(
                directory=str(record.directory),
                branch=await trio.to_thread.run_sync(read_branch, record.directory),
                seconds=trio.current_time() - started,
                model=outcome.model or preference.model,
                agent=preference.agent,
            )
            self._writer.add(format_footer(footer))
        await self._writer.flush()
        # Forgotten only once the answer is out: an in-place restart while it is still being
        # sent (a rate limit can hold it for seconds) has the next process follow the turn and
        # post what is missing, rather than lose it.
        with trio.CancelScope(shield=True):
            await self._forget_turn()

    async def interrupted(self, prompt: Prompt) -> None:
        await self.asks.cancel_all("a new message interrupted the turn")
        if self._session is not None:
            await self._abort(self._session)
        await self._forget_turn()
        self._writer.add(INTERRUPTED if self.stop_notice is None else self.stop_notice)
        await self._writer.flush()

    async def withdrawn(self, prompt: Prompt) -> None:
        # Newer messages arrived before the engine had `prompt`: it is sent again with them.
        # Nothing was shown for it; only a send cut short may have reached the engine.
        if self._session is not None and self._sending:
            await self._abort(self._session)
        self._sending = False
        self._turn_id = None

    async def _abort(self, session: EngineSession) -> None:
        """Stop the engine's turn (bounded) and drop what it still sends."""
        with trio.move_on_after(_ABORT_TIMEOUT):
            try:
                await session.abort()
            except EngineError as exc:
                log.warning("thread %d: abort failed: %s", self.thread_id, exc)
        self._drop_old_events(session)

    async def _forget_turn(self) -> None:
        self._sending = False
        self._turn_id = None
        self._posted.clear()
        await self._bot.store.clear_running_turn(self.thread_id)

    async def evicted(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.aclose()

    # ---- the session

    async def _open_session(self) -> EngineSession | None:
        if self._session is not None:
            return self._session
        store = self._bot.store
        record = await store.get_thread(self.thread_id)
        if record is None:
            log.warning("thread %d has no record; ignoring its prompt", self.thread_id)
            return None
        try:
            engine = self._bot.engines.get(record.engine)
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
            await self._writer.say(failure_line("The agent could not be started", exc))
            return None
        if session.session_id != record.session_id:
            record = attrs.evolve(record, session_id=session.session_id)
            await store.put_thread(record)
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
    ) -> str:
        self._sending = True  # the engine may have the prompt from here on
        try:
            return await session.prompt(text, files, model=model, agent=agent)
        except TurnInProgressError:
            # A turn from before (its abort did not finish) still runs: stop it, then retry.
            with trio.move_on_after(_ABORT_TIMEOUT):
                await session.abort()
            self._drop_old_events(session)
            return await session.prompt(text, files, model=model, agent=agent)

    def _drop_old_events(self, session: EngineSession) -> None:
        """Discard what the interrupted turn left in the queue (its end included)."""
        while True:
            try:
                event = session.events.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            if isinstance(event, PermissionResolved):
                self.asks.engine_resolved_permission(event.request_id)

    async def _apply_verbosity(self, record: ThreadRecord) -> None:
        channel = (
            await self._bot.store.get_channel(record.channel_id)
            if record.channel_id is not None
            else None
        )
        wanted = channel.verbosity if channel is not None else None
        self._renderer.verbosity = next(
            (level for level in VERBOSITY_LEVELS if level == wanted), "essential"
        )

    async def _prompt_content(self, prompt: Prompt) -> tuple[str, Sequence[AttachedFile]]:
        """The text and files of every message in `prompt`: each message's attachments are
        described right after its own text."""
        rest = self._bot.rest

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
                part.attachments, fetch=fetch, save_dir=self._bot.config.attachments_dir
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
        model: str | None = None
        flush_due = False
        async for event in session.events:
            if isinstance(event, TurnEnded) and event.turn_id != self._turn_id:
                continue  # the late end of an interrupted turn
            if isinstance(event, TextCompleted) and event.part_id in self._posted:
                continue  # posted before a restart
            if isinstance(event, Usage) and event.model:
                model = event.model
            rendered = self._renderer.render(event)
            part_id = event.part_id if isinstance(event, TextCompleted) else None
            for block in rendered.blocks:
                self._writer.add(block, part_id=part_id)
            flush_due = flush_due or rendered.flush or isinstance(event, TextCompleted)
            if isinstance(event, PermissionRequested | QuestionAsked):
                flush_due = False
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
                case TurnEnded(stop_reason=reason):
                    return TurnOutcome(reason, model)  # flushed with the footer
            # Coalesce: while more events are already waiting (a burst, or the end of the
            # turn), keep buffering, so a step and its footer go out as one message and the
            # channel's 5-messages-per-5-seconds limit is spent on what matters.
            if flush_due and session.events.statistics().pending == 0:
                flush_due = False
                await self._writer.flush()
        return None

    async def _typing(self) -> None:
        interval = self._bot.config.typing_interval
        while True:
            if not self.asks.waiting:
                # Cosmetic, so it never crowds out what matters: a burst of new turns shares
                # a few concurrent typing calls instead of opening one request each at once.
                async with self._bot.typing_limiter:
                    try:
                        await self._bot.rest.trigger_typing(self.thread_id)
                    except (HTTPError, NetworkError) as exc:
                        log.debug("thread %d: typing indicator failed: %s", self.thread_id, exc)
            await trio.sleep(interval)

    async def _parts_posted(self, part_ids: Sequence[str], message_id: int) -> None:
        self._posted.update(part_ids)
        if self._turn_id is not None:
            await self._bot.store.record_posted_parts(
                self.thread_id, [(part_id, message_id or None) for part_id in part_ids]
            )


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
