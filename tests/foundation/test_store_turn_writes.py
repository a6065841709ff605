"""The writes on a turn's way to the agent: committed on the event loop when the connection is
free, never waiting there for another process, with the write-ahead log kept short beside them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from kimaki.store import HandledEventLog
from kimaki.store._database import Database

_WAL_HEADER, _FRAME_HEADER, _PAGE = 32, 24, 4096


def wal_frames(path: Path) -> int:
    """How many frames the write-ahead log file holds room for (its high-water mark: SQLite
    reuses the file from its start after a checkpoint rather than shrinking it)."""
    wal = path.with_name(path.name + "-wal")
    size = wal.stat().st_size if wal.exists() else 0
    return max(0, size - _WAL_HEADER) // (_FRAME_HEADER + _PAGE)


def handled_ids(path: Path) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT event_id FROM handled_events")}
    finally:
        conn.close()


async def test_a_turn_write_is_committed_on_the_loop_when_the_connection_is_free(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "db")
    try:
        log = HandledEventLog(db)
        await log.record_handled([(1, "message")])
        await log.record_handled([(2, "message")])
        assert db.statistics().loop_commits == 2
        # Committed: another process sees them.
        assert handled_ids(tmp_path / "db") == {1, 2}
    finally:
        await db.aclose()


async def test_a_turn_write_does_not_hold_the_loop_while_another_process_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    db = await Database.open(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        log = HandledEventLog(db)
        other.execute("BEGIN IMMEDIATE")  # another process (a CLI command) holds the write lock
        written = trio.Event()

        async def write() -> None:
            await log.record_handled([(7, "message")])
            written.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            # Were the write waiting for the lock on the loop (the busy timeout is seconds),
            # this task could not run until it failed; it runs, and the write is waiting.
            await trio.testing.wait_all_tasks_blocked()
            assert not written.is_set()
            assert db.statistics().loop_commits == 0
            other.execute("COMMIT")
        assert written.is_set()
        assert handled_ids(path) == {7}
    finally:
        other.close()
        await db.aclose()


@pytest.mark.parametrize("checkpointer", [True, False], ids=["checkpointer", "in-passing"])
async def test_the_write_ahead_log_stays_short(tmp_path: Path, checkpointer: bool) -> None:
    """Loop commits never checkpoint (that would hold the loop for the copy and its fsyncs):
    the store's `checkpoints()` task does, beside the writes, or without it the worker thread
    in passing. Either way the log does not grow with every write."""
    path = tmp_path / "db"
    writes = 600
    db = await Database.open(path, checkpoint_after=20)
    try:
        log = HandledEventLog(db)
        async with trio.open_nursery() as nursery:
            if checkpointer:
                nursery.start_soon(db.checkpoints)
            for event_id in range(writes):
                await log.record_handled([(event_id, "message")])
                await trio.lowlevel.checkpoint()  # as between turns: the checkpointer may run
            nursery.cancel_scope.cancel()
        assert db.statistics().checkpoints >= 1
        # Each write is at least one frame: without checkpoints the log would hold them all.
        assert wal_frames(path) < writes // 2
        assert handled_ids(path) == set(range(writes))
    finally:
        await db.aclose()


async def test_the_checkpointer_takes_its_turn_once_the_log_has_grown(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "db", checkpoint_after=20)
    try:
        log = HandledEventLog(db)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.checkpoints)
            for event_id in range(19):
                await log.record_handled([(event_id, "message")])
            await trio.testing.wait_all_tasks_blocked()
            assert db.statistics().checkpoints == 0  # not due: left alone
            await log.record_handled([(19, "message")])
            await trio.testing.wait_all_tasks_blocked()  # it has started one
            nursery.cancel_scope.cancel()  # ends the task once that one is over
        statistics = db.statistics()
        assert statistics.checkpoints == 1
        assert statistics.commits_since_checkpoint == 0
        assert wal_frames(tmp_path / "db") > 0  # the log file is kept, to be written over
    finally:
        await db.aclose()
