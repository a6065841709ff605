"""The daemon: one root nursery that owns every task the process runs.

```
Daemon.run
└─ root nursery
   ├─ control server on the lock port (bound first: it is the single-instance lock)
   ├─ signal watcher: SIGTERM / SIGINT orderly stop; SIGUSR2 in-place restart; SIGUSR1 heap
   │  snapshot
   ├─ systemd watchdog pings; memory watcher (heap snapshot near the memory limit)
   └─ Discord: REST client, gateway shard, dispatcher (kimaki.discord), and the bot
      (kimaki.bot: router, interactions, thread runtimes) over the engines (kimaki.agents)
```

Start-up order matters: the lock comes before the log file is truncated, so a second daemon
started by mistake cannot wipe the running one's log.

Stopping (SIGTERM, SIGINT) takes at most 10 s: running turns are aborted with a notice in their
threads, agent servers get their SIGTERM grace, the gateway closes with 1000 (the session ends),
then the root scope is cancelled and the store closes; exit 0. A second SIGINT exits at once.

Restarting in place (SIGUSR2, `systemctl reload`) loses no message and repeats nothing:

1. systemd hears `RELOADING=1`; the gateway closes resumably (4900) and saves its session at
   the last event it handed on, so Discord replays everything after it to the next process;
2. the dispatcher finishes the events it was handed (messages reach their threads' queues);
3. the bot stops starting turns and saves its running turns and queued prompts (the parts it
   posted are in the store already);
4. the engine hands its ready agent servers over (they keep running, and keep working on their
   turns) and the store records them;
5. the root scope unwinds, and `exec_if_restarting()` re-executes the same command line
   (`kimaki._restart`). The new process appends to the log, adopts the servers, RESUMEs the
   gateway, continues the saved turns and sends `READY=1` again.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import signal
import sqlite3
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final, NoReturn, final

import attrs
import trio

from kimaki._audit import audit, audit_sink
from kimaki._backoff import Backoff
from kimaki._control import ControlServer, control_url
from kimaki._control_client import issue_control_token
from kimaki._log import open_log_file, register_secret
from kimaki._memory import (
    MemoryWatcher,
    cgroup_memory_limit,
    freeze_start_up_heap,
    write_heap_snapshot,
)
from kimaki._redact import register_environment
from kimaki._restart import RestartMarker, exec_self, flush_output, take_restart_marker
from kimaki._systemd import SystemdNotifier
from kimaki._version import __version__
from kimaki.agents import (
    AgentServerHandover,
    Engine,
    Grants,
    McpProvider,
    ProbePolicy,
    setup_fix,
)
from kimaki.agents.acp import AcpConfig, AcpEngine, find_agents, open_acp_engine
from kimaki.agents.opencode import OpenCodeConfig, OpenCodeEngine, open_opencode_engine
from kimaki.audit import (
    AUDIT_TOOLS,
    AuditAgent,
    AuditQueue,
    AuditStore,
    AuditStoreError,
    open_audit_trail,
    read_only_trail,
    restricted_opencode_config,
)
from kimaki.bot import BotConfig, Engines
from kimaki.bot._serve import BotConnection, connection_state, serve_bot
from kimaki.bot._session_routes import install_session_routes
from kimaki.bot._tool_places import GrantedPlaces
from kimaki.channel_memory import memory_tools
from kimaki.discord.errors import NetworkError, ServerError, Unauthorized
from kimaki.discord.models import Application
from kimaki.discord.rest import RESTClient
from kimaki.errors import ConfigError, CredentialsError
from kimaki.guilds import GuildCache
from kimaki.mcp import (
    CatalogEntry,
    McpPolicies,
    install_mcp_routes,
    load_catalog,
    opencode_config_paths,
    retire_channel_servers,
)
from kimaki.projects import install_project_routes
from kimaki.schedules import schedule_tools
from kimaki.schedules._routes import install_schedule_routes
from kimaki.schedules._shell import ShellTasks
from kimaki.settings import Settings, check_token_shape
from kimaki.store import Store
from kimaki.tools import BUILTIN_TOOLS, ToolBox, install_tool_routes
from kimaki.voice import TranscriptionSettings

__all__ = ["Daemon", "prepare_data_dir", "read_token_from_user"]

log = logging.getLogger("kimaki.app")

_DATA_SUBDIRS: Final = ("heap-snapshots", "worktrees", "attachments")
_DISCORD_BACKOFF: Final = Backoff(initial=1.0, cap=60.0)
# SIGTERM/SIGINT: the whole orderly stop; SIGUSR2: preparing the restart.
SHUTDOWN_TIMEOUT: Final = 10.0
# Kept free at the end of a stop for the agent servers' SIGTERM grace and the unwinding.
_SERVER_STOP_BUDGET: Final = 6.5
SHUTDOWN_NOTICE: Final = "⏹ the bot is shutting down"


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
@attrs.frozen
class _Engines:
    """The store and the engines, once open: what a stop or a restart needs even before
    Discord is connected (a restart hands adopted agent servers on again)."""

    store: Store
    opencode: OpenCodeEngine
    # One per configured ACP agent; their processes start on demand and cannot be handed
    # over to an in-place restart (stdio), so stopping and restarting stop them.
    acp: tuple[AcpEngine, ...]

    async def stop_servers(self) -> None:
        """Stop every engine's agent servers now, each with its SIGTERM grace."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.opencode.stop_servers)
            for engine in self.acp:
                nursery.start_soon(engine.stop_servers)


@final
@attrs.frozen
class _PendingRestart:
    marker: RestartMarker
    pass_fds: tuple[int, ...]


@final
class Daemon:
    """The running daemon. `await Daemon(settings).run()` returns on a clean stop, or before an
    in-place restart: then call `exec_if_restarting()` once the trio run is over."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Filled as the daemon starts; a signal may come at any point, so each may be missing.
        self._engines: _Engines | None = None
        self._connection: BotConnection | None = None  # the bot, connected to Discord
        self._restarted_from: RestartMarker | None = None
        self._stopping = False
        self._restarting = False
        self._restart: _PendingRestart | None = None
        self.guilds = GuildCache()
        self._notifier = SystemdNotifier()
        self._control = ControlServer(
            port=settings.lock_port, data_dir=settings.data_dir, health=self.health
        )

    def health(self) -> dict[str, Any]:
        """What `GET /health` on the lock port answers.

        The gateway is "ready" only when the bot can also judge who may drive it: while guilds
        the gateway announced are not loaded yet, it is "loading guilds", and `waiting_for`
        says what is missing.
        """
        shard = None if self._connection is None else self._connection.shard
        gateway, waiting_for = connection_state(shard, self.guilds)
        return {
            "pid": os.getpid(),
            "version": __version__,
            "data_dir": str(self.settings.data_dir),
            "gateway": gateway,
            "guilds": self._guild_count(),
            "waiting_for": waiting_for,
        }

    def _guild_count(self) -> int:
        """READY lists the guilds; after a RESUME only the cache (filled over REST) knows."""
        from_ready = 0 if self._connection is None else self._connection.shard.guild_count
        return max(from_ready, len(self.guilds.guild_ids()))

    async def run(self) -> None:
        # Every task of the daemon records into the audit trail (`kimaki._audit`): the queue
        # is installed before any task starts, and written once the data dir is ready.
        self._audit_queue = AuditQueue()
        self._audit_store: AuditStore | None = None  # for `/audit`, once the file is open
        with audit_sink(self._audit_queue):
            await self._run()

    async def _run(self) -> None:
        # The values of the daemon's secret-named variables (API keys) are never printed.
        register_environment()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._control.serve)
            await trio.to_thread.run_sync(prepare_data_dir, self.settings)
            if self.settings.agent_user is not None and os.geteuid() != 0:
                raise ConfigError(
                    f"KIMAKI_AGENT_USER={self.settings.agent_user} needs the daemon to run as "
                    "root, to start agents as that user (see docs/operations.md)"
                )
            self._restarted_from = marker = take_restart_marker()
            open_log_file(self.settings.log_path, append=marker is not None)
            log.info(
                "kimaki %s starting: pid %d, data dir %s, lock port %d",
                __version__,
                os.getpid(),
                self.settings.data_dir,
                self.settings.lock_port,
            )
            if marker is not None:
                log.info(
                    "restarted in place (%s), %.2f s after it was asked for",
                    marker.reason,
                    marker.elapsed,
                )
            await nursery.start(self._keep_audit_trail)
            audit(
                "daemon.started",
                version=__version__,
                pid=os.getpid(),
                restarted_in_place=marker.reason if marker is not None else None,
            )
            nursery.start_soon(self._watch_signals, nursery.cancel_scope)
            self._start_memory_tools(nursery)
            nursery.start_soon(self._notifier.run_watchdog)
            async with await Store.open(self.settings.database_path) as store:
                grants = Grants()
                running: list[Engine] = []  # for a policy change; filled once they are open
                policies = _mcp_policies(self.settings, store, running)
                install_mcp_routes(self._control, policies, grants)
                mcp = _McpWiring(policies, grants)
                async with (
                    open_opencode_engine(
                        _opencode_config(self.settings, mcp), adopt=await self._handed_over(store)
                    ) as opencode,
                    _open_acp_engines(self.settings, mcp) as acp_engines,
                ):
                    running += [opencode, *acp_engines]
                    self._engines = _Engines(store, opencode, tuple(acp_engines))
                    await trio.to_thread.run_sync(_log_engines, self.settings)
                    token = await self._bot_token(store)
                    engines = Engines(
                        {"opencode": opencode, **{engine.name: engine for engine in acp_engines}},
                        default=self.settings.default_engine,
                    )
                    await self._run_discord(store, token, engines, mcp)

    async def _bot_token(self, store: Store) -> str:
        token = self.settings.bot_token
        if token is None:
            token = await store.credentials.get_bot_token()
            if token is not None:
                check_token_shape(token, "the stored token (`kimaki token set`)")
        if token is None and sys.stdin.isatty():
            # First run at a terminal: ask once and keep it, as `kimaki token set` would.
            token = await trio.to_thread.run_sync(read_token_from_user)
            check_token_shape(token, "the token")
            await store.credentials.set_bot_token(token)
            log.info("token stored in %s", store.path)
        if token is None:
            raise ConfigError(
                "no Discord bot token: set KIMAKI_BOT_TOKEN or run `kimaki token set`"
            )
        register_secret(token)
        return token

    async def _run_discord(
        self, store: Store, token: str, engines: Engines, mcp: _McpWiring
    ) -> None:
        async with RESTClient(token, base_url=self.settings.discord_api_url) as rest:
            application = await _fetch_application(rest)
            log.info("bot application %s (%d)", application.name or "?", application.id)
            # `/audit ask`: a private agent per question, its only tool `query_audit`.
            audit_agent = _audit_agent(self.settings, mcp)
            async with trio.open_nursery() as nursery:
                connection: BotConnection = await nursery.start(
                    partial(
                        serve_bot,
                        token=token,
                        rest=rest,
                        store=store,
                        application=application,
                        engines=engines,
                        mcp=mcp.policies,
                        config=_bot_config(self.settings),
                        guilds=self.guilds,
                        handshake_timeout=self.settings.gateway_handshake_timeout,
                        audit_reader=self._audit_store,
                        audit_asker=audit_agent,
                    )
                )
                self._connection = connection
                # The same project operations as the bot's commands (`compose_bot` built them).
                # One control token for every subsystem's routes (0600, under the data dir).
                control_token = await issue_control_token(self.settings.data_dir)
                await install_project_routes(self._control, connection.bot.projects, control_token)
                # `kimaki send` / `kimaki task` / `kimaki session` through the running daemon.
                install_schedule_routes(
                    self._control, ShellTasks(connection.bot.schedules, store.places), control_token
                )
                install_session_routes(
                    self._control,
                    control_token,
                    index=store.places,
                    live=connection.bot.threads,
                    engines=engines,
                )
                # Agents' tool calls, carried out in the thread of the session that makes them.
                places = GrantedPlaces(mcp.grants, engines, connection.bot.threads)
                tools = ToolBox(
                    (
                        *BUILTIN_TOOLS,
                        *schedule_tools(connection.bot.schedules),
                        *memory_tools(connection.bot.channel_memory),
                    )
                )
                # The audit agents' grants get `query_audit` and nothing else; no other does.
                audit_tools = (ToolBox(AUDIT_TOOLS), audit_agent.places)
                install_tool_routes(self._control, tools, places, private=[audit_tools])
                guilds = self._guild_count()
                log.info("connected to Discord: %d guild(s)", guilds)
                frozen = freeze_start_up_heap()
                if frozen:
                    log.debug("%d start-up objects frozen out of the cyclic collector", frozen)
                self._notifier.ready(f"connected to Discord, {guilds} guild(s)")

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
            async with trio.open_nursery() as nursery:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGUSR1:
                        await self._heap_snapshot()
                    elif self._stopping:
                        if signum == signal.SIGINT:
                            log.warning("second SIGINT: exiting at once")
                            _exit_now(130)
                        if signum == signal.SIGTERM and self._restarting:
                            # systemd stopping the service mid-reload: stop, do not come back.
                            log.info("SIGTERM received while restarting: stopping instead")
                            self._restarting = False
                            self._notifier.stopping("stopping")
                            continue
                        log.info("%s received: already stopping", name)
                    elif signum == signal.SIGUSR2:
                        self._stopping = self._restarting = True
                        nursery.start_soon(self._restart_in_place, root)
                    else:
                        self._stopping = True
                        nursery.start_soon(self._stop, root, name)

    async def _keep_audit_trail(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The audit file, its writer and its daily sweep, until the daemon stops. A trail
        that cannot be opened is logged and the daemon runs without it (events are dropped)."""
        try:
            async with open_audit_trail(
                self.settings.audit_path,
                retention_days=self.settings.audit_retention_days,
                queue=self._audit_queue,
            ) as trail:
                self._audit_store = trail.store
                task_status.started()
                await trio.sleep_forever()
        except (AuditStoreError, OSError, sqlite3.Error):
            log.exception("the audit trail %s cannot be kept", self.settings.audit_path)
            task_status.started()

    async def _stop(self, root: trio.CancelScope, signal_name: str) -> None:
        """The orderly stop, within `SHUTDOWN_TIMEOUT`; ends by cancelling the root scope."""
        log.info("%s received: stopping", signal_name)
        audit("daemon.stopping", signal=signal_name)
        self._notifier.stopping("stopping")
        deadline = trio.current_time() + SHUTDOWN_TIMEOUT
        connection, engines = self._connection, self._engines
        with trio.move_on_at(deadline - 0.5):
            if connection is not None:
                with trio.move_on_at(deadline - _SERVER_STOP_BUDGET) as turns:
                    try:
                        await connection.bot.stop_turns(SHUTDOWN_NOTICE)
                    except Exception:
                        log.exception("stopping the running turns failed; stopping anyway")
                if turns.cancelled_caught:
                    log.warning("running turns did not all stop in time; stopping anyway")
            async with trio.open_nursery() as nursery:
                if engines is not None:
                    nursery.start_soon(engines.stop_servers)
                if connection is not None:
                    nursery.start_soon(connection.shard.close)  # 1000: the session ends
        root.cancel()

    async def _restart_in_place(self, root: trio.CancelScope) -> None:
        """Prepare the next process (see the module docstring), then unwind for the exec."""
        marker = RestartMarker(os.getpid(), time.monotonic(), "SIGUSR2")
        log.info("SIGUSR2 received: restarting in place with the code now on disk")
        audit("daemon.restarting", signal="SIGUSR2")
        self._notifier.reloading("restarting with new code")
        connection = self._connection
        with trio.move_on_after(SHUTDOWN_TIMEOUT) as preparing:
            if connection is not None:
                await connection.shard.close(resumable=True)
                await connection.dispatcher.wait_finished()
                try:
                    await connection.bot.prepare_restart()
                except Exception:
                    # Turns that were not saved end with their server's next restart; the
                    # gateway session is saved, so no message is lost.
                    log.exception("the bot could not prepare the restart; restarting anyway")
        if preparing.cancelled_caught:
            log.warning(
                "preparing the restart took over %.0f s; restarting anyway", SHUTDOWN_TIMEOUT
            )
        handovers = await self._hand_over_servers()
        # ACP agents speak over this process's pipes and cannot be handed over: stop them with
        # their grace; their sessions resume (`session/load`) in the next process.
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for engine in () if self._engines is None else self._engines.acp:
                    nursery.start_soon(engine.stop_servers)
        fds = tuple(fd for h in handovers for fd in (h.stdout_fd, h.stderr_fd) if fd is not None)
        self._restart = _PendingRestart(marker, fds)
        log.info("ready to restart: %d agent server(s) handed over", len(handovers))
        root.cancel()

    async def _hand_over_servers(self) -> list[AgentServerHandover]:
        """Give the agent servers to the next process: they keep running (and working)."""
        engines = self._engines
        if engines is None:
            return []
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
            handovers = await engines.opencode.handover()
            try:
                await engines.store.handover.save_agent_servers(handovers)
            except Exception:
                log.exception("could not save the agent servers; they stop with this process")
                return []
            return handovers
        return []

    async def _handed_over(self, store: Store) -> list[AgentServerHandover]:
        """The agent servers the previous process image left running, if this is a restart.

        A cold start discards the records unread: their pids and fds mean nothing here.
        """
        handovers = await store.handover.take_agent_servers()
        if self._restarted_from is None:
            if handovers:
                log.info("ignoring %d agent server record(s) of an earlier run", len(handovers))
            return []
        return handovers

    def exec_if_restarting(self) -> None:
        """After `run()` returned (outside trio): re-execute for an in-place restart if one was
        prepared. Raises `OSError` if the interpreter cannot be executed."""
        if self._restart is None or not self._restarting:
            return
        exec_self(
            self._restart.marker,
            log_file=self.settings.log_path,
            pass_fds=self._restart.pass_fds,
            token=self.settings.bot_token,  # not a stored one: the store is read again
        )

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


def _exit_now(code: int) -> NoReturn:
    """Leave without unwinding (a second Ctrl-C): the log is flushed, nothing else waits.
    Agent servers die with the process (parent-death signal)."""
    flush_output()
    os._exit(code)


def _bot_config(settings: Settings) -> BotConfig:
    return BotConfig(
        data_dir=settings.data_dir,
        projects_dir=settings.projects_dir,
        thread_idle_timeout=settings.thread_idle_timeout,
        permission_timeout=settings.permission_timeout,
        task_time_limit=settings.task_time_limit,
        task_grace=settings.task_grace,
        memory_limit_bytes=settings.memory_limit_bytes,
        thread_context_messages=settings.thread_context_messages,
        thread_context_chars=settings.thread_context_chars,
        transcription=TranscriptionSettings.from_settings(settings),
        usage_timezone=settings.usage_timezone,
    )


@final
@attrs.frozen
class _McpWiring:
    """What every engine is given of MCP: the channel policies and the grants' registry."""

    policies: McpPolicies
    grants: Grants


def _mcp_policies(settings: Settings, store: Store, engines: Sequence[Engine]) -> McpPolicies:
    """The MCP policy of each channel over the catalog of this machine: `<data-dir>/mcp.json`
    and the person's own OpenCode configuration (read at each use, so edits count at once)."""
    mcp_json = settings.data_dir / "mcp.json"

    def catalog() -> dict[str, CatalogEntry]:
        return load_catalog(mcp_json, opencode_config_paths(os.environ, Path.home()))

    async def changed(channel_id: int) -> None:
        await retire_channel_servers(channel_id, engines, store.places)

    return McpPolicies(
        catalog=catalog,
        store=store.mcp,
        channels=store.places,
        control_url=control_url(settings.lock_port),
        on_change=changed,
    )


def _audit_agent(settings: Settings, mcp: _McpWiring) -> AuditAgent:
    """`/audit ask`'s asker: each question starts the default engine's agent program afresh,
    in an empty temporary directory, with kimaki's tool server only (its grants the asker's
    own), OpenCode's built-in tools and other MCP servers switched off, an ACP agent serving
    no files; it reads the audit file read-only."""
    restricted = {"OPENCODE_CONFIG_CONTENT": json.dumps(restricted_opencode_config())}

    def open_engine(provider: McpProvider, grants: Grants) -> AbstractAsyncContextManager[Engine]:
        acp = [a for a in settings.agents if f"acp:{a.name}" == settings.default_engine]
        if acp:
            return open_acp_engine(
                AcpConfig(
                    acp[0],
                    extra_env=restricted,
                    serve_files=False,
                    user=settings.agent_user,
                    mcp=provider,
                    grants=grants,
                )
            )
        return open_opencode_engine(
            OpenCodeConfig(
                command=(settings.opencode_path,),
                extra_env=restricted,
                probe=None,
                user=settings.agent_user,
                mcp=provider,
                grants=grants,
            )
        )

    return AuditAgent(
        open_reader=read_only_trail(settings.audit_path),
        mcp=mcp.policies,
        open_engine=open_engine,
        data_dir=settings.data_dir,
        time_limit=settings.audit_ask_time_limit,
        owner=settings.agent_user,
    )


def _opencode_config(settings: Settings, mcp: _McpWiring) -> OpenCodeConfig:
    """Agent servers start on demand, per project directory, and stop when idle."""
    return OpenCodeConfig(
        command=(settings.opencode_path,),
        mcp=mcp.policies,
        grants=mcp.grants,
        idle_timeout=settings.agent_idle_timeout,
        user=settings.agent_user,
        probe=ProbePolicy(
            interval=settings.agent_probe_interval, silence=settings.agent_silence_timeout
        ),
    )


@asynccontextmanager
async def _open_acp_engines(settings: Settings, mcp: _McpWiring) -> AsyncIterator[list[AcpEngine]]:
    """One engine per configured ACP agent (`acp:<name>`); each starts its agent processes
    when a thread first needs one, per directory, and stops them when idle."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                open_acp_engine(
                    AcpConfig(
                        agent,
                        idle_timeout=settings.agent_idle_timeout,
                        user=settings.agent_user,
                        mcp=mcp.policies,
                        grants=mcp.grants,
                    )
                )
            )
            for agent in settings.agents
        ]


def _log_engines(settings: Settings) -> None:
    """Which engines this machine can run (blocking: searches PATH), and one warning when the
    default engine cannot start: a first run without the agent program installed says so at
    once, not at the first message."""
    commands = settings.engine_commands
    found = find_agents(agents=commands)
    log.info(
        "engines (default %s): %s",
        settings.default_engine,
        ", ".join(
            f"{name} ({path or commands[name][0] + ': not on PATH'})" for name, path in found
        ),
    )
    default = settings.default_engine
    if dict(found).get(default, "") is None:
        program = commands[default][0]
        log.warning(
            "the default engine %s cannot start: %s is not %s; %s (or choose another engine "
            "with KIMAKI_DEFAULT_ENGINE)",
            default,
            program,
            "there" if os.sep in program else "on the daemon's PATH",
            setup_fix(program, setting=settings.program_setting(default)),
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
