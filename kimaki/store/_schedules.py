"""Scheduled tasks (prompts, reminders, the ends of agents' sleeps) and their runs.

The runner claims a due run in one transaction that moves the task on (its next time, or done
for a one-off) and records the run, so a run is never started twice: not after a restart, not
for a task deleted or paused meanwhile (the claim finds nothing and the run is not started).
"""

from __future__ import annotations

import sqlite3
from typing import final

import attrs

from kimaki.errors import KimakiError
from kimaki.store._database import Database, from_row, to_row
from kimaki.store._records import ScheduledTask, TaskRun

__all__ = ["ScheduledTasks", "UnknownChannelError"]


class UnknownChannelError(KimakiError, LookupError):
    """The task's channel is not a project channel in the store (raised by
    `add_scheduled_task`; the scheduling door turns it into a message for a person)."""


@final
@attrs.frozen
class ScheduledTasks:
    """The scheduled tasks, by when they are next due (they go with their channel), and the
    history of their runs (which goes with its task)."""

    _db: Database = attrs.field(alias="db")

    # -- tasks -------------------------------------------------------------------------------

    async def add_scheduled_task(self, task: ScheduledTask) -> ScheduledTask:
        """Store `task`; `UnknownChannelError` if its channel is not a project channel."""
        row = to_row(task)
        del row["task_id"]  # assigned by SQLite

        def insert() -> int:
            with self._db.conn:
                table = self._db.table("scheduled_tasks")
                try:
                    table.insert(row)
                except sqlite3.IntegrityError as e:
                    if "FOREIGN KEY" in str(e):
                        raise UnknownChannelError(task.channel_id) from None
                    raise
                assert table.last_pk is not None
                return int(table.last_pk)

        task_id = await self._db.run(insert)
        return attrs.evolve(task, task_id=task_id)

    async def get_scheduled_task(self, task_id: int) -> ScheduledTask | None:
        row = await self._db.run(self._db.get, "scheduled_tasks", task_id)
        return None if row is None else from_row(ScheduledTask, row)

    async def list_scheduled_tasks(
        self, *, channel_id: int | None = None, include_finished: bool = True
    ) -> list[ScheduledTask]:
        """Tasks by next run; `include_finished=False` leaves out one-offs that have run."""
        clauses = []
        args: list[object] = []
        if channel_id is not None:
            clauses.append("channel_id = ?")
            args.append(channel_id)
        if not include_finished:
            clauses.append("enabled = 1")
        where = " AND ".join(clauses) or None

        def query() -> list[ScheduledTask]:
            return [
                from_row(ScheduledTask, r)
                for r in self._db.rows("scheduled_tasks", where, args, "next_run_at, task_id")
            ]

        return await self._db.run(query)

    async def due_scheduled_tasks(self, now: float) -> list[ScheduledTask]:
        """Tasks due at `now` (not finished, not paused), the most overdue first."""

        def query() -> list[ScheduledTask]:
            rows = self._db.rows(
                "scheduled_tasks",
                "enabled = 1 AND paused = 0 AND next_run_at <= ?",
                [now],
                "next_run_at, task_id",
            )
            return [from_row(ScheduledTask, r) for r in rows]

        return await self._db.run(query)

    async def next_due_at(self) -> float | None:
        """When the next task is due (not finished, not paused), or None if none is."""

        def query() -> float | None:
            row = self._db.conn.execute(
                "SELECT MIN(next_run_at) FROM scheduled_tasks WHERE enabled = 1 AND paused = 0"
            ).fetchone()
            return None if row[0] is None else float(row[0])

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

    async def set_paused(
        self, task_id: int, paused: bool, *, next_run_at: float | None = None
    ) -> ScheduledTask | None:
        """Pause or resume a task (moving it to `next_run_at` when given); the task as it is
        now, or None if there is no such task."""

        def update() -> ScheduledTask | None:
            with self._db.transaction() as conn:
                if next_run_at is None:
                    conn.execute(
                        "UPDATE scheduled_tasks SET paused = ? WHERE task_id = ?",
                        [int(paused), task_id],
                    )
                else:
                    conn.execute(
                        "UPDATE scheduled_tasks SET paused = ?, next_run_at = ? WHERE task_id = ?",
                        [int(paused), next_run_at, task_id],
                    )
                row = self._db.get("scheduled_tasks", task_id)
            return None if row is None else from_row(ScheduledTask, row)

        return await self._db.run(update)

    async def finish_task(self, task_id: int, status: str) -> bool:
        """Mark a task done without a run (a cancelled sleep): kept, with `status`, for its
        history. False if it was already done or is gone."""

        def update() -> int:
            with self._db.conn:
                cursor = self._db.conn.execute(
                    "UPDATE scheduled_tasks SET enabled = 0, last_status = ? "
                    "WHERE task_id = ? AND enabled = 1",
                    [status, task_id],
                )
            return cursor.rowcount

        return await self._db.run(update) > 0

    async def set_task_thread(self, task_id: int, thread_id: int) -> None:
        """The thread a task's runs go to from now on (its reused thread, once made)."""

        def update() -> None:
            with self._db.conn:
                self._db.conn.execute(
                    "UPDATE scheduled_tasks SET thread_id = ? WHERE task_id = ?",
                    [thread_id, task_id],
                )

        await self._db.run(update)

    async def delete_scheduled_task(self, task_id: int) -> bool:
        return await self._db.run(self._db.delete, "scheduled_tasks", "task_id = ?", [task_id]) > 0

    # -- runs --------------------------------------------------------------------------------

    async def claim_due_run(
        self, run: TaskRun, *, due_at: float, next_run_at: float | None
    ) -> TaskRun | None:
        """Record `run` of a task due at `due_at` and move the task to `next_run_at` (None:
        done), in one transaction; None, changing nothing, if the task is no longer due at
        `due_at` (deleted, paused, moved, or already claimed)."""

        def claim() -> TaskRun | None:
            with self._db.transaction() as conn:
                cursor = conn.execute(
                    "UPDATE scheduled_tasks SET next_run_at = ?, enabled = ?, "
                    "last_run_at = ?, last_status = ? "
                    "WHERE task_id = ? AND enabled = 1 AND paused = 0 AND next_run_at = ?",
                    [
                        due_at if next_run_at is None else next_run_at,
                        int(next_run_at is not None),
                        run.started_at,
                        run.status,
                        run.task_id,
                        due_at,
                    ],
                )
                if cursor.rowcount == 0:
                    return None
                return _insert_run(conn, run)

        return await self._db.run(claim)

    async def start_run(self, run: TaskRun) -> TaskRun | None:
        """Record `run` of a task outside its schedule (run now); None if there is no such
        task."""

        def start() -> TaskRun | None:
            with self._db.transaction() as conn:
                cursor = conn.execute(
                    "UPDATE scheduled_tasks SET last_run_at = ?, last_status = ? WHERE task_id = ?",
                    [run.started_at, run.status, run.task_id],
                )
                if cursor.rowcount == 0:
                    return None
                return _insert_run(conn, run)

        return await self._db.run(start)

    async def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        ended_at: float,
        error: str | None = None,
        thread_id: int | None = None,
    ) -> None:
        """Record how a run ended (and its thread, once known); its task's last status too.
        Nothing if the task was deleted meanwhile."""

        def finish() -> None:
            with self._db.transaction() as conn:
                conn.execute(
                    "UPDATE task_runs SET status = ?, ended_at = ?, error = ?, "
                    "thread_id = COALESCE(?, thread_id) WHERE run_id = ?",
                    [status, ended_at, error, thread_id, run_id],
                )
                conn.execute(
                    "UPDATE scheduled_tasks SET last_status = ? WHERE task_id = "
                    "(SELECT task_id FROM task_runs WHERE run_id = ?)",
                    [status, run_id],
                )

        await self._db.run(finish)

    async def set_run_thread(self, run_id: int, thread_id: int) -> None:
        def update() -> None:
            with self._db.conn:
                self._db.conn.execute(
                    "UPDATE task_runs SET thread_id = ? WHERE run_id = ?", [thread_id, run_id]
                )

        await self._db.run(update)

    async def task_runs(self, task_id: int, *, limit: int = 10) -> list[TaskRun]:
        """A task's runs, newest first."""

        def query() -> list[TaskRun]:
            rows = self._db.select(
                "SELECT * FROM task_runs WHERE task_id = ? "
                "ORDER BY started_at DESC, run_id DESC LIMIT ?",
                [task_id, limit],
            )
            return [from_row(TaskRun, r) for r in rows]

        return await self._db.run(query)

    async def abandon_running_runs(self, *, ended_at: float, status: str, error: str) -> int:
        """End the runs recorded as running (by a process that is gone) with `status`; how
        many there were."""

        def update() -> int:
            with self._db.transaction() as conn:
                conn.execute(
                    "UPDATE scheduled_tasks SET last_status = ? WHERE task_id IN "
                    "(SELECT task_id FROM task_runs WHERE status = 'running')",
                    [status],
                )
                cursor = conn.execute(
                    "UPDATE task_runs SET status = ?, ended_at = ?, error = ? "
                    "WHERE status = 'running'",
                    [status, ended_at, error],
                )
            return cursor.rowcount

        return await self._db.run(update)


def _insert_run(conn: sqlite3.Connection, run: TaskRun) -> TaskRun:
    row = to_row(run)
    del row["run_id"]
    names = list(row)
    cursor = conn.execute(
        f"INSERT INTO task_runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [row[name] for name in names],
    )
    assert cursor.lastrowid is not None
    return attrs.evolve(run, run_id=cursor.lastrowid)
