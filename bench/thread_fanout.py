"""Many threads at once: routing latency and the memory a thread runtime holds.

    python bench/thread_fanout.py [--threads 200] [--rounds 5]

The Discord emulator and the message driver run here; the bot runs in a child process
(`bench/_fanout_bot.py`: the daemon's own wiring, `kimaki.bot.serve_bot`, with the fake
in-memory engine whose agent is done at once), so the emulator's work is not counted as the
bot's and the child's memory is the bot's alone.

- **latency**: `--threads` threads each get a message, `--rounds` times, arriving at `--rate`
  messages per second across threads (200 threads, 200 per second: every thread busy at
  once). Measured from MESSAGE_CREATE leaving the emulator (written to the bot's socket) to the
  prompt reaching the engine
  (`session.prompt()` called): gateway, dispatcher, router, store lookups, thread runtime,
  prompt building. Both ends stamp `time.monotonic()`. Target: p99 ≤ 5 ms on 2 cores.
  Then once as a true burst (one message per thread in the same instant): the median and the
  last arrival show how long the bot takes to drain it.
- **memory per idle runtime**: the Python heap with every runtime idle, minus the same once
  all were evicted, divided by their number (tracemalloc, in a second run, since tracing slows
  everything down). Target: ≤ 30 KB. RSS cannot show it: memory freed on eviction stays in
  Python's arenas, so the difference in RSS is below a page per runtime.
- **after eviction**: RSS once every runtime was evicted, against the baseline taken before any
  runtime existed (after a warm-up that made the threads' records and sessions). Target:
  within 5 %.
- **store calls per routed message**, over the timed rounds: reads of channel and thread
  records (a message's place: 2, from the write-through caches), preference lookups (1 per
  turn), calls that go to the database's worker thread (none once the records are cached),
  and commits made on the event loop (the turn's writes: its start, its end, its usage row,
  and the gateway's checkpoint, grouped when they coincide).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from kimaki.testing.discord import open_discord_emulator

BOT = Path(__file__).with_name("_fanout_bot.py")


class Child:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            data = await self.process.stdout.receive_some()
            if not data:
                raise RuntimeError("the bot process exited")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(command.encode() + b"\n")
        return await self.line()


async def one_run(threads: int, rounds: int, rate: float, *, trace: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_discord_emulator(
            enforce_rate_limits=False, validate_requests=False
        ) as emulator:
            emulator.wait_timeout = None
            space = emulator.create_workspace()
            channel = next(iter(space.channels.values()))
            alice = space.users["alice"]
            env = {**os.environ, "FANOUT_IDLE": "5", "PYTHONPATH": os.getcwd()}
            if trace:
                env["FANOUT_TRACE"] = "1"
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    str(BOT),
                    emulator.api_url,
                    emulator.token,
                    channel["id"],
                    space.guild["id"],
                    tmp,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            child = Child(process)
            try:
                await child.line()  # ready
                thread_ids = [
                    alice.start_thread(channel["id"], f"thread {n}")["id"] for n in range(threads)
                ]
                # Warm up (records, sessions), then let those runtimes go: the baseline.
                for thread_id in thread_ids:
                    alice.send_message(thread_id, "warm up")
                await child.ask(f"wait-prompts {threads}")
                baseline = await child.ask("wait-evicted")
                calls_before = baseline["store_calls"]

                sent: dict[str, float] = {}
                arrived: dict[str, float] = {}

                def left_emulator(text: str) -> None:
                    payload = json.loads(text)
                    if payload.get("t") == "MESSAGE_CREATE":
                        sent.setdefault(payload["d"]["id"], time.monotonic())

                emulator.gateway.on_event_sent = left_emulator
                for round_number in range(rounds):
                    # Every thread gets a message, arrivals spread evenly at `rate` per second
                    # across threads (busy people, all at once, but not in the same microsecond).
                    for thread_id in thread_ids:
                        alice.send_message(thread_id, f"round {round_number}")
                        await trio.sleep(1 / rate)
                    report = await child.ask(f"wait-prompts {threads * (round_number + 2)}")
                    arrived.update(report["prompts"])
                calls_after = report["store_calls"]
                # And once as a true burst: one message per thread in the same instant.
                for thread_id in thread_ids:
                    alice.send_message(thread_id, "burst")
                report = await child.ask(f"wait-prompts {threads * (rounds + 2)}")
                burst = {m: report["prompts"][m] - sent[m] for m in report["prompts"]}
                idle = await child.ask("stats")
                if os.environ.get("FANOUT_STAMPS") and not trace:
                    for key in ("dispatch", "turn"):
                        lags = sorted(
                            idle["stamps"][m][key] - sent[m]
                            for m in arrived
                            if key in idle["stamps"].get(m, {})
                        )
                        print(key, statistics.median(lags), lags[-1])
                evicted = await child.ask("wait-evicted")
            finally:
                # End of stdin ends the child cleanly (a profiler it runs under can write).
                assert process.stdin is not None
                await process.stdin.aclose()
                with trio.move_on_after(10):
                    await process.wait()
                process.kill()
                await process.wait()
    latencies = sorted(arrived[m] - sent[m] for m in arrived)
    active = idle["active_runtimes"]
    figures = {
        "messages": float(len(latencies)),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "max_ms": latencies[-1] * 1000,
        "burst_p50_ms": statistics.median(burst.values()) * 1000,
        "burst_last_ms": max(burst.values()) * 1000,
        "idle_runtimes": float(active),
        "baseline_rss_mb": baseline["rss"] / 2**20,
        "evicted_rss_mb": evicted["rss"] / 2**20,
        "evicted_vs_baseline_pct": (evicted["rss"] - baseline["rss"]) / baseline["rss"] * 100,
    }
    for name in ("place_reads", "preference_reads", "database_calls", "loop_commits"):
        figures[f"{name}_per_message"] = (calls_after[name] - calls_before[name]) / len(arrived)
    if trace:
        figures = {
            "heap_per_runtime_kb": (idle["heap"] - evicted["heap"]) / active / 1024,
            "heap_after_eviction_vs_baseline_kb": (evicted["heap"] - baseline["heap"]) / 1024,
        }
    return figures


async def run(threads: int, rounds: int, rate: float) -> dict[str, float]:
    figures = await one_run(threads, rounds, rate, trace=False)
    figures.update(await one_run(threads, 1, rate, trace=True))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    args = parser.parse_args()
    for name, value in trio.run(run, args.threads, args.rounds, args.rate).items():
        print(f"{name:>36}: {value:.2f}")


if __name__ == "__main__":
    main()
