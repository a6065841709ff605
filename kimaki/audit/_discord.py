"""What people do in project channels, from the gateway: messages and threads, for the trail.

`DiscordAuditor` subscribes to the dispatcher beside the router and records, for project
channels and their threads only: messages created, edited and deleted (with attachments'
names, types and sizes), threads created, archived, unarchived and deleted. It reads the raw
event data (no model is built for it) and runs concurrently, so the router never waits for it.

The bot's own messages are not recorded here: what the bot posts is recorded where it is
delivered (`delivery.*`), with more to say than the gateway's echo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, final

from kimaki._audit import audit
from kimaki.store import ChannelRecord

__all__ = ["DiscordAuditor"]

Json = Mapping[str, Any]


class AuditedChannels(Protocol):
    """The project channel a channel belongs to, if this bot owns it (the bot's
    `ProjectPlaces` is one)."""

    async def project_of(self, channel_id: int) -> ChannelRecord | None: ...


class EventSource(Protocol):
    """Where gateway events are subscribed to (`kimaki.dispatch.Dispatcher` is one)."""

    def on(
        self,
        event: str,
        handler: Callable[[Any], Awaitable[None]],
        *,
        concurrent: bool = ...,
    ) -> None: ...


@final
class DiscordAuditor:
    """Records project channels' messages and threads as `message.*` and `thread.*` events."""

    def __init__(self, *, channels: AuditedChannels, bot_user_id: int) -> None:
        self._channels = channels
        self._bot_user_id = bot_user_id
        self._archived: dict[int, bool] = {}  # threads seen archived (and not since reopened)

    def subscribe(self, dispatcher: EventSource) -> None:
        dispatcher.on("MESSAGE_CREATE", self.on_message_create, concurrent=True)
        dispatcher.on("MESSAGE_UPDATE", self.on_message_update, concurrent=True)
        dispatcher.on("MESSAGE_DELETE", self.on_message_delete, concurrent=True)
        dispatcher.on("MESSAGE_DELETE_BULK", self.on_message_delete_bulk, concurrent=True)
        dispatcher.on("THREAD_CREATE", self.on_thread_create, concurrent=True)
        dispatcher.on("THREAD_UPDATE", self.on_thread_update, concurrent=True)
        dispatcher.on("THREAD_DELETE", self.on_thread_delete, concurrent=True)

    # ---- messages

    async def on_message_create(self, data: Json) -> None:
        await self._message("message.created", data)

    async def on_message_update(self, data: Json) -> None:
        # Discord also sends updates nobody made (a link's preview added): only edits count.
        if not data.get("edited_timestamp"):
            return
        await self._message("message.edited", data)

    async def _message(self, kind: str, data: Json) -> None:
        author = data.get("author") or {}
        author_id = _id(author.get("id"))
        if author_id is not None and author_id == self._bot_user_id:
            return
        where = await self._where(_id(data.get("channel_id")))
        if where is None:
            return
        channel_id, thread_id = where
        detail: dict[str, object] = {"message_id": _id(data.get("id"))}
        if "content" in data:
            detail["content"] = data.get("content") or ""
        if author:
            detail["author"] = author.get("username")
            if author.get("bot"):
                detail["bot"] = True
        attachments = [
            {
                "name": attachment.get("filename"),
                "type": attachment.get("content_type"),
                "size": attachment.get("size"),
            }
            for attachment in data.get("attachments") or ()
            if isinstance(attachment, Mapping)
        ]
        if attachments:
            detail["attachments"] = attachments
        audit(kind, channel_id=channel_id, thread_id=thread_id, user_id=author_id, **detail)

    async def on_message_delete(self, data: Json) -> None:
        where = await self._where(_id(data.get("channel_id")))
        if where is None:
            return
        channel_id, thread_id = where
        audit(
            "message.deleted",
            channel_id=channel_id,
            thread_id=thread_id,
            message_id=_id(data.get("id")),
        )

    async def on_message_delete_bulk(self, data: Json) -> None:
        where = await self._where(_id(data.get("channel_id")))
        if where is None:
            return
        channel_id, thread_id = where
        ids = [_id(value) for value in data.get("ids") or ()]
        audit("message.deleted", channel_id=channel_id, thread_id=thread_id, message_ids=ids)

    # ---- threads

    async def on_thread_create(self, data: Json) -> None:
        parent_id = _id(data.get("parent_id"))
        project = await self._project(parent_id)
        if project is None:
            return
        audit(
            "thread.created",
            channel_id=project,
            thread_id=_id(data.get("id")),
            user_id=_id(data.get("owner_id")),
            name=data.get("name") or "",
        )

    async def on_thread_update(self, data: Json) -> None:
        metadata = data.get("thread_metadata")
        if not isinstance(metadata, Mapping) or "archived" not in metadata:
            return
        thread_id = _id(data.get("id"))
        archived = bool(metadata.get("archived"))
        # Every update carries the flag (a rename too): only a change of it is an event.
        if thread_id is None or self._archived.get(thread_id, False) == archived:
            return
        self._archived[thread_id] = archived
        if not archived:
            del self._archived[thread_id]
        project = await self._project(_id(data.get("parent_id")))
        if project is None:
            return
        audit(
            "thread.archived" if archived else "thread.unarchived",
            channel_id=project,
            thread_id=thread_id,
            name=data.get("name") or "",
            locked=bool(metadata.get("locked")),
        )

    async def on_thread_delete(self, data: Json) -> None:
        self._archived.pop(_id(data.get("id")) or 0, None)
        project = await self._project(_id(data.get("parent_id")))
        if project is None:
            return
        audit("thread.deleted", channel_id=project, thread_id=_id(data.get("id")))

    # ---- where

    async def _project(self, channel_id: int | None) -> int | None:
        if channel_id is None:
            return None
        record = await self._channels.project_of(channel_id)
        return None if record is None else record.channel_id

    async def _where(self, channel_id: int | None) -> tuple[int, int | None] | None:
        """(project channel, thread or None) of a message's channel, if it is ours."""
        project = await self._project(channel_id)
        if project is None or channel_id is None:
            return None
        return project, (None if channel_id == project else channel_id)


def _id(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None
