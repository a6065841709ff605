"""Benchmark client: hikari's `GatewayBot` with a `GuildMessageCreateEvent` listener, REST
pointed at the emulator. Default settings otherwise (cache on)."""

from __future__ import annotations

import asyncio

import hikari
from _meter import Meter, parse_args, report, require_zlib_stream
from hikari.impl import shard as shard_impl
from hikari.internal import data_binding


async def main() -> None:
    args = parse_args()
    require_zlib_stream(str(shard_impl._DEFAULT_COMPRESS_TYPE))
    meter = Meter(args.events, args.profile)
    intents = hikari.Intents.GUILDS | hikari.Intents.GUILD_MESSAGES | hikari.Intents.MESSAGE_CONTENT
    bot = hikari.GatewayBot(
        args.token, rest_url=args.api_url, intents=intents, banner=None, logs="WARNING"
    )
    done = asyncio.Event()

    async def on_message(event: hikari.GuildMessageCreateEvent) -> None:
        if meter.tick(len(event.message.content or "")):
            done.set()

    bot.subscribe(hikari.GuildMessageCreateEvent, on_message)
    await bot.start(check_for_updates=False)
    report(
        ready=True,
        compression=str(shard_impl._DEFAULT_COMPRESS_TYPE),
        json="orjson" if hasattr(data_binding, "orjson") else "json (stdlib)",
    )
    await done.wait()
    await bot.close()


if __name__ == "__main__":
    asyncio.run(main())
