"""The bot in-process, against the Discord emulator and an engine: for fast integration tests.

```python
async with open_discord_emulator() as emulator, open_fake_engine() as engine:
    async with running_bot(emulator, engine, tmp_path) as harness:
        message = harness.alice.send_message(harness.channel_id, "fix the tests")
        thread = await emulator.wait_for_thread(harness.channel_id)
        reply = await emulator.wait_for_message(thread["id"])
```

The wiring is the daemon's own (`kimaki.bot.serve_bot`, its parts built by `compose_bot`): the
same gateway shard, dispatcher, guild cache and bot, talking to the emulator over real sockets.
The harness exposes the bot's parts (`harness.bot.threads`, `harness.bot.interactions`...) and
the REST client, store and guild cache they were built over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, final

import attrs
import trio

from kimaki._audit import audit_sink
from kimaki.agents import Engine
from kimaki.audit import DEFAULT_QUEUE_CAPACITY, AuditTrail, open_audit_trail
from kimaki.bot import Bot, BotConfig, Engines
from kimaki.bot._serve import BotConnection, serve_bot
from kimaki.bot.commands import AuditAsker, ScheduleDoor
from kimaki.discord.rest import RESTClient
from kimaki.guilds import GuildCache
from kimaki.mcp import McpPolicies, load_catalog
from kimaki.store import ChannelRecord, Store
from kimaki.testing.discord import DiscordEmulator
from kimaki.testing.discord._actors import Actor
from kimaki.testing.discord._emulator import Workspace

__all__ = [
    "BotHarness",
    "ConnectedBot",
    "bot_paragraphs",
    "connect_bot",
    "paragraphs",
    "running_bot",
    "said",
]


def paragraphs(message: Mapping[str, Any]) -> list[str]:
    """A message's blocks (the bot joins rendered blocks with blank lines)."""
    return [block for block in str(message.get("content", "")).split("\n\n") if block]


def said(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """A `wait_for_message` predicate: one of the message's paragraphs is exactly `text`."""
    return lambda message: text in paragraphs(message)


def bot_paragraphs(emulator: DiscordEmulator, channel_id: str) -> list[str]:
    """Every paragraph the bot posted in a channel, oldest first."""
    bot_id = emulator.bot_user["id"]
    messages = sorted(
        emulator.state.messages.get(channel_id, {}).values(), key=lambda m: int(m["id"])
    )
    return [p for m in messages if m["author"]["id"] == bot_id for p in paragraphs(m)]


@final
@attrs.define
class BotHarness:
    """A running bot, its emulator workspace, and one project channel mapped to a directory."""

    bot: Bot
    """The bot's parts (router, interactions, threads, handled events, projects)."""
    connection: BotConnection
    emulator: DiscordEmulator
    workspace: Workspace
    store: Store
    rest: RESTClient
    guilds: GuildCache
    project: ChannelRecord
    project_dir: Path
    mcp: McpPolicies
    mcp_changes: list[int]  # the channels whose MCP policy changed, in order
    audit: AuditTrail | None = None
    """The audit trail (`running_bot(..., audit=True)`): `await harness.audit.queue.settle()`,
    then `harness.audit.store.query(...)`."""

    @property
    def channel_id(self) -> str:
        """The project channel (as the emulator spells ids)."""
        return str(self.project.channel_id)

    @property
    def guild_id(self) -> str:
        return str(self.workspace.guild["id"])

    @property
    def alice(self) -> Actor:
        """A member with the Kimaki role."""
        return self.workspace.users["alice"]

    @property
    def owner(self) -> Actor:
        return self.workspace.owner

    def stranger(self, name: str = "mallory") -> Actor:
        """A member without the Kimaki role (added on first use)."""
        for user in self.emulator.state.users.values():
            if user.get("username") == name:
                return self.emulator.actor(str(user["id"]))
        return self.emulator.add_user(name, guild_id=self.guild_id)

    async def map_channel(self, name: str, directory: Path, **fields: Any) -> ChannelRecord:
        """Make another text channel of the workspace a project of this bot."""
        channel = self.emulator.create_text_channel(
            self.guild_id, name, parent_id=self.workspace.category["id"]
        )
        record = ChannelRecord(
            channel_id=int(channel["id"]),
            directory=directory,
            guild_id=int(self.guild_id),
            app_id=self.project.app_id,
            **fields,
        )
        await self.store.places.put_channel(record)
        return record

    async def thread_of(self, message: Mapping[str, Any]) -> str:
        """The id of the thread the bot opened from `message`."""
        thread = await self.emulator.wait_for_thread(
            str(message["channel_id"]), lambda t: t["id"] == message["id"]
        )
        return str(thread["id"])


@final
@attrs.frozen
class ConnectedBot:
    """What `connect_bot` yields: the connection, the store, REST client and guild cache it
    was built over, and the mapped project channel."""

    connection: BotConnection
    store: Store
    rest: RESTClient
    guilds: GuildCache
    project: ChannelRecord
    mcp: McpPolicies
    mcp_changes: list[int]
    audit: AuditTrail | None = None


@asynccontextmanager
async def _audit_trail(
    data_dir: Path, enabled: bool, capacity: int
) -> AsyncIterator[AuditTrail | None]:
    """The audit trail in `<data_dir>/audit.db`, installed as the sink of the bot's tasks (and
    the test's), as the daemon does; nothing when not `enabled`."""
    if not enabled:
        yield None
        return
    async with open_audit_trail(data_dir / "audit.db", capacity=capacity) as trail:
        with audit_sink(trail.queue):
            yield trail


@asynccontextmanager
async def connect_bot(
    *,
    api_url: str,
    token: str,
    data_dir: Path,
    channel_id: int,
    guild_id: int,
    engines: Mapping[str, Engine],
    default_engine: str,
    channel_fields: Mapping[str, Any] | None = None,
    schedule_commands_door: ScheduleDoor | None = None,
    audit: bool = False,
    audit_capacity: int = DEFAULT_QUEUE_CAPACITY,
    audit_asker: AuditAsker | None = None,
    **config: Any,
) -> AsyncIterator[ConnectedBot]:
    """The daemon's wiring against any Discord-compatible server (the emulator, here or in
    another process), with channel `channel_id` mapped to `<data_dir>/project`. `audit`: keep
    the audit trail (`<data_dir>/audit.db`, a queue of `audit_capacity`); `audit_asker`
    answers `/audit ask`."""
    project_dir = data_dir / "project"
    await trio.Path(project_dir).mkdir(parents=True, exist_ok=True)
    bot_config = BotConfig(data_dir=data_dir, projects_dir=data_dir / "projects", **config)
    async with (
        _audit_trail(data_dir, audit, audit_capacity) as trail,
        await Store.open(data_dir / "kimaki.db") as store,
        RESTClient(token, base_url=api_url) as rest,
        trio.open_nursery() as nursery,
    ):
        application = await rest.get_current_application()
        project = ChannelRecord(
            channel_id=channel_id,
            directory=project_dir,
            guild_id=guild_id,
            app_id=application.id,
            **(channel_fields or {}),
        )
        await store.places.put_channel(project)
        guilds = GuildCache()
        mcp_changes: list[int] = []

        async def mcp_changed(channel_id: int) -> None:
            mcp_changes.append(channel_id)

        mcp_json = data_dir / "mcp.json"  # the catalog: none until a test writes one
        mcp = McpPolicies(
            catalog=lambda: load_catalog(mcp_json, ()),
            store=store.mcp,
            channels=store.places,
            control_url="http://127.0.0.1:9",  # no agent here runs kimaki's MCP servers
            on_change=mcp_changed,
        )
        connection: BotConnection = await nursery.start(
            lambda task_status: serve_bot(
                token=token,
                rest=rest,
                store=store,
                application=application,
                engines=Engines(engines, default=default_engine),
                mcp=mcp,
                config=bot_config,
                schedule_commands_door=schedule_commands_door,
                guilds=guilds,
                audit_reader=trail.store if trail is not None else None,
                audit_asker=audit_asker,
                task_status=task_status,
            )
        )
        yield ConnectedBot(connection, store, rest, guilds, project, mcp, mcp_changes, trail)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_bot(
    emulator: DiscordEmulator,
    engine: Engine,
    data_dir: Path,
    *,
    workspace: Workspace | None = None,
    engines: Mapping[str, Engine] | None = None,
    channel_fields: Mapping[str, Any] | None = None,
    schedule_commands_door: ScheduleDoor | None = None,
    **config: Any,
) -> AsyncIterator[BotHarness]:
    """Run the bot until the block ends. `config` overrides `BotConfig` fields.

    A new thread's first prompt carries no recent conversation of its channel here unless the
    test asks for it (`thread_context_messages=20`): most tests compare whole prompts."""
    config.setdefault("thread_context_messages", 0)
    workspace = workspace or emulator.create_workspace()
    channel = next(iter(workspace.channels.values()))
    all_engines = dict(engines or {})
    all_engines.setdefault(engine.name, engine)
    async with connect_bot(
        api_url=emulator.api_url,
        token=emulator.token,
        data_dir=data_dir,
        channel_id=int(channel["id"]),
        guild_id=int(workspace.guild["id"]),
        engines=all_engines,
        default_engine=engine.name,
        channel_fields=channel_fields,
        schedule_commands_door=schedule_commands_door,
        **config,
    ) as connected:
        yield BotHarness(
            bot=connected.connection.bot,
            connection=connected.connection,
            emulator=emulator,
            workspace=workspace,
            store=connected.store,
            rest=connected.rest,
            guilds=connected.guilds,
            project=connected.project,
            project_dir=connected.project.directory,
            mcp=connected.mcp,
            mcp_changes=connected.mcp_changes,
            audit=connected.audit,
        )
