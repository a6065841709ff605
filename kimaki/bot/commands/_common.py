"""What every command group needs: option builders, the session thread, engine capabilities,
and the narrow protocols more than one group consumes (each group is handed its parts when it
is made; these functions take the part they use as an argument)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import attrs

from kimaki._redact import redact
from kimaki.agents import Engine, EngineError, EngineSession
from kimaki.bot._engines import Engines, UnknownEngineError
from kimaki.bot._interactions import ComponentHandler, InteractionContext, SlashCommand
from kimaki.discord.errors import RESTError
from kimaki.discord.markdown import split_message
from kimaki.discord.models import (
    AllowedMentions,
    ApplicationCommandOption,
    ApplicationCommandOptionType,
    Channel,
    CommandChoice,
)
from kimaki.store import ChannelRecord, ThreadRecord
from kimaki.threads import Prompt

__all__ = [
    "IN_THREAD_ONLY",
    "NOT_SUPPORTED",
    "ChannelRecords",
    "CommandRegistry",
    "KnownChannels",
    "QuietPoster",
    "SessionOpener",
    "SpentKeys",
    "ThreadLookup",
    "ThreadRecordWriter",
    "command_prompt",
    "engine_choices",
    "engine_name",
    "ensure_session",
    "format_age",
    "get_engine",
    "matching",
    "option",
    "person_name",
    "post_quietly",
    "say_engine_error",
    "session_thread",
    "thread_here",
    "unsupported",
]

log = logging.getLogger("kimaki.commands")

AutocompleteHandler = Callable[[InteractionContext], Awaitable[Sequence[CommandChoice]]]

IN_THREAD_ONLY: Final = "Use `/{command}` in a session thread (a thread of a project channel)."
NOT_SUPPORTED: Final = "`/{command}` is not supported by this engine ({engine})."


class CommandRegistry(Protocol):
    """Where a group adds its commands and component handlers (the bot's `Interactions`)."""

    def add_command(self, command: SlashCommand) -> None: ...

    def on_component(self, kind: str, handler: ComponentHandler) -> None: ...

    def on_modal(self, kind: str, handler: ComponentHandler) -> None: ...


class ThreadLookup(Protocol):
    """The record of a thread a command runs in, made for a thread someone opened by hand
    (`kimaki.threads.Threads` is one)."""

    async def record(self, thread_id: int) -> ThreadRecord | None: ...

    async def adopt_thread(self, project: ChannelRecord, thread_id: int) -> ThreadRecord: ...


class SessionOpener(Protocol):
    """A thread's engine session, opened now if need be (`kimaki.threads.Threads` is one)."""

    async def session(self, thread_id: int) -> EngineSession: ...


class ThreadRecordWriter(Protocol):
    """Where a thread's record is kept (`kimaki.store.Places` is one)."""

    async def put_thread(self, thread: ThreadRecord) -> None: ...


class ChannelRecords(Protocol):
    """A project channel's record, read and changed (`kimaki.store.Places` is one)."""

    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...

    async def put_channel(self, channel: ChannelRecord) -> None: ...


class KnownChannels(Protocol):
    """The channels the gateway told of (`kimaki.guilds.GuildCache` is one)."""

    def channel(self, channel_id: int) -> Channel | None: ...


class SpentKeys(Protocol):
    """Interaction keys whose component has done its job (`kimaki.store.InteractionKeys`)."""

    async def delete_interaction_key(self, key: str) -> bool: ...


class QuietPoster(Protocol):
    """Posting in a channel without pinging (`kimaki.discord.rest.RESTClient` is one)."""

    async def create_message(
        self, channel_id: int, content: str | None = ..., *, allowed_mentions: AllowedMentions
    ) -> object: ...


def option(
    name: str,
    description: str,
    *,
    kind: ApplicationCommandOptionType = ApplicationCommandOptionType.STRING,
    required: bool = False,
    autocomplete: bool = False,
    choices: Sequence[tuple[str, str]] = (),
    min_value: int | None = None,
    max_length: int | None = None,
) -> ApplicationCommandOption:
    """A command option; `choices` as (label, value) pairs."""
    return ApplicationCommandOption(
        type=kind,
        name=name,
        description=description,
        required=required,
        autocomplete=autocomplete,
        choices=tuple(CommandChoice(label, value) for label, value in choices),
        min_value=min_value,
        max_length=max_length,
    )


def person_name(ctx: InteractionContext) -> str:
    member = ctx.interaction.member
    if member is not None and member.nick:
        return member.nick
    return ctx.user.display_name


def command_prompt(ctx: InteractionContext, text: str, *, queued: bool = False) -> Prompt:
    """A prompt a person gave through a command in this channel."""
    return Prompt(
        text=text,
        author_id=ctx.user.id,
        author_name=person_name(ctx),
        queued=queued,
        source="command",
    )


def engine_choices(handler: AutocompleteHandler) -> AutocompleteHandler:
    """Autocomplete that asks an engine: no choices (not an error) when the engine cannot
    answer now, e.g. its server is still starting."""

    async def choices(ctx: InteractionContext) -> Sequence[CommandChoice]:
        try:
            return await handler(ctx)
        except (EngineError, UnknownEngineError) as exc:
            log.debug(
                "/%s autocomplete: %s", ctx.interaction.data and ctx.interaction.data.name, exc
            )
            return ()

    return choices


def matching(choices: Sequence[CommandChoice], typed: str) -> list[CommandChoice]:
    """Autocomplete: the choices whose name contains what was typed (case-insensitive)."""
    needle = typed.strip().lower()
    return [choice for choice in choices if needle in choice.name.lower()][:25]


def format_age(timestamp: float, *, now: float | None = None) -> str:
    """ "just now", "5 min ago", "3 h ago", "2 d ago"."""
    seconds = max(0.0, (time.time() if now is None else now) - timestamp)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


async def thread_here(ctx: InteractionContext, threads: ThreadLookup) -> ThreadRecord | None:
    """The record of the thread the command ran in; None in a channel or an unknown thread."""
    return await threads.record(ctx.channel_id) if ctx.in_thread else None


async def post_quietly(rest: QuietPoster, channel_id: int, text: str) -> None:
    """Post what was already said elsewhere (a prompt, history, a note): it pings nobody.

    A failure is logged and the rest dropped: the command's own answer still tells the person.
    """
    for chunk in split_message(redact(text)):
        try:
            await rest.create_message(channel_id, chunk, allowed_mentions=AllowedMentions())
        except RESTError as exc:
            log.warning("could not post in %d: %s", channel_id, exc)
            return


async def session_thread(
    ctx: InteractionContext, threads: ThreadLookup, command: str
) -> ThreadRecord | None:
    """The record of the thread the command ran in; None (and a hint) outside a thread.

    A thread someone opened by hand under a project channel gets its record now.
    """
    project = ctx.project
    if not ctx.in_thread or project is None:
        await ctx.reply(IN_THREAD_ONLY.format(command=command))
        return None
    record = await threads.record(ctx.channel_id)
    if record is None:
        record = await threads.adopt_thread(project, ctx.channel_id)
    return record


async def ensure_session(
    threads: SessionOpener, records: ThreadRecordWriter, record: ThreadRecord
) -> ThreadRecord:
    """The thread's record with a session id, opening the session now if it has none yet.

    A session preference (`/model` for this session, `/new-session agent:`) needs the id
    before the first prompt.
    """
    if record.session_id:
        return record
    session = await threads.session(record.thread_id)
    record = attrs.evolve(record, session_id=session.session_id)
    await records.put_thread(record)
    return record


def engine_name(ctx: InteractionContext, thread: ThreadRecord | None) -> str | None:
    """The engine of the thread, else of the project channel (None: the default)."""
    if thread is not None:
        return thread.engine
    project: ChannelRecord | None = ctx.project
    return project.engine if project is not None else None


async def get_engine(ctx: InteractionContext, engines: Engines, name: str | None) -> Engine | None:
    """The engine called `name`; None (after telling the person) when it is not running here.

    Check a capability on the result with `isinstance`, then `unsupported()` if it lacks it.
    """
    try:
        return engines.get(name)
    except UnknownEngineError as exc:
        await ctx.reply(str(exc))
        return None


async def unsupported(ctx: InteractionContext, engine: Engine, command: str) -> None:
    await ctx.reply(NOT_SUPPORTED.format(command=command, engine=engine.name))


async def say_engine_error(ctx: InteractionContext, what: str, exc: EngineError) -> None:
    await ctx.reply(f"⚠️ Could not {what}: {exc}")
