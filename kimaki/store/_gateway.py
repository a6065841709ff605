"""The gateway session's checkpoint, so a restarted daemon RESUMEs instead of identifying."""

from __future__ import annotations

import sqlite3
import time
from typing import final

import attrs

from kimaki.discord.gateway import GatewaySession
from kimaki.store._database import Database, from_row, insert_rows, to_row

__all__ = ["GatewayCheckpoint"]


@final
@attrs.frozen
class GatewayCheckpoint:
    """Where the gateway keeps its session between runs (a `GatewaySessionStore`)."""

    _db: Database = attrs.field(alias="db")

    async def load_gateway_session(self) -> GatewaySession | None:
        row = await self._db.run(self._db.get, "gateway_session", 1)
        if row is None or row["sequence"] is None:
            return None
        return from_row(GatewaySession, row)

    async def save_gateway_session(self, session: GatewaySession | None) -> None:
        """Remember the gateway session for RESUME after a restart; None forgets it.

        Saved every few events while messages arrive, so as a one-row write committed with
        the turns' (a worker-thread call would wait for the GIL behind the busy loop and hold
        the connection meanwhile, and every turn starting would wait for it)."""
        if session is None:
            await self._db.write_together(_forget_session)
            return
        row = {"id": 1, **to_row(session), "updated_at": time.time()}
        await self._db.write_together(
            lambda conn: insert_rows(conn, "gateway_session", [row], replace=True)
        )


def _forget_session(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM gateway_session WHERE id = 1")
