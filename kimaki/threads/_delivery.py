"""Delivery: a thread's rendered blocks → Discord messages, in order.

One `ThreadWriter` per thread, used only by that thread's runtime task, so messages leave in
the order they were written without a lock or a queue. Blocks are buffered and sent on
`flush()`: joined, split under 2000 characters (code fences kept whole), one message per
chunk. Every message pings users at most (never @everyone or roles; the REST client's
default) and has embeds suppressed, so a link in agent output does not unfurl.

A message that cannot be delivered is logged and dropped: the turn goes on, and the person
still sees everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, final

import trio

from kimaki.discord.errors import RESTError
from kimaki.discord.markdown import split_message
from kimaki.discord.models import ActionRow, Message, MessageFlags, MessageReference
from kimaki.discord.rest import UNSET, Unset

__all__ = ["MessagePoster", "PostedHook", "ThreadWriter"]

log = logging.getLogger("kimaki.delivery")

FLUSH_BOUND: Final = 30.0
"""How long a flush may go on after the turn that started it was cancelled."""

PostedHook = Callable[[Sequence[str], int], Awaitable[None]]
"""Called with the part ids a flush delivered and the id of the message that carried them."""


class MessagePoster(Protocol):
    """The one Discord call delivery makes (`kimaki.discord.rest.RESTClient` is one)."""

    async def create_message(
        self,
        channel_id: int,
        content: str | None = ...,
        *,
        components: Sequence[ActionRow] | Unset = ...,
        flags: MessageFlags | int | Unset = ...,
        reply_to: MessageReference | None = ...,
    ) -> Message: ...


@final
class ThreadWriter:
    def __init__(
        self, rest: MessagePoster, channel_id: int, *, on_posted: PostedHook | None = None
    ) -> None:
        self._rest = rest
        self.channel_id = channel_id
        self._blocks: list[str] = []
        self._parts: list[str] = []
        self._on_posted = on_posted
        self.messages_sent = 0
        self.messages_failed = 0

    @property
    def pending(self) -> bool:
        return bool(self._blocks)

    def add(self, block: str, *, part_id: str | None = None) -> None:
        """Buffer one markdown block (a paragraph, a tool line); `part_id` if it is a part."""
        if block.strip():
            self._blocks.append(block)
        if part_id is not None:
            self._parts.append(part_id)

    def discard(self) -> None:
        self._blocks.clear()
        self._parts.clear()

    async def flush(self) -> None:
        """Send everything buffered, in order."""
        if not self._blocks:
            parts, self._parts = self._parts, []
            if parts and self._on_posted is not None:
                await self._on_posted(parts, 0)
            return
        text = "\n\n".join(self._blocks)
        parts = self._parts
        self._blocks = []
        self._parts = []
        last_id = 0
        # Shielded (within a bound): a flush cancelled between a message leaving and its parts
        # being recorded would have the process that follows the turn post them again.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + FLUSH_BOUND):
            for chunk in split_message(text):
                if not chunk.strip():
                    continue
                message = await self.post(chunk)
                if message is not None:
                    last_id = message.id
            if parts and self._on_posted is not None:
                await self._on_posted(parts, last_id)

    async def say(self, line: str) -> Message | None:
        """Flush, then send `line` (a notice) as its own message."""
        await self.flush()
        return await self.post(line)

    async def post(
        self,
        content: str,
        *,
        components: Sequence[ActionRow] = (),
        reply_to: int | None = None,
    ) -> Message | None:
        """Send one message now (it must fit in 2000 characters); None if it failed."""
        try:
            message = await self._rest.create_message(
                self.channel_id,
                content,
                components=list(components) if components else UNSET,
                flags=MessageFlags.SUPPRESS_EMBEDS,
                reply_to=(
                    MessageReference(message_id=reply_to, fail_if_not_exists=False)
                    if reply_to is not None
                    else None
                ),
            )
        except RESTError as exc:
            self.messages_failed += 1
            log.warning("thread %d: a message could not be delivered: %s", self.channel_id, exc)
            return None
        self.messages_sent += 1
        return message
