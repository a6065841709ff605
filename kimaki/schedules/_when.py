"""WHEN: the one syntax for a task's time (`--send-at`, `/schedule`, `/remind`, the tools).

An ISO 8601 time with an offset or `Z` (in the future), a delay (`10m`, `2h30m`, `1d`), or a
5-field cron expression (repeats). Cron is evaluated by `cronsim` in a real timezone (an IANA
name, else the machine's), so a daily 09:00 stays at 09:00 across a DST change, and a time
that a spring-forward skips fires once, just after the gap.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Final, final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from kimaki.schedules._spec import ScheduleError

__all__ = [
    "When",
    "describe_time",
    "machine_timezone",
    "next_cron_time",
    "parse_delay",
    "parse_when",
    "resolve_timezone",
]

_DELAY = re.compile(r"(\d+)\s*([wdhms])")
_DELAY_WHOLE = re.compile(r"(\s*\d+\s*[wdhms])+\s*")
_CRON_FIELD = re.compile(r"[0-9*?/,\-LW#]+|[A-Za-z]{3}([,\-][A-Za-z]{3})*")
_UNIT_SECONDS: Final = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_NICKNAMES: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_HOW: Final = (
    "use an ISO 8601 time with an offset (2030-06-01T09:00+02:00, or ...Z for UTC), "
    "a delay (10m, 2h30m, 1d) or a 5-field cron expression (0 9 * * 1-5)"
)


@final
@attrs.frozen
class When:
    """A parsed WHEN: its first fire time (`first`, Unix time) and, for a repeating task, its
    cron expression and the timezone name it was given (None: the machine's)."""

    first: float
    cron: str | None = None
    tz: str | None = None

    @property
    def repeats(self) -> bool:
        return self.cron is not None


def parse_delay(text: str) -> float | None:
    """Seconds in a delay like `10m`, `2h30m`, `1d 2h` (w, d, h, m, s); None if it is not one."""
    if not _DELAY_WHOLE.fullmatch(text):
        return None
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DELAY.findall(text)))


def parse_when(
    text: str,
    *,
    now: float,
    tz: str | None = None,
    local_tz: tzinfo | None = None,
    repeat: bool = True,
) -> When:
    """Read WHEN at `now` (Unix time); `tz` names the cron expression's timezone. A
    `ScheduleError` says what to fix. `repeat=False` refuses cron (a sleep, a one-off)."""
    text = " ".join(text.split())
    if not text:
        raise ScheduleError(f"no time given: {_HOW}")
    delay = parse_delay(text)
    if delay is not None:
        if delay <= 0:
            raise ScheduleError(f"the delay {text!r} is zero: give a delay like 10m")
        return When(first=now + delay)
    at = _parse_iso(text)
    if at is not None:
        if at.tzinfo is None:
            raise ScheduleError(
                f"the time {text!r} has no timezone: add an offset (+02:00) or Z for UTC"
            )
        first = at.timestamp()
        if first <= now:
            raise ScheduleError(f"the time {text!r} is in the past: give a time in the future")
        return When(first=first)
    cron = _NICKNAMES.get(text.lower(), text)
    fields = cron.split(" ")
    if not _looks_like_cron(fields) or len(fields) < 3:
        raise ScheduleError(f"cannot read {text!r} as a time: {_HOW}")
    if len(fields) != 5:
        raise ScheduleError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week); "
            f"{text!r} has {len(fields)}"
        )
    if not repeat:
        raise ScheduleError(f"{text!r} repeats (a cron expression): give a delay or a time")
    zone = resolve_timezone(tz, local_tz)
    try:
        first = next_cron_time(cron, now, zone)
    except CronSimError as e:
        raise ScheduleError(f"invalid cron expression {text!r}: {_cron_problem(e)}") from None
    return When(first=first, cron=cron, tz=tz)


def next_cron_time(cron: str, after: float, zone: tzinfo) -> float:
    """The first time `cron` matches strictly after `after`, in `zone` (a `CronSimError` if
    the expression is invalid or never matches)."""
    start = datetime.fromtimestamp(after, zone)
    try:
        return next(CronSim(cron, start)).timestamp()
    except StopIteration:
        raise CronSimError("it never matches a date") from None


def resolve_timezone(name: str | None, local_tz: tzinfo | None = None) -> tzinfo:
    """The zone named `name` (Area/City), else `local_tz`, else the machine's."""
    if name is None:
        return local_tz if local_tz is not None else machine_timezone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown timezone {name!r}: give an IANA name like Europe/Paris or UTC"
        ) from None


def machine_timezone() -> tzinfo:
    """The machine's timezone with its DST rules: `TZ`, else /etc/localtime, else the
    current UTC offset (a fixed offset: no DST, only if the machine names no zone)."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    localtime = Path("/etc/localtime")
    try:
        with localtime.open("rb") as f:
            return ZoneInfo.from_file(f, key=_zone_key(localtime))
    except (OSError, ValueError):
        pass
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC


def describe_time(at: float, zone: tzinfo) -> str:
    """`at` for a person or a model: `2030-06-01 09:00 CEST`."""
    moment = datetime.fromtimestamp(at, zone)
    return moment.strftime("%Y-%m-%d %H:%M ") + (moment.tzname() or moment.strftime("%z"))


def _zone_key(localtime: Path) -> str | None:
    try:
        target = str(localtime.resolve())
    except OSError:
        return None
    _, found, key = target.partition("zoneinfo/")
    return key if found else None


def _parse_iso(text: str) -> datetime | None:
    if not text[:4].isdigit() or "-" not in text:
        return None
    try:
        return datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise ScheduleError(
            f"cannot read {text!r} as an ISO 8601 time: write it like 2030-06-01T09:00+02:00"
        ) from None


def _looks_like_cron(fields: list[str]) -> bool:
    """Cron's alphabet (digits, * , - / L W #, month and day names) in every field: anything
    else is not a cron expression at all, rather than a bad one."""
    return all(_CRON_FIELD.fullmatch(field) for field in fields)


def _cron_problem(error: CronSimError) -> str:
    message = str(error)
    if message.startswith("Bad "):
        field = message.removeprefix("Bad ")
        return f"the {field} field is out of range or malformed"
    return message
