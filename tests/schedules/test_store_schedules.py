"""The scheduled tasks' store facet as the daemon opens it (worker threads, real clock): the
migration keeps older tasks, a due run is claimed once, and the door runs a task on time."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import attrs
import trio
from schedules_harness import CHANNEL, RecordingTarget

from kimaki.schedules import Schedules
from kimaki.store import ChannelRecord, ScheduledTask, Store, TaskRun
from kimaki.store._schema import migrate, schema_version


async def test_tasks_stored_before_the_migration_keep_running(tmp_path: Path) -> None:
    path = tmp_path / "kimaki.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=6)
    conn.execute(
        "INSERT INTO channels (channel_id, directory, guild_id, app_id) VALUES (?, '/srv', 1, 2)",
        [CHANNEL],
    )
    conn.execute(
        "INSERT INTO scheduled_tasks (channel_id, prompt, schedule, next_run_at, created_by) "
        "VALUES (?, 'nightly', '0 3 * * *', 100.0, 5)",
        [CHANNEL],
    )
    conn.close()
    async with await Store.open(path) as store:
        (task,) = await store.schedules.list_scheduled_tasks()
        assert (task.kind, task.name, task.paused, task.reuse_thread) == (
            "prompt",
            "",
            False,
            False,
        )
        assert task.schedule == "0 3 * * *"
        assert task.task_id is not None
        assert await store.schedules.task_runs(task.task_id) == []
    conn = sqlite3.connect(path)
    assert schema_version(conn) >= 7
    conn.close()


async def test_a_due_run_is_claimed_once_and_runs_go_with_their_task(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "kimaki.sqlite") as store:
        await store.places.put_channel(
            ChannelRecord(channel_id=CHANNEL, directory="/srv", guild_id=1, app_id=2)
        )
        tasks = store.schedules
        task = await tasks.add_scheduled_task(
            ScheduledTask(channel_id=CHANNEL, prompt="p", next_run_at=100.0, created_by=1)
        )
        assert task.task_id is not None
        run = TaskRun(task.task_id, started_at=101.0, status="running")
        claims = []

        async def claim() -> None:
            claims.append(await tasks.claim_due_run(run, due_at=100.0, next_run_at=None))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(claim)
        won = [c for c in claims if c is not None]
        assert len(won) == 1
        assert won[0].run_id is not None
        await tasks.finish_run(won[0].run_id, status="answered", ended_at=130.0, thread_id=77)
        (recorded,) = await tasks.task_runs(task.task_id)
        assert (recorded.status, recorded.ended_at, recorded.thread_id) == ("answered", 130.0, 77)
        stored = await tasks.get_scheduled_task(task.task_id)
        assert stored is not None
        assert (stored.enabled, stored.last_status, stored.last_run_at) == (
            False,
            "answered",
            101.0,
        )
        assert await tasks.due_scheduled_tasks(1e12) == []
        assert await tasks.delete_scheduled_task(task.task_id)
        assert await tasks.task_runs(task.task_id) == []  # the history goes with its task


async def test_the_runner_fires_on_the_real_clock(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "kimaki.sqlite") as store:
        await store.places.put_channel(
            ChannelRecord(channel_id=CHANNEL, directory="/srv", guild_id=1, app_id=2)
        )
        target = RecordingTarget(time.time)
        door = Schedules(store=store.schedules, target=target)
        due = time.time() + 0.2
        # Stored as the command line would with the daemon down, then the runner starts.
        task = await store.schedules.add_scheduled_task(
            ScheduledTask(channel_id=CHANNEL, prompt="now-ish", next_run_at=due, created_by=0)
        )
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(door.run)
                await target.wait_for(lambda: len(target.prompts) == 1)
                target.prompts[0].finish()
                nursery.cancel_scope.cancel()
        assert target.prompts[0].at >= due
        assert target.prompts[0].at - due < 1.0
        assert attrs.evolve(target.prompts[0].task, next_run_at=due) == task
