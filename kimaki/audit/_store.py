"""The audit store: its own SQLite file, `<data-dir>/audit.db`, apart from the state database.

It is a separate file so that it can be kept, rotated or shipped on its own, and so that a
reader of the trail (`/audit ask`'s agent tool, `kimaki audit`) can be handed this file
read-only and nothing of the bot's state. WAL mode: the CLI and the agent's tool read while the
daemon writes. Every call runs in a worker thread (`trio.to_thread`) with a limiter of one, so
the event loop never waits on the disk and the one connection is never used by two threads.

Rows are what `kimaki._audit.audit` was told, redacted and truncated by the sink before they
get here (`kimaki.audit._sink`): this module stores and finds them, and forgets old ones.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, final

import attrs
import trio

from kimaki._audit import AuditEvent
from kimaki.errors import KimakiError

__all__ = [
    "AUDIT_FILE",
    "AUDIT_SCHEMA_VERSION",
    "AuditRow",
    "AuditStore",
    "AuditStoreError",
    "audit_path",
]

AUDIT_FILE: Final = "audit.db"
AUDIT_SCHEMA_VERSION: Final = 1
"""The audit file's own schema version (`PRAGMA user_version`), unrelated to the state
database's migrations."""
_BUSY_TIMEOUT_MS: Final = 5000
_P = ParamSpec("_P")
_T = TypeVar("_T")
MAX_QUERY_LIMIT: Final = 10_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit_events (
    row_id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    channel_id INTEGER,
    thread_id INTEGER,
    user_id INTEGER,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_events_at ON audit_events (at);
CREATE INDEX IF NOT EXISTS audit_events_channel ON audit_events (channel_id, at);
CREATE INDEX IF NOT EXISTS audit_events_thread ON audit_events (thread_id, at);
"""


class AuditStoreError(KimakiError):
    """The audit file cannot be opened (missing when read-only, or of a newer schema)."""


def audit_path(data_dir: Path) -> Path:
    return data_dir / AUDIT_FILE


@final
@attrs.frozen
class AuditRow:
    """One stored event."""

    row_id: int
    at: float
    """Wall-clock seconds since the epoch."""
    kind: str
    channel_id: int | None
    thread_id: int | None
    user_id: int | None
    detail: Mapping[str, object]

    def to_json(self) -> dict[str, object]:
        """The row as one JSON object (`kimaki audit --json`, the export)."""
        return {
            "id": self.row_id,
            "at": self.at,
            "kind": self.kind,
            "channel_id": self.channel_id,
            "thread_id": self.thread_id,
            "user_id": self.user_id,
            "detail": dict(self.detail),
        }


@final
class AuditStore:
    """The audit file: `await AuditStore.open(path)` to write (the daemon), or
    `await AuditStore.open_read_only(path)` to read (the CLI, the audit agent's tool)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
        self._conn = conn
        self.path = path
        self.read_only = read_only
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> AuditStore:
        """Open (creating it with mode 0600) the audit file at `path`, for writing."""
        conn = await trio.to_thread.run_sync(_open_writable, path)
        return cls(conn, path, read_only=False)

    @classmethod
    async def open_read_only(cls, path: Path) -> AuditStore:
        """Open an existing audit file read-only (`mode=ro`): writes fail in SQLite itself."""
        conn = await trio.to_thread.run_sync(_open_read_only, path)
        return cls(conn, path, read_only=True)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await trio.to_thread.run_sync(self._conn.close, limiter=self._limiter)

    async def __aenter__(self) -> AuditStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- writing (the sink's writer task)

    async def write(self, events: Sequence[AuditEvent]) -> None:
        """Store `events` (already redacted and truncated) in one transaction."""
        if not events:
            return
        rows = [
            (
                event.at,
                event.kind,
                event.channel_id,
                event.thread_id,
                event.user_id,
                json.dumps(dict(event.detail), ensure_ascii=False, default=str),
            )
            for event in events
        ]
        await self._run(_insert, rows)

    async def delete_older_than(self, cutoff: float) -> int:
        """Forget the events recorded before `cutoff` (seconds since the epoch); how many."""
        return await self._run(_delete_before, cutoff)

    # ---- reading

    async def query(
        self,
        *,
        channel_id: int | None = None,
        kinds: Sequence[str] = (),
        user_id: int | None = None,
        text: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
    ) -> list[AuditRow]:
        """Events, newest first.

        `channel_id` matches a channel's events and its threads' (a thread's events carry their
        project channel, or are tied to it by another event that names both), or a thread's
        own; `kinds` match by prefix ("turn" is every `turn.*`, "turn.ended" only that one);
        `text` is searched (any case) in the kind and the detail; `since` / `until` bound `at`
        (inclusive / exclusive).
        """
        where: list[str] = []
        args: list[Any] = []
        if channel_id is not None:
            # A thread's events recorded without their channel (a permission's) still belong
            # to it: threads are tied to channels by the events that name both.
            where.append(
                "(channel_id = ? OR thread_id = ? OR thread_id IN (SELECT DISTINCT thread_id "
                "FROM audit_events WHERE channel_id = ? AND thread_id IS NOT NULL))"
            )
            args += [channel_id, channel_id, channel_id]
        if kinds:
            alternatives = []
            for kind in kinds:
                alternatives.append("(kind = ? OR kind LIKE ? ESCAPE '\\')")
                args += [kind, _like_prefix(kind.rstrip(".") + ".")]
            where.append("(" + " OR ".join(alternatives) + ")")
        if user_id is not None:
            where.append("user_id = ?")
            args.append(user_id)
        if text:
            pattern = "%" + _like_escape(text) + "%"
            where.append("(kind LIKE ? ESCAPE '\\' OR detail LIKE ? ESCAPE '\\')")
            args += [pattern, pattern]
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at < ?")
            args.append(until)
        sql = "SELECT row_id, at, kind, channel_id, thread_id, user_id, detail FROM audit_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, row_id DESC LIMIT ?"
        args.append(max(0, min(limit, MAX_QUERY_LIMIT)))
        return await self._run(_select, sql, args)

    async def export(self, *, since: float | None = None) -> list[AuditRow]:
        """Every event since `since`, oldest first (for `kimaki audit export`)."""
        sql = "SELECT row_id, at, kind, channel_id, thread_id, user_id, detail FROM audit_events"
        args: list[Any] = []
        if since is not None:
            sql += " WHERE at >= ?"
            args.append(since)
        sql += " ORDER BY at, row_id"
        return await self._run(_select, sql, args)

    async def count(self) -> int:
        return await self._run(_count)

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        if self._closed:
            raise AuditStoreError("the audit store is closed")
        conn = self._conn
        return await trio.to_thread.run_sync(
            lambda: fn(conn, *args, **kwargs), limiter=self._limiter
        )


# ---- in the worker thread


def _open_writable(path: Path) -> sqlite3.Connection:
    # Created 0600 before SQLite opens it: the trail names people and holds what they wrote.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > AUDIT_SCHEMA_VERSION:
            raise AuditStoreError(
                f"{path} has audit schema version {version}; this kimaki knows up to "
                f"{AUDIT_SCHEMA_VERSION} (a newer kimaki wrote it)"
            )
        if version < AUDIT_SCHEMA_VERSION:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {AUDIT_SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise AuditStoreError(f"no audit file at {path} (the daemon creates it when it starts)")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != AUDIT_SCHEMA_VERSION:
            raise AuditStoreError(
                f"{path} has audit schema version {version}; this kimaki reads version "
                f"{AUDIT_SCHEMA_VERSION}"
            )
    except sqlite3.Error as exc:
        conn.close()
        raise AuditStoreError(f"cannot read the audit file {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _insert(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    with conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO audit_events (at, kind, channel_id, thread_id, user_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


def _delete_before(conn: sqlite3.Connection, cutoff: float) -> int:
    with conn:
        conn.execute("BEGIN")
        cursor = conn.execute("DELETE FROM audit_events WHERE at < ?", (cutoff,))
    return cursor.rowcount


def _select(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[AuditRow]:
    return [_row(values) for values in conn.execute(sql, args).fetchall()]


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM audit_events").fetchone()[0])


def _row(values: Sequence[Any]) -> AuditRow:
    row_id, at, kind, channel_id, thread_id, user_id, detail = values
    try:
        parsed = json.loads(detail)
    except ValueError:
        parsed = {"raw": detail}
    return AuditRow(
        row_id=row_id,
        at=at,
        kind=kind,
        channel_id=channel_id,
        thread_id=thread_id,
        user_id=user_id,
        detail=parsed if isinstance(parsed, dict) else {"value": parsed},
    )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(prefix: str) -> str:
    return _like_escape(prefix) + "%"
