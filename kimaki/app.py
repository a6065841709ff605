"""The daemon: one root nursery that owns every task the process runs.

```
Daemon.run
└─ root nursery
   ├─ control server on the lock port (bound first: it is the single-instance lock)
   ├─ signal watcher: SIGTERM / SIGINT stop (cancel the root scope); SIGUSR1 heap snapshot
   ├─ systemd watchdog pings; memory watcher (heap snapshot near the memory limit)
   └─ Discord: REST client, gateway shard, dispatcher (kimaki.discord)
```

Start-up order matters: the lock comes before the log file is truncated, so a second daemon
started by mistake cannot wipe the running one's log.
"""

from __future__ import annotations

import getpass
import logging
import os
import random
import signal
import sys
import tracemalloc
from typing import Any, Final, final

import trio

from kimaki._backoff import Backoff
from kimaki._control import ControlServer
from kimaki._log import open_log_file, register_secret
from kimaki._memory import MemoryWatcher, cgroup_memory_limit, write_heap_snapshot
from kimaki._systemd import SystemdNotifier
from kimaki._version import __version__
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.discord.errors import NetworkError, ServerError, Unauthorized
from kimaki.discord.gateway import GatewayEvent, GatewayShard
from kimaki.discord.models import Application
from kimaki.discord.rest import RESTClient
from kimaki.dispatch import Dispatcher
from kimaki.errors import ConfigError, CredentialsError
from kimaki.guilds import GuildCache
from kimaki.settings import Settings, check_token_shape
from kimaki.store import Store

__all__ = ["Daemon", "prepare_data_dir", "read_token_from_user"]

log = logging.getLogger("kimaki.app")

_DATA_SUBDIRS: Final = ("heap-snapshots", "worktrees", "attachments")
_DISCORD_BACKOFF: Final = Backoff(initial=1.0, cap=60.0)


def prepare_data_dir(settings: Settings) -> None:
    """Create the data dir and its subfolders with mode 0700, or say why it cannot be used."""
    hint = "(set --data-dir or KIMAKI_DATA_DIR to a directory you can write)"
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        for name in _DATA_SUBDIRS:
            sub = settings.data_dir / name
            sub.mkdir(mode=0o700, exist_ok=True)
            os.chmod(sub, 0o700)
        probe = settings.data_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"the data dir {settings.data_dir} is not writable: {exc.strerror} {hint}"
        ) from None


def read_token_from_user() -> str:
    """The bot token from a hidden prompt, or one line of stdin when it is not a terminal.

    Never from argv: other users can read a command line in `ps`.
    """
    try:
        if sys.stdin.isatty():
            token = getpass.getpass("Discord bot token (input hidden): ")
        else:
            token = sys.stdin.readline()
    except EOFError:  # Ctrl-D at the prompt
        token = ""
    token = token.strip()
    if not token:
        raise ConfigError("no token given: paste the bot token at the prompt or on stdin")
    return token


@final
class Daemon:
    """The running daemon. `await Daemon(settings).run()` returns on a clean stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._shard: GatewayShard | None = None
        self.guilds = GuildCache()
        self._notifier = SystemdNotifier()
        self._control = ControlServer(
            port=settings.lock_port, data_dir=settings.data_dir, health=self.health
        )

    def health(self) -> dict[str, Any]:
        """What `GET /health` on the lock port answers."""
        return {
            "pid": os.getpid(),
            "version": __version__,
            "data_dir": str(self.settings.data_dir),
            "gateway": "connecting" if self._shard is None else self._shard.state,
            "guilds": 0 if self._shard is None else self._shard.guild_count,
        }

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._control.serve)
            await trio.to_thread.run_sync(prepare_data_dir, self.settings)
            open_log_file(self.settings.log_path)
            log.info(
                "kimaki %s starting: pid %d, data dir %s, lock port %d",
                __version__,
                os.getpid(),
                self.settings.data_dir,
                self.settings.lock_port,
            )
            nursery.start_soon(self._watch_signals, nursery.cancel_scope)
            self._start_memory_tools(nursery)
            nursery.start_soon(self._notifier.run_watchdog)
            async with (
                await Store.open(self.settings.database_path) as store,
                open_opencode_engine(_opencode_config(self.settings)),
            ):
                token = await self._bot_token(store)
                await self._run_discord(store, token)

    async def _bot_token(self, store: Store) -> str:
        token = self.settings.bot_token
        if token is None:
            token = await store.get_bot_token()
            if token is not None:
                check_token_shape(token, "the stored token (`kimaki token set`)")
        if token is None and sys.stdin.isatty():
            # First run at a terminal: ask once and keep it, as `kimaki token set` would.
            token = await trio.to_thread.run_sync(read_token_from_user)
            check_token_shape(token, "the token")
            await store.set_bot_token(token)
            log.info("token stored in %s", store.path)
        if token is None:
            raise ConfigError(
                "no Discord bot token: set KIMAKI_BOT_TOKEN or run `kimaki token set`"
            )
        register_secret(token)
        return token

    async def _run_discord(self, store: Store, token: str) -> None:
        async with RESTClient(token, base_url=self.settings.discord_api_url) as rest:
            application = await _fetch_application(rest)
            log.info("bot application %s (%d)", application.name or "?", application.id)
            events_send, events_receive = trio.open_memory_channel[GatewayEvent](256)
            shard = GatewayShard(
                token=token,
                fetch_gateway=rest.get_gateway_bot,
                events=events_send,
                session_store=store,
            )
            self._shard = shard
            dispatcher = Dispatcher()
            self.guilds.subscribe(dispatcher)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dispatcher.run, events_receive)
                await nursery.start(shard.run)
                log.info("connected to Discord: %d guild(s)", shard.guild_count)
                self._notifier.ready(f"connected to Discord, {shard.guild_count} guild(s)")

    def _start_memory_tools(self, nursery: trio.Nursery) -> None:
        if self.settings.trace_memory and not tracemalloc.is_tracing():
            tracemalloc.start(10)
            log.info("tracing memory allocations (--trace-memory)")
        limit = cgroup_memory_limit() or self.settings.memory_limit
        if limit is not None:
            watcher = MemoryWatcher(self.settings.heap_snapshots_dir, limit)
            nursery.start_soon(watcher.run)

    async def _watch_signals(self, root: trio.CancelScope) -> None:
        watched = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
        with trio.open_signal_receiver(*watched) as signals:
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    await self._heap_snapshot()
                    continue
                if signum == signal.SIGUSR2:
                    # Its default action would kill the daemon (`systemctl reload`).
                    log.warning("SIGUSR2 received: in-place restart is not available yet")
                    continue
                log.info("%s received: stopping", signal.Signals(signum).name)
                self._notifier.stopping()
                root.cancel()
                return

    async def _heap_snapshot(self) -> None:
        directory = self.settings.heap_snapshots_dir
        try:
            snapshot = await trio.to_thread.run_sync(
                lambda: write_heap_snapshot(directory, reason="SIGUSR1")
            )
        except OSError as exc:
            log.error("could not write a heap snapshot in %s: %s", directory, exc.strerror)
            return
        log.info("heap snapshot written: %s", snapshot.summary_path)


def _opencode_config(settings: Settings) -> OpenCodeConfig:
    """Agent servers start on demand, per project directory, and stop when idle."""
    return OpenCodeConfig(
        command=(settings.opencode_path,), idle_timeout=settings.agent_idle_timeout
    )


async def _fetch_application(rest: RESTClient) -> Application:
    """The bot's application; retried while Discord is unreachable, fatal when it says no."""
    failures = 0
    while True:
        try:
            return await rest.get_current_application()
        except Unauthorized:
            raise CredentialsError(
                "Discord rejected the bot token: reset it in the Developer Portal "
                "(Bot → Reset Token), then set KIMAKI_BOT_TOKEN or run `kimaki token set`"
            ) from None
        except (NetworkError, ServerError) as exc:
            failures += 1
            delay = _DISCORD_BACKOFF.delay(failures, random.random())
            log.warning("Discord is not reachable (%s); trying again in %.0f s", exc, delay)
            await trio.sleep(delay)
