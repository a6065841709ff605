"""The audit trail's queue, its writer and its retention sweep.

`audit(...)` anywhere in the daemon puts an event into `AuditQueue` (installed as the task
tree's sink, `kimaki._audit.audit_sink`); one writer task takes what is queued, redacts and
truncates it, and writes it in one transaction. A turn never waits on the audit file: the queue
is bounded, and when it is full an event is counted and dropped; once the writer has made room
again, the count is recorded as an `audit.dropped` event, so the trail says it has a hole.

`put_nowait` may be called from a worker thread too (a context copied into `trio.to_thread`),
so it touches no trio object directly: the deque is thread-safe, and the writer is woken
through the trio token.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, final

import attrs
import trio

from kimaki._audit import AuditEvent
from kimaki._redact import REDACTED, is_secret_name, redact
from kimaki.audit._store import AuditStore

__all__ = [
    "DEFAULT_QUEUE_CAPACITY",
    "DEFAULT_RETENTION_DAYS",
    "MAX_TEXT",
    "SWEEP_INTERVAL",
    "AuditQueue",
    "AuditTrail",
    "clean_detail",
    "open_audit_trail",
    "sweep_retention",
]

log = logging.getLogger("kimaki.audit")

DEFAULT_QUEUE_CAPACITY: Final = 10_000
DEFAULT_RETENTION_DAYS: Final = 90
SWEEP_INTERVAL: Final = 24 * 3600.0
MAX_TEXT: Final = 2000
"""Characters kept of one text value of an event (a tool's arguments or result, a message)."""
_MAX_ITEMS: Final = 50
_MAX_DEPTH: Final = 6
_BATCH: Final = 500
_FLUSH_ON_EXIT: Final = 5.0


def clean_detail(detail: Mapping[str, object]) -> dict[str, object]:
    """`detail` as it may be stored: JSON values only, every text redacted and bounded, the
    values of secret-named fields replaced."""
    cleaned = _clean(dict(detail), 0)
    assert isinstance(cleaned, dict)
    return cleaned


def _clean(value: object, depth: int) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _text(value)
    if depth >= _MAX_DEPTH:
        return _text(repr(value))
    if isinstance(value, Mapping):
        cleaned: dict[str, object] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= _MAX_ITEMS:
                cleaned["…"] = f"{len(value) - _MAX_ITEMS} more"
                break
            name = str(key)
            if isinstance(item, str) and is_secret_name(name) and item:
                cleaned[name] = REDACTED
            else:
                cleaned[name] = _clean(item, depth + 1)
        return cleaned
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        kept: list[object] = [_clean(item, depth + 1) for item in items[:_MAX_ITEMS]]
        if len(items) > _MAX_ITEMS:
            kept.append(f"… {len(items) - _MAX_ITEMS} more")
        return kept
    return _text(str(value))


def _text(text: str) -> str:
    # Redacted whole first, so that the cut cannot split a secret and let its head through.
    text = redact(text)
    if len(text) > MAX_TEXT:
        return f"{text[:MAX_TEXT]}… [{len(text) - MAX_TEXT} more characters]"
    return text


@final
class AuditQueue:
    """The bounded queue between `audit(...)` and the writer (`kimaki._audit.AuditSink`)."""

    def __init__(self, capacity: int = DEFAULT_QUEUE_CAPACITY) -> None:
        self.capacity = capacity
        self._events: deque[AuditEvent] = deque()
        self._lock = threading.Lock()
        self._dropped = 0  # since the last `audit.dropped` event
        self.dropped_total = 0
        self._queued = 0  # ever accepted
        self._written = 0  # ever written (or given up on)
        self._token = trio.lowlevel.current_trio_token()
        self._wake = trio.Event()
        self._progress = trio.lowlevel.ParkingLot()
        self._arrivals = trio.lowlevel.ParkingLot()
        self.paused = False
        """While True the writer writes nothing (tests fill the queue with it)."""

    def put_nowait(self, event: AuditEvent) -> None:
        """Take `event`, or count it as dropped when the queue is full. Never blocks or raises."""
        with self._lock:
            if len(self._events) >= self.capacity:
                self._dropped += 1
                self.dropped_total += 1
                return
            self._events.append(event)
            self._queued += 1
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._notify)

    def __len__(self) -> int:
        return len(self._events)

    @property
    def accepted(self) -> int:
        """Events ever accepted (not dropped)."""
        return self._queued

    def _notify(self) -> None:
        self._wake.set()
        self._arrivals.unpark_all()

    async def next_arrival(self) -> None:
        """Until another event is queued (tests waiting for an event recorded elsewhere)."""
        await self._arrivals.park()

    def _take(self) -> tuple[list[AuditEvent], int]:
        with self._lock:
            count = min(len(self._events), _BATCH)
            batch = [self._events.popleft() for _ in range(count)]
            dropped, self._dropped = self._dropped, 0
        return batch, dropped

    async def settle(self) -> None:
        """Until every event accepted so far is written (for tests and an orderly stop)."""
        target = self._queued
        while self._written < target:
            self._wake.set()
            await self._progress.park()

    def resume(self) -> None:
        self.paused = False
        self._wake.set()

    async def run(
        self, store: AuditStore, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer: write what is queued until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.write_pending(store)

    async def write_pending(self, store: AuditStore) -> None:
        """Write everything queued now (in batches), and the dropped count if any."""
        while not self.paused:
            batch, dropped = self._take()
            if not batch and not dropped:
                return
            rows = [_stored(event) for event in batch]
            if dropped:
                # Room has returned (this batch was just taken): say how much was lost.
                log.warning("the audit queue was full: %d event(s) dropped", dropped)
                rows.append(
                    AuditEvent(kind="audit.dropped", at=time.time(), detail={"count": dropped})
                )
            try:
                await store.write(rows)
            except Exception:
                # The trail must not take the daemon down; the log says what was lost.
                log.exception("could not write %d audit event(s)", len(rows))
            self._written += len(batch)
            self._progress.unpark_all()


def _stored(event: AuditEvent) -> AuditEvent:
    return attrs.evolve(event, kind=event.kind[:100], detail=clean_detail(event.detail))


async def sweep_retention(
    store: AuditStore,
    retention_days: float,
    *,
    interval: float = SWEEP_INTERVAL,
    now: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Forget events older than `retention_days` now, then every `interval` seconds (daily).

    `retention_days` of 0 or less keeps everything.
    """
    task_status.started()
    while True:
        if retention_days > 0:
            try:
                swept = await store.delete_older_than(now() - retention_days * 86400.0)
            except Exception:
                log.exception("the audit retention sweep failed")
            else:
                if swept:
                    log.info("audit: forgot %d event(s) older than %g days", swept, retention_days)
        await trio.sleep(interval)


@final
@attrs.frozen
class AuditTrail:
    """The open audit file and the queue its writer drains (install `queue` as the sink)."""

    store: AuditStore
    queue: AuditQueue


@asynccontextmanager
async def open_audit_trail(
    path: Path,
    *,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    capacity: int = DEFAULT_QUEUE_CAPACITY,
    sweep_interval: float = SWEEP_INTERVAL,
    now: Callable[[], float] = time.time,
    queue: AuditQueue | None = None,
) -> AsyncIterator[AuditTrail]:
    """Open the audit file at `path`, run its writer and its daily sweep until the block ends;
    what is still queued then is written (for a few seconds at most) before the file closes.

    `queue`: one made (and installed as the sink) before the file could be opened, whose
    events so far are written first; else a new one of `capacity`.
    """
    async with await AuditStore.open(path) as store, trio.open_nursery() as nursery:
        trail = AuditTrail(store, queue if queue is not None else AuditQueue(capacity))
        await nursery.start(trail.queue.run, store)
        await nursery.start(
            lambda task_status: sweep_retention(
                store,
                retention_days,
                interval=sweep_interval,
                now=now,
                task_status=task_status,
            )
        )
        try:
            yield trail
        finally:
            with trio.move_on_after(_FLUSH_ON_EXIT) as scope:
                scope.shield = True
                trail.queue.paused = False
                await trail.queue.write_pending(store)
            nursery.cancel_scope.cancel()
