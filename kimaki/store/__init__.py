"""The daemon's SQLite store: typed records in, typed records out; no SQL anywhere else.

`Store` is one facet per concern (`store.places`, `store.preferences`, `store.keys`,
`store.credentials`, `store.gateway`, `store.handover`, `store.handled`, `store.schedules`,
`store.mcp`, `store.memory`, `store.usage`) over one shared connection; each part of the daemon
is handed the facet it uses.
"""

from __future__ import annotations

from kimaki.store._credentials import Credentials
from kimaki.store._database import DatabaseStatistics, StoreClosedError
from kimaki.store._gateway import GatewayCheckpoint
from kimaki.store._handled import HandledEventLog
from kimaki.store._handover import Handover
from kimaki.store._keys import InteractionKeys
from kimaki.store._mcp import McpPolicyStore
from kimaki.store._memory import ChannelMemoryStore
from kimaki.store._places import Places
from kimaki.store._preferences import Preferences
from kimaki.store._records import (
    ChannelRecord,
    InteractionKey,
    McpMode,
    MemoryEntry,
    Preference,
    PreferenceScope,
    ProjectChannelKind,
    QueuedPrompt,
    RunningTurn,
    ScannedTool,
    ScanRecord,
    ScheduledTask,
    ServerPolicy,
    TaskKind,
    TaskRun,
    ThreadRecord,
    WorktreeRecord,
)
from kimaki.store._schedules import ScheduledTasks, UnknownChannelError
from kimaki.store._schema import LATEST_VERSION
from kimaki.store._store import Store
from kimaki.store._usage import Budget, BudgetPeriod, UsageRow, UsageRows, read_usage_rows

__all__ = [
    "LATEST_VERSION",
    "Budget",
    "BudgetPeriod",
    "ChannelMemoryStore",
    "ChannelRecord",
    "Credentials",
    "DatabaseStatistics",
    "GatewayCheckpoint",
    "HandledEventLog",
    "Handover",
    "InteractionKey",
    "InteractionKeys",
    "McpMode",
    "McpPolicyStore",
    "MemoryEntry",
    "Places",
    "Preference",
    "PreferenceScope",
    "Preferences",
    "ProjectChannelKind",
    "QueuedPrompt",
    "RunningTurn",
    "ScanRecord",
    "ScannedTool",
    "ScheduledTask",
    "ScheduledTasks",
    "ServerPolicy",
    "Store",
    "StoreClosedError",
    "TaskKind",
    "TaskRun",
    "ThreadRecord",
    "UnknownChannelError",
    "UsageRow",
    "UsageRows",
    "WorktreeRecord",
    "read_usage_rows",
]
