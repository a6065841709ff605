"""`/engine`: which engine (OpenCode over HTTP, or an ACP agent `acp:<name>`) a project
channel's new threads run on.

The choice is the channel's (`ChannelRecord.engine`); a thread takes its channel's engine when
it is created and keeps it, so switching never moves a conversation that is already going. In
a thread, the command still chooses for the thread's channel and says what the thread keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import attrs

from kimaki.bot._engines import Engines
from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import (
    ChannelRecords,
    CommandRegistry,
    ThreadLookup,
    matching,
    option,
    thread_here,
)
from kimaki.discord.models import CommandChoice
from kimaki.store import ChannelRecord

__all__ = ["FOLLOW_DEFAULT", "EngineCommands"]

FOLLOW_DEFAULT: Final = "default"
"""The option value that clears the channel's choice: it follows the daemon's default engine
(`KIMAKI_DEFAULT_ENGINE`), whatever that is at the time."""


@final
@attrs.frozen(kw_only=True)
class EngineCommands:
    """`/engine`, with what it uses."""

    _engines: Engines
    _records: ChannelRecords
    _threads: ThreadLookup

    def install(self, registry: CommandRegistry) -> None:
        registry.add_command(
            SlashCommand(
                "engine",
                "Choose the engine new threads of this channel run on (none: show the current one)",
                self._engine,
                options=(
                    option(
                        "engine",
                        "opencode, or an ACP agent such as acp:claude",
                        autocomplete=True,
                        max_length=100,
                    ),
                ),
                autocomplete=self._choices,
            )
        )

    async def _choices(self, ctx: InteractionContext) -> Sequence[CommandChoice]:
        engines = self._engines
        _, typed = ctx.focused()
        offered = [
            CommandChoice(f"{name} (the default)" if name == engines.default else name, name)
            for name in _names(engines)
        ]
        offered.append(
            CommandChoice(f"{FOLLOW_DEFAULT}: follow the daemon's default", FOLLOW_DEFAULT)
        )
        return matching(offered, typed)

    async def _engine(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None  # not an `anywhere` command: refused outside project channels
        records = self._records
        record = await records.get_channel(project.channel_id) or project
        chosen = ctx.text_option("engine").strip()
        if not chosen:
            await ctx.reply(await self._current(ctx, record))
            return
        engines = self._engines
        if chosen != FOLLOW_DEFAULT and chosen not in engines.names():
            await ctx.reply(
                f"There is no engine `{chosen}` here. Choose one of: "
                + ", ".join(f"`{name}`" for name in _names(engines))
                + f" (or `{FOLLOW_DEFAULT}`). ACP agents are added with KIMAKI_AGENTS where the "
                "bot runs; `kimaki doctor` shows which ones this machine has."
            )
            return
        engine = None if chosen == FOLLOW_DEFAULT else chosen
        await records.put_channel(attrs.evolve(record, engine=engine))
        what = (
            f"the daemon's default engine (now `{engines.default}`)"
            if engine is None
            else f"`{engine}`"
        )
        await ctx.reply(
            f"New threads in <#{record.channel_id}> run on {what}.{await self._kept(ctx)}"
        )

    async def _current(self, ctx: InteractionContext, record: ChannelRecord) -> str:
        engines = self._engines
        if record.engine is None:
            text = (
                f"New threads in <#{record.channel_id}> run on `{engines.default}` (the default)."
            )
        elif record.engine in engines.names():
            text = f"New threads in <#{record.channel_id}> run on `{record.engine}`."
        else:
            text = (
                f"New threads in <#{record.channel_id}> are set to run on `{record.engine}`, "
                "which is not available here: choose another with `/engine`."
            )
        choices = ", ".join(f"`{name}`" for name in _names(engines))
        return f"{text}{await self._kept(ctx)}\nAvailable: {choices}."

    async def _kept(self, ctx: InteractionContext) -> str:
        """In a session thread: a reminder that the thread itself keeps its engine."""
        thread = await thread_here(ctx, self._threads)
        if thread is None:
            return ""
        return f" This thread keeps `{thread.engine}`."


def _names(engines: Engines) -> list[str]:
    """The engines this daemon runs, the default first."""
    return [engines.default, *(name for name in engines.names() if name != engines.default)]
