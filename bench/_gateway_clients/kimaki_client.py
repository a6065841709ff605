"""Benchmark client: kimaki's `GatewayShard` → events channel → `Dispatcher` → a handler that
takes `Message` models, wired the way `kimaki.app` wires them (same channel size)."""

from __future__ import annotations

import trio
from _meter import Meter, parse_args, report

from kimaki.discord.gateway import GatewayEvent, GatewayShard
from kimaki.discord.models import Message
from kimaki.discord.rest import RESTClient
from kimaki.dispatch import Dispatcher


async def main() -> None:
    args = parse_args()
    meter = Meter(args.events, args.profile)
    rest = RESTClient(args.token, base_url=args.api_url)
    async with rest, trio.open_nursery() as nursery:
        events_send, events_receive = trio.open_memory_channel[GatewayEvent](256)
        shard = GatewayShard(
            token=args.token, fetch_gateway=rest.get_gateway_bot, events=events_send
        )
        dispatcher = Dispatcher()

        async def on_message(message: Message) -> None:
            if meter.tick(len(message.content)):
                nursery.cancel_scope.cancel()

        dispatcher.on("MESSAGE_CREATE", on_message, model=Message)
        nursery.start_soon(dispatcher.run, events_receive)
        await nursery.start(shard.run)
        report(ready=True, compression="zlib-stream", json="orjson")


if __name__ == "__main__":
    trio.run(main)
