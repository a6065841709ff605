"""Benchmark client: discord.py's `Client` with an `on_message` listener, REST pointed at the
emulator. Default settings otherwise (message cache of 1000, no member chunking)."""

from __future__ import annotations

import asyncio

import discord
import yarl
from _meter import Meter, parse_args, report, require_zlib_stream


async def main() -> None:
    args = parse_args()
    require_zlib_stream(discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE)
    discord.http.Route.BASE = args.api_url
    # A plain Client connects to this default instead of asking GET /gateway/bot.
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(args.gateway_url)
    meter = Meter(args.events, args.profile)
    intents = discord.Intents.none()
    intents.guilds = intents.guild_messages = intents.message_content = True
    client = discord.Client(intents=intents)
    done = asyncio.Event()

    @client.event
    async def on_ready() -> None:
        report(
            ready=True,
            compression=discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE,
            json="orjson" if discord.utils.HAS_ORJSON else "json (stdlib)",
        )

    @client.event
    async def on_message(message: discord.Message) -> None:
        if meter.tick(len(message.content)):
            done.set()

    async with client:
        runner = asyncio.create_task(client.start(args.token))
        await done.wait()
        await client.close()
        await runner


if __name__ == "__main__":
    asyncio.run(main())
