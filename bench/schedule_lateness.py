"""How late the task runner fires a task, with many tasks stored.

    python bench/schedule_lateness.py [--tasks 1000] [--window 20] [--runs 3]

A real store (SQLite in a temporary data dir) holds `--tasks` tasks; `--fire` of them (default
200) fall due at random moments of the next `--window` seconds, the rest much later (they are
there to be skipped over: the runner must find the next due task among all of them). The
runner is the daemon's own (`Schedules.run`) on the real clock; its `RunTarget` records the
wall-clock moment each run reaches it (a reminder posted, or a prompt queued), and the
lateness is that moment minus the task's time. Half the firing tasks are reminders, half
prompts whose turn is over at once.

Targets (docs/performance.md): median under 100 ms, p99 under 1 s with 1,000 stored tasks.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import trio

from kimaki.schedules import NewTask, RunResult, Schedules, StartedRun
from kimaki.store import ChannelRecord, ScheduledTask, Store

CHANNEL = 1_000_000_000_000_000_001


class RecordingTarget:
    """Where runs land: the wall-clock moment each task's run arrives, by task id."""

    def __init__(self) -> None:
        self.fired: dict[str, float] = {}
        self.all_fired = trio.Event()
        self.expected = 0

    def _record(self, key: str) -> None:
        if key not in self.fired:
            self.fired[key] = time.time()
            if len(self.fired) >= self.expected:
                self.all_fired.set()

    async def start_prompt(self, task: ScheduledTask, text: str) -> StartedRun:
        self._record(f"task-{task.task_id}")

        async def done() -> RunResult:
            return RunResult("answered", answer="done")

        return StartedRun(thread_id=CHANNEL + 1, done=done())

    async def interrupt(self, thread_id: int, notice: str) -> None:
        return None

    async def post(self, channel_id: int, content: str, *, mention_user_id: int | None) -> None:
        # A reminder's text ends with its tag (below), so the post is attributed.
        self._record(content.rsplit(" ", 1)[1])


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


async def one_run(tasks: int, fire: int, window: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with await Store.open(Path(tmp) / "kimaki.db") as store:
            await store.places.put_channel(ChannelRecord(CHANNEL, Path(tmp), guild_id=1, app_id=2))
            target = RecordingTarget()
            schedules = Schedules(store=store.schedules, target=target)
            start = time.time() + 2.0  # storing them all takes a moment
            due: dict[str, float] = {}
            rng = random.Random(7)
            for index in range(tasks):
                firing = index < fire
                at = start + rng.uniform(0, window) if firing else start + 86_400 + index
                remind = firing and index % 2 == 0
                made = await schedules.add(
                    NewTask(
                        channel_id=CHANNEL,
                        prompt=f"reminder tag-{index}" if remind else f"prompt {index}",
                        when=_iso(at),
                        created_by=0,
                        created_by_name="benchmark",
                        kind="remind" if remind else "prompt",
                    )
                )
                if firing:
                    key = f"tag-{index}" if remind else f"task-{made.task_id}"
                    due[key] = made.next_run_at
            target.expected = len(due)
            async with trio.open_nursery() as nursery:
                await nursery.start(schedules.run)
                with trio.move_on_after(window + 30):
                    await target.all_fired.wait()
                nursery.cancel_scope.cancel()
            missing = set(due) - set(target.fired)
            if missing:
                raise SystemExit(f"{len(missing)} tasks never fired")
            return [target.fired[key] - due[key] for key in due]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--fire", type=int, default=200)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        late = await one_run(args.tasks, args.fire, args.window)
        runs.append(
            {
                "median_ms": round(statistics.median(late) * 1000, 2),
                "p99_ms": round(_percentile(late, 0.99) * 1000, 2),
                "max_ms": round(max(late) * 1000, 2),
                "early": sum(1 for value in late if value < 0),
            }
        )
        print(json.dumps(runs[-1]))
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "fired": args.fire,
                "median_ms": statistics.median(run["median_ms"] for run in runs),
                "p99_ms": statistics.median(run["p99_ms"] for run in runs),
            }
        )
    )


if __name__ == "__main__":
    trio.run(main)
