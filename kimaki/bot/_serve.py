"""Connecting the bot: the gateway shard, the dispatcher, the guild cache and the bot (its parts
built by `compose_bot`), wired.

The daemon and the tests' in-process harness both connect through `serve_bot`, so what the
tests exercise is how the daemon is put together.
"""

from __future__ import annotations

import logging
import random
from typing import Final, final

import attrs
import trio

from kimaki._audit import current_audit_sink
from kimaki._backoff import Backoff
from kimaki.audit import DiscordAuditor
from kimaki.bot._bot import Bot, BotConfig
from kimaki.bot._compose import compose_bot
from kimaki.bot._engines import Engines
from kimaki.bot._places import ProjectPlaces
from kimaki.bot.commands import AuditAsker, AuditReader, McpPolicyDoor, ScheduleDoor
from kimaki.discord.errors import RESTError
from kimaki.discord.gateway import HANDSHAKE_TIMEOUT, GatewayEvent, GatewayShard
from kimaki.discord.models import Application
from kimaki.discord.rest import RESTClient
from kimaki.dispatch import Dispatcher
from kimaki.guilds import GuildCache
from kimaki.store import GatewayCheckpoint, Store

__all__ = ["BotConnection", "connection_state", "serve_bot"]

log = logging.getLogger("kimaki.bot")

# Loading the guild list before a RESUME: attempts (each with the REST client's own retries),
# and the wait between them; then the stored session is dropped and IDENTIFY brings the guilds.
GUILD_FILL_ATTEMPTS: Final = 3
_GUILD_FILL_BACKOFF: Final = Backoff(initial=2.0, cap=30.0)


@final
@attrs.frozen
class BotConnection:
    bot: Bot
    shard: GatewayShard
    dispatcher: Dispatcher


async def serve_bot(
    *,
    token: str,
    rest: RESTClient,
    store: Store,
    application: Application,
    engines: Engines,
    mcp: McpPolicyDoor,
    config: BotConfig,
    guilds: GuildCache,
    schedule_commands_door: ScheduleDoor | None = None,
    audit_reader: AuditReader | None = None,
    audit_asker: AuditAsker | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    task_status: trio.TaskStatus[BotConnection] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled; `started()` with the connection once the gateway is READY."""
    bot_user_id = application.bot.id if application.bot is not None else 0
    if not bot_user_id:
        bot_user_id = (await rest.get_current_user()).id
    if await store.gateway.load_gateway_session() is not None:
        await _fill_before_resume(guilds, rest, store.gateway)
    events_send, events_receive = trio.open_memory_channel[GatewayEvent](256)
    dispatcher = Dispatcher()
    guilds.subscribe(dispatcher)
    bot = compose_bot(
        rest=rest,
        store=store,
        guilds=guilds,
        application_id=application.id,
        bot_user_id=bot_user_id,
        engines=engines,
        mcp=mcp,
        config=config,
        schedule_commands_door=schedule_commands_door,
        audit_reader=audit_reader,
        audit_asker=audit_asker,
        current_sequence=lambda: dispatcher.sequence,
    )
    shard = GatewayShard(
        token=token,
        fetch_gateway=rest.get_gateway_bot,
        events=events_send,
        session_store=store.gateway,
        handshake_timeout=handshake_timeout,
        held=bot.handled.oldest_held,
    )
    bot.subscribe(dispatcher)
    if current_audit_sink() is not None:  # the trail is kept: project channels' messages too
        DiscordAuditor(
            channels=ProjectPlaces(
                records=store.places, channels=guilds, application_id=application.id
            ),
            bot_user_id=bot_user_id,
        ).subscribe(dispatcher)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.checkpoints)  # the write-ahead log's upkeep, off the writes' way
        await nursery.start(bot.run)
        nursery.start_soon(dispatcher.run, events_receive)
        await nursery.start(shard.run)
        task_status.started(BotConnection(bot, shard, dispatcher))


def connection_state(shard: GatewayShard | None, guilds: GuildCache) -> tuple[str, list[str]]:
    """The connection's state for `/health`, and what the bot still lacks (empty when nothing).

    "ready" only when the bot can also judge who may drive it: while the guild list cannot be
    loaded, or guilds the gateway announced are not in the cache yet, the state is the shard's
    ("connecting", "resuming") or "loading guilds", and the list says what is missing.
    """
    waiting = [] if guilds.problem is None else [guilds.problem]
    if shard is None:
        return "connecting", waiting
    missing = sorted(shard.guild_ids.difference(guilds.guild_ids()))
    if missing:
        waiting.append(
            f"guild(s) {', '.join(map(str, missing))}: announced by the gateway, not loaded yet"
        )
    state: str = shard.state
    if state == "ready" and waiting:
        state = "loading guilds"
    return state, waiting


async def _fill_before_resume(
    guilds: GuildCache, rest: RESTClient, checkpoint: GatewayCheckpoint
) -> None:
    """Load the guilds over REST before RESUMEing a session this process did not start.

    No GUILD_CREATE comes after a RESUME, and replayed messages arrive before RESUMED, so who
    may drive the bot must be known first. A bot that resumed without its guilds would ignore
    everyone, the owner included, while looking connected; so a failed load is retried, and
    failing that the stored session is dropped: a fresh IDENTIFY brings every guild in
    GUILD_CREATE, at the cost of the events missed while no process was connected.
    """
    for attempt in range(1, GUILD_FILL_ATTEMPTS + 1):
        try:
            filled = await guilds.fill(rest)
        except RESTError as exc:
            guilds.problem = f"the guild list: loading it over REST failed ({exc})"
            if attempt == GUILD_FILL_ATTEMPTS:
                log.warning(
                    "could not load the guild list before resuming (%d attempts, last: %s); "
                    "dropping the stored gateway session so that a fresh IDENTIFY brings the "
                    "guilds (events missed while kimaki was down are not replayed)",
                    attempt,
                    exc,
                )
                guilds.problem = None
                await checkpoint.save_gateway_session(None)
                return
            delay = _GUILD_FILL_BACKOFF.delay(attempt, random.random())
            log.warning(
                "could not load the guild list before resuming (attempt %d of %d): %s; "
                "retrying in %.1f s",
                attempt,
                GUILD_FILL_ATTEMPTS,
                exc,
                delay,
            )
            await trio.sleep(delay)
        else:
            guilds.problem = None
            log.info("guild cache filled over REST for a resume: %d guild(s)", filled)
            return
