"""The bot: what turns Discord events into agent sessions, and agent events into Discord.

```
Bot.run (a nursery under the daemon's Discord nursery)
├─ Router ........ MESSAGE_CREATE (in gateway order) → its place, resolved once
│                  (ProjectPlaces) → the thread pipeline (`kimaki.threads.Threads.submit`);
│                  thread openings and replies in its own nursery
├─ Interactions .. INTERACTION_CREATE (one task each, answered within 3 s) → a command group
│                  (`commands`), or the clicks on a turn's asks → that thread's `Asks`
│                  (`install_ask_buttons`); commands registered at READY and GUILD_CREATE (one
│                  bulk overwrite per guild)
├─ Threads ....... the thread pipeline (`kimaki.threads`): thread runtimes, one ThreadTurns
│                  (the TurnHandler) per active thread
├─ HandledEvents . ids of the messages and interactions acted on (replays change nothing);
│                  loaded at start, swept hourly
└─ expired interaction keys deleted at start and hourly (`sweep_expired_keys`)
```

The parts are built by the composition root (`compose_bot`, in `_compose.py`), which hands each
only what it uses: narrow protocols defined where they are consumed (a store facet, a few REST
calls, the engines, another part's one or two methods). `Bot` is the record of the parts, made
once they all exist; no part receives it. The daemon and the tests hold it to run, stop and
restart the bot, and to look at its parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, final

import attrs
import trio

from kimaki.bot._handled import HandledEvents
from kimaki.bot._interactions import (
    KEY_SWEEP_INTERVAL,
    ExpiringKeys,
    Interactions,
    sweep_expired_keys,
)
from kimaki.bot._router import Router
from kimaki.channel_memory import ChannelMemory
from kimaki.discord.models import Guild, Interaction, Message
from kimaki.dispatch import Dispatcher
from kimaki.projects import Projects
from kimaki.schedules import Schedules
from kimaki.threads import Threads, ThreadSettings
from kimaki.voice import TranscriptionSettings

__all__ = ["Bot", "BotConfig"]


@final
@attrs.frozen(kw_only=True)
class BotConfig:
    """The settings the bot reads (a subset of `kimaki.settings.Settings`)."""

    data_dir: Path
    projects_dir: Path
    thread_idle_timeout: float = 15 * 60
    permission_timeout: float = 10 * 60
    task_time_limit: float = 30 * 60
    task_grace: float = 60 * 60
    typing_interval: float = 8.0
    key_sweep_interval: float = KEY_SWEEP_INTERVAL
    # Channel memory (kimaki.channel_memory): the size bound of a channel's memory (and of its
    # flash memory), and how much recent conversation a new thread's first prompt gets.
    memory_limit_bytes: int = 8 * 1024
    thread_context_messages: int = 20
    thread_context_chars: int = 4000
    # Voice messages: the environment's transcription settings (kimaki.voice).
    transcription: TranscriptionSettings = attrs.field(factory=TranscriptionSettings)
    # Where `/usage`'s days and budgets' periods begin: an IANA zone name (None: the machine's).
    usage_timezone: str | None = None

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"

    @property
    def worktrees_dir(self) -> Path:
        return self.data_dir / "worktrees"

    @property
    def thread_settings(self) -> ThreadSettings:
        """The values the thread pipeline reads."""
        return ThreadSettings(
            attachments_dir=self.attachments_dir,
            worktrees_dir=self.worktrees_dir,
            idle_timeout=self.thread_idle_timeout,
            permission_timeout=self.permission_timeout,
            typing_interval=self.typing_interval,
            data_dir=self.data_dir,
        )


@final
@attrs.frozen(kw_only=True)
class Bot:
    """The running bot's parts. Made by `compose_bot`; `subscribe()` to the dispatcher, then
    `await nursery.start(bot.run)`."""

    router: Router
    interactions: Interactions
    threads: Threads
    handled: HandledEvents
    projects: Projects
    """The project operations the commands use; the daemon's lock-port routes use them too."""
    keys: ExpiringKeys
    schedules: Schedules
    """Scheduled prompts, reminders and sleeps: its runner runs here; the agents' tools use it."""
    channel_memory: ChannelMemory
    """Channel memory and flash memory: `/memory` changes it; the agents' tools propose."""
    key_sweep_interval: float = KEY_SWEEP_INTERVAL

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Known before the first event: what earlier processes handled is not done again.
        await self.handled.load()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.handled.run)
            await nursery.start(self.router.run)
            await nursery.start(self.threads.run)
            # After the threads: a run due at start goes to a restored thread, in its order.
            await nursery.start(self.schedules.run)
            await nursery.start(sweep_expired_keys, self.keys, self.key_sweep_interval)
            task_status.started()
            await trio.sleep_forever()

    async def prepare_restart(self) -> None:
        """An in-place restart: hand running turns and queues to the next process. The
        scheduler first stops starting runs and finishes handing on those it started (a
        reminder posted, a prompt in its thread's queue), so the threads hand those on too."""
        await self.schedules.stop_starting()
        await self.threads.suspend_for_restart()

    async def stop_turns(self, notice: str) -> None:
        """The daemon stops: no more scheduled runs start (those starting are handed on
        first), then running turns are interrupted with `notice` and waited for."""
        await self.schedules.stop_starting()
        await self.threads.stop_turns(notice)

    def subscribe(self, dispatcher: Dispatcher) -> None:
        dispatcher.on(
            "MESSAGE_CREATE", self.router.on_message, model=Message, accept=self.router.accepts
        )
        dispatcher.on(
            "INTERACTION_CREATE", self.interactions.handle, model=Interaction, concurrent=True
        )
        dispatcher.on("GUILD_CREATE", self._guild_available, model=Guild, concurrent=True)
        dispatcher.on("THREAD_DELETE", self._thread_deleted)

    async def _guild_available(self, guild: Guild) -> None:
        if not guild.unavailable:
            await self.interactions.register(guild.id)

    async def _thread_deleted(self, data: Any) -> None:
        try:
            thread_id = int(data["id"])
        except (KeyError, TypeError, ValueError):
            return
        await self.threads.forget(thread_id)
