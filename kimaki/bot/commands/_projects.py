"""`/add-project`, `/create-new-project`, `/remove-project`: which folders have channels.

Adding works in any channel of the server (there is no project channel yet); removing only
in a channel of this bot. Removing unmaps at once, then asks whether to delete the Discord
channels too; files are never touched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol, final

import attrs
import trio

from kimaki.agents import EngineError, KnownProjects
from kimaki.bot._engines import Engines
from kimaki.bot._interactions import (
    InteractionContext,
    SlashCommand,
    make_custom_id,
    parse_custom_id,
)
from kimaki.bot.commands._common import CommandRegistry, KnownChannels, SpentKeys, matching, option
from kimaki.discord.models import ActionRow, Button, ButtonStyle, CommandChoice
from kimaki.projects import AddedProject, ProjectError, Projects, shown_path
from kimaki.store import ChannelRecord, InteractionKey

__all__ = ["ProjectCommands"]

log = logging.getLogger("kimaki.commands")

_KNOWN_PROJECTS_WAIT: Final = 1.0
_REMOVE_KIND: Final = "remove-project"
_NO_GUILD: Final = "Projects belong to a server: use this command in one of its channels."


class ChannelLookup(Protocol):
    """A project channel's record (`kimaki.store.Places` is one)."""

    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...


@final
@attrs.frozen(kw_only=True)
class ProjectCommands:
    """The project commands, over the daemon's one `Projects` (the lock port's routes use it
    too)."""

    _projects: Projects
    _engines: Engines
    _records: ChannelLookup
    _channels: KnownChannels
    _keys: SpentKeys

    def install(self, registry: CommandRegistry) -> None:
        registry.add_command(
            SlashCommand(
                "add-project",
                "Make a channel for a project folder on this machine",
                self._add_project,
                options=(
                    option(
                        "project",
                        "A folder in the projects dir, or an absolute path",
                        required=True,
                        autocomplete=True,
                    ),
                ),
                autocomplete=self._project_folders,
                anywhere=True,
            )
        )
        registry.add_command(
            SlashCommand(
                "create-new-project",
                "Create a project folder (a new git repository) and its channel",
                self._create_project,
                options=(option("name", "The new folder's name", required=True, max_length=100),),
                anywhere=True,
            )
        )
        registry.add_command(
            SlashCommand(
                "remove-project",
                "Unmap a project channel (files are never deleted)",
                self._remove_project,
                options=(
                    option("project", "The project (default: this channel's)", autocomplete=True),
                ),
                autocomplete=self._mapped_projects,
            )
        )
        registry.on_component(_REMOVE_KIND, self._remove_channels_button)

    async def _add_project(self, ctx: InteractionContext) -> None:
        if ctx.guild_id is None:
            await ctx.reply(_NO_GUILD)
            return
        typed = ctx.text_option("project").strip()
        try:
            added = await self._projects.add(Path(typed), guild_id=ctx.guild_id)
        except ProjectError as exc:
            await ctx.reply(f"Cannot add `{shown_path(typed)}`: {exc}")
            return
        await ctx.reply(_added(added))

    async def _create_project(self, ctx: InteractionContext) -> None:
        if ctx.guild_id is None:
            await ctx.reply(_NO_GUILD)
            return
        name = ctx.text_option("name")
        try:
            added = await self._projects.create(name, guild_id=ctx.guild_id)
        except ProjectError as exc:
            await ctx.reply(f"Cannot create `{name}`: {exc}")
            return
        await ctx.reply(_added(added))

    async def _project_folders(self, ctx: InteractionContext) -> Sequence[CommandChoice]:
        """Folders of the projects dir, then projects the engines know, minus mapped ones."""
        _, typed = ctx.focused()
        mapped = {
            record.directory for record in await self._projects.list_projects(guild_id=ctx.guild_id)
        }
        projects_dir = self._projects.projects_dir

        def folders() -> list[str]:
            try:
                entries = sorted(os.scandir(projects_dir), key=lambda entry: entry.name.lower())
            except OSError:
                return []
            return [
                entry.name
                for entry in entries
                if entry.is_dir()
                and not entry.name.startswith(".")
                and Path(entry.path).resolve() not in mapped
            ]

        choices = [CommandChoice(name, name) for name in await trio.to_thread.run_sync(folders)]
        known: list[Path] = []
        engines = self._engines
        with trio.move_on_after(_KNOWN_PROJECTS_WAIT):
            for name in engines.names():
                engine = engines.get(name)
                if isinstance(engine, KnownProjects):
                    try:
                        known += await engine.known_projects()
                    except EngineError as exc:
                        log.debug("%s knows no projects now: %s", name, exc)
        seen = {choice.name for choice in choices}
        for path in known:
            text = str(path)
            if path not in mapped and len(text) <= 100 and text not in seen:
                seen.add(text)
                choices.append(CommandChoice(text, text))
        return matching(choices, typed)

    async def _mapped_projects(self, ctx: InteractionContext) -> Sequence[CommandChoice]:
        _, typed = ctx.focused()
        records = await self._projects.list_projects(guild_id=ctx.guild_id)
        choices = []
        for record in records:
            if record.channel_type != "text":
                continue
            channel = self._channels.channel(record.channel_id)
            name = channel.name if channel is not None and channel.name else str(record.channel_id)
            choices.append(CommandChoice(f"#{name} — {record.directory}", str(record.channel_id)))
        return matching(choices, typed)

    async def _remove_project(self, ctx: InteractionContext) -> None:
        typed = ctx.text_option("project").strip()
        if typed:
            try:
                channel_id = int(typed.removeprefix("<#").removesuffix(">"))
            except ValueError:
                await ctx.reply(f"`{typed}` is not a project channel: pick one from the list.")
                return
        else:
            assert ctx.project is not None  # not `anywhere`: only runs in a project channel
            channel_id = ctx.project.channel_id
        record = await self._records.get_channel(channel_id)
        if record is None or record.guild_id != ctx.guild_id:
            await ctx.reply(f"<#{channel_id}> is not a project of this bot in this server.")
            return
        try:
            removed = await self._projects.remove(channel_id)
        except ProjectError as exc:
            await ctx.reply(f"Cannot remove it: {exc}")
            return
        channels = [record.channel_id for record in removed]
        delete_id = await ctx.custom_id(_REMOVE_KIND, {"channels": channels}, suffix="delete")
        key, _ = parse_custom_id(delete_id)
        keep_id = make_custom_id(key, "keep")
        mentions = ", ".join(f"<#{channel}>" for channel in channels)
        await ctx.reply(
            f"Unmapped `{record.directory}` (its files are untouched). "
            f"Delete its Discord channels ({mentions}) too?",
            components=(
                ActionRow(
                    (
                        Button(ButtonStyle.DANGER, "Delete the channels", delete_id),
                        Button(ButtonStyle.SECONDARY, "Keep them", keep_id),
                    )
                ),
            ),
        )

    async def _remove_channels_button(
        self, ctx: InteractionContext, key: InteractionKey, suffix: str
    ) -> None:
        raw = key.payload.get("channels") if isinstance(key.payload, dict) else None
        channels = [int(channel) for channel in raw or []]
        await self._keys.delete_interaction_key(key.key)
        if suffix != "delete":
            await ctx.update("Kept the channels; they are no longer projects.", components=())
            return
        # Answer first: the message may be in one of the channels about to go.
        await ctx.update("Deleting the channels…", components=())
        try:
            await self._projects.delete_channels(channels)
        except ProjectError as exc:
            log.warning("could not delete project channels %s: %s", channels, exc)


def _added(added: AddedProject) -> str:
    voice = f" and voice channel <#{added.voice.channel_id}>" if added.voice else ""
    if not added.created:
        return f"`{added.text.directory}` is already a project: <#{added.text.channel_id}>."
    return (
        f"Added `{added.text.directory}`: <#{added.text.channel_id}>{voice}. "
        "Write in the channel to start a session."
    )
