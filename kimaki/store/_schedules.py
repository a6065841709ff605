"""Prompts to send at a time: one-off reminders and cron-scheduled tasks.

Not used by the daemon yet: the scheduling capability (issue #15) builds on these.
"""

from __future__ import annotations

from typing import final

import attrs

from kimaki.store._database import Database, from_row, to_row
from kimaki.store._records import ScheduledTask

__all__ = ["ScheduledTasks"]


@final
@attrs.frozen
class ScheduledTasks:
    """The scheduled tasks, by when they are next due (they go with their channel)."""

    _db: Database = attrs.field(alias="db")

    async def add_scheduled_task(self, task: ScheduledTask) -> ScheduledTask:
        row = to_row(task)
        del row["task_id"]  # assigned by SQLite

        def insert() -> int:
            with self._db.conn:
                table = self._db.table("scheduled_tasks")
                table.insert(row)
                assert table.last_pk is not None
                return int(table.last_pk)

        task_id = await self._db.run(insert)
        return attrs.evolve(task, task_id=task_id)

    async def list_scheduled_tasks(self, *, channel_id: int | None = None) -> list[ScheduledTask]:
        where = "channel_id = ?" if channel_id is not None else None
        args = [channel_id] if channel_id is not None else []

        def query() -> list[ScheduledTask]:
            return [
                from_row(ScheduledTask, r)
                for r in self._db.rows("scheduled_tasks", where, args, "next_run_at")
            ]

        return await self._db.run(query)

    async def due_scheduled_tasks(self, now: float) -> list[ScheduledTask]:
        def query() -> list[ScheduledTask]:
            rows = self._db.rows(
                "scheduled_tasks", "enabled = 1 AND next_run_at <= ?", [now], "next_run_at"
            )
            return [from_row(ScheduledTask, r) for r in rows]

        return await self._db.run(query)

    async def reschedule_task(self, task_id: int, next_run_at: float | None) -> None:
        """Move a task to `next_run_at`, or disable it (a finished one-off) when None."""

        def update() -> None:
            with self._db.conn:
                if next_run_at is None:
                    self._db.conn.execute(
                        "UPDATE scheduled_tasks SET enabled = 0 WHERE task_id = ?", [task_id]
                    )
                else:
                    self._db.conn.execute(
                        "UPDATE scheduled_tasks SET next_run_at = ? WHERE task_id = ?",
                        [next_run_at, task_id],
                    )

        await self._db.run(update)

    async def delete_scheduled_task(self, task_id: int) -> bool:
        return await self._db.run(self._db.delete, "scheduled_tasks", "task_id = ?", [task_id]) > 0
