"""Where a message or an interaction belongs: the project channel this bot owns (the channel
itself, or a thread's parent) and, in a thread, the thread's record.

The router asks for every message, the interactions for every command; both are handed this
one lookup, not the store, the guild cache and the application id it is made of.
"""

from __future__ import annotations

from typing import Protocol, final

from kimaki.discord.models import Channel
from kimaki.store import ChannelRecord, ThreadRecord
from kimaki.threads import Place

__all__ = ["ChannelCache", "PlaceRecords", "ProjectPlaces"]


class PlaceRecords(Protocol):
    """The thread and channel records (`kimaki.store.Places` is one)."""

    async def get_thread(self, thread_id: int) -> ThreadRecord | None: ...

    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...


class ChannelCache(Protocol):
    """The channels the gateway told of (`kimaki.guilds.GuildCache` is one)."""

    def channel(self, channel_id: int) -> Channel | None: ...


@final
class ProjectPlaces:
    """The places of one bot's (one application id's) projects."""

    def __init__(
        self, *, records: PlaceRecords, channels: ChannelCache, application_id: int
    ) -> None:
        self._records = records
        self._channels = channels
        self._application_id = application_id

    async def project_of(self, channel_id: int) -> ChannelRecord | None:
        """The project channel of `channel_id` (itself, or a thread's parent) if this bot owns it.

        Channels mapped by another machine's bot (another application id) are not ours.
        """
        place = await self.place_of(channel_id)
        return None if place is None else place.project

    async def place_of(self, channel_id: int) -> Place | None:
        """Where a message in `channel_id` belongs: the project channel this bot owns (the
        channel itself, or a thread's parent) and, in a thread, the thread's record, if known.

        Resolved once per routed message and handed on with its prompt, so nothing after the
        router reads them again. Thread first, since most messages are in threads: two store
        reads (the thread's record, then its channel's), both from the store's write-through
        caches after the first time.
        """
        records = self._records
        thread = await records.get_thread(channel_id)
        project = None
        if thread is not None:
            parent_id = thread.channel_id
            if parent_id is None:
                parent_id = self._parent_of(channel_id)
        else:
            project = await records.get_channel(channel_id)
            parent_id = None if project is not None else self._parent_of(channel_id)
        if parent_id is not None:
            project = await records.get_channel(parent_id)
        if project is None or project.app_id != self._application_id:
            return None
        return Place(project, thread)

    def _parent_of(self, channel_id: int) -> int | None:
        channel = self._channels.channel(channel_id)
        if channel is None or not channel.is_thread:
            return None
        return channel.parent_id
