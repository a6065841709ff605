"""The one connection every part of the store shares, and the one place SQL runs.

Every call runs in a worker thread through `trio.to_thread.run_sync` with a limiter of one, so
the event loop never waits on disk and the single connection is never used by two threads at
once (one writer). The file is in WAL mode (readers never block the writer), with foreign keys
on and a busy timeout in case a CLI command writes while the daemon runs.

One exception, for speed on the path of every message: the few rows a turn writes on its way
to the agent (`write_together`) are committed on the event loop itself when the connection is
free. Such a commit appends a page or two to the WAL without an fsync (tens of microseconds),
while a worker-thread round trip waits for the GIL behind a busy loop (milliseconds, and at
200 turns a second up to a hundred). It never waits on disk: it gives up at once if another
process holds the write lock (the worker thread, with its busy timeout, takes over), and the
connection does not checkpoint on its own. `checkpoints()`, a task the bot runs beside it,
moves the WAL into the database file on a connection of its own in a worker thread, so the
writes go on meanwhile; should nothing run it, a worker call does it in passing once the WAL
has grown four times as long.

The store's parts (`kimaki.store.Store`'s facets) each own their tables' SQL and share this
object: the connection, the limiter, the write-through caches of the records read on every
message, and the group commit of the writes on a turn's way to the agent.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Generic, NoReturn, ParamSpec, TypeVar, final

import attrs
import trio
from sqlite_utils import Database as _SqliteUtilsDatabase
from sqlite_utils.db import NotFoundError, Table

from kimaki.errors import KimakiError
from kimaki.store._records import ChannelRecord, Preference, ThreadRecord
from kimaki.store._schema import migrate

__all__ = [
    "CHECKPOINT_AFTER_COMMITS",
    "Database",
    "DatabaseStatistics",
    "StoreClosedError",
    "from_row",
    "handled_rows",
    "insert_rows",
    "to_row",
]

log = logging.getLogger("kimaki.store")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_BUSY_TIMEOUT_MS = 5000
# Commits (on the loop, or calls in the worker thread) after which `checkpoints()` moves the
# WAL into the database file: each adds a page or a few, so the WAL stays at a few megabytes.
CHECKPOINT_AFTER_COMMITS: Final = 1000
# Without that task, or behind it, the worker thread checkpoints in passing after this many
# times as many (the next turn's write goes through it so that one happens).
_CHECKPOINT_BACKSTOP = 4
_CHECKPOINT_RETRY = 1.0  # seconds


class _Recent(Generic[_T]):
    """The most recently used records by key (a bounded LRU), for hot reads."""

    def __init__(self, limit: int = 4096) -> None:
        self._items: OrderedDict[Hashable, _T] = OrderedDict()
        self._limit = limit

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> _T:
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: _T) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._limit:
            self._items.popitem(last=False)

    def forget(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


class StoreClosedError(KimakiError, RuntimeError):
    """The store was used after `aclose()` (a `RuntimeError` too: a bug, not a condition)."""


@final
class Database:
    """The daemon's database file: one connection, one writer, calls off the event loop.

    Open with `await Database.open(path)`; the store's facets take it and run their SQL through
    `run` (or `write_together`). The helpers below (`get`, `upsert`, `delete`, ...) run in the
    worker thread, inside `run`.
    """

    def __init__(
        self,
        db: _SqliteUtilsDatabase,
        path: Path,
        *,
        checkpoint_after: int = CHECKPOINT_AFTER_COMMITS,
    ) -> None:
        self._db = db
        self.path = path
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False
        # Every message asks "is this channel a project, is this thread known?": answered
        # from memory after the first time. Write-through: every write goes through this
        # object (the CLI reaches a running daemon through its lock port), so it stays true.
        # Shared by the facets so that two facets over one database can never disagree.
        self.recent_channels: _Recent[ChannelRecord | None] = _Recent()
        self.recent_threads: _Recent[ThreadRecord | None] = _Recent()
        self.recent_preferences: _Recent[Preference | None] = _Recent()
        # Writes on a turn's way to the agent, waiting for the next call to start
        # (`write_together`): appended in the event loop, taken in the worker thread.
        self._batch_lock = threading.Lock()
        self._batch: list[Callable[[sqlite3.Connection], None]] = []
        self._batch_queued = 0  # writes ever queued
        self._batch_written = 0  # writes known to be committed, in queued order
        self._batch_lot = trio.lowlevel.ParkingLot()
        self._trio_token = trio.lowlevel.current_trio_token()
        self._checkpoint_after = checkpoint_after
        self._commits_since_checkpoint = 0  # under _batch_lock
        self._checkpoint_wanted = trio.Event()
        self._checkpoints = 0
        self._loop_commits = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, path: Path, *, checkpoint_after: int = CHECKPOINT_AFTER_COMMITS
    ) -> Database:
        """Open (creating with mode 0600) and migrate the database at `path`."""
        db = await trio.to_thread.run_sync(_open_database, path)
        return cls(db, path, checkpoint_after=checkpoint_after)

    def statistics(self) -> DatabaseStatistics:
        with self._batch_lock:
            since = self._commits_since_checkpoint
        return DatabaseStatistics(
            loop_commits=self._loop_commits,
            commits_since_checkpoint=since,
            checkpoints=self._checkpoints,
        )

    async def checkpoints(self) -> NoReturn:
        """Run forever: once commits have grown the WAL, move it into the database file.

        On a connection of its own in a worker thread: a passive checkpoint takes no lock the
        writer needs, so the turns' writes go on meanwhile (on the store's connection, a
        checkpoint would hold every one of them for its copy and fsyncs). The WAL starts again
        from its beginning only after a checkpoint that moved all of it with no write meanwhile;
        when writes went on, it is tried again a second later, when they may have paused (and,
        should they never pause, the worker thread does it in passing)."""
        conn: sqlite3.Connection | None = None
        try:
            while True:
                await self._checkpoint_wanted.wait()
                self._checkpoint_wanted = trio.Event()
                with self._batch_lock:
                    counted = self._commits_since_checkpoint
                # Shielded: it never waits for anybody, and its outcome must be counted.
                with trio.CancelScope(shield=True):
                    if conn is None:
                        conn = await trio.to_thread.run_sync(_checkpoint_connection, self.path)
                    finished = await trio.to_thread.run_sync(_checkpoint, conn)
                self._checkpoints += 1
                with self._batch_lock:
                    # The WAL starts again from its beginning at the next write only if all of
                    # it was moved and nothing was written meanwhile.
                    restarts = finished and self._commits_since_checkpoint == counted
                    if restarts:
                        self._commits_since_checkpoint = 0
                if not restarts:
                    await trio.sleep(_CHECKPOINT_RETRY)
                    self._want_checkpoint()
        finally:
            if conn is not None:
                conn.close()  # a connection that holds no lock closes at once

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await trio.to_thread.run_sync(self._db.conn.close, limiter=self._limiter)

    # -- calls -------------------------------------------------------------------------------

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """`fn(*args, **kwargs)` in the worker thread, alone on the connection."""
        if self._closed:
            raise StoreClosedError("the store is closed")

        def call() -> _T:
            self._commit_batch()  # first, whatever the call is
            self._count_commit(in_worker=True)
            return fn(*args, **kwargs)

        try:
            return await trio.to_thread.run_sync(call, limiter=self._limiter)
        finally:
            # The connection may be free now: a write waiting for it can commit on the loop.
            self._batch_lot.unpark_all()

    async def write_together(self, write: Callable[[sqlite3.Connection], None]) -> None:
        """Commit `write` and return once it is committed.

        For the writes on a turn's way to the agent, so they do not queue behind the calls
        already waiting for the connection: `write` runs in one transaction with every other
        write queued meanwhile (group commit), on the event loop at once when the connection is
        free, else at the start of whichever call has it next. `write` must be a few rows: it
        may run on the loop.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        with self._batch_lock:
            self._batch.append(write)
        self._batch_queued += 1
        target = self._batch_queued
        while self._batch_written < target:
            if self._limiter.borrowed_tokens == 0 and self._commit_on_loop():
                continue
            statistics = self._limiter.statistics()
            if statistics.borrowed_tokens == 0 and statistics.tasks_waiting == 0:
                await self.run(_nothing)  # not on the loop, and nobody else will start soon
            else:
                # The call running or waiting writes it when it starts, or the loop does when
                # the connection is free. Looked at again after a while in case that call was
                # cancelled before it started.
                with trio.move_on_after(0.05):
                    await self._batch_lot.park()

    def _commit_on_loop(self) -> bool:
        """On the event loop, with the connection free: commit the queued writes now, unless
        that could wait (another process holds the write lock) or a checkpoint is overdue.
        Whether it committed."""
        with self._batch_lock:
            if self._checkpoint_overdue():
                return False  # the worker thread commits and checkpoints
            writes, self._batch = self._batch, []
        if not writes:
            return False  # taken by a worker call whose news has not arrived: wait for it
        conn = self._db.conn
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            self._write_all(writes)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return False  # someone else is writing: wait for it in the worker thread
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self._loop_commits += 1
        self._count_commit(in_worker=False)
        self._batch_was_written(len(writes))
        return True

    def _count_commit(self, *, in_worker: bool) -> None:
        """A commit was made (or, in the worker thread, a call that may write is about to run):
        ask `checkpoints()` for one when due, or, long overdue and in the worker thread,
        checkpoint here."""
        with self._batch_lock:
            self._commits_since_checkpoint += 1
            since = self._commits_since_checkpoint
            overdue = self._checkpoint_overdue()
        if in_worker and overdue:
            # Nothing else writes on this connection meanwhile, so a finished one restarts it.
            if _checkpoint(self._db.conn):
                with self._batch_lock:
                    self._commits_since_checkpoint = 0
            self._trio_token.run_sync_soon(self._checkpointed_in_passing)
        elif since >= self._checkpoint_after:
            if in_worker:
                self._trio_token.run_sync_soon(self._want_checkpoint)
            else:
                self._want_checkpoint()

    def _checkpoint_overdue(self) -> bool:
        """Under `_batch_lock`: the checkpointer fell behind (or is not running)."""
        return self._commits_since_checkpoint >= self._checkpoint_after * _CHECKPOINT_BACKSTOP

    def _want_checkpoint(self) -> None:
        self._checkpoint_wanted.set()

    def _checkpointed_in_passing(self) -> None:
        self._checkpoints += 1

    def _commit_batch(self) -> None:
        """In the worker thread: commit the queued writes, and tell their waiters at once
        (not when the call that carried them returns)."""
        with self._batch_lock:
            writes, self._batch = self._batch, []
        if not writes:
            return
        self._write_all(writes)
        self._trio_token.run_sync_soon(self._batch_was_written, len(writes))

    def _write_all(self, writes: list[Callable[[sqlite3.Connection], None]]) -> None:
        """Taken from the queue: commit `writes` in one transaction, or, should that fail,
        put them back at its front for the next attempt (in order, before later ones)."""
        try:
            with self.transaction() as conn:
                for write in writes:
                    write(conn)
        except BaseException:
            with self._batch_lock:
                self._batch[:0] = writes
            raise

    def _batch_was_written(self, count: int) -> None:
        self._batch_written += count
        self._batch_lot.unpark_all()

    # -- in the worker thread ----------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.conn

    def table(self, name: str) -> Table:
        return self._db.table(name)

    async def get_recent(
        self, recent: _Recent[_Record | None], table: str, key: Hashable, cls: type[_Record]
    ) -> _Record | None:
        """The record of `table` at `key`, answered from `recent` after the first read (absent
        records too, as None). Writes keep `recent` true by updating it themselves."""
        if key in recent:
            return recent.get(key)
        row = await self.run(self.get, table, key)
        record = None if row is None else from_row(cls, row)
        recent.put(key, record)
        return record

    def get(self, table: str, pk: Any) -> dict[str, Any] | None:
        try:
            return self._db.table(table).get(pk)
        except NotFoundError:
            return None

    def upsert(self, table: str, row: dict[str, Any], pk: str | tuple[str, ...]) -> None:
        with self._db.conn:
            self._db.table(table).upsert(row, pk=pk)

    def delete(self, table: str, where: str, args: list[Any]) -> int:
        with self._db.conn:
            cursor = self._db.conn.execute(f"DELETE FROM {table} WHERE {where}", args)
        return cursor.rowcount

    def rows(
        self, table: str, where: str | None, args: list[Any], order_by: str
    ) -> Iterator[dict[str, Any]]:
        return self._db.table(table).rows_where(where, args, order_by=order_by)

    def select(self, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
        """The rows of a query, as dicts by column name."""
        cursor = self._db.conn.execute(sql, args or [])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def take(self, table: str, order_by: str) -> list[dict[str, Any]]:
        """Every row of `table` (in `order_by` order), deleted in the same transaction."""
        with self.transaction() as conn:
            cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order_by}")
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, values, strict=True)) for values in cursor]
            conn.execute(f"DELETE FROM {table}")
        return rows

    def replace(
        self, table: str, where: str | None, args: list[Any], rows: list[dict[str, Any]]
    ) -> None:
        """Delete the rows matching `where` (all when None) and insert `rows`, atomically."""
        with self.transaction() as conn:
            conn.execute(f"DELETE FROM {table}" + (f" WHERE {where}" if where else ""), args)
            insert_rows(conn, table, rows, replace=False)

    def upsert_all(self, table: str, rows: list[dict[str, Any]]) -> None:
        with self.transaction() as conn:
            insert_rows(conn, table, rows, replace=True)


@final
@attrs.frozen
class DatabaseStatistics:
    """What `Database.statistics()` returns."""

    loop_commits: int
    """Commits of turn writes made on the event loop (the rest went through the worker)."""
    commits_since_checkpoint: int
    """Commits (and worker calls) since the WAL was last moved into the database file."""
    checkpoints: int
    """Checkpoints made, by `checkpoints()` or in passing."""


def _checkpoint_connection(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


def _checkpoint(conn: sqlite3.Connection) -> bool:
    """Move what it can of the WAL into the database file, waiting for nobody (PASSIVE).
    Whether all of it was."""
    busy, frames, moved = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return bool(busy == 0 and frames == moved)


def handled_rows(events: Iterable[tuple[int, str]], at: float | None) -> list[dict[str, Any]]:
    """`handled_events` rows for `(event id, kind)`s handled at `at` (now when None)."""
    now = time.time() if at is None else at
    return [{"event_id": event_id, "kind": kind, "handled_at": now} for event_id, kind in events]


def _nothing() -> None:
    """A store call that does nothing but what every call does first."""


def insert_rows(
    conn: sqlite3.Connection,
    table: str,
    rows: list[dict[str, Any]],
    *,
    replace: bool,
    ignore: bool = False,
) -> None:
    if not rows:
        return
    names = list(rows[0])
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE" if ignore else "INSERT"
    sql = f"{verb} INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    conn.executemany(sql, [[row[name] for name in names] for row in rows])


def _open_database(path: Path) -> _SqliteUtilsDatabase:
    # Create the file 0600 before SQLite does: it holds the bot token. SQLite gives the -wal and
    # -shm files the same mode as the database file.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # A commit is in the WAL, and survives the process being killed, without an fsync
        # (~1.5 ms each; turns write at their start and end, and a message's id is written on
        # its way to the agent). A power cut may lose the last transactions, never the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        # Commits made on the event loop must not checkpoint there (see the module's doc).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA foreign_keys = ON")
        before = conn.execute("PRAGMA user_version").fetchone()[0]
        after = migrate(conn)
        if after != before:
            log.info("database %s migrated from schema version %d to %d", path, before, after)
    except BaseException:
        conn.close()
        raise
    return _SqliteUtilsDatabase(conn)


_Record = TypeVar("_Record", bound=attrs.AttrsInstance)


def to_row(record: attrs.AttrsInstance) -> dict[str, Any]:
    """A record as a table row: its fields by name, paths as text, booleans as 0/1."""
    values = attrs.asdict(record, recurse=False)
    for name, value in values.items():
        if isinstance(value, Path):
            values[name] = str(value)
        elif isinstance(value, bool):
            values[name] = int(value)
    return values


def from_row(cls: type[_Record], row: dict[str, Any]) -> _Record:
    """A table row as a record of `cls` (columns the record has no field for are ignored)."""
    values = {}
    for field in attrs.fields(cls):
        value = row[field.name]
        values[field.name] = bool(value) if field.type in ("bool", bool) else value
    return cls(**values)
