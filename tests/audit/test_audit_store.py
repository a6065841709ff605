"""The audit file: what is stored, how it is found, who can change it, and what it forgets."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
import trio

from kimaki._audit import AuditEvent, audit, audit_sink
from kimaki._redact import register_secret
from kimaki.audit import (
    AUDIT_SCHEMA_VERSION,
    MAX_TEXT,
    AuditQueue,
    AuditStore,
    AuditStoreError,
    clean_detail,
    open_audit_trail,
    sweep_retention,
)


def _event(kind: str, at: float, **fields: object) -> AuditEvent:
    ids = {
        name: fields.pop(name) for name in ("channel_id", "thread_id", "user_id") if name in fields
    }
    return AuditEvent(kind=kind, at=at, detail=fields, **ids)  # type: ignore[arg-type]


async def test_the_file_is_private_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with await AuditStore.open(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == AUDIT_SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_a_newer_schema_is_refused_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {AUDIT_SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(AuditStoreError, match="newer kimaki"):
        await AuditStore.open(path)


async def test_query_filters_newest_first(tmp_path: Path) -> None:
    async with await AuditStore.open(tmp_path / "audit.db") as store:
        await store.write(
            [
                _event("message.created", 100.0, channel_id=1, user_id=7, content="hello there"),
                _event("turn.started", 101.0, channel_id=1, thread_id=10, user_id=7),
                _event("turn.ended", 102.0, channel_id=1, thread_id=10, stop_reason="end_turn"),
                _event("turnip.sold", 103.0, channel_id=1),
                # A thread's event that names no channel belongs to it all the same.
                _event("permission.asked", 104.0, thread_id=10, permission="bash"),
                _event("message.created", 105.0, channel_id=2, user_id=8, content="elsewhere"),
                _event("message.deleted", 106.0, channel_id=1, message_id=5),
            ]
        )
        kinds = lambda rows: [row.kind for row in rows]  # noqa: E731
        assert kinds(await store.query(channel_id=1)) == [
            "message.deleted",
            "permission.asked",
            "turnip.sold",
            "turn.ended",
            "turn.started",
            "message.created",
        ]
        # A thread sees only its own.
        assert kinds(await store.query(channel_id=10)) == [
            "permission.asked",
            "turn.ended",
            "turn.started",
        ]
        # Kinds match by prefix at a dot: "turn" is not "turnip".
        assert kinds(await store.query(kinds=["turn"])) == ["turn.ended", "turn.started"]
        assert kinds(await store.query(kinds=["turn.ended", "message.deleted"])) == [
            "message.deleted",
            "turn.ended",
        ]
        assert kinds(await store.query(user_id=8)) == ["message.created"]
        assert [row.detail["content"] for row in await store.query(text="HELLO")] == ["hello there"]
        assert kinds(await store.query(text="stop_reason")) == ["turn.ended"]
        assert kinds(await store.query(since=104.0, until=106.0)) == [
            "message.created",
            "permission.asked",
        ]
        assert kinds(await store.query(limit=2)) == ["message.deleted", "message.created"]
        # LIKE's wildcards are text, not patterns.
        assert await store.query(text="%") == []
        (row,) = await store.query(kinds=["turn.started"])
        assert (row.channel_id, row.thread_id, row.user_id, row.at) == (1, 10, 7, 101.0)


async def test_read_only_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with pytest.raises(AuditStoreError, match="no audit file"):
        await AuditStore.open_read_only(path)
    async with await AuditStore.open(path) as writer:
        await writer.write([_event("daemon.started", 1.0)])
        async with await AuditStore.open_read_only(path) as reader:
            assert [row.kind for row in await reader.query()] == ["daemon.started"]
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await reader.write([_event("forged", 2.0)])
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await reader.delete_older_than(10.0)
        assert await writer.count() == 1


def test_details_are_redacted_and_bounded() -> None:
    register_secret("hunter2-hunter2-secret", "MY_TEST_TOKEN")
    cleaned = clean_detail(
        {
            "result": "the key is hunter2-hunter2-secret, ok",
            "api_key": "plain-looking",
            "arguments": "x" * (MAX_TEXT + 500),
            "nested": {"env": ["OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx"]},
            "path": Path("/tmp/x"),
            "count": 3,
        }
    )
    assert cleaned["result"] == "the key is [REDACTED:MY_TEST_TOKEN], ok"
    assert cleaned["api_key"] == "[REDACTED]"
    arguments = cleaned["arguments"]
    assert isinstance(arguments, str)
    assert arguments.startswith("x" * MAX_TEXT)
    assert arguments.endswith("[500 more characters]")
    assert "sk-abcdef" not in str(cleaned["nested"])
    assert cleaned["path"] == "/tmp/x"
    assert cleaned["count"] == 3


async def test_rows_are_written_redacted(tmp_path: Path) -> None:
    register_secret("correct-horse-battery", "HORSE_PASSWORD")
    async with open_audit_trail(tmp_path / "audit.db") as trail:
        with audit_sink(trail.queue):
            audit("tool.finished", thread_id=3, tool="bash", result="correct-horse-battery")
        await trail.queue.settle()
        (row,) = await trail.store.query()
    assert row.detail == {"tool": "bash", "result": "[REDACTED:HORSE_PASSWORD]"}


async def test_a_full_queue_drops_counts_and_says_so(tmp_path: Path) -> None:
    async with open_audit_trail(tmp_path / "audit.db", capacity=3) as trail:
        trail.queue.paused = True
        with audit_sink(trail.queue):
            for number in range(5):
                audit("message.created", channel_id=1, number=number)  # never blocks
        assert trail.queue.dropped_total == 2
        trail.queue.resume()
        await trail.queue.settle()
        rows = list(reversed(await trail.store.query()))
    assert [row.detail.get("number") for row in rows[:3]] == [0, 1, 2]
    assert rows[3].kind == "audit.dropped"
    assert rows[3].detail == {"count": 2}


async def test_events_from_worker_threads_are_kept(tmp_path: Path) -> None:
    async with open_audit_trail(tmp_path / "audit.db") as trail:
        with audit_sink(trail.queue):
            await trio.to_thread.run_sync(lambda: audit("egress.sent", name="a.txt"))
        await trail.queue.settle()
        assert [row.kind for row in await trail.store.query()] == ["egress.sent"]


async def test_what_is_queued_is_written_when_the_trail_closes(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    queue = AuditQueue()
    with audit_sink(queue):
        audit("daemon.started", version="test")  # before the file could be opened
    async with open_audit_trail(path, queue=queue):
        with audit_sink(queue):
            audit("daemon.stopping", signal="SIGTERM")
    async with await AuditStore.open_read_only(path) as reader:
        assert [row.kind for row in await reader.query()] == ["daemon.stopping", "daemon.started"]


async def test_retention_sweeps_daily(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    day = 86400.0
    start = 1_000_000_000.0

    def now() -> float:  # wall time follows the trio clock
        return start + trio.current_time()

    async with await AuditStore.open(tmp_path / "audit.db") as store:
        await store.write(
            [
                _event("old", start - 91 * day),
                _event("recent", start - 89.5 * day),
                _event("new", start - 1),
            ]
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sweep_retention(store, 90, now=now, task_status=task_status)
            )
            await trio.sleep(1)  # the first sweep runs at once
            assert [row.kind for row in await store.query()] == ["new", "recent"]
            await trio.sleep(day)  # a day later "recent" is past 90 days
            assert [row.kind for row in await store.query()] == ["new"]
            nursery.cancel_scope.cancel()


async def test_retention_zero_keeps_everything(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AuditStore.open(tmp_path / "audit.db") as store:
        await store.write([_event("ancient", 1.0)])
        with trio.move_on_after(3 * 86400.0):
            await sweep_retention(store, 0)
        assert await store.count() == 1
