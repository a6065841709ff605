"""The daemon's SQLite store: typed records in, typed records out; no SQL anywhere else."""

from __future__ import annotations

from kimaki.store._records import (
    ChannelRecord,
    ChannelType,
    GatewaySession,
    InteractionKey,
    Preference,
    PreferenceScope,
    ScheduledTask,
    ThreadRecord,
    WorktreeRecord,
)
from kimaki.store._schema import LATEST_VERSION
from kimaki.store._store import Store, StoreClosedError

__all__ = [
    "LATEST_VERSION",
    "ChannelRecord",
    "ChannelType",
    "GatewaySession",
    "InteractionKey",
    "Preference",
    "PreferenceScope",
    "ScheduledTask",
    "Store",
    "StoreClosedError",
    "ThreadRecord",
    "WorktreeRecord",
]
