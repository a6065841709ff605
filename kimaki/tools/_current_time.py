"""`current_time`: now, in the machine's timezone and in UTC."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, Final

import trio

from kimaki.tools._spec import ToolContext, ToolResult, ToolSpec

__all__ = ["CURRENT_TIME", "describe_time"]


def describe_time(now: dt.datetime, zone: str | None) -> str:
    """`now` (aware, in the local timezone) as the tool says it: local with the zone's name and
    offset, then UTC."""
    offset = now.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    names = [n for n in dict.fromkeys((zone, now.tzname())) if n and n != offset]
    label = f"{names[0]} ({', '.join([*names[1:], offset])})" if names else offset
    utc = now.astimezone(dt.UTC)
    return (
        f"local: {now.strftime('%A %Y-%m-%d %H:%M:%S')} {label}\n"
        f"UTC: {utc.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )


async def _zone_name() -> str | None:
    """The IANA name of the machine's timezone (`Europe/Paris`) when it can be told: from `TZ`,
    else from where `/etc/localtime` points."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and "/" in tz and not tz.startswith("/"):
        return tz
    try:
        target = str(await trio.Path("/etc/localtime").readlink())
    except OSError:
        return None
    _, found, name = target.partition("zoneinfo/")
    return name if found and name else None


async def _run(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    now = dt.datetime.now().astimezone()
    return ToolResult(describe_time(now, await _zone_name()))


CURRENT_TIME: Final = ToolSpec(
    name="current_time",
    description=(
        "The current date and time on this machine, in its local timezone (with the zone's "
        "name and UTC offset) and in UTC. Use it whenever the answer depends on today's date "
        'or the time of day (deadlines, scheduling, "how long ago"): do not guess them.'
    ),
    input_schema={"type": "object", "properties": {}},
    run=_run,
)
