"""The shell's side: the running daemon through the lock port, or Discord and the store directly.

`kimaki project` prefers the daemon (`connect_to_daemon`), whose REST client and rate limits
are already warm and whose store is the one being written; with no daemon of this data dir it
opens its own (`open_direct_projects`). Both answer the same calls with the same records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

import httpx
import trio

from kimaki._control import control_url, query_health
from kimaki._log import register_secret
from kimaki.discord.errors import HTTPError, NetworkError
from kimaki.discord.rest import RESTClient
from kimaki.errors import ConfigError, CredentialsError
from kimaki.projects._errors import ProjectError
from kimaki.projects._operations import Projects
from kimaki.projects._shapes import (
    CONTROL_TOKEN_FILE,
    TOKEN_HEADER,
    AddedProject,
    added_from_json,
    record_from_json,
)
from kimaki.store import ChannelRecord, Store

if TYPE_CHECKING:
    from kimaki.settings import Settings

__all__ = ["ProjectsClient", "connect_to_daemon", "open_direct_projects"]


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
                    method, path, json=body, headers={TOKEN_HEADER: self._token}
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
        return added_from_json(await self._call("POST", "/projects", body))

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
