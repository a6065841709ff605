"""What the bot knows of its guilds, kept current from gateway events.

Access checks need the guild's owner and roles, and thread messages need their parent channel;
both arrive in GUILD_CREATE and change through GUILD_*, GUILD_ROLE_*, CHANNEL_* and THREAD_*
events (all under the GUILDS intent), so the cache asks Discord for nothing.
"""

from __future__ import annotations

import logging
from typing import Any, final

import attrs

from kimaki.discord.models import Channel, Guild, Role, structure
from kimaki.discord.rest import RESTClient
from kimaki.dispatch import Dispatcher

__all__ = ["GuildCache"]

log = logging.getLogger("kimaki.guilds")


@final
class GuildCache:
    """Guilds (with their roles) and channels (threads included) by id."""

    def __init__(self) -> None:
        self._guilds: dict[int, Guild] = {}
        self._channels: dict[int, Channel] = {}
        # Why the guilds cannot be known yet (a failed load over REST), for `/health`.
        self.problem: str | None = None

    def guild(self, guild_id: int) -> Guild | None:
        return self._guilds.get(guild_id)

    def channel(self, channel_id: int) -> Channel | None:
        return self._channels.get(channel_id)

    def guild_ids(self) -> list[int]:
        return list(self._guilds)

    def subscribe(self, dispatcher: Dispatcher) -> None:
        dispatcher.on("GUILD_CREATE", self._guild_create, model=Guild)
        dispatcher.on("GUILD_UPDATE", self._guild_update, model=Guild)
        dispatcher.on("GUILD_DELETE", self._guild_delete)
        for event in ("GUILD_ROLE_CREATE", "GUILD_ROLE_UPDATE"):
            dispatcher.on(event, self._role_upsert)
        dispatcher.on("GUILD_ROLE_DELETE", self._role_delete)
        for event in ("CHANNEL_CREATE", "CHANNEL_UPDATE", "THREAD_CREATE", "THREAD_UPDATE"):
            dispatcher.on(event, self._channel_upsert, model=Channel)
        for event in ("CHANNEL_DELETE", "THREAD_DELETE"):
            dispatcher.on(event, self._channel_delete)
        dispatcher.on("THREAD_LIST_SYNC", self._thread_list_sync)

    # Handlers are async only to fit the dispatcher; none of them awaits.

    async def fill(self, rest: RESTClient) -> int:
        """Load every guild the bot is in (roles, channels, active threads) over REST.

        For a process that RESUMEs a gateway session it did not start (an in-place restart):
        Discord does not send GUILD_CREATE again, and the events it replays arrive before
        RESUMED, so the cache must be full before the gateway connects. Returns the count.
        """
        for partial in await rest.get_current_user_guilds():
            guild = await rest.get_guild(partial.id)
            channels = await rest.get_guild_channels(partial.id)
            threads = await rest.get_active_threads(partial.id)
            await self._guild_create(
                attrs.evolve(guild, channels=tuple(channels), threads=tuple(threads))
            )
        return len(self._guilds)

    async def _guild_create(self, guild: Guild) -> None:
        if guild.unavailable:
            return
        for channel in (*guild.channels, *guild.threads):
            self._channels[channel.id] = attrs.evolve(channel, guild_id=guild.id)
        self._guilds[guild.id] = attrs.evolve(guild, channels=(), threads=(), members=())

    async def _guild_update(self, guild: Guild) -> None:
        self._guilds[guild.id] = attrs.evolve(guild, channels=(), threads=(), members=())

    async def _guild_delete(self, data: Any) -> None:
        guild_id = int(data["id"])
        self._guilds.pop(guild_id, None)
        for channel_id in [c.id for c in self._channels.values() if c.guild_id == guild_id]:
            del self._channels[channel_id]

    async def _role_upsert(self, data: Any) -> None:
        guild = self._guilds.get(int(data["guild_id"]))
        if guild is None:
            return
        role = structure(data["role"], Role)
        roles = (*(r for r in guild.roles if r.id != role.id), role)
        self._guilds[guild.id] = attrs.evolve(guild, roles=roles)

    async def _role_delete(self, data: Any) -> None:
        guild = self._guilds.get(int(data["guild_id"]))
        if guild is None:
            return
        role_id = int(data["role_id"])
        self._guilds[guild.id] = attrs.evolve(
            guild, roles=tuple(r for r in guild.roles if r.id != role_id)
        )

    async def _channel_upsert(self, channel: Channel) -> None:
        self._channels[channel.id] = channel

    async def _channel_delete(self, data: Any) -> None:
        self._channels.pop(int(data["id"]), None)

    async def _thread_list_sync(self, data: Any) -> None:
        for thread in data.get("threads", ()):
            channel = structure(thread, Channel)
            self._channels[channel.id] = channel
