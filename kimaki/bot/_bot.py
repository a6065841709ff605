"""The bot: what turns Discord events into agent sessions, and agent events into Discord.

```
Bot.run (a nursery under the daemon's Discord nursery)
├─ Router ........ MESSAGE_CREATE (in gateway order) → thread → ThreadRuntimes.submit
├─ Interactions .. INTERACTION_CREATE (one task each, answered within 3 s)
├─ Threads ....... thread runtimes; one ThreadTurns (the TurnHandler) per active thread:
│                  engine session ⇄ renderer ⇄ ThreadWriter (ordered delivery), asks
├─ command registration at READY and GUILD_CREATE (one bulk overwrite per guild)
├─ HandledEvents . ids of the messages and interactions acted on (replays change nothing);
│                  loaded at start, swept hourly
└─ expired interaction keys deleted at start and hourly (`sweep_expired_keys`)
```

`Bot` is also the bundle of services every handler receives (REST, store, guild cache, ids,
engines), so nothing reaches for globals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, final

import trio

from kimaki.bot._engines import Engines
from kimaki.bot._handled import HandledEvents
from kimaki.bot._interactions import KEY_SWEEP_INTERVAL, Interactions, sweep_expired_keys
from kimaki.discord.models import Guild, Interaction, Message
from kimaki.discord.rest import RESTClient
from kimaki.dispatch import Dispatcher
from kimaki.guilds import GuildCache
from kimaki.store import ChannelRecord, Store

__all__ = ["Bot", "BotConfig"]

log = logging.getLogger("kimaki.bot")


@final
class BotConfig:
    """The settings the bot reads (a subset of `kimaki.settings.Settings`)."""

    def __init__(
        self,
        *,
        data_dir: Path,
        projects_dir: Path,
        thread_idle_timeout: float = 15 * 60,
        permission_timeout: float = 10 * 60,
        typing_interval: float = 8.0,
        key_sweep_interval: float = KEY_SWEEP_INTERVAL,
    ) -> None:
        self.data_dir = data_dir
        self.projects_dir = projects_dir
        self.thread_idle_timeout = thread_idle_timeout
        self.permission_timeout = permission_timeout
        self.typing_interval = typing_interval
        self.key_sweep_interval = key_sweep_interval

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"

    @property
    def worktrees_dir(self) -> Path:
        return self.data_dir / "worktrees"


@final
class Bot:
    """Create, `subscribe()` to the dispatcher, then `await nursery.start(bot.run)`."""

    def __init__(
        self,
        *,
        rest: RESTClient,
        store: Store,
        guilds: GuildCache,
        application_id: int,
        bot_user_id: int,
        engines: Engines,
        config: BotConfig,
        current_sequence: Callable[[], int | None] = lambda: None,
    ) -> None:
        # Imported here: these modules need `Bot` for their type hints.
        from kimaki.bot._router import Router
        from kimaki.bot._threads import Threads
        from kimaki.bot.commands import install_commands

        self.rest = rest
        self.store = store
        self.guilds = guilds
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.engines = engines
        self.config = config
        self.typing_limiter = trio.CapacityLimiter(4)
        self.handled = HandledEvents(store, current_sequence=current_sequence)
        self.interactions = Interactions(self)
        self.threads = Threads(self)
        self.router = Router(self)
        self._nursery: trio.Nursery | None = None
        install_commands(self)

    @property
    def nursery(self) -> trio.Nursery:
        """The bot's own nursery, for work that outlives one event (thread creation)."""
        if self._nursery is None:
            raise RuntimeError("Bot.run has not started")
        return self._nursery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Known before the first event: what earlier processes handled is not done again.
        await self.handled.load()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.handled.run)
            await nursery.start(self.threads.run)
            await nursery.start(sweep_expired_keys, self.store, self.config.key_sweep_interval)
            task_status.started()
            await trio.sleep_forever()

    async def prepare_restart(self) -> None:
        """An in-place restart: hand running turns and queues to the next process."""
        await self.threads.suspend_for_restart()

    async def stop_turns(self, notice: str) -> None:
        """The daemon stops: interrupt running turns with `notice` and wait for them."""
        await self.threads.stop_turns(notice)

    def subscribe(self, dispatcher: Dispatcher) -> None:
        dispatcher.on("MESSAGE_CREATE", self.router.on_message, model=Message)
        dispatcher.on(
            "INTERACTION_CREATE", self.interactions.handle, model=Interaction, concurrent=True
        )
        dispatcher.on("GUILD_CREATE", self._guild_available, model=Guild, concurrent=True)
        dispatcher.on("THREAD_DELETE", self._thread_deleted)

    # ---- lookups every handler needs

    async def project_of(self, channel_id: int) -> ChannelRecord | None:
        """The project channel of `channel_id` (itself, or a thread's parent) if this bot owns it.

        Channels mapped by another machine's bot (another application id) are not ours.
        """
        record = await self.store.get_channel(channel_id)
        if record is None:
            thread = await self.store.get_thread(channel_id)
            parent_id = thread.channel_id if thread is not None else None
            if parent_id is None:
                parent_id = await self._parent_of(channel_id)
            if parent_id is not None:
                record = await self.store.get_channel(parent_id)
        if record is None or record.app_id != self.application_id:
            return None
        return record

    async def _parent_of(self, channel_id: int) -> int | None:
        channel = self.guilds.channel(channel_id)
        if channel is None or not channel.is_thread:
            return None
        return channel.parent_id

    # ---- events

    async def _guild_available(self, guild: Guild) -> None:
        if not guild.unavailable:
            await self.interactions.register(guild.id)

    async def _thread_deleted(self, data: Any) -> None:
        try:
            thread_id = int(data["id"])
        except (KeyError, TypeError, ValueError):
            return
        await self.threads.forget(thread_id)
