"""`since` as people write it, for `/audit` and `kimaki audit`: a span back from now or a date."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from kimaki.errors import KimakiError

__all__ = ["SinceError", "parse_since"]

_SPAN: Final = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class SinceError(KimakiError, ValueError):
    """`since` is neither a span nor a date; the message says what is accepted."""


def parse_since(text: str, *, now: float) -> float:
    """Seconds since the epoch of `text`: a span back from `now` (`30m`, `2h`, `7d`, `1w`,
    `1d12h`, "2h ago") or an ISO date or time (`2026-12-01`, `2026-12-01T09:00`, UTC unless it
    names a zone)."""
    value = text.strip().lower().removesuffix("ago").strip()
    spans = _SPAN.findall(value)
    if spans and _SPAN.sub("", value).strip() == "":
        return now - sum(int(count) * _UNIT_SECONDS[unit] for count, unit in spans)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise SinceError(
            "`since` is a span back from now (30m, 2h, 7d, 1w) or an ISO date or time "
            f"(2026-12-01, 2026-12-01T09:00 UTC), not {text.strip()[:40]!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
