"""WHEN as people, scripts and models write it: what is accepted, and what a refusal says."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from kimaki.schedules import ScheduleError, When, parse_when
from kimaki.schedules._when import next_cron_time, parse_delay

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2030, 1, 7, 8, 0, tzinfo=UTC).timestamp()  # a Monday


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("2h30m", 9000), ("1d", 86400), ("90s", 90), ("1w 2d", 9 * 86400)],
)
def test_delays(text: str, seconds: float) -> None:
    assert parse_delay(text) == seconds
    assert parse_when(text, now=NOW) == When(first=NOW + seconds)


def test_iso_times_with_an_offset_or_z() -> None:
    assert parse_when("2030-01-07T09:00Z", now=NOW).first == NOW + 3600
    assert parse_when("2030-01-07T10:00+01:00", now=NOW).first == NOW + 3600


def test_cron_in_the_given_zone_or_the_machines() -> None:
    weekdays = parse_when("30 9 * * 1-5", now=NOW, tz="Europe/Paris")  # NOW is 09:00 there
    assert weekdays.cron == "30 9 * * 1-5"
    assert weekdays.tz == "Europe/Paris"
    assert weekdays.first == datetime(2030, 1, 7, 9, 30, tzinfo=PARIS).timestamp()
    local = parse_when("30 9 * * *", now=NOW, local_tz=PARIS)
    assert local.tz is None  # the machine's zone, whatever it is when it runs
    assert local.first == weekdays.first
    assert parse_when("@daily", now=NOW, local_tz=UTC).cron == "0 0 * * *"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2020-01-01T00:00Z", "is in the past"),
        ("2030-06-01T09:00", "has no timezone"),
        ("2030-13-01T09:00Z", "cannot read '2030-13-01T09:00Z' as an ISO 8601 time"),
        ("0 25 * * *", "the hour field"),
        ("61 * * * *", "the minute field"),
        ("0 0 30 2 *", "the day-of-month field"),
        ("* * * *", "a cron expression has 5 fields"),
        ("0 0 * * * *", "a cron expression has 5 fields"),
        ("tomorrow at noon", "cannot read 'tomorrow at noon' as a time"),
        ("", "no time given"),
        ("0m", "is zero"),
    ],
)
def test_refusals_name_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse_when(text, now=NOW, local_tz=UTC)


def test_unknown_timezone_and_repeat_refused_where_it_cannot_be() -> None:
    with pytest.raises(ScheduleError, match="unknown timezone 'Mars/Olympus'"):
        parse_when("0 9 * * *", now=NOW, tz="Mars/Olympus")
    with pytest.raises(ScheduleError, match="repeats"):
        parse_when("0 9 * * *", now=NOW, local_tz=UTC, repeat=False)


def test_cron_keeps_local_time_across_dst() -> None:
    # Paris goes to summer time on 2030-03-31 at 02:00 (to 03:00).
    before = datetime(2030, 3, 30, 9, 0, tzinfo=PARIS).timestamp()
    after = next_cron_time("0 9 * * *", before, PARIS)
    assert datetime.fromtimestamp(after, PARIS) == datetime(2030, 3, 31, 9, 0, tzinfo=PARIS)
    assert after - before == 23 * 3600
    # A time the change skips fires once, just after the gap.
    skipped = next_cron_time("30 2 * * *", before, PARIS)
    assert datetime.fromtimestamp(skipped, PARIS).strftime("%m-%d %H:%M %Z") == "03-31 03:00 CEST"
    following = next_cron_time("30 2 * * *", skipped, PARIS)
    assert datetime.fromtimestamp(following, PARIS).strftime("%m-%d %H:%M") == "04-01 02:30"
