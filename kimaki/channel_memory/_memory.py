"""`ChannelMemory`, the door: a project channel's memory (stored) and flash memory (held by
the daemon), their limits, and the agent's proposals.

Everything that changes memory goes through here: `/memory` and `/flashmemory`, a person's
Accept on an agent's proposal, and nothing else (the agent may only propose). So one set of
rules holds for all of them:

- an entry is its text with whitespace collapsed, at most `ENTRY_LIMIT` characters;
- a channel's memory (and, separately, its flash memory) holds at most `limit_bytes` of text
  (UTF-8), and an entry that would go past it is refused saying how much room is left;
- an entry that looks like a secret (`kimaki._redact.secret_reason`) is refused with the
  reason and never stored: the memory is sent to every turn of the channel, and shown in
  Discord.

Flash memory is emphasis for now: it lives in this object, per project channel, and is gone
at a restart or `clear`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, Protocol, final

import attrs
import trio

from kimaki._audit import audit
from kimaki._redact import secret_reason
from kimaki.discord.models import ActionRow, Button, ButtonStyle
from kimaki.errors import KimakiError
from kimaki.store import MemoryEntry, UnknownChannelError

__all__ = [
    "DEFAULT_LIMIT_BYTES",
    "ENTRY_LIMIT",
    "PROPOSAL_KIND",
    "ChannelMemory",
    "MemoryKind",
    "MemoryRecords",
    "MemoryRefusedError",
    "Proposal",
    "ProposalIds",
    "ProposalREST",
    "collapse",
    "memory_size",
]

log = logging.getLogger("kimaki.memory")

MemoryKind = Literal["memory", "flash"]
"""Which of a channel's memories: the stored one, or flash memory (gone at a restart)."""

ENTRY_LIMIT: Final = 1000
"""Characters of one entry, after whitespace is collapsed."""
DEFAULT_LIMIT_BYTES: Final = 8 * 1024
"""Bytes (UTF-8) of a channel's memory, and of its flash memory (`KIMAKI_MEMORY_LIMIT_BYTES`)."""
PROPOSAL_KIND: Final = "memory-proposal"
"""The interaction-key kind of the Accept / Reject buttons under an agent's proposal."""
# A proposal waits for a person as long as buttons of tools do.
_PROPOSAL_TTL: Final = 7 * 24 * 3600.0

_NAMES: Final[dict[MemoryKind, str]] = {"memory": "channel memory", "flash": "flash memory"}
_COMMANDS: Final[dict[MemoryKind, str]] = {"memory": "/memory", "flash": "/flashmemory"}


class MemoryRefusedError(KimakiError, ValueError):
    """An entry that cannot be added (or removed) as asked; the message says why and what to do
    instead, for a person (an ephemeral answer) or a model (the tool's error)."""


class MemoryRecords(Protocol):
    """The store facet the door keeps channel memory in (`kimaki.store.ChannelMemoryStore`)."""

    async def memory_entries(self, channel_id: int) -> list[MemoryEntry]: ...

    async def add_memory_entry(self, entry: MemoryEntry) -> MemoryEntry: ...

    async def remove_memory_entry(self, entry_id: int) -> bool: ...

    async def clear_memory(self, channel_id: int) -> int: ...

    async def thread_context(self, channel_id: int) -> bool: ...

    async def set_thread_context(self, channel_id: int, enabled: bool) -> None: ...


class ProposalREST(Protocol):
    """Putting the buttons under a posted proposal (`kimaki.discord.rest.RESTClient` is one)."""

    async def edit_message(
        self, channel_id: int, message_id: int, *, components: Sequence[ActionRow]
    ) -> object: ...


class ProposalIds(Protocol):
    """Custom ids bound to the thread a proposal is in (the bot's `Interactions` is one)."""

    async def custom_id(
        self, kind: str, channel_id: int, payload: Any, *, suffix: str = ..., ttl: float = ...
    ) -> str: ...


def collapse(text: str) -> str:
    """`text` as an entry keeps it: runs of whitespace (newlines included) become one space."""
    return " ".join(text.split())


def memory_size(entries: Sequence[MemoryEntry]) -> int:
    """Bytes the entries' texts take (UTF-8): what the limit counts."""
    return sum(len(entry.text.encode()) for entry in entries)


@final
@attrs.frozen
class Proposal:
    """An agent's proposed entry, as its buttons' key keeps it."""

    channel_id: int
    thread_id: int
    text: str
    reason: str

    def payload(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_payload(cls, payload: Any) -> Proposal | None:
        """The proposal a key holds; None for anything else."""
        if not isinstance(payload, dict):
            return None
        channel_id, thread_id = payload.get("channel_id"), payload.get("thread_id")
        text, reason = payload.get("text"), payload.get("reason")
        if not (
            isinstance(channel_id, int)
            and isinstance(thread_id, int)
            and isinstance(text, str)
            and isinstance(reason, str)
        ):
            return None
        return cls(channel_id, thread_id, text, reason)


@final
class ChannelMemory:
    """A project channel's memory and flash memory; the rules every change goes through.

    `rest` and `custom_ids` are needed only for agents' proposals (`propose`).
    """

    def __init__(
        self,
        *,
        records: MemoryRecords,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        rest: ProposalREST | None = None,
        custom_ids: ProposalIds | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._records = records
        self.limit_bytes = limit_bytes
        self._rest = rest
        self._custom_ids = custom_ids
        self._clock = clock
        # Flash memory: per project channel, this process only.
        self._flash: dict[int, list[MemoryEntry]] = {}
        self._flash_ids = itertools.count(1)
        # Read every turn, written rarely, and all writes go through here: kept in memory once
        # read (a turn's preamble then waits on no database call).
        self._stored: dict[int, tuple[MemoryEntry, ...]] = {}
        self._context: dict[int, bool] = {}
        # The size check and the write are one step (two people adding at once).
        self._lock = trio.Lock()

    # ---- reading

    async def entries(self, channel_id: int, kind: MemoryKind) -> tuple[MemoryEntry, ...]:
        """The entries as listed (`remove` takes their 1-based position in this order)."""
        if kind == "flash":
            return tuple(self._flash.get(channel_id, ()))
        stored = self._stored.get(channel_id)
        if stored is None:
            stored = tuple(await self._records.memory_entries(channel_id))
            self._stored[channel_id] = stored
        return stored

    async def thread_context(self, channel_id: int) -> bool:
        """Whether a new thread of the channel gets its recent conversation (`/context`)."""
        enabled = self._context.get(channel_id)
        if enabled is None:
            enabled = await self._records.thread_context(channel_id)
            self._context[channel_id] = enabled
        return enabled

    # ---- the rules

    def check(self, text: str, kind: MemoryKind = "memory") -> str:
        """The entry `text` becomes (whitespace collapsed), or `MemoryRefusedError` saying why
        it cannot be one (empty, too long, shaped like a secret). The total is checked when
        it is added."""
        entry = collapse(text)
        if not entry:
            raise MemoryRefusedError("The entry is empty: write the instruction itself.")
        if len(entry) > ENTRY_LIMIT:
            raise MemoryRefusedError(
                f"The entry is {len(entry)} characters long; an entry holds at most "
                f"{ENTRY_LIMIT}. Shorten it, or split it into several entries."
            )
        reason = secret_reason(entry)
        if reason is not None:
            raise MemoryRefusedError(
                f"Not stored: {reason}. {_NAMES[kind].capitalize()} is sent to every turn of "
                "this channel and shown in Discord, so it must not hold secrets; keep them in "
                "the agent's environment instead."
            )
        return entry

    # ---- changes

    async def add(
        self,
        channel_id: int,
        kind: MemoryKind,
        text: str,
        *,
        author_id: int,
        author_name: str,
        thread_id: int | None = None,
        proposed: bool = False,
    ) -> MemoryEntry:
        """Add an entry last; `MemoryRefusedError` when it breaks a rule (nothing is kept).
        The entry returned has its number as listed now in `position`."""
        entry_text = self.check(text, kind)
        async with self._lock:
            current = await self.entries(channel_id, kind)
            used = memory_size(current)
            needed = len(entry_text.encode())
            if used + needed > self.limit_bytes:
                raise MemoryRefusedError(
                    f"{_NAMES[kind].capitalize()} is full: {used} of {self.limit_bytes} bytes "
                    f"are used and this entry needs {needed}. Remove an entry first "
                    f"(`{_COMMANDS[kind]} remove`), or shorten it."
                )
            entry = MemoryEntry(
                channel_id=channel_id,
                text=entry_text,
                author_id=author_id,
                author_name=author_name,
                added_at=self._clock(),
            )
            if kind == "flash":
                entry = attrs.evolve(
                    entry, entry_id=next(self._flash_ids), position=len(current) + 1
                )
                self._flash.setdefault(channel_id, []).append(entry)
            else:
                try:
                    entry = await self._records.add_memory_entry(entry)
                except UnknownChannelError:
                    raise MemoryRefusedError("This is not a project channel.") from None
                self._stored[channel_id] = (*current, entry)
                entry = attrs.evolve(entry, position=len(current) + 1)
        audit(
            "memory.added",
            channel_id=channel_id,
            thread_id=thread_id,
            user_id=author_id or None,
            memory=kind,
            text=entry.text,
            proposed=proposed,
        )
        return entry

    async def remove(
        self, channel_id: int, kind: MemoryKind, index: int, *, user_id: int
    ) -> MemoryEntry:
        """Remove the entry at 1-based `index` as listed; `MemoryRefusedError` when none is."""
        async with self._lock:
            current = await self.entries(channel_id, kind)
            if not current:
                raise MemoryRefusedError(f"{_NAMES[kind].capitalize()} is empty here.")
            if not 1 <= index <= len(current):
                raise MemoryRefusedError(
                    f"There is no entry {index}: `{_COMMANDS[kind]} list` shows entries "
                    f"1 to {len(current)}."
                )
            entry = current[index - 1]
            if kind == "flash":
                self._flash[channel_id].remove(entry)
                if not self._flash[channel_id]:
                    del self._flash[channel_id]
            else:
                await self._records.remove_memory_entry(entry.entry_id)
                self._stored[channel_id] = tuple(e for e in current if e is not entry)
        audit(
            "memory.removed",
            channel_id=channel_id,
            user_id=user_id or None,
            memory=kind,
            text=entry.text,
        )
        return entry

    async def clear(self, channel_id: int, kind: MemoryKind, *, user_id: int) -> int:
        """Remove every entry; how many there were."""
        async with self._lock:
            if kind == "flash":
                count = len(self._flash.pop(channel_id, ()))
            else:
                count = await self._records.clear_memory(channel_id)
                self._stored[channel_id] = ()
        audit(
            "memory.cleared",
            channel_id=channel_id,
            user_id=user_id or None,
            memory=kind,
            count=count,
        )
        return count

    async def set_thread_context(self, channel_id: int, enabled: bool, *, user_id: int) -> None:
        """Switch the recent-conversation block of the channel's new threads on or off."""
        try:
            await self._records.set_thread_context(channel_id, enabled)
        except UnknownChannelError:
            raise MemoryRefusedError("This is not a project channel.") from None
        self._context[channel_id] = enabled
        audit(
            "memory.context_changed",
            channel_id=channel_id,
            user_id=user_id or None,
            enabled=enabled,
        )

    # ---- an agent's proposals

    async def propose(self, proposal: Proposal, message_id: int) -> None:
        """Put Accept / Reject under the posted proposal `message_id` in its thread. Only a
        press on Accept by someone allowed to drive the bot stores it (`accept`)."""
        if self._rest is None or self._custom_ids is None:
            raise MemoryRefusedError("Proposals cannot be made here.")
        custom = await self._custom_ids.custom_id(
            PROPOSAL_KIND, proposal.thread_id, proposal.payload(), ttl=_PROPOSAL_TTL
        )
        row = ActionRow(
            components=(
                Button(style=ButtonStyle.SUCCESS, label="Accept", custom_id=f"{custom}/accept"),
                Button(style=ButtonStyle.SECONDARY, label="Reject", custom_id=f"{custom}/reject"),
            )
        )
        await self._rest.edit_message(proposal.thread_id, message_id, components=[row])
        audit(
            "memory.proposed",
            channel_id=proposal.channel_id,
            thread_id=proposal.thread_id,
            text=proposal.text,
            reason=proposal.reason,
        )

    async def accept(self, proposal: Proposal, *, user_id: int, user_name: str) -> MemoryEntry:
        """A person accepted `proposal`: it is added in their name (the rules apply again: the
        memory may have filled up meanwhile)."""
        return await self.add(
            proposal.channel_id,
            "memory",
            proposal.text,
            author_id=user_id,
            author_name=user_name,
            thread_id=proposal.thread_id,
            proposed=True,
        )

    def reject(self, proposal: Proposal, *, user_id: int) -> None:
        """A person rejected `proposal`: nothing is stored; the trail says so."""
        audit(
            "memory.rejected",
            channel_id=proposal.channel_id,
            thread_id=proposal.thread_id,
            user_id=user_id or None,
            text=proposal.text,
        )
