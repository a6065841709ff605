"""What every command group needs: option builders, the session thread, engine capabilities."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from kimaki.agents import Engine, EngineError
from kimaki.bot._engines import UnknownEngineError
from kimaki.bot._interactions import InteractionContext
from kimaki.discord.errors import HTTPError, NetworkError
from kimaki.discord.markdown import split_message
from kimaki.discord.models import (
    AllowedMentions,
    ApplicationCommandOption,
    ApplicationCommandOptionType,
    CommandChoice,
)
from kimaki.sessions import Prompt
from kimaki.store import ChannelRecord, ThreadRecord

if TYPE_CHECKING:
    from kimaki.bot._bot import Bot

__all__ = [
    "IN_THREAD_ONLY",
    "NOT_SUPPORTED",
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


async def thread_here(ctx: InteractionContext) -> ThreadRecord | None:
    """The record of the thread the command ran in; None in a channel or an unknown thread."""
    return await ctx.bot.threads.record(ctx.channel_id) if ctx.in_thread else None


async def post_quietly(bot: Bot, channel_id: int, text: str) -> None:
    """Post what was already said elsewhere (a prompt, history, a note): it pings nobody.

    A failure is logged and the rest dropped: the command's own answer still tells the person.
    """
    for chunk in split_message(text):
        try:
            await bot.rest.create_message(channel_id, chunk, allowed_mentions=AllowedMentions())
        except (HTTPError, NetworkError) as exc:
            log.warning("could not post in %d: %s", channel_id, exc)
            return


async def session_thread(ctx: InteractionContext, command: str) -> ThreadRecord | None:
    """The record of the thread the command ran in; None (and a hint) outside a thread.

    A thread someone opened by hand under a project channel gets its record now.
    """
    project = ctx.project
    if not ctx.in_thread or project is None:
        await ctx.reply(IN_THREAD_ONLY.format(command=command))
        return None
    record = await ctx.bot.threads.record(ctx.channel_id)
    if record is None:
        record = await ctx.bot.threads.adopt_thread(project, ctx.channel_id)
    return record


async def ensure_session(bot: Bot, record: ThreadRecord) -> ThreadRecord:
    """The thread's record with a session id, opening the session now if it has none yet.

    A session preference (`/model` for this session, `/new-session agent:`) needs the id
    before the first prompt.
    """
    if record.session_id:
        return record
    session = await bot.threads.session(record.thread_id)
    record = attrs.evolve(record, session_id=session.session_id)
    await bot.store.put_thread(record)
    return record


def engine_name(ctx: InteractionContext, thread: ThreadRecord | None) -> str | None:
    """The engine of the thread, else of the project channel (None: the default)."""
    if thread is not None:
        return thread.engine
    project: ChannelRecord | None = ctx.project
    return project.engine if project is not None else None


async def get_engine(ctx: InteractionContext, name: str | None) -> Engine | None:
    """The engine called `name`; None (after telling the person) when it is not running here.

    Check a capability on the result with `isinstance`, then `unsupported()` if it lacks it.
    """
    try:
        return ctx.bot.engines.get(name)
    except UnknownEngineError as exc:
        await ctx.reply(str(exc))
        return None


async def unsupported(ctx: InteractionContext, engine: Engine, command: str) -> None:
    await ctx.reply(NOT_SUPPORTED.format(command=command, engine=engine.name))


async def say_engine_error(ctx: InteractionContext, what: str, exc: EngineError) -> None:
    await ctx.reply(f"⚠️ Could not {what}: {exc}")
