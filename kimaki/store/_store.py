"""The store: the daemon's database, one facet per concern, over one shared connection.

Each part of the daemon is handed only the facet it uses (the gateway its checkpoint, the
handled-events record its log, the project operations the places, ...); all of them share one
`Database`, so there is still one connection, one writer, and calls off the event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, final

import attrs

from kimaki.store._credentials import Credentials
from kimaki.store._database import Database, DatabaseStatistics
from kimaki.store._gateway import GatewayCheckpoint
from kimaki.store._handled import HandledEventLog
from kimaki.store._handover import Handover
from kimaki.store._keys import InteractionKeys
from kimaki.store._mcp import McpPolicyStore
from kimaki.store._memory import ChannelMemoryStore
from kimaki.store._places import Places
from kimaki.store._preferences import Preferences
from kimaki.store._schedules import ScheduledTasks
from kimaki.store._usage import UsageRows

__all__ = ["Store"]


@final
@attrs.frozen
class Store:
    """The daemon's database by concern, opened and closed together.

    Open with `await Store.open(path)` (an async context manager, closing on exit).
    """

    places: Places
    """Project channels, thread records and worktrees: where a message leads."""
    preferences: Preferences
    """Model and agent choices by scope."""
    keys: InteractionKeys
    """What the custom ids of buttons and menus stand for."""
    credentials: Credentials
    """The bot token."""
    gateway: GatewayCheckpoint
    """The gateway session, to RESUME after a restart."""
    handover: Handover
    """What an in-place restart hands to the next process."""
    handled: HandledEventLog
    """The gateway events acted on, and the write that starts a turn."""
    schedules: ScheduledTasks
    """Prompts to send at a time."""
    mcp: McpPolicyStore
    """Which MCP servers each project channel's agents get, and what the servers offer."""
    memory: ChannelMemoryStore
    """Each project channel's standing instructions, and its thread-context switch."""
    usage: UsageRows
    """What each finished turn used, and the channels' budgets."""
    _db: Database = attrs.field(alias="db", repr=False)

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating with mode 0600) and migrate the database at `path`."""
        db = await Database.open(path)
        return cls(
            places=Places(db),
            preferences=Preferences(db),
            keys=InteractionKeys(db),
            credentials=Credentials(db),
            gateway=GatewayCheckpoint(db),
            handover=Handover(db),
            handled=HandledEventLog(db),
            schedules=ScheduledTasks(db),
            mcp=McpPolicyStore(db),
            memory=ChannelMemoryStore(db),
            usage=UsageRows(db),
            db=db,
        )

    @property
    def path(self) -> Path:
        return self._db.path

    def statistics(self) -> DatabaseStatistics:
        return self._db.statistics()

    async def checkpoints(self) -> NoReturn:
        """The store's upkeep, to run beside whatever writes through it for long: keeps the
        write-ahead log short without holding up the writes (see `Database.checkpoints`)."""
        await self._db.checkpoints()

    async def aclose(self) -> None:
        await self._db.aclose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
