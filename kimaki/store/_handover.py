"""What an in-place restart (SIGUSR2) hands from one process to the next.

The agent servers are written by the process that received SIGUSR2 just before it re-executes
itself, and taken (read and deleted, in one transaction) by the process that comes back, so a
later cold start never acts on a handover that is no longer true. A running turn is recorded
from before its prompt is sent until it is over (`HandledEventLog.begin_turn` writes it), so a
restart at any point in between finds it; the parts it posted are remembered with it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any, final

import attrs

from kimaki.agents import AgentServerHandover
from kimaki.store._database import Database, from_row, insert_rows, to_row
from kimaki.store._records import QueuedPrompt, RunningTurn

__all__ = ["Handover"]


@final
@attrs.frozen
class Handover:
    """Agent servers, running turns, queued prompts and posted parts across a restart."""

    _db: Database = attrs.field(alias="db")

    async def save_agent_servers(self, servers: Sequence[AgentServerHandover]) -> None:
        """Replace the handed-over agent servers with `servers`."""
        rows = [to_row(server) for server in servers]
        await self._db.run(self._db.replace, "agent_servers", None, [], rows)

    async def take_agent_servers(self) -> list[AgentServerHandover]:
        """The handed-over agent servers, removed from the store."""
        rows = await self._db.run(self._db.take, "agent_servers", "engine, directory")
        return [from_row(AgentServerHandover, row) for row in rows]

    async def running_turns(self) -> list[RunningTurn]:
        """The turns to continue after a restart (oldest first). They stay recorded until
        each is over (`clear_running_turn`), so a restart before that finds them again."""
        sql = "SELECT * FROM running_turns ORDER BY started_at, thread_id"
        return [from_row(RunningTurn, row) for row in await self._db.run(self._db.select, sql)]

    async def clear_running_turn(self, thread_id: int) -> None:
        """The thread's turn is over: its record and the parts it posted go, in one write."""

        def clear(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM posted_parts WHERE thread_id = ?", [thread_id])
            conn.execute("DELETE FROM running_turns WHERE thread_id = ?", [thread_id])

        # With the turns starting meanwhile (group commit): every turn writes here as it ends.
        await self._db.write_together(clear)

    async def save_queued_prompts(
        self,
        thread_id: int,
        payloads: Sequence[Any],
        *,
        message_ids: Iterable[int] = (),
        clear_running_turn: bool = False,
    ) -> None:
        """Replace the queue of `thread_id` with `payloads` (JSON-compatible), in order.

        `message_ids` (the messages the prompts came from) are recorded as handled in the same
        transaction: the next process serves them from the queue, so a replay of the same
        messages must find them taken. `clear_running_turn`: the thread's running-turn record
        goes in the same transaction (its prompt is in the queue).
        """
        rows = [
            {"thread_id": thread_id, "position": position, "payload": json.dumps(payload)}
            for position, payload in enumerate(payloads)
        ]
        now = time.time()
        handled = [
            {"event_id": event_id, "kind": "message", "handled_at": now} for event_id in message_ids
        ]

        def save() -> None:
            with self._db.transaction() as conn:
                conn.execute("DELETE FROM queued_prompts WHERE thread_id = ?", [thread_id])
                if clear_running_turn:
                    conn.execute("DELETE FROM running_turns WHERE thread_id = ?", [thread_id])
                insert_rows(conn, "queued_prompts", rows, replace=False)
                insert_rows(conn, "handled_events", handled, replace=False, ignore=True)

        await self._db.run(save)

    async def take_queued_prompts(self) -> list[QueuedPrompt]:
        """Every saved queue, by thread then position, removed from the store."""
        rows = await self._db.run(self._db.take, "queued_prompts", "thread_id, position")
        return [
            QueuedPrompt(row["thread_id"], row["position"], json.loads(row["payload"]))
            for row in rows
        ]

    async def record_posted_parts(
        self, thread_id: int, parts: Iterable[tuple[str, int | None]]
    ) -> None:
        """Remember that the parts `(part id, message id or None)` of the thread's running turn
        are in Discord, so a continued turn does not post them again."""
        now = time.time()
        rows = [
            {"thread_id": thread_id, "part_id": part_id, "message_id": message_id, "posted_at": now}
            for part_id, message_id in parts
        ]
        if rows:
            await self._db.write_together(
                lambda conn: insert_rows(conn, "posted_parts", rows, replace=True)
            )

    async def posted_parts(self, thread_id: int) -> set[str]:
        def query() -> set[str]:
            cursor = self._db.conn.execute(
                "SELECT part_id FROM posted_parts WHERE thread_id = ?", [thread_id]
            )
            return {row[0] for row in cursor}

        return await self._db.run(query)
