"""Sums over usage rows, and how they read in Discord and on the command line.

Every number here is a plain sum over the rows given (nothing estimated, nothing cached), so a
report equals what a person adds up from `kimaki usage --json`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import tzinfo
from typing import final

import attrs

from kimaki.store import UsageRow
from kimaki.usage._periods import Span, local_days

__all__ = [
    "Totals",
    "format_cost",
    "format_history",
    "format_report",
    "format_tokens",
    "grouped",
    "totals",
]


@final
@attrs.frozen
class Totals:
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: float = 0.0
    credits: float = 0.0

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.reasoning_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


def totals(rows: Iterable[UsageRow]) -> Totals:
    turns = input_ = output = reasoning = cache_read = cache_write = 0
    cost = credits = 0.0
    for row in rows:
        turns += 1
        input_ += row.input_tokens
        output += row.output_tokens
        reasoning += row.reasoning_tokens
        cache_read += row.cache_read_tokens
        cache_write += row.cache_write_tokens
        cost += row.cost
        credits += row.credits or 0.0
    return Totals(turns, input_, output, reasoning, cache_read, cache_write, cost, credits)


def grouped(rows: Sequence[UsageRow], key: Callable[[UsageRow], str]) -> list[tuple[str, Totals]]:
    """Totals per key, the most expensive (then the busiest) first."""
    groups: dict[str, list[UsageRow]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    summed = [(name, totals(group)) for name, group in groups.items()]
    return sorted(summed, key=lambda item: (-item[1].cost, -item[1].turns, item[0]))


def format_cost(cost: float) -> str:
    """Dollars to four places below a dollar (agents' turns cost cents), else two."""
    return f"${cost:.4f}" if abs(cost) < 1 else f"${cost:,.2f}"


def format_tokens(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 10_000:
        return f"{count / 1000:.0f}k"
    if count >= 1000:
        return f"{count / 1000:.1f}k"
    return str(count)


def _line(label: str, summed: Totals) -> str:
    credits = f" · {summed.credits:g} credits" if summed.credits else ""
    return (
        f"{label}: {summed.turns} turn{'s' if summed.turns != 1 else ''} · "
        f"{format_tokens(summed.tokens)} tokens · {format_cost(summed.cost)}{credits}"
    )


def format_report(
    where: str,
    spans: Sequence[tuple[Span, Sequence[UsageRow]]],
    person: Callable[[int], str],
) -> str:
    """`/usage`: each span's totals, then the last (longest) span by model and by person."""
    lines = [f"**Usage {where}**"]
    lines.extend(_line(span.name.capitalize(), totals(rows)) for span, rows in spans)
    if spans:
        last_span, rows = spans[-1]
        if rows:
            lines.append(f"**By model, {last_span.name}**")
            for name, summed in grouped(rows, lambda row: row.model or "unknown model")[:10]:
                lines.append(f"- {_line(name, summed)}")
            lines.append(f"**By person, {last_span.name}**")
            by_person = grouped(rows, lambda row: str(row.person_id))
            for person_id, summed in by_person[:10]:
                lines.append(f"- {_line(person(int(person_id)), summed)}")
    return "\n".join(lines)


def format_history(where: str, span: Span, rows: Sequence[UsageRow], zone: tzinfo) -> str:
    """`/usage history`: a small table, one line per day with turns, and the total."""
    header = f"{'day':<10} {'turns':>5} {'tokens':>8} {'cost':>10}"
    table = [header]
    for day, start, end in local_days(span, zone):
        summed = totals(row for row in rows if start <= row.ended_at < end)
        if summed.turns:
            table.append(
                f"{day:<10} {summed.turns:>5} {format_tokens(summed.tokens):>8} "
                f"{format_cost(summed.cost):>10}"
            )
    whole = totals(rows)
    table.append(
        f"{'total':<10} {whole.turns:>5} {format_tokens(whole.tokens):>8} "
        f"{format_cost(whole.cost):>10}"
    )
    return f"**Usage {where}, {span.name}**\n```\n" + "\n".join(table) + "\n```"
