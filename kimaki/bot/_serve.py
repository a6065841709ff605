"""Connecting the bot: the gateway shard, the dispatcher, the guild cache and the bot, wired.

The daemon and the tests' in-process harness both connect through `serve_bot`, so what the
tests exercise is how the daemon is put together.
"""

from __future__ import annotations

import logging
from typing import final

import attrs
import trio

from kimaki.bot._bot import Bot, BotConfig
from kimaki.bot._engines import Engines
from kimaki.discord.errors import HTTPError, NetworkError
from kimaki.discord.gateway import GatewayEvent, GatewayShard
from kimaki.discord.models import Application
from kimaki.discord.rest import RESTClient
from kimaki.dispatch import Dispatcher
from kimaki.guilds import GuildCache
from kimaki.store import Store

__all__ = ["BotConnection", "serve_bot"]

log = logging.getLogger("kimaki.bot")


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
    config: BotConfig,
    guilds: GuildCache,
    task_status: trio.TaskStatus[BotConnection] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled; `started()` with the connection once the gateway is READY."""
    bot_user_id = application.bot.id if application.bot is not None else 0
    if not bot_user_id:
        bot_user_id = (await rest.get_current_user()).id
    if await store.load_gateway_session() is not None:
        # About to RESUME a session this process did not start: no GUILD_CREATE will come,
        # and replayed messages arrive before RESUMED, so who may talk must be known now.
        try:
            filled = await guilds.fill(rest)
            log.info("guild cache filled over REST for a resume: %d guild(s)", filled)
        except (HTTPError, NetworkError) as exc:
            log.warning("could not fill the guild cache before resuming: %s", exc)
    events_send, events_receive = trio.open_memory_channel[GatewayEvent](256)
    shard = GatewayShard(
        token=token,
        fetch_gateway=rest.get_gateway_bot,
        events=events_send,
        session_store=store,
    )
    dispatcher = Dispatcher()
    guilds.subscribe(dispatcher)
    bot = Bot(
        rest=rest,
        store=store,
        guilds=guilds,
        application_id=application.id,
        bot_user_id=bot_user_id,
        engines=engines,
        config=config,
    )
    bot.subscribe(dispatcher)
    async with trio.open_nursery() as nursery:
        await nursery.start(bot.run)
        nursery.start_soon(dispatcher.run, events_receive)
        await nursery.start(shard.run)
        task_status.started(BotConnection(bot, shard, dispatcher))
