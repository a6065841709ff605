"""The MCP policy: which catalog servers each project channel's agents get, and the tools the
servers offered when last scanned.

Read when an agent session or server starts and when a proxy asks for its plan, not per
message, so there is no cache: every read sees the last write.
"""

from __future__ import annotations

import json
import time
from typing import final

import attrs

from kimaki.store._database import Database
from kimaki.store._records import ScannedTool, ScanRecord, ServerPolicy

__all__ = ["McpPolicyStore"]


@final
@attrs.frozen
class McpPolicyStore:
    """The per-channel MCP policies and the scans, in `mcp_policies` and `mcp_scans`.

    A channel's policy goes with its record (`ON DELETE CASCADE`). The built-in `kimaki`
    server is always on and never stored here.
    """

    _db: Database = attrs.field(alias="db")

    async def policy(self, channel_id: int) -> dict[str, ServerPolicy]:
        """The servers `channel_id` enables, by name (a server not listed is off)."""

        def query() -> dict[str, ServerPolicy]:
            rows = self._db.rows("mcp_policies", "channel_id = ?", [channel_id], "server")
            return {
                row["server"]: ServerPolicy(row["mode"], json.loads(row["tools"])) for row in rows
            }

        return await self._db.run(query)

    async def set_policy(self, channel_id: int, server: str, policy: ServerPolicy | None) -> None:
        """Enable `server` for `channel_id` as `policy` says, or switch it off (None)."""
        if policy is None:
            where = "channel_id = ? AND server = ?"
            await self._db.run(self._db.delete, "mcp_policies", where, [channel_id, server])
            return
        row = {
            "channel_id": channel_id,
            "server": server,
            "mode": policy.mode,
            "tools": json.dumps(sorted(policy.tools)),
            "updated_at": time.time(),
        }
        await self._db.run(self._db.upsert, "mcp_policies", row, ("channel_id", "server"))

    async def scan(self, server: str) -> ScanRecord | None:
        """The last scan of `server`, if it was ever scanned."""
        row = await self._db.run(self._db.get, "mcp_scans", server)
        if row is None:
            return None
        tools = tuple(
            ScannedTool(str(tool["name"]), str(tool.get("description") or ""))
            for tool in json.loads(row["tools"])
        )
        return ScanRecord(server=row["server"], tools=tools, scanned_at=row["scanned_at"])

    async def put_scan(self, scan: ScanRecord) -> None:
        """Keep `scan` as its server's last (replacing the one before)."""
        row = {
            "server": scan.server,
            "tools": json.dumps([attrs.asdict(tool) for tool in scan.tools]),
            "scanned_at": scan.scanned_at,
        }
        await self._db.run(self._db.upsert, "mcp_scans", row, "server")
