"""The one place SQL runs: a typed async API over SQLite (sqlite-utils).

Every call runs in a worker thread through `trio.to_thread.run_sync` with a limiter of one, so
the event loop never waits on disk and the single connection is never used by two threads at
once. The file is in WAL mode (readers never block the writer), with foreign keys on and a busy
timeout in case a CLI command writes while the daemon runs.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, final

import attrs
import trio
from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from kimaki.store._records import (
    AgentServerHandover,
    ChannelRecord,
    GatewaySession,
    InteractionKey,
    Preference,
    PreferenceScope,
    QueuedPrompt,
    RunningTurn,
    ScheduledTask,
    ThreadRecord,
    WorktreeRecord,
)
from kimaki.store._schema import migrate

__all__ = ["Store", "StoreClosedError"]

log = logging.getLogger("kimaki.store")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_BUSY_TIMEOUT_MS = 5000


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


class StoreClosedError(RuntimeError):
    """The store was used after `aclose()`."""


@final
class Store:
    """Async access to the daemon's database. Open with `await Store.open(path)`."""

    def __init__(self, db: Database, path: Path) -> None:
        self._db = db
        self._path = path
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False
        # Every message asks "is this channel a project, is this thread known?": answered
        # from memory after the first time. Write-through: every write goes through this
        # object (the CLI reaches a running daemon through its lock port), so it stays true.
        self._channels: _Recent[ChannelRecord | None] = _Recent()
        self._threads: _Recent[ThreadRecord | None] = _Recent()
        self._preferences: _Recent[Preference | None] = _Recent()
        # Handled-event rows waiting for the next call to start (`record_handled`): appended
        # in the event loop, taken in the worker thread, hence the lock.
        self._handled_lock = threading.Lock()
        self._handled_rows: list[dict[str, Any]] = []
        self._handled_queued = 0  # rows ever queued
        self._handled_written = 0  # rows known to be written, in queued order
        self._handled_lot = trio.lowlevel.ParkingLot()
        self._trio_token = trio.lowlevel.current_trio_token()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating with mode 0600) and migrate the database at `path`."""
        db = await trio.to_thread.run_sync(_open_database, path)
        return cls(db, path)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await trio.to_thread.run_sync(self._db.conn.close, limiter=self._limiter)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def path(self) -> Path:
        return self._path

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed:
            raise StoreClosedError("the store is closed")

        def call() -> _T:
            self._flush_handled()  # first, whatever the call is
            return fn(*args, **kwargs)

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    def _get(self, table: str, pk: Any) -> dict[str, Any] | None:
        try:
            return self._db.table(table).get(pk)
        except NotFoundError:
            return None

    def _upsert(self, table: str, row: dict[str, Any], pk: str | tuple[str, ...]) -> None:
        with self._db.conn:
            self._db.table(table).upsert(row, pk=pk)

    def _delete(self, table: str, where: str, args: list[Any]) -> int:
        with self._db.conn:
            cursor = self._db.conn.execute(f"DELETE FROM {table} WHERE {where}", args)
        return cursor.rowcount

    def _rows(
        self, table: str, where: str | None, args: list[Any], order_by: str
    ) -> Iterator[dict[str, Any]]:
        return self._db.table(table).rows_where(where, args, order_by=order_by)

    # -- channels ----------------------------------------------------------------------------

    async def put_channel(self, channel: ChannelRecord) -> None:
        self._channels.forget(channel.channel_id)
        await self._run(self._upsert, "channels", _row(channel), "channel_id")
        self._channels.put(channel.channel_id, channel)

    async def get_channel(self, channel_id: int) -> ChannelRecord | None:
        if channel_id in self._channels:
            return self._channels.get(channel_id)
        row = await self._run(self._get, "channels", channel_id)
        record = None if row is None else _record(ChannelRecord, row)
        self._channels.put(channel_id, record)
        return record

    async def list_channels(
        self, *, app_id: int | None = None, guild_id: int | None = None
    ) -> list[ChannelRecord]:
        clauses, args = [], []
        if app_id is not None:
            clauses.append("app_id = ?")
            args.append(app_id)
        if guild_id is not None:
            clauses.append("guild_id = ?")
            args.append(guild_id)
        where = " AND ".join(clauses) or None

        def query() -> list[ChannelRecord]:
            rows = self._rows("channels", where, args, "channel_id")
            return [_record(ChannelRecord, r) for r in rows]

        return await self._run(query)

    async def delete_channel(self, channel_id: int) -> bool:
        self._channels.forget(channel_id)
        self._threads.clear()  # the database unlinks the channel's threads (ON DELETE SET NULL)
        deleted = await self._run(self._delete, "channels", "channel_id = ?", [channel_id]) > 0
        self._channels.put(channel_id, None)
        return deleted

    # -- threads -----------------------------------------------------------------------------

    async def put_thread(self, thread: ThreadRecord) -> None:
        row = {**_row(thread), "updated_at": time.time()}
        self._threads.forget(thread.thread_id)
        await self._run(self._upsert, "threads", row, "thread_id")
        self._threads.put(thread.thread_id, thread)

    async def get_thread(self, thread_id: int) -> ThreadRecord | None:
        if thread_id in self._threads:
            return self._threads.get(thread_id)
        row = await self._run(self._get, "threads", thread_id)
        record = None if row is None else _record(ThreadRecord, row)
        self._threads.put(thread_id, record)
        return record

    async def thread_of_session(self, session_id: str) -> ThreadRecord | None:
        """The thread bound to `session_id` (the most recently updated one), if any."""

        def query() -> ThreadRecord | None:
            rows = self._rows("threads", "session_id = ?", [session_id], "updated_at DESC")
            row = next(iter(rows), None)
            return None if row is None else _record(ThreadRecord, row)

        if not session_id:
            return None
        return await self._run(query)

    async def delete_thread(self, thread_id: int) -> bool:
        self._threads.forget(thread_id)
        deleted = await self._run(self._delete, "threads", "thread_id = ?", [thread_id]) > 0
        self._threads.put(thread_id, None)
        return deleted

    # -- worktrees ---------------------------------------------------------------------------

    async def put_worktree(self, worktree: WorktreeRecord) -> None:
        await self._run(self._upsert, "worktrees", _row(worktree), "thread_id")

    async def get_worktree(self, thread_id: int) -> WorktreeRecord | None:
        row = await self._run(self._get, "worktrees", thread_id)
        return None if row is None else _record(WorktreeRecord, row)

    async def delete_worktree(self, thread_id: int) -> bool:
        return await self._run(self._delete, "worktrees", "thread_id = ?", [thread_id]) > 0

    # -- preferences -------------------------------------------------------------------------

    async def set_preference(self, preference: Preference) -> None:
        """Store `preference`; a preference with neither model nor agent clears the scope."""
        if preference.model is None and preference.agent is None:
            await self.clear_preference(preference.scope, preference.scope_id)
            return
        key = (preference.scope, preference.scope_id)
        self._preferences.forget(key)
        await self._run(self._upsert, "preferences", _row(preference), ("scope", "scope_id"))
        self._preferences.put(key, preference)

    async def get_preference(self, scope: PreferenceScope, scope_id: str = "") -> Preference | None:
        key = (scope, scope_id)
        if key in self._preferences:
            return self._preferences.get(key)
        row = await self._run(self._get, "preferences", key)
        preference = None if row is None else _record(Preference, row)
        self._preferences.put(key, preference)
        return preference

    async def clear_preference(self, scope: PreferenceScope, scope_id: str = "") -> bool:
        key = (scope, scope_id)
        self._preferences.forget(key)
        where = "scope = ? AND scope_id = ?"
        cleared = await self._run(self._delete, "preferences", where, [scope, scope_id]) > 0
        self._preferences.put(key, None)
        return cleared

    async def effective_preference(
        self, *, session_id: str | None, channel_id: int | None
    ) -> Preference:
        """Model and agent after precedence: session > channel > global (None = engine default).

        Each field resolves on its own, so a session that overrides only the agent keeps the
        channel's model. Asked at every turn, so answered from memory after the first time.
        """
        scopes: list[tuple[PreferenceScope, str]] = []
        if session_id is not None:
            scopes.append(("session", session_id))
        if channel_id is not None:
            scopes.append(("channel", str(channel_id)))
        scopes.append(("global", ""))
        model: str | None = None
        agent: str | None = None
        for scope, scope_id in scopes:
            found = await self.get_preference(scope, scope_id)
            if found is None:
                continue
            model = model if model is not None else found.model
            agent = agent if agent is not None else found.agent
        return Preference(scope="session", scope_id=session_id or "", model=model, agent=agent)

    # -- scheduled tasks ---------------------------------------------------------------------

    async def add_scheduled_task(self, task: ScheduledTask) -> ScheduledTask:
        row = _row(task)
        del row["task_id"]  # assigned by SQLite

        def insert() -> int:
            with self._db.conn:
                table = self._db.table("scheduled_tasks")
                table.insert(row)
                assert table.last_pk is not None
                return int(table.last_pk)

        task_id = await self._run(insert)
        return attrs.evolve(task, task_id=task_id)

    async def list_scheduled_tasks(self, *, channel_id: int | None = None) -> list[ScheduledTask]:
        where = "channel_id = ?" if channel_id is not None else None
        args = [channel_id] if channel_id is not None else []

        def query() -> list[ScheduledTask]:
            return [
                _record(ScheduledTask, r)
                for r in self._rows("scheduled_tasks", where, args, "next_run_at")
            ]

        return await self._run(query)

    async def due_scheduled_tasks(self, now: float) -> list[ScheduledTask]:
        def query() -> list[ScheduledTask]:
            rows = self._rows(
                "scheduled_tasks", "enabled = 1 AND next_run_at <= ?", [now], "next_run_at"
            )
            return [_record(ScheduledTask, r) for r in rows]

        return await self._run(query)

    async def reschedule_task(self, task_id: int, next_run_at: float | None) -> None:
        """Move a task to `next_run_at`, or disable it (a finished one-off) when None."""

        def update() -> None:
            with self._db.conn:
                if next_run_at is None:
                    self._db.conn.execute(
                        "UPDATE scheduled_tasks SET enabled = 0 WHERE task_id = ?", [task_id]
                    )
                else:
                    self._db.conn.execute(
                        "UPDATE scheduled_tasks SET next_run_at = ? WHERE task_id = ?",
                        [next_run_at, task_id],
                    )

        await self._run(update)

    async def delete_scheduled_task(self, task_id: int) -> bool:
        return await self._run(self._delete, "scheduled_tasks", "task_id = ?", [task_id]) > 0

    # -- bot token ---------------------------------------------------------------------------

    async def get_bot_token(self) -> str | None:
        row = await self._run(self._get, "bot_credentials", 1)
        return None if row is None else str(row["token"])

    async def set_bot_token(self, token: str) -> None:
        row = {"id": 1, "token": token, "updated_at": time.time()}
        await self._run(self._upsert, "bot_credentials", row, "id")

    async def clear_bot_token(self) -> bool:
        return await self._run(self._delete, "bot_credentials", "id = 1", []) > 0

    # -- interaction keys ------------------------------------------------------------------

    async def create_interaction_key(
        self, *, thread_id: int, kind: str, payload: Any, ttl: float
    ) -> InteractionKey:
        """A fresh random key (for a custom id) bound to `thread_id`, valid for `ttl` seconds."""
        record = InteractionKey(
            key=secrets.token_urlsafe(12),
            thread_id=thread_id,
            kind=kind,
            payload=payload,
            expires_at=time.time() + ttl,
        )
        row = {
            "key": record.key,
            "thread_id": thread_id,
            "kind": kind,
            "payload": json.dumps(payload),
            "expires_at": record.expires_at,
        }
        await self._run(self._upsert, "interaction_keys", row, "key")
        return record

    async def get_interaction_key(self, key: str, *, thread_id: int) -> InteractionKey | None:
        """The key's record if it exists, has not expired and belongs to `thread_id`."""
        row = await self._run(self._get, "interaction_keys", key)
        if row is None or row["thread_id"] != thread_id or row["expires_at"] < time.time():
            return None
        return InteractionKey(
            key=row["key"],
            thread_id=row["thread_id"],
            kind=row["kind"],
            payload=json.loads(row["payload"]),
            expires_at=row["expires_at"],
        )

    async def delete_interaction_key(self, key: str) -> bool:
        return await self._run(self._delete, "interaction_keys", "key = ?", [key]) > 0

    async def delete_expired_interaction_keys(self) -> int:
        now = time.time()
        return await self._run(self._delete, "interaction_keys", "expires_at < ?", [now])

    # -- gateway session ---------------------------------------------------------------------

    async def load_gateway_session(self) -> GatewaySession | None:
        row = await self._run(self._get, "gateway_session", 1)
        if row is None or row["sequence"] is None:
            return None
        return _record(GatewaySession, row)

    async def save_gateway_session(self, session: GatewaySession | None) -> None:
        """Remember the gateway session for RESUME after a restart; None forgets it."""
        if session is None:
            await self._run(self._delete, "gateway_session", "id = 1", [])
            return
        row = {"id": 1, **_row(session), "updated_at": time.time()}
        await self._run(self._upsert, "gateway_session", row, "id")

    # -- in-place restart handover -----------------------------------------------------------
    #
    # Written by the process that received SIGUSR2 just before it re-executes itself, taken
    # (read and deleted, in one transaction) by the process that comes back, so a later cold
    # start never acts on a handover that is no longer true.

    async def save_agent_servers(self, servers: Sequence[AgentServerHandover]) -> None:
        """Replace the handed-over agent servers with `servers`."""
        rows = [_row(server) for server in servers]
        await self._run(self._replace, "agent_servers", None, [], rows)

    async def take_agent_servers(self) -> list[AgentServerHandover]:
        """The handed-over agent servers, removed from the store."""
        rows = await self._run(self._take, "agent_servers", "engine, directory")
        return [_record(AgentServerHandover, row) for row in rows]

    async def save_running_turn(self, turn: RunningTurn) -> None:
        await self._run(self._upsert, "running_turns", _row(turn), "thread_id")

    async def take_running_turns(self) -> list[RunningTurn]:
        """The turns to continue after a restart (oldest first), removed from the store."""
        rows = await self._run(self._take, "running_turns", "started_at, thread_id")
        return [_record(RunningTurn, row) for row in rows]

    async def clear_running_turn(self, thread_id: int) -> bool:
        """The thread's turn is over: its record and the parts it posted go, in one write.

        True if there was a running turn."""

        def clear() -> int:
            with self._transaction() as conn:
                conn.execute("DELETE FROM posted_parts WHERE thread_id = ?", [thread_id])
                cursor = conn.execute("DELETE FROM running_turns WHERE thread_id = ?", [thread_id])
                return cursor.rowcount

        return await self._run(clear) > 0

    async def save_queued_prompts(
        self, thread_id: int, payloads: Sequence[Any], *, message_ids: Iterable[int] = ()
    ) -> None:
        """Replace the queue of `thread_id` with `payloads` (JSON-compatible), in order.

        `message_ids` (the messages the prompts came from) are recorded as handled in the same
        transaction: the next process serves them from the queue, so a replay of the same
        messages must find them taken.
        """
        rows = [
            {"thread_id": thread_id, "position": position, "payload": json.dumps(payload)}
            for position, payload in enumerate(payloads)
        ]
        now = time.time()
        handled = [
            {"event_id": event_id, "kind": "message", "handled_at": now} for event_id in message_ids
        ]

        def save() -> None:
            with self._transaction() as conn:
                conn.execute("DELETE FROM queued_prompts WHERE thread_id = ?", [thread_id])
                _insert_rows(conn, "queued_prompts", rows, replace=False)
                _insert_rows(conn, "handled_events", handled, replace=False, ignore=True)

        await self._run(save)

    async def take_queued_prompts(self) -> list[QueuedPrompt]:
        """Every saved queue, by thread then position, removed from the store."""
        rows = await self._run(self._take, "queued_prompts", "thread_id, position")
        return [
            QueuedPrompt(row["thread_id"], row["position"], json.loads(row["payload"]))
            for row in rows
        ]

    async def record_posted_part(
        self, thread_id: int, part_id: str, message_id: int | None = None
    ) -> None:
        """Remember that part `part_id` of the thread's running turn is in Discord."""
        await self.record_posted_parts(thread_id, [(part_id, message_id)])

    async def record_posted_parts(
        self, thread_id: int, parts: Iterable[tuple[str, int | None]]
    ) -> None:
        now = time.time()
        rows = [
            {"thread_id": thread_id, "part_id": part_id, "message_id": message_id, "posted_at": now}
            for part_id, message_id in parts
        ]
        if rows:
            await self._run(self._upsert_all, "posted_parts", rows)

    async def posted_parts(self, thread_id: int) -> set[str]:
        def query() -> set[str]:
            cursor = self._db.conn.execute(
                "SELECT part_id FROM posted_parts WHERE thread_id = ?", [thread_id]
            )
            return {row[0] for row in cursor}

        return await self._run(query)

    async def forget_posted_parts(self, thread_id: int) -> int:
        return await self._run(self._delete, "posted_parts", "thread_id = ?", [thread_id])

    # -- handled gateway events ------------------------------------------------------------
    #
    # The ids of the messages and interactions the bot acted on, so an event Discord replays
    # (a RESUME from a stale sequence) is recognised. Kept for a day, swept on a timer.

    async def record_handled(
        self, events: Iterable[tuple[int, str]], *, at: float | None = None
    ) -> None:
        """Remember that the `(event id, kind)`s were acted on (at `at`, seconds since the
        epoch; now by default). Returns once they are written.

        On a turn's way to the agent, so it does not queue behind the calls already waiting
        for the connection: the rows are written, in a transaction of their own, by whichever
        call starts next (group commit: everything recorded meanwhile goes in the same write).
        """
        now = time.time() if at is None else at
        rows = [
            {"event_id": event_id, "kind": kind, "handled_at": now} for event_id, kind in events
        ]
        if not rows:
            return
        with self._handled_lock:
            self._handled_rows.extend(rows)
        self._handled_queued += len(rows)
        target = self._handled_queued
        while self._handled_written < target:
            if self._limiter.statistics().tasks_waiting == 0:
                await self._run(_nothing)  # nobody else will start soon: write them now
            else:
                # A call that is waiting writes them when it starts. Looked at again after a
                # while in case that call was cancelled before it started.
                with trio.move_on_after(0.05):
                    await self._handled_lot.park()

    def _flush_handled(self) -> None:
        """In the worker thread: write the queued handled-event rows, and tell their waiters
        at once (not when the call that carried them returns)."""
        with self._handled_lock:
            rows, self._handled_rows = self._handled_rows, []
        if not rows:
            return
        try:
            with self._transaction() as conn:
                _insert_rows(conn, "handled_events", rows, replace=False, ignore=True)
        except BaseException:
            with self._handled_lock:  # for the next call to try again
                self._handled_rows[:0] = rows
            raise
        self._trio_token.run_sync_soon(self._handled_were_written, len(rows))

    def _handled_were_written(self, count: int) -> None:
        self._handled_written += count
        self._handled_lot.unpark_all()

    async def handled_events(self) -> dict[int, float]:
        """Every remembered event id, with when it was handled (seconds since the epoch)."""

        def query() -> dict[int, float]:
            cursor = self._db.conn.execute("SELECT event_id, handled_at FROM handled_events")
            return {int(event_id): float(at) for event_id, at in cursor}

        return await self._run(query)

    async def forget_handled_before(self, before: float) -> int:
        """Drop the events handled before `before` (seconds since the epoch); how many."""
        return await self._run(self._delete, "handled_events", "handled_at < ?", [before])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _take(self, table: str, order_by: str) -> list[dict[str, Any]]:
        with self._transaction() as conn:
            cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order_by}")
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, values, strict=True)) for values in cursor]
            conn.execute(f"DELETE FROM {table}")
        return rows

    def _replace(
        self, table: str, where: str | None, args: list[Any], rows: list[dict[str, Any]]
    ) -> None:
        """Delete the rows matching `where` (all when None) and insert `rows`, atomically."""
        with self._transaction() as conn:
            conn.execute(f"DELETE FROM {table}" + (f" WHERE {where}" if where else ""), args)
            _insert_rows(conn, table, rows, replace=False)

    def _upsert_all(self, table: str, rows: list[dict[str, Any]]) -> None:
        with self._transaction() as conn:
            _insert_rows(conn, table, rows, replace=True)


def _nothing() -> None:
    """A store call that does nothing but what every call does first."""


def _insert_rows(
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


def _open_database(path: Path) -> Database:
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
        conn.execute("PRAGMA foreign_keys = ON")
        before = conn.execute("PRAGMA user_version").fetchone()[0]
        after = migrate(conn)
        if after != before:
            log.info("database %s migrated from schema version %d to %d", path, before, after)
    except BaseException:
        conn.close()
        raise
    return Database(conn)


_Record = TypeVar("_Record", bound=attrs.AttrsInstance)


def _row(record: attrs.AttrsInstance) -> dict[str, Any]:
    """A record as a table row: its fields by name, paths as text, booleans as 0/1."""
    row = attrs.asdict(record, recurse=False)
    for name, value in row.items():
        if isinstance(value, Path):
            row[name] = str(value)
        elif isinstance(value, bool):
            row[name] = int(value)
    return row


def _record(cls: type[_Record], row: dict[str, Any]) -> _Record:
    """A table row as a record of `cls` (columns the record has no field for are ignored)."""
    values = {}
    for field in attrs.fields(cls):
        value = row[field.name]
        values[field.name] = bool(value) if field.type in ("bool", bool) else value
    return cls(**values)
