"""Where the daemon's parts say what happened, for the audit trail.

A part records an event with `audit(kind, ...)`, the way it logs a line: it needs no handle on
the audit store, and recording never blocks and never fails (the audit trail must not slow or
break a turn). The events go to the sink installed for the running task tree
(`audit_sink(sink)`: the daemon installs the audit store's queue at its root, a test installs
whatever it reads back). With no sink installed, `audit` does nothing.

The sink is held in a context variable, so every task started under the place that installed
it (trio copies the context into each child task and worker thread) records into it, and two
daemons in one test process never mix their trails.

Kinds are dotted, subject first: `message.created`, `command.invoked`, `turn.ended`,
`tool.called`, `egress.refused`, ... (`docs/operations.md` lists them). `detail` holds
JSON-ready values; the sink truncates and redacts them before they are stored.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, final

import attrs

__all__ = ["AuditEvent", "AuditSink", "audit", "audit_sink", "current_audit_sink"]


@final
@attrs.frozen
class AuditEvent:
    """One thing that happened, as a part told it."""

    kind: str
    at: float
    """Wall-clock seconds since the epoch."""
    channel_id: int | None = None
    """The project channel (of a thread's event, too, where known)."""
    thread_id: int | None = None
    user_id: int | None = None
    """The person who caused it, when one did."""
    detail: Mapping[str, object] = attrs.field(factory=dict)


class AuditSink(Protocol):
    def put_nowait(self, event: AuditEvent) -> None:
        """Take `event` without blocking; never raises (a full sink counts what it drops)."""
        ...


_sink: contextvars.ContextVar[AuditSink | None] = contextvars.ContextVar(
    "kimaki_audit_sink", default=None
)


def audit(
    kind: str,
    *,
    channel_id: int | None = None,
    thread_id: int | None = None,
    user_id: int | None = None,
    **detail: object,
) -> None:
    """Record that `kind` happened, if anyone is keeping the trail."""
    sink = _sink.get()
    if sink is None:
        return
    sink.put_nowait(
        AuditEvent(
            kind=kind,
            at=time.time(),
            channel_id=channel_id,
            thread_id=thread_id,
            user_id=user_id,
            detail=detail,
        )
    )


def current_audit_sink() -> AuditSink | None:
    return _sink.get()


@contextmanager
def audit_sink(sink: AuditSink | None) -> Iterator[None]:
    """Record this task's (and its future children's) events into `sink` while inside."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
