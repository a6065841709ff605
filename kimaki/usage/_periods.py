"""Calendar periods in a timezone: the spans reports and budgets add rows over.

A day, week (Monday first) or month starts at local midnight in the zone the reports use (the
machine's, or `KIMAKI_USAGE_TIMEZONE`), so "today" means what the person reading it means,
across daylight-saving changes too.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Final, Literal, final, get_args

import attrs

__all__ = [
    "HISTORY_PERIODS",
    "HistoryPeriod",
    "Span",
    "budget_span",
    "history_span",
    "local_days",
    "report_spans",
]

HistoryPeriod = Literal["7d", "30d", "this-month", "last-month"]
HISTORY_PERIODS: Final[tuple[str, ...]] = get_args(HistoryPeriod)


@final
@attrs.frozen
class Span:
    """[start, end) in Unix seconds, with the name a person reads."""

    name: str
    start: float
    end: float


def _midnight(moment: datetime) -> datetime:
    # Built from the date, not by replacing fields: the offset is the one of that midnight.
    zone = moment.tzinfo
    return datetime(moment.year, moment.month, moment.day, tzinfo=zone)


def _day_start(now: float, zone: tzinfo, days_back: int = 0) -> datetime:
    local = datetime.fromtimestamp(now, zone).date() - timedelta(days=days_back)
    return datetime(local.year, local.month, local.day, tzinfo=zone)


def _month_start(year: int, month: int, zone: tzinfo) -> datetime:
    while month < 1:
        year, month = year - 1, month + 12
    while month > 12:
        year, month = year + 1, month - 12
    return datetime(year, month, 1, tzinfo=zone)


def budget_span(period: str, now: float, zone: tzinfo) -> Span:
    """The budget period ("day", "week", "month") that `now` falls in."""
    today = _day_start(now, zone)
    if period == "day":
        return Span("today", today.timestamp(), _day_start(now, zone, -1).timestamp())
    if period == "week":
        start = _day_start(now, zone, today.weekday())
        end = _day_start(now, zone, today.weekday() - 7)
        return Span("this week", start.timestamp(), end.timestamp())
    month = _month_start(today.year, today.month, zone)
    following = _month_start(today.year, today.month + 1, zone)
    return Span("this month", month.timestamp(), following.timestamp())


def report_spans(now: float, zone: tzinfo) -> tuple[Span, Span, Span]:
    """Today, this week, this month: what `/usage` shows."""
    return (
        budget_span("day", now, zone),
        budget_span("week", now, zone),
        budget_span("month", now, zone),
    )


def history_span(period: str, now: float, zone: tzinfo) -> Span:
    """The span of `/usage history`: the last 7 or 30 days (today included), this or last
    calendar month."""
    tomorrow = _day_start(now, zone, -1).timestamp()
    if period == "7d":
        return Span("the last 7 days", _day_start(now, zone, 6).timestamp(), tomorrow)
    if period == "30d":
        return Span("the last 30 days", _day_start(now, zone, 29).timestamp(), tomorrow)
    today = _day_start(now, zone)
    this_month = _month_start(today.year, today.month, zone)
    if period == "this-month":
        following = _month_start(today.year, today.month + 1, zone)
        return Span("this month", this_month.timestamp(), following.timestamp())
    if period == "last-month":
        last = _month_start(today.year, today.month - 1, zone)
        return Span("last month", last.timestamp(), this_month.timestamp())
    raise ValueError(f"unknown period {period!r}: one of {', '.join(HISTORY_PERIODS)}")


def local_days(span: Span, zone: tzinfo) -> list[tuple[str, float, float]]:
    """The calendar days of `span` as (YYYY-MM-DD, start, end)."""
    days: list[tuple[str, float, float]] = []
    day = _midnight(datetime.fromtimestamp(span.start, zone))
    while day.timestamp() < span.end:
        following = datetime.fromordinal(day.toordinal() + 1).replace(tzinfo=zone)
        days.append((day.date().isoformat(), day.timestamp(), following.timestamp()))
        day = following
    return days
