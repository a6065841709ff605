"""The shell's side: the running daemon through the lock port (the one control client every
shell command shares, `kimaki._control_client`), or Discord and the store directly.

`kimaki project` prefers the daemon (`connect_to_daemon`), whose REST client and rate limits
are already warm and whose store is the one being written; with no daemon of this data dir it
opens its own (`open_direct_projects`). Both answer the same calls with the same records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

from kimaki._control_client import ControlClient, ControlError, find_daemon
from kimaki.discord.errors import HTTPError, NetworkError
from kimaki.discord.rest import RESTClient
from kimaki.errors import ConfigError, CredentialsError
from kimaki.projects._errors import ProjectError
from kimaki.projects._operations import Projects
from kimaki.projects._shapes import AddedProject, added_from_json, record_from_json
from kimaki.store import ChannelRecord, Store

if TYPE_CHECKING:
    from kimaki.settings import Settings

__all__ = ["ProjectsClient", "connect_to_daemon", "open_direct_projects"]


@final
class ProjectsClient:
    """The project routes of a running daemon, as the shell calls them."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            return await self._client.call(
                method,
                path,
                body,
                missing="the running daemon does not take project commands yet (still "
                "connecting to Discord?); try again in a moment",
            )
        except ControlError as exc:
            raise ProjectError(str(exc)) from None

    async def list_projects(self, *, guild_id: int | None = None) -> list[ChannelRecord]:
        query = "" if guild_id is None else f"?guild_id={guild_id}"
        data = await self._call("GET", "/projects" + query)
        return [record_from_json(item) for item in data.get("projects") or []]

    async def add(self, directory: Path, *, guild_id: int | None = None) -> AddedProject:
        body = {"directory": str(directory), "guild_id": guild_id}
        return added_from_json(await self._call("POST", "/projects", body))

    async def remove(
        self, channel_id: int, *, delete_channels: bool = False
    ) -> list[ChannelRecord]:
        body = {"channel_id": str(channel_id), "delete_channels": delete_channels}
        data = await self._call("POST", "/projects/remove", body)
        return [record_from_json(item) for item in data.get("removed") or []]


async def connect_to_daemon(settings: Settings) -> ProjectsClient | None:
    """The running daemon of this data dir, or None when there is none."""
    client = await find_daemon(settings.lock_port, settings.data_dir)
    return None if client is None else ProjectsClient(client)


@asynccontextmanager
async def open_direct_projects(settings: Settings) -> AsyncIterator[Projects]:
    """`Projects` over this process's own REST client and store (no daemon running)."""
    async with await Store.open(settings.database_path) as store:
        token = settings.bot_token or await store.credentials.get_bot_token()
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
                store=store.places,
                app_id=application.id,
                data_dir=settings.data_dir,
                projects_dir=settings.projects_dir,
            )
