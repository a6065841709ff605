"""What turns used (one row per finished turn) and each channel's budget.

The rows are the record the usage reports are summed from, so they are only ever added: a
report over a period is the sum of its rows, nothing cached beside them. `read_usage_rows`
reads them from the database file without the daemon (the command line), read-only: WAL lets
it read while the daemon writes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal, final

import attrs

from kimaki.store._database import Database, from_row, to_row

__all__ = ["Budget", "BudgetPeriod", "UsageRow", "UsageRows", "read_usage_rows"]

BudgetPeriod = Literal["day", "week", "month"]


@final
@attrs.frozen
class UsageRow:
    """One finished turn: where, who, what it used and how it ended."""

    started_at: float
    ended_at: float
    thread_id: int
    channel_id: int | None
    session_id: str
    engine: str
    model: str | None
    person_id: int
    """The Discord user who asked (0 for the command line)."""
    source: str
    """"message", "command", "schedule" or "resume" (a turn followed after a restart)."""
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: float = 0.0
    session_cost: float | None = None
    """The session's running total after this turn, when the engine reports one (ACP)."""
    credits: float | None = None
    context_used: int | None = None
    context_limit: int | None = None
    seconds: float = 0.0
    stop_reason: str = "end_turn"
    row_id: int | None = None

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.reasoning_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


@final
@attrs.frozen
class Budget:
    """A channel's spending limit per period (in the currency the engines report, dollars)."""

    channel_id: int
    amount: float
    period: BudgetPeriod
    set_at: float
    set_by: int
    warned_period: float | None = None
    """The start of the period whose 80 % warning was said (once per period)."""


@final
@attrs.frozen
class UsageRows:
    """The usage facet: turn rows added and read, budgets kept."""

    _db: Database = attrs.field(alias="db")
    # Asked at the start of every turn, changed only by `/budget` (through this facet): kept
    # in memory after the first read, so a turn's start does not wait on the disk for it.
    _budgets: dict[int, Budget | None] = attrs.field(factory=dict, init=False, repr=False)

    async def add_usage(self, row: UsageRow) -> None:
        """Store a finished turn's row (its `row_id` is SQLite's to assign). It joins the group
        commit of the turns' own writes, so a turn's end adds no call of its own."""
        values = to_row(row)
        del values["row_id"]
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        statement = f"INSERT INTO usage_turns ({columns}) VALUES ({marks})"

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(statement, list(values.values()))

        await self._db.write_together(insert)

    async def usage_rows(
        self, *, since: float, until: float | None = None, channel_id: int | None = None
    ) -> list[UsageRow]:
        """The rows of turns that ended in [since, until), oldest first; one channel's or all."""
        where, args = _where(since, until, channel_id)

        def query() -> list[UsageRow]:
            rows = self._db.rows("usage_turns", where, args, "ended_at, row_id")
            return [from_row(UsageRow, row) for row in rows]

        return await self._db.run(query)

    async def last_session_usage(self, session_id: str) -> UsageRow | None:
        """The session's latest row (its context then, its running cost)."""

        def query() -> UsageRow | None:
            rows = self._db.select(
                "SELECT * FROM usage_turns WHERE session_id = ? ORDER BY row_id DESC LIMIT 1",
                [session_id],
            )
            return from_row(UsageRow, rows[0]) if rows else None

        return await self._db.run(query)

    async def session_peak_context(self, session_id: str) -> float | None:
        """The fullest the session's context window has been (0..1), over its rows."""

        def query() -> float | None:
            rows = self._db.select(
                "SELECT MAX(CAST(context_used AS REAL) / context_limit) AS peak"
                " FROM usage_turns WHERE session_id = ? AND context_limit > 0",
                [session_id],
            )
            peak = rows[0]["peak"] if rows else None
            return None if peak is None else float(peak)

        return await self._db.run(query)

    async def channel_cost(self, channel_id: int, *, since: float) -> float:
        """What the channel's turns cost since `since` (the sum of its rows)."""
        rows = await self.usage_rows(since=since, channel_id=channel_id)
        return sum(row.cost for row in rows)

    async def get_budget(self, channel_id: int) -> Budget | None:
        if channel_id in self._budgets:
            return self._budgets[channel_id]
        row = await self._db.run(self._db.get, "budgets", channel_id)
        budget = None if row is None else from_row(Budget, row)
        self._budgets[channel_id] = budget
        return budget

    async def set_budget(self, budget: Budget) -> None:
        self._budgets.pop(budget.channel_id, None)  # not cached until the write is done
        await self._db.run(self._db.upsert, "budgets", to_row(budget), "channel_id")
        self._budgets[budget.channel_id] = budget

    async def clear_budget(self, channel_id: int) -> bool:
        self._budgets.pop(channel_id, None)
        deleted = await self._db.run(self._db.delete, "budgets", "channel_id = ?", [channel_id])
        self._budgets[channel_id] = None
        return deleted > 0


def _where(since: float, until: float | None, channel_id: int | None) -> tuple[str, list[object]]:
    clauses, args = ["ended_at >= ?"], list[object]([since])
    if until is not None:
        clauses.append("ended_at < ?")
        args.append(until)
    if channel_id is not None:
        clauses.append("channel_id = ?")
        args.append(channel_id)
    return " AND ".join(clauses), args


def read_usage_rows(
    path: Path, *, since: float, until: float | None = None, channel_id: int | None = None
) -> list[UsageRow]:
    """The rows from the database file at `path`, opened read-only (blocking: for the command
    line). A database from before usage was recorded has none."""
    where, args = _where(since, until, channel_id)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        try:
            cursor = conn.execute(
                f"SELECT * FROM usage_turns WHERE {where} ORDER BY ended_at, row_id", args
            )
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [from_row(UsageRow, dict(row)) for row in cursor]
    finally:
        conn.close()
