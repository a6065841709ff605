"""Where each Discord channel and thread leads: project channels, thread sessions, worktrees.

Read on every message (is this channel a project, is this thread known?), so channels and
threads are answered from the database's write-through caches after the first read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import final

import attrs

from kimaki.store._database import Database, from_row, to_row
from kimaki.store._records import ChannelRecord, ThreadRecord, WorktreeRecord

__all__ = ["Places"]


@final
@attrs.frozen
class Places:
    """The channel, thread and worktree records: what a message's place maps to."""

    _db: Database = attrs.field(alias="db")

    # -- channels ----------------------------------------------------------------------------

    async def put_channel(self, channel: ChannelRecord) -> None:
        self._db.recent_channels.forget(channel.channel_id)
        await self._db.run(self._db.upsert, "channels", to_row(channel), "channel_id")
        self._db.recent_channels.put(channel.channel_id, channel)

    async def get_channel(self, channel_id: int) -> ChannelRecord | None:
        return await self._db.get_recent(
            self._db.recent_channels, "channels", channel_id, ChannelRecord
        )

    async def list_channels(
        self, *, app_id: int | None = None, guild_id: int | None = None
    ) -> list[ChannelRecord]:
        clauses, args = [], []
        if app_id is not None:
            clauses.append("app_id = ?")
            args.append(app_id)
        if guild_id is not None:
            clauses.append("guild_id = ?")
            args.append(guild_id)
        where = " AND ".join(clauses) or None

        def query() -> list[ChannelRecord]:
            rows = self._db.rows("channels", where, args, "channel_id")
            return [from_row(ChannelRecord, r) for r in rows]

        return await self._db.run(query)

    async def delete_channel(self, channel_id: int) -> bool:
        self._db.recent_channels.forget(channel_id)
        # The database unlinks the channel's threads (ON DELETE SET NULL).
        self._db.recent_threads.clear()
        deleted = await self._db.run(self._db.delete, "channels", "channel_id = ?", [channel_id])
        self._db.recent_channels.put(channel_id, None)
        return deleted > 0

    async def channel_of_directory(self, directory: Path) -> int | None:
        """The project channel whose sessions run in `directory`: the project's own text
        channel, or the channel of the thread whose worktree it is."""
        path = str(directory)

        def query() -> int | None:
            rows = self._db.select(
                "SELECT channel_id FROM channels WHERE directory = ? AND channel_type = 'text' "
                "UNION ALL SELECT channel_id FROM threads WHERE directory = ? "
                "AND channel_id IS NOT NULL LIMIT 1",
                [path, path],
            )
            if rows:
                return int(rows[0]["channel_id"])
            # The engines resolve paths; a channel may have been mapped through a symlink.
            resolved = directory.resolve()
            for row in self._db.select(
                "SELECT channel_id, directory FROM channels WHERE channel_type = 'text'"
            ):
                if Path(row["directory"]).resolve() == resolved:
                    return int(row["channel_id"])
            return None

        return await self._db.run(query)

    # -- threads -----------------------------------------------------------------------------

    async def put_thread(self, thread: ThreadRecord) -> None:
        row = {**to_row(thread), "updated_at": time.time()}
        self._db.recent_threads.forget(thread.thread_id)
        await self._db.run(self._db.upsert, "threads", row, "thread_id")
        self._db.recent_threads.put(thread.thread_id, thread)

    async def get_thread(self, thread_id: int) -> ThreadRecord | None:
        return await self._db.get_recent(
            self._db.recent_threads, "threads", thread_id, ThreadRecord
        )

    async def thread_of_session(self, session_id: str) -> ThreadRecord | None:
        """The thread bound to `session_id` (the most recently updated one), if any."""

        def query() -> ThreadRecord | None:
            rows = self._db.rows("threads", "session_id = ?", [session_id], "updated_at DESC")
            row = next(iter(rows), None)
            return None if row is None else from_row(ThreadRecord, row)

        if not session_id:
            return None
        return await self._db.run(query)

    async def list_threads(self) -> list[tuple[ThreadRecord, float]]:
        """Every thread record, with when it was last active (Unix time: the latest of its
        record's last change, its running turn's start, and the last part posted in it), most
        recently active first (`kimaki session list`)."""

        def query() -> list[tuple[ThreadRecord, float]]:
            rows = self._db.select(
                "SELECT t.*, MAX(t.updated_at,"
                " COALESCE((SELECT MAX(r.started_at) FROM running_turns r"
                "           WHERE r.thread_id = t.thread_id), 0),"
                " COALESCE((SELECT MAX(p.posted_at) FROM posted_parts p"
                "           WHERE p.thread_id = t.thread_id), 0)) AS last_activity"
                " FROM threads t ORDER BY last_activity DESC"
            )
            return [(from_row(ThreadRecord, row), float(row["last_activity"])) for row in rows]

        return await self._db.run(query)

    async def delete_thread(self, thread_id: int) -> bool:
        self._db.recent_threads.forget(thread_id)
        deleted = await self._db.run(self._db.delete, "threads", "thread_id = ?", [thread_id])
        self._db.recent_threads.put(thread_id, None)
        return deleted > 0

    # -- worktrees ---------------------------------------------------------------------------

    async def put_worktree(self, worktree: WorktreeRecord) -> None:
        await self._db.run(self._db.upsert, "worktrees", to_row(worktree), "thread_id")

    async def get_worktree(self, thread_id: int) -> WorktreeRecord | None:
        row = await self._db.run(self._db.get, "worktrees", thread_id)
        return None if row is None else from_row(WorktreeRecord, row)
