"""The gateway events the bot acted on, so an event Discord replays is recognised.

The ids of the messages and interactions acted on, so a RESUME from a stale sequence changes
nothing; kept for a day, swept on a timer. These writes are on a turn's way to the agent, so
they are committed together (`Database.write_together`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import final

import attrs

from kimaki.store._database import Database, handled_rows, insert_rows, to_row
from kimaki.store._records import RunningTurn

__all__ = ["HandledEventLog"]


@final
@attrs.frozen
class HandledEventLog:
    """The handled event ids, and the one write that starts a turn."""

    _db: Database = attrs.field(alias="db")

    async def record_handled(
        self, events: Iterable[tuple[int, str]], *, at: float | None = None
    ) -> None:
        """Remember that the `(event id, kind)`s were acted on (at `at`, seconds since the
        epoch; now by default). Returns once they are written."""
        rows = handled_rows(events, at)
        if rows:
            await self._db.write_together(
                lambda conn: insert_rows(conn, "handled_events", rows, replace=False, ignore=True)
            )

    async def begin_turn(self, turn: RunningTurn, message_ids: Iterable[int]) -> None:
        """Before a prompt is sent: its messages are handled and its turn is running, in one
        transaction. A crash after it has the next process ask the agent about the turn (and
        send the prompt if the agent never got it); a crash before it, a replay of the
        messages. Neither loses the prompt or sends it twice."""
        rows = handled_rows(((event_id, "message") for event_id in message_ids), turn.started_at)
        turn_row = to_row(turn)

        def write(conn: sqlite3.Connection) -> None:
            insert_rows(conn, "handled_events", rows, replace=False, ignore=True)
            insert_rows(conn, "running_turns", [turn_row], replace=True)

        await self._db.write_together(write)

    async def handled_events(self) -> dict[int, float]:
        """Every remembered event id, with when it was handled (seconds since the epoch)."""

        def query() -> dict[int, float]:
            cursor = self._db.conn.execute("SELECT event_id, handled_at FROM handled_events")
            return {int(event_id): float(at) for event_id, at in cursor}

        return await self._db.run(query)

    async def forget_handled_before(self, before: float) -> int:
        """Drop the events handled before `before` (seconds since the epoch); how many."""
        return await self._db.run(self._db.delete, "handled_events", "handled_at < ?", [before])
