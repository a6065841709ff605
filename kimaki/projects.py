"""Project channels: a folder on this machine ⇄ a Discord text channel (and a voice channel).

The slash commands (`/add-project`, `/create-new-project`, `/remove-project`) and the shell
(`kimaki project add|list|remove`) share this code. The shell reaches a running daemon through
its lock port (`install_project_routes`), so the daemon's own REST client and rate limits do
the work; with no daemon it talks to Discord and the store itself (`open_direct_projects`).

Text channels go under the category "Kimaki", voice channels under "Kimaki Audio" (each made
when missing); a channel is named after the folder (`[a-z0-9-]`). The mapping lives in the
store (`ChannelRecord`, with this bot's application id), never in a channel topic. Removing a
project unmaps it; its Discord channels are deleted only when asked, and files never are.

The lock port listens on 127.0.0.1, where every local user can connect, so the project routes
want the token the daemon writes to `<data-dir>/control-token` (mode 0600) at start-up.

```
ProjectError ............. base; `str()` is the message for the person
├── InvalidProjectError .. the folder is missing, is not a directory, or holds the data dir
├── ProjectNotFoundError . no project of this bot has that channel
└── GuildChoiceError ..... which guild is unclear (the bot is in several, or in none known)
```
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import httpx
import trio

from kimaki._control import ControlServer, control_url, query_health
from kimaki._http import Request, Response
from kimaki._log import register_secret
from kimaki.discord.errors import Forbidden, HTTPError, NetworkError, NotFound
from kimaki.discord.models import Channel, ChannelType
from kimaki.discord.rest import RESTClient
from kimaki.errors import ConfigError, CredentialsError, KimakiError
from kimaki.store import ChannelRecord, Store
from kimaki.worktrees import WorktreeError, run_git, worktree_slug

if TYPE_CHECKING:
    from kimaki.bot import Bot
    from kimaki.settings import Settings

__all__ = [
    "CONTROL_TOKEN_FILE",
    "TEXT_CATEGORY",
    "VOICE_CATEGORY",
    "AddedProject",
    "GuildChoiceError",
    "InvalidProjectError",
    "ProjectError",
    "ProjectNotFoundError",
    "Projects",
    "ProjectsClient",
    "channel_name",
    "connect_to_daemon",
    "install_project_routes",
    "open_direct_projects",
    "record_from_json",
    "record_json",
    "shown_path",
]

log = logging.getLogger("kimaki.projects")

TEXT_CATEGORY: Final = "Kimaki"
VOICE_CATEGORY: Final = "Kimaki Audio"
CONTROL_TOKEN_FILE: Final = "control-token"
_TOKEN_HEADER: Final = "x-kimaki-control-token"


class ProjectError(KimakiError):
    """A project operation that cannot go ahead; `str()` is written for the person."""


class InvalidProjectError(ProjectError):
    pass


class ProjectNotFoundError(ProjectError):
    pass


class GuildChoiceError(ProjectError):
    pass


@final
@attrs.frozen
class AddedProject:
    """The channels of a project; `created` is False when the folder was already mapped."""

    text: ChannelRecord
    voice: ChannelRecord | None
    created: bool


def channel_name(folder_name: str) -> str:
    """A Discord channel name for a folder: the worktree slug rule, or "project"."""
    try:
        return worktree_slug(folder_name)
    except WorktreeError:
        return "project"


# ---- JSON shapes shared by the control routes and `kimaki project list --json`


def record_json(record: ChannelRecord) -> dict[str, Any]:
    """A project channel as JSON; ids as strings, as Discord writes them."""
    return {
        "channel_id": str(record.channel_id),
        "channel_type": record.channel_type,
        "directory": str(record.directory),
        "guild_id": str(record.guild_id),
        "app_id": str(record.app_id),
        "engine": record.engine,
        "verbosity": record.verbosity,
        "auto_worktrees": record.auto_worktrees,
    }


def record_from_json(data: Any) -> ChannelRecord:
    """The inverse of `record_json`; `ValueError` for anything else."""
    try:
        return ChannelRecord(
            channel_id=int(data["channel_id"]),
            channel_type="voice" if data.get("channel_type") == "voice" else "text",
            directory=Path(str(data["directory"])),
            guild_id=int(data["guild_id"]),
            app_id=int(data["app_id"]),
            engine=data.get("engine"),
            verbosity=data.get("verbosity"),
            auto_worktrees=bool(data.get("auto_worktrees", False)),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a project record: {exc!r}") from None


def _added_json(added: AddedProject) -> dict[str, Any]:
    return {
        "text": record_json(added.text),
        "voice": None if added.voice is None else record_json(added.voice),
        "created": added.created,
    }


def _added_from_json(data: Any) -> AddedProject:
    if not isinstance(data, dict):
        raise ValueError("not a project")
    voice = data.get("voice")
    return AddedProject(
        record_from_json(data.get("text")),
        None if voice is None else record_from_json(voice),
        bool(data.get("created")),
    )


# ---- the operations


@contextmanager
def _discord_errors(what: str) -> Iterator[None]:
    """Discord's refusals as the person's problem to fix, in one line."""
    try:
        yield
    except Forbidden:
        raise ProjectError(
            f"Discord refused to {what}: the bot needs the Manage Channels permission"
        ) from None
    except NotFound:
        raise ProjectError(f"Discord could not {what}: the server or channel is gone") from None
    except HTTPError as exc:
        raise ProjectError(f"Discord refused to {what}: {exc}") from None
    except NetworkError as exc:
        raise ProjectError(f"Discord is not reachable, could not {what}: {exc}") from None


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
        rest: RESTClient,
        store: Store,
        app_id: int,
        data_dir: Path,
        projects_dir: Path,
        guild_ids: Sequence[int] = (),
    ) -> None:
        self.rest = rest
        self.store = store
        self.app_id = app_id
        self.data_dir = data_dir
        self.projects_dir = projects_dir
        self.guild_ids = tuple(guild_ids)
        """Guilds the bot is in, for choosing one when none is named."""

    @classmethod
    def of(cls, bot: Bot) -> Projects:
        return cls(
            rest=bot.rest,
            store=bot.store,
            app_id=bot.application_id,
            data_dir=bot.config.data_dir,
            projects_dir=bot.config.projects_dir,
            guild_ids=bot.guilds.guild_ids(),
        )

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
        with _discord_errors("create the project's channels"):
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
            except (HTTPError, NetworkError) as exc:
                raise ProjectError(f"could not delete channel {channel_id}: {exc}") from None

    # ---- helpers

    async def _guild(self, guild_id: int | None) -> int:
        if guild_id is not None:
            return guild_id
        known = set(self.guild_ids)
        if not known:
            known = {record.guild_id for record in await self.list_projects()}
        if not known:
            try:
                known = {guild.id for guild in await self.rest.get_current_user_guilds()}
            except (HTTPError, NetworkError) as exc:
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


# ---- the daemon's side of the lock port


async def install_project_routes(control: ControlServer, bot: Bot) -> None:
    """`GET /projects`, `POST /projects` and `POST /projects/remove` on the lock port.

    Writes a fresh token to `<data-dir>/control-token` (0600); requests without it get 401.
    """
    token = secrets.token_urlsafe(32)
    register_secret(token)
    await trio.to_thread.run_sync(_write_private, bot.config.data_dir / CONTROL_TOKEN_FILE, token)

    Route = Callable[[Projects, dict[str, Any]], Awaitable[dict[str, Any]]]

    async def list_projects(projects: Projects, body: dict[str, Any]) -> dict[str, Any]:
        records = await projects.list_projects(guild_id=_optional_int(body.get("guild_id")))
        return {"projects": [record_json(r) for r in records]}

    async def add(projects: Projects, body: dict[str, Any]) -> dict[str, Any]:
        directory = body.get("directory")
        if not isinstance(directory, str) or not directory:
            raise ValueError("directory is required")
        guild_id = _optional_int(body.get("guild_id"))
        return _added_json(await projects.add(Path(directory), guild_id=guild_id))

    async def remove(projects: Projects, body: dict[str, Any]) -> dict[str, Any]:
        channel_id = _optional_int(body.get("channel_id"))
        if channel_id is None:
            raise ValueError("channel_id is required")
        removed = await projects.remove(
            channel_id, delete_channels=body.get("delete_channels") in (True, "true")
        )
        return {"removed": [record_json(r) for r in removed]}

    def route(action: Route) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            given = request.header(_TOKEN_HEADER) or ""
            if not secrets.compare_digest(given.encode(), token.encode()):
                return Response.json({"error": "a valid control token is required"}, 401)
            try:
                body = request.json() if request.body else {}
            except ValueError:
                return Response.json({"error": "the body is not JSON"}, 400)
            if not isinstance(body, dict):
                return Response.json({"error": "the body must be a JSON object"}, 400)
            # A GET has no body: its filters come in the query.
            body.update({key: values[0] for key, values in request.query.items()})
            try:
                return Response.json(await action(Projects.of(bot), body))
            except (ProjectError, ValueError) as exc:
                return Response.json({"error": str(exc)}, 400)

        return serve

    control.add_route("GET", "/projects", route(list_projects))
    control.add_route("POST", "/projects", route(add))
    control.add_route("POST", "/projects/remove", route(remove))


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not an id: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"not an id: {value!r}") from None


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by this user only (replacing an older file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


# ---- the shell's side: the daemon through the lock port, or Discord and the store directly


@final
class ProjectsClient:
    """The project routes of a running daemon, as the shell calls them."""

    def __init__(self, port: int, token: str) -> None:
        self._url = control_url(port)
        self._token = token

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with httpx.AsyncClient(base_url=self._url, timeout=60.0) as client:
                response = await client.request(
                    method, path, json=body, headers={_TOKEN_HEADER: self._token}
                )
        except httpx.HTTPError as exc:
            raise ProjectError(f"the daemon did not answer on the lock port: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 404:
            raise ProjectError(
                "the running daemon does not take project commands yet (still connecting to "
                "Discord?); try again in a moment"
            )
        if response.status_code != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else None
            raise ProjectError(str(error or f"the daemon answered {response.status_code}"))
        return data

    async def list_projects(self, *, guild_id: int | None = None) -> list[ChannelRecord]:
        query = "" if guild_id is None else f"?guild_id={guild_id}"
        data = await self._call("GET", "/projects" + query)
        return [record_from_json(item) for item in data.get("projects") or []]

    async def add(self, directory: Path, *, guild_id: int | None = None) -> AddedProject:
        body = {"directory": str(directory), "guild_id": guild_id}
        return _added_from_json(await self._call("POST", "/projects", body))

    async def remove(
        self, channel_id: int, *, delete_channels: bool = False
    ) -> list[ChannelRecord]:
        body = {"channel_id": str(channel_id), "delete_channels": delete_channels}
        data = await self._call("POST", "/projects/remove", body)
        return [record_from_json(item) for item in data.get("removed") or []]


async def connect_to_daemon(settings: Settings) -> ProjectsClient | None:
    """The running daemon of this data dir, or None when there is none."""
    health = await query_health(settings.lock_port)
    if health is None or health.get("data_dir") != str(settings.data_dir):
        return None
    token_path = settings.data_dir / CONTROL_TOKEN_FILE
    try:
        token = (await trio.Path(token_path).read_text()).strip()
    except OSError as exc:
        raise ConfigError(
            f"the daemon (pid {health.get('pid')}) runs, but its control token "
            f"{token_path} cannot be read: {exc.strerror}"
        ) from None
    register_secret(token)
    return ProjectsClient(settings.lock_port, token)


@asynccontextmanager
async def open_direct_projects(settings: Settings) -> AsyncIterator[Projects]:
    """`Projects` over this process's own REST client and store (no daemon running)."""
    async with await Store.open(settings.database_path) as store:
        token = settings.bot_token or await store.get_bot_token()
        if token is None:
            raise ConfigError(
                "no Discord bot token: set KIMAKI_BOT_TOKEN or run `kimaki token set`"
            )
        async with RESTClient(token, base_url=settings.discord_api_url) as rest:
            try:
                application = await rest.get_current_application()
            except HTTPError as exc:
                if exc.status == 401:
                    raise CredentialsError(
                        "Discord rejected the bot token: set a new one with `kimaki token set`"
                    ) from None
                raise ConfigError(f"Discord refused to name the bot's application: {exc}") from None
            except NetworkError as exc:
                raise ConfigError(f"Discord is not reachable: {exc}") from None
            yield Projects(
                rest=rest,
                store=store,
                app_id=application.id,
                data_dir=settings.data_dir,
                projects_dir=settings.projects_dir,
            )
