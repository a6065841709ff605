"""Heap snapshots (SIGUSR1, or automatically near the memory limit) with tracemalloc.

A snapshot is two files in `<data-dir>/heap-snapshots/`: the gzipped tracemalloc snapshot (load
it with `pickle.load(gzip.open(path))` for `tracemalloc.Snapshot` analysis) and a text summary
of the top allocation sites. Tracing costs memory and time, so it is off unless `--trace-memory`
started it; the first SIGUSR1 without it says so in the summary and starts tracing, so the next
snapshot has allocation sites.

The limit is the cgroup's `memory.max` when systemd (or a container) sets one, else the
`--memory-limit` setting; the watcher compares the process's resident memory with 85 % of it,
and takes at most one automatic snapshot per 5 minutes.

And the start-up heap frozen out of the cyclic collector's sight (`freeze_start_up_heap`), so
that a full collection, a pause of the event loop, walks only what came after it.
"""

from __future__ import annotations

import datetime as dt
import gc
import gzip
import logging
import os
import pickle
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Final, final

import attrs
import trio

__all__ = [
    "HeapSnapshot",
    "MemoryWatcher",
    "cgroup_memory_limit",
    "freeze_start_up_heap",
    "parse_size",
    "resident_memory",
    "write_heap_snapshot",
]

log = logging.getLogger("kimaki.memory")

_TOP_SITES: Final = 30
_TRACE_FRAMES: Final = 10


def freeze_start_up_heap() -> int:
    """Once per process, when the daemon is connected: collect, then move every object alive
    into the collector's permanent generation; how many objects that was (0 when done before).

    What exists then (modules, the Discord models' compiled converters, the MCP SDK's schemas,
    the clients and caches) lives as long as the process, yet a full collection would walk all
    of it each time, and the event loop waits meanwhile: at 200 busy threads, 40–90 ms every
    few seconds, against 5–20 ms once frozen (see docs/performance.md). Reference counting
    still frees what is frozen; only a cycle among such objects would be kept.
    """
    if gc.get_freeze_count():
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@final
@attrs.frozen
class HeapSnapshot:
    snapshot_path: Path
    summary_path: Path
    was_tracing: bool


def write_heap_snapshot(directory: Path, *, reason: str) -> HeapSnapshot:
    """Write a snapshot and its summary now (blocking: call through `trio.to_thread`)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    snapshot_path = directory / f"heap-{stamp}.tracemalloc.gz"
    summary_path = directory / f"heap-{stamp}.txt"
    was_tracing = tracemalloc.is_tracing()
    lines = [
        f"kimaki heap snapshot, {stamp}, pid {os.getpid()}, reason: {reason}",
        f"resident memory: {_mib(resident_memory())}",
    ]
    if not was_tracing:
        tracemalloc.start(_TRACE_FRAMES)
        lines += [
            "",
            "tracemalloc was not tracing until now, so this snapshot has no allocation sites.",
            "Tracing has been started; take another snapshot (SIGUSR1) once the memory has",
            "grown, or start kimaki with --trace-memory to trace from boot.",
        ]
    snapshot = tracemalloc.take_snapshot()
    with gzip.open(snapshot_path, "wb") as file:
        pickle.dump(snapshot, file, protocol=pickle.HIGHEST_PROTOCOL)
    if was_tracing:
        stats = snapshot.statistics("lineno")
        traced, peak = tracemalloc.get_traced_memory()
        lines += [
            f"traced by tracemalloc: {_mib(traced)} (peak {_mib(peak)})",
            "",
            f"top {_TOP_SITES} allocation sites by size:",
        ]
        for stat in stats[:_TOP_SITES]:
            frame = stat.traceback[0]
            lines.append(
                f"{_mib(stat.size):>12}  {stat.count:>8} blocks  {frame.filename}:{frame.lineno}"
            )
    summary_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.chmod(snapshot_path, 0o600)
    os.chmod(summary_path, 0o600)
    return HeapSnapshot(snapshot_path, summary_path, was_tracing)


def resident_memory() -> int:
    """This process's resident set size in bytes (0 where /proc is absent)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def cgroup_memory_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """The cgroup v2 `memory.max` of this process, or None when there is no limit."""
    try:
        entries = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for entry in entries:
        hierarchy, _, path = entry.partition("::")
        if hierarchy != "0":
            continue
        try:
            raw = (root / path.lstrip("/") / "memory.max").read_text().strip()
        except OSError:
            return None
        return None if raw == "max" else int(raw)
    return None


def parse_size(text: str) -> int:
    """'512M', '2G', '1.5GiB', '1000000' → bytes (binary units). ValueError when unreadable."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = value[-1:]
    try:
        number = float(value.removesuffix(suffix) if suffix in units else value)
    except ValueError:
        number = 0
    if not number > 0:
        raise ValueError(f"not a size: {text!r} (use bytes, or a number with K, M, G or T)")
    return int(number * units.get(suffix, 1))


@final
class MemoryWatcher:
    """Takes a snapshot when resident memory passes `threshold` of the limit (rate-limited)."""

    def __init__(
        self,
        directory: Path,
        limit: int,
        *,
        threshold: float = 0.85,
        check_every: float = 10.0,
        min_interval: float = 300.0,
        measure: Callable[[], int] = resident_memory,
    ) -> None:
        self._directory = directory
        self._limit = limit
        self._threshold = threshold
        self._check_every = check_every
        self._min_interval = min_interval
        self._measure = measure
        self._last_snapshot: float | None = None
        self.snapshots: list[HeapSnapshot] = []

    async def run(self) -> None:
        while True:
            await self.check()
            await trio.sleep(self._check_every)

    async def check(self) -> HeapSnapshot | None:
        used = self._measure()
        if used < self._threshold * self._limit:
            return None
        now = trio.current_time()
        if self._last_snapshot is not None and now - self._last_snapshot < self._min_interval:
            return None
        self._last_snapshot = now
        reason = f"resident memory {_mib(used)} passed {self._threshold:.0%} of {_mib(self._limit)}"
        log.warning("%s: writing a heap snapshot", reason)
        snapshot = await trio.to_thread.run_sync(
            lambda: write_heap_snapshot(self._directory, reason=reason)
        )
        self.snapshots.append(snapshot)
        log.warning("heap snapshot written: %s", snapshot.summary_path)
        return snapshot


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
