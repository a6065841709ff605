"""`MemoryHook`: what the channel's memory puts before every prompt of its threads.

A turn hook (`kimaki.turn_hooks.TurnHook`). Its `preamble` is, outermost and each only
when it has something to say:

```
Channel memory — always follow:
1. Use pnpm, never npm.

Flash memory — current emphasis:
1. Today: the login page only.

Recent conversation in this channel, before this thread (oldest first):
[2026-12-03 09:15 UTC] alice: fix the failing tests in api/
[2026-12-03 09:40 UTC] bob: the deploy is broken again
(end of recent conversation)
```

The recent conversation is given on a thread's first turn only (`first_turn`: its session was
made for this turn), unless `/context off` for the channel. It is read from Discord (the
channel's messages before the thread began, so the thread's own starter message, which is the
prompt, is not said twice), the newest `messages` at most, and at most `chars` characters of
them (the newest kept; a message longer than what is left is cut).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Protocol, final

from kimaki.agents import EngineEvent
from kimaki.channel_memory._memory import ChannelMemory
from kimaki.discord.errors import RESTError
from kimaki.discord.models import Message, MessageType
from kimaki.store import MemoryEntry
from kimaki.turn_hooks import NO_NOTES, TurnInfo, TurnNotes, TurnReport

__all__ = [
    "CONTEXT_END",
    "CONTEXT_HEADING",
    "DEFAULT_CONTEXT_CHARS",
    "DEFAULT_CONTEXT_MESSAGES",
    "FLASH_HEADING",
    "MEMORY_HEADING",
    "MemoryHook",
    "RecentMessages",
    "context_block",
    "memory_block",
]

log = logging.getLogger("kimaki.memory")

MEMORY_HEADING: Final = "Channel memory — always follow:"
FLASH_HEADING: Final = "Flash memory — current emphasis:"
CONTEXT_HEADING: Final = "Recent conversation in this channel, before this thread (oldest first):"
CONTEXT_END: Final = "(end of recent conversation)"
DEFAULT_CONTEXT_MESSAGES: Final = 20
DEFAULT_CONTEXT_CHARS: Final = 4000
MAX_CONTEXT_MESSAGES: Final = 100  # one Discord page
_SPOKEN: Final = frozenset({MessageType.DEFAULT, MessageType.REPLY})


class RecentMessages(Protocol):
    """A channel's recent messages (`kimaki.discord.rest.RESTClient` is one)."""

    async def list_messages(
        self, channel_id: int, *, limit: int = ..., before: int | None = ...
    ) -> list[Message]: ...


def memory_block(heading: str, entries: Sequence[MemoryEntry]) -> str:
    """A heading and the entries numbered as listed; "" without entries."""
    if not entries:
        return ""
    lines = [heading] + [f"{n}. {entry.text}" for n, entry in enumerate(entries, 1)]
    return "\n".join(lines)


def context_block(messages: Sequence[Message], *, chars: int) -> str:
    """The messages (newest first, as Discord lists them) as the conversation block, oldest
    first, within `chars` characters of lines; "" when nothing was said."""
    lines: list[str] = []
    left = chars
    for message in messages:
        if message.type not in _SPOKEN or left <= 0:
            continue
        text = " ".join(message.content.split())
        if not text:
            if not message.attachments:
                continue
            text = "(attached: " + ", ".join(a.filename for a in message.attachments) + ")"
        line = f"[{_when(message.timestamp)}] {_author(message)}: {text}"
        if len(line) > left:
            line = line[: max(0, left - 1)].rstrip() + "…"
        lines.append(line)
        left -= len(line)
    if not lines:
        return ""
    return "\n".join([CONTEXT_HEADING, *reversed(lines), CONTEXT_END])


def _author(message: Message) -> str:
    member = message.member
    if member is not None and member.nick:
        return member.nick
    return message.author.display_name


def _when(timestamp: str) -> str:
    try:
        at = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp or "unknown time"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@final
class MemoryHook:
    """The channel's memory before every prompt; the recent conversation before a thread's
    first. It adds nothing to a turn's end."""

    def __init__(
        self,
        memory: ChannelMemory,
        rest: RecentMessages,
        *,
        context_messages: int = DEFAULT_CONTEXT_MESSAGES,
        context_chars: int = DEFAULT_CONTEXT_CHARS,
    ) -> None:
        self._memory = memory
        self._rest = rest
        self._messages = max(0, min(context_messages, MAX_CONTEXT_MESSAGES))
        self._chars = max(0, context_chars)

    async def admit(self, info: TurnInfo) -> str | None:
        return None

    async def preamble(self, info: TurnInfo) -> str:
        channel_id = info.channel_id
        if channel_id is None:
            return ""
        blocks = [
            memory_block(MEMORY_HEADING, await self._memory.entries(channel_id, "memory")),
            memory_block(FLASH_HEADING, await self._memory.entries(channel_id, "flash")),
        ]
        if info.first_turn:
            blocks.append(await self._context(channel_id, info.thread_id))
        return "\n\n".join(block for block in blocks if block)

    def observe(self, info: TurnInfo, event: EngineEvent) -> None:
        return None

    async def ended(self, info: TurnInfo, report: TurnReport) -> TurnNotes:
        return NO_NOTES

    async def _context(self, channel_id: int, thread_id: int) -> str:
        if not self._messages or not self._chars:
            return ""
        if not await self._memory.thread_context(channel_id):
            return ""
        try:
            # Before the thread: a thread started from a message has that message's id, so
            # the prompt itself is left out.
            messages = await self._rest.list_messages(
                channel_id, limit=self._messages, before=thread_id
            )
        except RESTError as exc:
            log.warning("thread %d: no recent conversation of %d: %s", thread_id, channel_id, exc)
            return ""
        return context_block(messages, chars=self._chars)
