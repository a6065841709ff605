"""Delivery: a thread's rendered blocks → Discord messages, in order.

One `ThreadWriter` per thread. Blocks are buffered and sent on `flush()`: joined, split under
2000 characters (code fences kept whole), one message per chunk. Every message pings users at
most (never @everyone or roles; the REST client's default) and has embeds suppressed, so a link
in agent output does not unfurl.

Two kinds of task send to a thread: its runtime's (the turn: rendered events, asks, notices)
and, since agents have tools, the tasks serving a tool's call (a lock-port request: a message,
a file, buttons, questions). Their order is kept by one lock, the writer's, and the engine's
event queue:

- every send holds the lock (`held()`, reentrant for the task that holds it), so a flush of
  several chunks is never cut in two by another task's message;
- the turn holds it around each *batch* of engine events it handles (`handling()`: everything
  already queued, rendered, flushed where due), and lets it go only while it waits for the
  next event;
- a tool takes it with `in_order()`: once it holds the lock *and* the turn has handled every
  event the engine had queued by then, it flushes the turn's buffered text and sends. So a
  tool's message appears where the agent's text left off, and, since the agent waits for the
  tool's answer, before the turn's final answer. With no turn following the thread, a tool
  just sends.

A lock and a count were chosen over an outbox the turn drains: the turn's loop waits on the
engine's queue alone, and a tool's call is answered with its message's id without a round
trip through another task.

A message that cannot be delivered is logged and dropped: the turn goes on, and the person
still sees everything else (`send()`, for tools, raises instead: the model is told).

Secrets: a flush redacts the joined text *before* splitting it (`kimaki._redact`), so no split
(the 2000-character boundary, a code fence reopened) cuts a secret into halves that the REST
client's own redaction could no longer recognise; every other send is redacted here too.
Each message sent or refused is an audit event (`delivery.sent`, `delivery.failed`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Final, Protocol, final

import trio

from kimaki._audit import audit
from kimaki._redact import redact
from kimaki.agents import EventQueue
from kimaki.discord.errors import RESTError
from kimaki.discord.markdown import split_message
from kimaki.discord.models import ActionRow, Message, MessageFlags, MessageReference
from kimaki.discord.rest import UNSET, File, Unset

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
        files: Sequence[File] = ...,
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
        self._lock = trio.Lock()
        # The engine events the turn is following (None between turns), how many of them it
        # has handled, and an event set after each batch it handles.
        self._source: EventQueue | None = None
        self._handled = 0
        self._progress = trio.Event()

    @property
    def pending(self) -> bool:
        return bool(self._blocks)

    # ---- order between the turn and the tools

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """The delivery lock, unless this task holds it already."""
        if self._lock.statistics().owner is trio.lowlevel.current_task():
            yield
            return
        async with self._lock:
            yield

    @contextmanager
    def following(self, events: EventQueue) -> Iterator[None]:
        """The turn follows `events` (tools wait for it to handle what is queued)."""
        self._source = events
        self._handled = events.statistics().delivered
        try:
            yield
        finally:
            self._source = None
            self._progressed()

    @asynccontextmanager
    async def handling(self) -> AsyncIterator[None]:
        """The turn, around one batch of the events it follows (see the module's docstring)."""
        try:
            async with self.held():
                yield
        finally:
            if self._source is not None:
                self._handled = self._source.statistics().delivered
            self._progressed()

    @asynccontextmanager
    async def in_order(self) -> AsyncIterator[None]:
        """Another task's sends (a tool's): after everything the engine said before, with the
        turn's buffered text flushed first; nothing else is sent meanwhile."""
        while True:
            await self._lock.acquire()
            if self._caught_up():
                break
            progress = self._progress
            self._lock.release()
            await progress.wait()
        try:
            await self.flush()
            yield
        finally:
            self._lock.release()

    def _caught_up(self) -> bool:
        source = self._source
        if source is None:
            return True
        statistics = source.statistics()
        # Nothing queued, and nothing taken from the queue that the turn has not handled.
        return statistics.pending == 0 and statistics.delivered == self._handled

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    # ---- the buffer

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
        async with self.held():
            if not self._blocks:
                parts, self._parts = self._parts, []
                if parts and self._on_posted is not None:
                    await self._on_posted(parts, 0)
                return
            # Redacted whole, before any split (see the module's docstring).
            text = redact("\n\n".join(self._blocks))
            parts = self._parts
            self._blocks = []
            self._parts = []
            last_id = 0
            # Shielded (within a bound): a flush cancelled between a message leaving and its
            # parts being recorded would have the process that follows the turn post them again.
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
        async with self.held():
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
            return await self.send(content, components=components, reply_to=reply_to)
        except RESTError as exc:
            log.warning("thread %d: a message could not be delivered: %s", self.channel_id, exc)
            return None

    async def send(
        self,
        content: str | None,
        *,
        components: Sequence[ActionRow] = (),
        reply_to: int | None = None,
        files: Sequence[File] = (),
    ) -> Message:
        """`post`, raising `RESTError` when Discord refuses (a tool tells its model why)."""
        if content is not None:
            content = redact(content)
        async with self.held():
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
                    files=files,
                )
            except RESTError as exc:
                self.messages_failed += 1
                audit(
                    "delivery.failed",
                    thread_id=self.channel_id,
                    error=str(exc),
                    characters=len(content or ""),
                    files=[file.filename for file in files],
                )
                raise
            self.messages_sent += 1
            audit(
                "delivery.sent",
                thread_id=self.channel_id,
                message_id=message.id,
                characters=len(content or ""),
                files=[file.filename for file in files],
            )
            return message
