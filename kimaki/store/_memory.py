"""Channel memory: each project channel's standing instructions, and whether a new thread's
first prompt gets the channel's recent conversation.

Read once per turn (the entries) and once per thread (the switch), so there is no cache:
every read sees the last write. The limits (an entry's length, the total size) are the
memory door's (`kimaki.channel_memory`); the store keeps what it is given.
"""

from __future__ import annotations

import sqlite3
from typing import final

import attrs

from kimaki.store._database import Database, from_row, to_row
from kimaki.store._records import MemoryEntry
from kimaki.store._schedules import UnknownChannelError

__all__ = ["ChannelMemoryStore"]


@final
@attrs.frozen
class ChannelMemoryStore:
    """`memory_entries` and `thread_context`; both go with their channel (`ON DELETE
    CASCADE`)."""

    _db: Database = attrs.field(alias="db")

    async def memory_entries(self, channel_id: int) -> list[MemoryEntry]:
        """The channel's entries, as listed (1-based in `/memory list`)."""

        def query() -> list[MemoryEntry]:
            rows = self._db.rows(
                "memory_entries", "channel_id = ?", [channel_id], "position, entry_id"
            )
            return [from_row(MemoryEntry, row) for row in rows]

        return await self._db.run(query)

    async def add_memory_entry(self, entry: MemoryEntry) -> MemoryEntry:
        """Store `entry` last in its channel's list; `UnknownChannelError` if the channel is
        not a project channel."""
        row = to_row(entry)
        del row["entry_id"]  # assigned by SQLite

        def insert() -> MemoryEntry:
            with self._db.transaction() as conn:
                (last,) = conn.execute(
                    "SELECT COALESCE(MAX(position), 0) FROM memory_entries WHERE channel_id = ?",
                    [entry.channel_id],
                ).fetchone()
                row["position"] = int(last) + 1
                names = ", ".join(row)
                marks = ", ".join("?" * len(row))
                try:
                    cursor = conn.execute(
                        f"INSERT INTO memory_entries ({names}) VALUES ({marks})", list(row.values())
                    )
                except sqlite3.IntegrityError as e:
                    if "FOREIGN KEY" in str(e):
                        raise UnknownChannelError(entry.channel_id) from None
                    raise
                assert cursor.lastrowid is not None
                return attrs.evolve(entry, entry_id=cursor.lastrowid, position=row["position"])

        return await self._db.run(insert)

    async def remove_memory_entry(self, entry_id: int) -> bool:
        """Delete one entry; False when it was gone already."""
        removed = await self._db.run(self._db.delete, "memory_entries", "entry_id = ?", [entry_id])
        return removed > 0

    async def clear_memory(self, channel_id: int) -> int:
        """Delete every entry of the channel; how many there were."""
        return await self._db.run(self._db.delete, "memory_entries", "channel_id = ?", [channel_id])

    async def thread_context(self, channel_id: int) -> bool:
        """Whether a new thread of the channel gets its recent conversation (default on)."""
        row = await self._db.run(self._db.get, "thread_context", channel_id)
        return True if row is None else bool(row["enabled"])

    async def set_thread_context(self, channel_id: int, enabled: bool) -> None:
        """Switch the recent-conversation block on or off for the channel's new threads;
        `UnknownChannelError` if the channel is not a project channel."""
        row = {"channel_id": channel_id, "enabled": int(enabled)}

        def write() -> None:
            try:
                self._db.upsert("thread_context", row, "channel_id")
            except sqlite3.IntegrityError as e:
                if "FOREIGN KEY" in str(e):
                    raise UnknownChannelError(channel_id) from None
                raise

        await self._db.run(write)
