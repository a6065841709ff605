"""The calendar spans reports and budgets sum over: local days, Monday weeks, months, across a
daylight-saving change."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from kimaki.usage import budget_span, history_span
from kimaki.usage._periods import local_days

PARIS = ZoneInfo("Europe/Paris")


def _at(*fields: int) -> float:
    return datetime(*fields, tzinfo=PARIS).timestamp()


def test_day_week_and_month_begin_at_local_midnight() -> None:
    now = _at(2026, 3, 25, 15, 30)  # a Wednesday
    assert budget_span("day", now, PARIS).start == _at(2026, 3, 25)
    week = budget_span("week", now, PARIS)
    assert (week.start, week.end) == (_at(2026, 3, 23), _at(2026, 3, 30))
    month = budget_span("month", now, PARIS)
    assert (month.start, month.end) == (_at(2026, 3, 1), _at(2026, 4, 1))
    # The week holds the change to summer time: 6 days of 24 h and one of 23 h.
    assert week.end - week.start == 7 * 86400 - 3600


def test_history_periods() -> None:
    now = _at(2026, 1, 10, 8)
    seven = history_span("7d", now, PARIS)
    assert (seven.start, seven.end) == (_at(2026, 1, 4), _at(2026, 1, 11))
    last = history_span("last-month", now, PARIS)
    assert (last.start, last.end) == (_at(2025, 12, 1), _at(2026, 1, 1))
    days = local_days(history_span("this-month", now, PARIS), PARIS)
    assert len(days) == 31
    assert days[0][0] == "2026-01-01"
    assert days[-1][0] == "2026-01-31"
