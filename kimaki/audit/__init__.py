"""The audit trail: what happened in project channels and to the bot's turns, kept apart.

`audit(...)` (`kimaki._audit`) is how any part records an event; this package keeps them:

- `_store`: the audit file `<data-dir>/audit.db` (its own SQLite file, WAL, 0600, its own schema
  version), `AuditStore` (written by the daemon, read read-only by `kimaki audit` and by the
  `/audit ask` agent's tool) and `AuditRow`;
- `_sink`: `AuditQueue` (the bounded queue installed as the daemon's sink; a full queue drops
  and counts), its writer task, redaction and truncation of every row, the daily retention
  sweep; `open_audit_trail` runs them;
- `_hook`: `AuditTurnHook`, the turns' part (started, tool calls and results, ended);
- `_discord`: `DiscordAuditor`, messages and threads of project channels from the gateway;
- `_tool`: `query_audit` (`AUDIT_TOOLS`), the audit agent's only tool, and its context;
- `_agent`: `AuditAgent`, `/audit ask`'s private, short-lived agent (the `AuditAsker`).
"""

from __future__ import annotations

from kimaki.audit._agent import (
    AuditAgent,
    AuditPlaces,
    read_only_trail,
    restricted_opencode_config,
)
from kimaki.audit._cli import print_audit
from kimaki.audit._discord import DiscordAuditor
from kimaki.audit._hook import AuditTurnHook
from kimaki.audit._sink import (
    DEFAULT_QUEUE_CAPACITY,
    DEFAULT_RETENTION_DAYS,
    MAX_TEXT,
    SWEEP_INTERVAL,
    AuditQueue,
    AuditTrail,
    clean_detail,
    open_audit_trail,
    sweep_retention,
)
from kimaki.audit._store import (
    AUDIT_FILE,
    AUDIT_SCHEMA_VERSION,
    AuditRow,
    AuditStore,
    AuditStoreError,
    audit_path,
)
from kimaki.audit._tool import AUDIT_TOOLS, QUERY_AUDIT, AuditReader, AuditToolContext
from kimaki.audit._when import SinceError, parse_since

__all__ = [
    "AUDIT_FILE",
    "AUDIT_SCHEMA_VERSION",
    "AUDIT_TOOLS",
    "DEFAULT_QUEUE_CAPACITY",
    "DEFAULT_RETENTION_DAYS",
    "MAX_TEXT",
    "QUERY_AUDIT",
    "SWEEP_INTERVAL",
    "AuditAgent",
    "AuditPlaces",
    "AuditQueue",
    "AuditReader",
    "AuditRow",
    "AuditStore",
    "AuditStoreError",
    "AuditToolContext",
    "AuditTrail",
    "AuditTurnHook",
    "DiscordAuditor",
    "SinceError",
    "audit_path",
    "clean_detail",
    "open_audit_trail",
    "parse_since",
    "print_audit",
    "read_only_trail",
    "restricted_opencode_config",
    "sweep_retention",
]
