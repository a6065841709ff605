"""Sessions: `/new-session`, `/resume`, `/abort`, `/session-id`, `/queue`, `/clear-queue`.

`/resume` binds a new thread to a session the agent already has (from the terminal, or from a
thread that was deleted) and replays its last messages, marked as history, so the thread
reads as a continuation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Protocol, final

import attrs

from kimaki.agents import (
    Engine,
    EngineError,
    HistoryEntry,
    SessionCatalog,
    SessionSummary,
    SessionTranscript,
    TerminalAttach,
)
from kimaki.bot._engines import Engines, UnknownEngineError
from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import (
    CommandRegistry,
    KnownChannels,
    QuietPoster,
    SessionOpener,
    ThreadLookup,
    ThreadRecordWriter,
    command_prompt,
    engine_choices,
    ensure_session,
    format_age,
    get_engine,
    matching,
    option,
    person_name,
    post_quietly,
    say_engine_error,
    session_thread,
)
from kimaki.discord.markdown import split_message
from kimaki.discord.models import ApplicationCommandOptionType, Channel, CommandChoice
from kimaki.store import ChannelRecord, Preference, ThreadRecord
from kimaki.threads import Prompt

__all__ = ["SessionCommands", "SessionThreads", "format_history"]

log = logging.getLogger("kimaki.commands")

HISTORY_MESSAGES: Final = 10
_HISTORY_ENTRY_LIMIT: Final = 1500
_RESUME_LOOKUP: Final = 200


class SessionThreads(ThreadLookup, SessionOpener, Protocol):
    """The thread pipeline as the session commands use it (`kimaki.threads.Threads` is one)."""

    async def start_thread(
        self, project: ChannelRecord, *, name: str, session_id: str | None = ...
    ) -> Channel: ...

    def submit(self, thread_id: int, prompt: Prompt) -> int: ...

    def interrupt(self, thread_id: int) -> bool: ...

    def queued(self, thread_id: int) -> tuple[Prompt, ...]: ...

    def clear_queue(self, thread_id: int, position: int | None = ...) -> list[Prompt]: ...


class SessionRecords(ThreadRecordWriter, Protocol):
    """Thread records, and which thread a session runs in (`kimaki.store.Places` is one)."""

    async def thread_of_session(self, session_id: str) -> ThreadRecord | None: ...


class PreferenceWriter(Protocol):
    """Where `/new-session agent:` keeps its choice (`kimaki.store.Preferences` is one)."""

    async def set_preference(self, preference: Preference) -> None: ...


class DroppedMessages(Protocol):
    """Where dropped queued messages are recorded as handled (the bot's `HandledEvents`)."""

    async def record(self, kind: str, event_ids: Iterable[int]) -> None: ...


@final
@attrs.frozen(kw_only=True)
class SessionCommands:
    """The session commands, with what they use."""

    _threads: SessionThreads
    _engines: Engines
    _records: SessionRecords
    _preferences: PreferenceWriter
    _rest: QuietPoster
    _channels: KnownChannels
    _handled: DroppedMessages

    def install(self, registry: CommandRegistry) -> None:
        add = registry.add_command
        add(
            SlashCommand(
                "new-session",
                "Start a session in a new thread of this project",
                self._new_session,
                options=(
                    option("prompt", "What to ask the agent", required=True, max_length=4000),
                    option("agent", "The agent to use in this session", autocomplete=True),
                ),
                autocomplete=engine_choices(self._agents),
            )
        )
        add(
            SlashCommand(
                "resume",
                "Continue one of this project's sessions in a new thread",
                self._resume,
                options=(option("session", "The session", required=True, autocomplete=True),),
                autocomplete=engine_choices(self._sessions),
            )
        )
        add(SlashCommand("abort", "Stop the agent's running turn in this thread", self._abort))
        add(
            SlashCommand(
                "session-id",
                "Show this thread's session id and how to open it in a terminal",
                self._session_id,
            )
        )
        add(
            SlashCommand(
                "queue",
                "Send a message after the running turn instead of interrupting it",
                self._queue,
                options=(option("message", "The message", required=True, max_length=4000),),
            )
        )
        add(
            SlashCommand(
                "clear-queue",
                "Drop queued messages of this thread",
                self._clear_queue,
                options=(
                    option(
                        "position",
                        "Only the message at this place in the queue (1 = next)",
                        kind=ApplicationCommandOptionType.INTEGER,
                        min_value=1,
                    ),
                ),
            )
        )

    # ---- /new-session

    async def _agents(self, ctx: InteractionContext) -> Sequence[CommandChoice]:
        project = ctx.project
        assert project is not None
        _, typed = ctx.focused()
        engine = self._engines.get(project.engine)
        agents = await engine.list_agents(project.directory)
        return matching(
            [
                CommandChoice(f"{a.name} — {a.description}" if a.description else a.name, a.name)
                for a in agents
                if a.primary
            ],
            typed,
        )

    async def _new_session(self, ctx: InteractionContext) -> None:
        threads = self._threads
        project = ctx.project
        assert project is not None
        text = ctx.text_option("prompt").strip()
        agent = ctx.text_option("agent").strip() or None
        if not text:
            await ctx.reply("Write what the agent should do.")
            return
        if agent is not None:
            try:
                agents = await self._engines.get(project.engine).list_agents(project.directory)
            except (EngineError, UnknownEngineError) as exc:
                await ctx.reply(f"⚠️ Could not list the agents: {exc}")
                return
            names = [a.name for a in agents if a.primary]
            if agent not in names:
                await ctx.reply(
                    f"There is no agent `{agent}` here; choose one of: {', '.join(names)}."
                )
                return
        prompt = command_prompt(ctx, text)
        thread = await threads.start_thread(project, name=text)
        await post_quietly(self._rest, thread.id, f"**{person_name(ctx)}**: {text}")
        if agent is not None:
            record = await threads.record(thread.id)
            assert record is not None
            try:
                record = await ensure_session(threads, self._records, record)
            except EngineError as exc:
                await ctx.reply(f"Started <#{thread.id}>, but the agent could not start: {exc}")
                return
            await self._preferences.set_preference(
                Preference(scope="session", scope_id=record.session_id, agent=agent)
            )
        threads.submit(thread.id, attrs.evolve(prompt, thread_id=thread.id))
        using = f" with agent `{agent}`" if agent else ""
        await ctx.reply(f"Started <#{thread.id}>{using}.")

    # ---- /resume

    async def _sessions(self, ctx: InteractionContext) -> Sequence[CommandChoice]:
        project = ctx.project
        assert project is not None
        engine = self._engines.get(project.engine)
        if not isinstance(engine, SessionCatalog):
            return ()
        _, typed = ctx.focused()
        sessions = await engine.list_sessions(project.directory, search=typed.strip(), limit=25)
        return [
            CommandChoice(f"{_title(s)} · {format_age(s.updated_at)}", s.session_id)
            for s in sessions
        ]

    async def _resume(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        session_id = ctx.text_option("session").strip()
        bound = await self._records.thread_of_session(session_id)
        if bound is not None and self._channels.channel(bound.thread_id) is not None:
            # Two threads driving one session would interleave their turns: go to the one
            # there is.
            await ctx.reply(f"Session `{session_id}` already runs in <#{bound.thread_id}>.")
            return
        engine = await get_engine(ctx, self._engines, project.engine)
        if engine is None:
            return
        title = "Resumed session"
        if isinstance(engine, SessionCatalog):
            try:
                sessions = await engine.list_sessions(project.directory, limit=_RESUME_LOOKUP)
            except EngineError as exc:
                await say_engine_error(ctx, "list the sessions", exc)
                return
            found = next((s for s in sessions if s.session_id == session_id), None)
            if found is None:
                await ctx.reply(
                    f"This project has no session `{session_id}`: pick one from the list."
                )
                return
            title = _title(found)
        thread = await self._threads.start_thread(project, name=title, session_id=session_id)
        replayed = await self._replay_history(engine, project.directory, session_id, thread.id)
        shown = f" with its last {replayed} messages" if replayed else ""
        await ctx.reply(f"Resumed `{session_id}` in <#{thread.id}>{shown}.")

    async def _replay_history(
        self, engine: Engine, directory: Path, session_id: str, thread_id: int
    ) -> int:
        """Post the session's last messages, marked as history; how many."""
        if not isinstance(engine, SessionTranscript):
            return 0
        try:
            entries = await engine.recent_messages(directory, session_id, limit=HISTORY_MESSAGES)
        except EngineError as exc:
            log.warning("no history for session %s: %s", session_id, exc)
            entries = []
        for text in format_history(entries) if entries else ():
            await post_quietly(self._rest, thread_id, text)
        return len(entries)

    # ---- /abort, /session-id

    async def _abort(self, ctx: InteractionContext) -> None:
        record = await session_thread(ctx, self._threads, "abort")
        if record is None:
            return
        if self._threads.interrupt(record.thread_id):
            await ctx.reply("Stopped the running turn.")
        else:
            await ctx.reply("Nothing is running in this thread.")

    async def _session_id(self, ctx: InteractionContext) -> None:
        record = await session_thread(ctx, self._threads, "session-id")
        if record is None:
            return
        if not record.session_id:
            await ctx.reply("This thread has no session yet: write a message to start one.")
            return
        lines = [
            f"Session `{record.session_id}` ({record.engine}) in `{record.directory}`.",
        ]
        engine = await get_engine(ctx, self._engines, record.engine)
        if engine is None:
            return
        if isinstance(engine, TerminalAttach):
            command = engine.attach_command(record.directory, record.session_id)
            lines.append(f"Continue it in a terminal on this machine:\n```sh\n{command}\n```")
        await ctx.reply("\n".join(lines))

    # ---- /queue, /clear-queue

    async def _queue(self, ctx: InteractionContext) -> None:
        record = await session_thread(ctx, self._threads, "queue")
        if record is None:
            return
        text = ctx.text_option("message").strip()
        if not text:
            await ctx.reply("Write the message to queue.")
            return
        prompt = attrs.evolve(command_prompt(ctx, text, queued=True), thread_id=record.thread_id)
        position = self._threads.submit(record.thread_id, prompt)
        where = "sent now" if position == 0 else f"queued, #{position} in line"
        preview = text if len(text) <= 1800 else text[:1799] + "…"
        await ctx.reply(f"**{person_name(ctx)}** ({where}): {preview}", ephemeral=False)

    async def _clear_queue(self, ctx: InteractionContext) -> None:
        threads = self._threads
        record = await session_thread(ctx, threads, "clear-queue")
        if record is None:
            return
        raw = ctx.option("position")
        position = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        waiting = len(threads.queued(record.thread_id))
        dropped = threads.clear_queue(record.thread_id, position)
        if dropped:
            # Dropped on purpose: a replay after a crash must not serve them again.
            await self._handled.record(
                "message", [message_id for prompt in dropped for message_id in prompt.message_ids]
            )
            # A prompt may hold several messages (those that joined it): name each of them.
            messages = [part for prompt in dropped for part in prompt.parts]
            names = "; ".join(f"“{_short(part.text)}”" for part in messages)
            await ctx.reply(f"Dropped {len(messages)} queued message(s): {names}")
        elif position is not None and waiting:
            await ctx.reply(f"There is no #{position} in the queue ({waiting} waiting).")
        else:
            await ctx.reply("Nothing is queued in this thread.")


def _title(session: SessionSummary) -> str:
    return session.title.strip() or session.session_id


def format_history(entries: Sequence[HistoryEntry]) -> list[str]:
    """A session's last messages as thread messages, each marked as history."""
    blocks = [f"-# 📜 Earlier in this session (last {len(entries)} messages, not sent again)"]
    for entry in entries:
        who = "person" if entry.role == "user" else "agent"
        text = entry.text.strip()
        if len(text) > _HISTORY_ENTRY_LIMIT:
            text = text[: _HISTORY_ENTRY_LIMIT - 1].rstrip() + "…"
        blocks.append(f"-# history · {who}\n{text}")
    blocks.append("-# 📜 End of history: new messages continue the session.")
    return split_message("\n\n".join(blocks))


def _short(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
