"""The daemon's SQLite store: typed records in, typed records out; no SQL anywhere else."""

from __future__ import annotations

from kimaki.store._records import (
    AgentServerHandover,
    ChannelRecord,
    ChannelType,
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
from kimaki.store._schema import LATEST_VERSION
from kimaki.store._store import Store, StoreClosedError

__all__ = [
    "LATEST_VERSION",
    "AgentServerHandover",
    "ChannelRecord",
    "ChannelType",
    "GatewaySession",
    "InteractionKey",
    "Preference",
    "PreferenceScope",
    "QueuedPrompt",
    "RunningTurn",
    "ScheduledTask",
    "Store",
    "StoreClosedError",
    "ThreadRecord",
    "WorktreeRecord",
]
