"""`kimaki usage [--json] [--since DATE]`: the usage rows, summed, on the command line.

It reads the database file directly, read-only, rather than asking the daemon: the rows are
history, so the answer is the same with or without a daemon running (WAL lets it read while
the daemon writes), and a machine whose daemon is stopped can still be asked what it spent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any

import attrs

from kimaki.errors import ConfigError
from kimaki.store import UsageRow, read_usage_rows
from kimaki.usage._periods import budget_span
from kimaki.usage._report import Totals, format_cost, format_tokens, grouped, totals

__all__ = ["parse_since", "usage_command_text"]


def parse_since(text: str | None, *, now: float, zone: tzinfo) -> float:
    """`--since`: a date (its local midnight) or an ISO time; none: this month's start."""
    if not text:
        return budget_span("month", now, zone).start
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since takes a date (2026-05-01) or a time (2026-05-01T09:00), got {text!r}"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).timestamp()


def _totals_json(summed: Totals) -> dict[str, Any]:
    values = attrs.asdict(summed)
    values["tokens"] = summed.tokens
    return values


def _describe(summed: Totals) -> str:
    return (
        f"{summed.turns} turns · {format_tokens(summed.tokens)} tokens "
        f"(in {summed.input_tokens}, out {summed.output_tokens}, "
        f"reasoning {summed.reasoning_tokens}, cache {summed.cache_read_tokens}"
        f"+{summed.cache_write_tokens}) · {format_cost(summed.cost)}"
    )


def usage_text(rows: Sequence[UsageRow], *, since: float, zone: tzinfo, as_json: bool) -> str:
    """The report of `rows`: JSON (the rows themselves too, for scripts) or lines to read."""
    by_model = grouped(rows, lambda row: row.model or "unknown")
    by_person = grouped(rows, lambda row: str(row.person_id))
    if as_json:
        return json.dumps(
            {
                "since": since,
                "totals": _totals_json(totals(rows)),
                "by_model": {name: _totals_json(summed) for name, summed in by_model},
                "by_person": {name: _totals_json(summed) for name, summed in by_person},
                "turns": [attrs.asdict(row) for row in rows],
            },
            indent=2,
        )
    start = datetime.fromtimestamp(since, zone).strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"Usage since {start}: {_describe(totals(rows))}"]
    if rows:
        lines.append("By model:")
        lines.extend(f"  {name}: {_describe(summed)}" for name, summed in by_model)
        lines.append("By person (Discord user id; 0 is the command line):")
        lines.extend(f"  {name}: {_describe(summed)}" for name, summed in by_person)
    return "\n".join(lines)


def usage_command_text(
    database: Path, *, since_text: str | None, as_json: bool, now: float, zone: tzinfo
) -> str:
    """What `kimaki usage` prints (blocking: it reads the file)."""
    since = parse_since(since_text, now=now, zone=zone)
    rows = read_usage_rows(database, since=since) if database.exists() else []
    return usage_text(rows, since=since, zone=zone, as_json=as_json)
