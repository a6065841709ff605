"""`kimaki audit` and `kimaki audit export`: the trail on the command line, read-only.

Both open the audit file read-only (SQLite's `mode=ro`), so they work the same with the daemon
running or not and cannot change the trail.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from kimaki.audit._store import AuditRow, AuditStore
from kimaki.audit._when import parse_since

__all__ = ["DEFAULT_CLI_LIMIT", "format_row", "print_audit"]

DEFAULT_CLI_LIMIT: Final = 50


async def print_audit(
    path: Path,
    out: TextIO,
    *,
    export: bool = False,
    as_json: bool = False,
    since: str | None = None,
    channel_id: int | None = None,
    kinds: Sequence[str] = (),
    limit: int = DEFAULT_CLI_LIMIT,
) -> int:
    """Print the trail's events; how many. `export`: every event since `since` (or all), oldest
    first, one JSON object a line. Otherwise the last `limit` matching events, newest first,
    as text lines or (`as_json`) one JSON array. `SinceError` / `AuditStoreError` say what is
    wrong."""
    start = parse_since(since, now=time.time()) if since else None
    async with await AuditStore.open_read_only(path) as store:
        if export:
            rows = await store.export(since=start)
            rows = [
                row
                for row in rows
                if (channel_id is None or channel_id in (row.channel_id, row.thread_id))
                and (not kinds or any(_kind_matches(row.kind, kind) for kind in kinds))
            ]
            for row in rows:
                out.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
            return len(rows)
        rows = await store.query(channel_id=channel_id, kinds=kinds, since=start, limit=limit)
    if as_json:
        out.write(json.dumps([row.to_json() for row in rows], indent=2, ensure_ascii=False) + "\n")
    elif not rows:
        out.write("no audit events match\n")
    else:
        for row in rows:
            out.write(format_row(row) + "\n")
    return len(rows)


def format_row(row: AuditRow) -> str:
    """One event as a line: time (UTC), kind, channel/thread, user, detail."""
    when = dt.datetime.fromtimestamp(row.at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    where = str(row.channel_id or "-") + (f"/{row.thread_id}" if row.thread_id else "")
    detail = json.dumps(dict(row.detail), ensure_ascii=False, separators=(",", ":"))
    return "\t".join((when, row.kind, where, str(row.user_id or "-"), detail))


def _kind_matches(kind: str, wanted: str) -> bool:
    wanted = wanted.rstrip(".")
    return kind == wanted or kind.startswith(wanted + ".")
