"""The project operations: add, create, list and remove project channels.

`Projects` is given only what it uses, so the daemon, the slash commands and the shell (with no
daemon running) each hand it their own pieces: a store of channel records (`ProjectStore`), the
few Discord calls it makes (`ProjectREST`), and the guilds the bot is known to be in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, Protocol, final

import attrs
import trio

from kimaki.discord.errors import NotFound, RESTError
from kimaki.discord.models import Channel, ChannelType, Guild
from kimaki.projects._errors import (
    GuildChoiceError,
    InvalidProjectError,
    ProjectError,
    ProjectNotFoundError,
    discord_errors,
)
from kimaki.projects._shapes import AddedProject
from kimaki.store import ChannelRecord
from kimaki.worktrees import WorktreeError, run_git, worktree_slug

__all__ = [
    "TEXT_CATEGORY",
    "VOICE_CATEGORY",
    "GuildIds",
    "ProjectREST",
    "ProjectStore",
    "Projects",
    "channel_name",
    "shown_path",
]

log = logging.getLogger("kimaki.projects")

TEXT_CATEGORY: Final = "Kimaki"
VOICE_CATEGORY: Final = "Kimaki Audio"

GuildIds = Callable[[], Iterable[int]]
"""The guilds the bot is in now (the daemon's guild cache), read at each operation."""


class ProjectStore(Protocol):
    """The channel records project operations read and write (`kimaki.store.Places` is one)."""

    async def list_channels(
        self, *, app_id: int | None = None, guild_id: int | None = None
    ) -> list[ChannelRecord]: ...

    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...

    async def put_channel(self, channel: ChannelRecord) -> None: ...

    async def delete_channel(self, channel_id: int) -> object: ...


class ProjectREST(Protocol):
    """The Discord calls project operations make (`kimaki.discord.rest.RESTClient` is one)."""

    async def get_channel(self, channel_id: int) -> Channel: ...

    async def get_guild_channels(self, guild_id: int) -> list[Channel]: ...

    async def create_channel(
        self,
        guild_id: int,
        name: str,
        *,
        type: ChannelType = ...,
        parent_id: int | None = ...,
        reason: str | None = ...,
    ) -> Channel: ...

    async def delete_channel(self, channel_id: int, *, reason: str | None = ...) -> None: ...

    async def get_current_user_guilds(self) -> list[Guild]: ...


def _no_guilds() -> Iterable[int]:
    return ()


def channel_name(folder_name: str) -> str:
    """A Discord channel name for a folder: the worktree slug rule, or "project"."""
    try:
        return worktree_slug(folder_name)
    except WorktreeError:
        return "project"


def shown_path(path: str | Path, width: int = 160) -> str:
    """`path` for a message, its middle elided past `width` characters.

    A slash command's option takes 6000 characters and a Discord message 2000: a long path
    quoted whole would turn a clear refusal into a failed reply.
    """
    text = str(path)
    if len(text) <= width:
        return text
    half = (width - 1) // 2
    return text[:half] + "…" + text[len(text) - half :]


def _check_directory(directory: Path, *, data_dir: Path, projects_dir: Path) -> Path:
    """The resolved folder, or `InvalidProjectError` saying why it cannot be a project."""
    if not directory.is_absolute():
        directory = projects_dir / directory
    try:
        resolved = directory.resolve()
        exists, is_dir = resolved.exists(), resolved.is_dir()
    except OSError as exc:
        # ENAMETOOLONG, EACCES on a parent, ELOOP...: the path cannot be used, say why.
        reason = exc.strerror or str(exc)
        raise InvalidProjectError(f"{shown_path(directory)} cannot be used: {reason}") from None
    if not exists:
        raise InvalidProjectError(f"{shown_path(resolved)} does not exist")
    if not is_dir:
        raise InvalidProjectError(f"{shown_path(resolved)} is not a directory")
    data = data_dir.resolve()
    if resolved == data or resolved in data.parents:
        # The agent could read the database, which holds the bot token.
        raise InvalidProjectError(
            f"{resolved} contains kimaki's data dir ({data}); choose the project's own folder"
        )
    if data in resolved.parents and projects_dir.resolve() not in (resolved, *resolved.parents):
        raise InvalidProjectError(
            f"{shown_path(resolved)} is inside kimaki's data dir; it cannot be a project"
        )
    return resolved


@final
class Projects:
    """Project channels of one bot (application id) in the store and on Discord."""

    def __init__(
        self,
        *,
        rest: ProjectREST,
        store: ProjectStore,
        app_id: int,
        data_dir: Path,
        projects_dir: Path,
        guild_ids: GuildIds = _no_guilds,
    ) -> None:
        self.rest = rest
        self.store = store
        self.app_id = app_id
        self.data_dir = data_dir
        self.projects_dir = projects_dir
        self.guild_ids = guild_ids
        """Guilds the bot is in, for choosing one when none is named."""

    async def list_projects(self, *, guild_id: int | None = None) -> list[ChannelRecord]:
        """This bot's project channels (text and voice), by channel id."""
        return await self.store.list_channels(app_id=self.app_id, guild_id=guild_id)

    async def check_directory(self, directory: Path) -> Path:
        return await trio.to_thread.run_sync(
            lambda: _check_directory(
                directory, data_dir=self.data_dir, projects_dir=self.projects_dir
            )
        )

    async def add(
        self, directory: Path, *, guild_id: int | None = None, voice: bool = True
    ) -> AddedProject:
        """Map `directory` (absolute, or relative to the projects dir) to new channels.

        A folder already mapped in the guild keeps its channels (unless they were deleted
        on Discord, then new ones are made).
        """
        resolved = await self.check_directory(directory)
        guild = await self._guild(guild_id)
        name = channel_name(resolved.name)
        with discord_errors("create the project's channels"):
            existing = await self._existing(resolved, guild)
            if existing is not None:
                return existing
            category = await self._category(guild, TEXT_CATEGORY)
            text_channel = await self.rest.create_channel(
                guild, name, parent_id=category.id, reason=f"kimaki project {resolved}"
            )
            text = ChannelRecord(
                channel_id=text_channel.id, directory=resolved, guild_id=guild, app_id=self.app_id
            )
            await self.store.put_channel(text)
            voice_record = None
            if voice:
                audio = await self._category(guild, VOICE_CATEGORY)
                voice_channel = await self.rest.create_channel(
                    guild,
                    name,
                    type=ChannelType.GUILD_VOICE,
                    parent_id=audio.id,
                    reason=f"kimaki project {resolved}",
                )
                voice_record = attrs.evolve(text, channel_id=voice_channel.id, channel_type="voice")
                await self.store.put_channel(voice_record)
        log.info("project %s: channel %d in guild %d", resolved, text.channel_id, guild)
        return AddedProject(text, voice_record, created=True)

    async def create(self, name: str, *, guild_id: int | None = None) -> AddedProject:
        """A new folder under the projects dir (a fresh git repository), mapped to channels."""
        try:
            folder = worktree_slug(name)
        except WorktreeError:
            raise InvalidProjectError(
                f"{name!r} has no letters or digits to name a folder with; try my-app"
            ) from None
        directory = self.projects_dir / folder
        await self._guild(guild_id)  # before anything is made
        try:
            await trio.Path(self.projects_dir).mkdir(parents=True, exist_ok=True)
            await trio.Path(directory).mkdir()
        except FileExistsError:
            raise InvalidProjectError(
                f"{directory} already exists; add it with /add-project {folder}"
            ) from None
        except OSError as exc:
            raise InvalidProjectError(f"cannot create {directory}: {exc.strerror}") from None
        result = await run_git(directory, "init", "--quiet", check=False)
        if result.returncode != 0:
            log.warning("git init in %s failed: %s", directory, result.stderr.decode().strip())
        return await self.add(directory, guild_id=guild_id)

    async def remove(
        self, channel_id: int, *, delete_channels: bool = False
    ) -> list[ChannelRecord]:
        """Unmap the project of `channel_id` (its text and voice channels); files stay.

        Its Discord channels are deleted too only with `delete_channels`.
        """
        record = await self.store.get_channel(channel_id)
        if record is None or record.app_id != self.app_id:
            raise ProjectNotFoundError(f"channel {channel_id} is not a project of this bot")
        removed = [
            sibling
            for sibling in await self.list_projects(guild_id=record.guild_id)
            if sibling.directory == record.directory
        ]
        for sibling in removed:
            await self.store.delete_channel(sibling.channel_id)
        log.info("project %s unmapped", record.directory)
        if delete_channels:
            await self.delete_channels([record.channel_id for record in removed])
        return removed

    async def delete_channels(self, channel_ids: Sequence[int]) -> None:
        """Delete the Discord channels of removed projects (already gone ones are fine)."""
        for channel_id in channel_ids:
            try:
                await self.rest.delete_channel(channel_id, reason="kimaki project removed")
            except NotFound:
                continue
            except RESTError as exc:
                raise ProjectError(f"could not delete channel {channel_id}: {exc}") from None

    # ---- helpers

    async def _guild(self, guild_id: int | None) -> int:
        if guild_id is not None:
            return guild_id
        known = set(self.guild_ids())
        if not known:
            known = {record.guild_id for record in await self.list_projects()}
        if not known:
            try:
                known = {guild.id for guild in await self.rest.get_current_user_guilds()}
            except RESTError as exc:
                raise ProjectError(f"could not ask Discord for the bot's servers: {exc}") from None
        if len(known) == 1:
            return known.pop()
        if not known:
            raise GuildChoiceError("no Discord server is known yet: name one with --guild ID")
        listed = ", ".join(str(guild) for guild in sorted(known))
        raise GuildChoiceError(f"the bot is in several servers; name one with --guild ({listed})")

    async def _existing(self, directory: Path, guild_id: int) -> AddedProject | None:
        mapped = [
            r for r in await self.list_projects(guild_id=guild_id) if r.directory == directory
        ]
        text = next((r for r in mapped if r.channel_type == "text"), None)
        if text is None:
            return None
        try:
            await self.rest.get_channel(text.channel_id)
        except NotFound:
            log.info(
                "project %s: its channel %d was deleted; unmapping", directory, text.channel_id
            )
            for record in mapped:
                await self.store.delete_channel(record.channel_id)
            return None
        voice = next((r for r in mapped if r.channel_type == "voice"), None)
        return AddedProject(text, voice, created=False)

    async def _category(self, guild_id: int, name: str) -> Channel:
        for channel in await self.rest.get_guild_channels(guild_id):
            if channel.type == ChannelType.GUILD_CATEGORY and (channel.name or "") == name:
                return channel
        return await self.rest.create_channel(
            guild_id, name, type=ChannelType.GUILD_CATEGORY, reason="kimaki projects"
        )
