from __future__ import annotations

import gc
import gzip
import pickle
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from kimaki._memory import (
    MemoryWatcher,
    cgroup_memory_limit,
    freeze_start_up_heap,
    parse_size,
    write_heap_snapshot,
)


@pytest.fixture
def no_tracing() -> Iterator[None]:
    was = tracemalloc.is_tracing()
    tracemalloc.stop()
    yield
    tracemalloc.stop()
    if was:
        tracemalloc.start()


def test_first_snapshot_without_tracing_says_so_and_starts_it(
    tmp_path: Path, no_tracing: None
) -> None:
    first = write_heap_snapshot(tmp_path, reason="SIGUSR1")
    assert not first.was_tracing
    assert tracemalloc.is_tracing()
    summary = first.summary_path.read_text()
    assert "reason: SIGUSR1" in summary
    assert "was not tracing until now" in summary

    hoard = [bytearray(1000) for _ in range(2000)]  # an allocation site to find
    second = write_heap_snapshot(tmp_path, reason="SIGUSR1")
    assert second.was_tracing
    summary = second.summary_path.read_text()
    assert "top 30 allocation sites by size" in summary
    assert "test_ops_memory.py" in summary
    with gzip.open(second.snapshot_path, "rb") as file:
        snapshot = pickle.load(file)
    assert isinstance(snapshot, tracemalloc.Snapshot)
    assert snapshot.statistics("lineno")
    assert second.snapshot_path.stat().st_mode & 0o777 == 0o600
    assert len(hoard) == 2000


async def test_watcher_snapshots_past_85_percent_at_most_every_5_minutes(
    tmp_path: Path, no_tracing: None, autojump_clock: trio.testing.MockClock
) -> None:
    used = 800

    watcher = MemoryWatcher(tmp_path, limit=1000, measure=lambda: used)
    assert await watcher.check() is None
    used = 860
    assert await watcher.check() is not None
    await trio.sleep(299)
    assert await watcher.check() is None
    await trio.sleep(2)
    assert await watcher.check() is not None
    assert len(watcher.snapshots) == 2
    assert _summaries(tmp_path) == 2


def _summaries(directory: Path) -> int:
    return len(list(directory.glob("*.txt")))


async def test_watcher_checks_on_its_own(autojump_clock: trio.testing.MockClock) -> None:
    checks: list[float] = []

    def measure() -> int:
        checks.append(trio.current_time())
        return 0

    watcher = MemoryWatcher(Path("/nonexistent"), limit=1000, measure=measure, check_every=10)
    start = trio.current_time()
    with trio.move_on_after(35):
        await watcher.run()
    assert [t - start for t in checks] == [0, 10, 20, 30]


def test_cgroup_v2_limit(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    root = tmp_path / "fs"
    (root / "system.slice" / "kimaki.service").mkdir(parents=True)
    limit_file = root / "system.slice" / "kimaki.service" / "memory.max"
    proc.write_text("0::/system.slice/kimaki.service\n")
    limit_file.write_text("536870912\n")
    assert cgroup_memory_limit(proc, root) == 512 * 2**20
    limit_file.write_text("max\n")
    assert cgroup_memory_limit(proc, root) is None
    proc.write_text("4:memory:/x\n")  # cgroup v1 only
    assert cgroup_memory_limit(proc, root) is None
    assert cgroup_memory_limit(tmp_path / "missing", root) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * 2**20),
        ("2G", 2 * 2**30),
        ("1.5GiB", int(1.5 * 2**30)),
        ("1000", 1000),
        ("64kb", 64 * 2**10),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_the_start_up_heap_is_frozen_once_out_of_the_collectors_sight() -> None:
    """A full collection then walks only what came after start-up (see docs/performance.md)."""
    gc.unfreeze()  # as a new process starts: nothing frozen yet
    try:
        start_up = [[n] for n in range(1000)]  # objects alive "at start-up"
        frozen = freeze_start_up_heap()
        assert frozen >= len(start_up)
        assert gc.get_freeze_count() == frozen
        collected = {id(item) for item in gc.get_objects()}  # what a collection walks
        assert not any(id(item) in collected for item in start_up)
        later = [0]
        assert id(later) in {id(item) for item in gc.get_objects()}
        assert freeze_start_up_heap() == 0  # once per process: a second call changes nothing
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
