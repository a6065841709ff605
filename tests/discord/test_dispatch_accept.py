"""The dispatcher's `accept` check: what a handler declines is never converted."""

from __future__ import annotations

from typing import Any

import trio

from kimaki.discord.gateway import GatewayEvent
from kimaki.discord.models import Message
from kimaki.dispatch import Dispatcher


def message(channel_id: str, message_id: int) -> dict[str, Any]:
    return {
        "id": str(message_id),
        "channel_id": channel_id,
        "author": {"id": "7", "username": "alice"},
        "content": f"message {message_id}",
    }


async def run(dispatcher: Dispatcher, events: list[tuple[str, Any]]) -> None:
    send, receive = trio.open_memory_channel[GatewayEvent](len(events))
    for sequence, (name, data) in enumerate(events, start=1):
        send.send_nowait(GatewayEvent(name, sequence, data))
    send.close()
    await dispatcher.run(receive)


async def test_declined_events_are_not_converted_and_accepted_ones_are() -> None:
    dispatcher = Dispatcher()
    seen: list[Message] = []
    looked_at: list[Any] = []

    async def on_message(message: Message) -> None:
        seen.append(message)

    async def accept(data: Any) -> bool:
        looked_at.append(data)
        return bool(data.get("channel_id") == "100")

    dispatcher.on("MESSAGE_CREATE", on_message, model=Message, accept=accept)
    await run(
        dispatcher,
        [
            ("MESSAGE_CREATE", message("100", 1)),
            # Declined: not converted, so its missing author is never noticed.
            ("MESSAGE_CREATE", {"id": "2", "channel_id": "200"}),
            ("MESSAGE_CREATE", message("200", 3)),
            ("MESSAGE_CREATE", message("100", 4)),
        ],
    )
    assert [m.id for m in seen] == [1, 4]
    assert len(looked_at) == 4
    stats = dispatcher.statistics()
    assert (stats.events, stats.handled, stats.declined, stats.malformed) == (4, 2, 2, 0)


async def test_an_accepted_malformed_event_is_still_skipped_and_counted() -> None:
    dispatcher = Dispatcher()
    seen: list[Message] = []

    async def on_message(message: Message) -> None:
        seen.append(message)

    async def accept(data: Any) -> bool:
        return True

    dispatcher.on("MESSAGE_CREATE", on_message, model=Message, accept=accept)
    await run(
        dispatcher,
        [("MESSAGE_CREATE", {"id": "x"}), ("MESSAGE_CREATE", message("100", 2))],
    )
    assert [m.id for m in seen] == [2]
    assert dispatcher.statistics().malformed == 1


async def test_a_failing_check_is_a_handler_error_and_the_dispatcher_goes_on() -> None:
    dispatcher = Dispatcher()
    seen: list[int] = []

    async def on_message(message: Message) -> None:
        seen.append(message.id)

    async def accept(data: Any) -> bool:
        if data["id"] == "1":
            raise RuntimeError("a bug in the check")
        return True

    dispatcher.on("MESSAGE_CREATE", on_message, model=Message, accept=accept)
    await run(
        dispatcher,
        [("MESSAGE_CREATE", message("100", 1)), ("MESSAGE_CREATE", message("100", 2))],
    )
    assert seen == [2]
    assert dispatcher.statistics().handler_errors == 1


async def test_a_burst_keeps_gateway_order_across_handlers() -> None:
    dispatcher = Dispatcher()
    order: list[tuple[str, int]] = []

    async def first(data: Any) -> None:
        order.append(("first", data["n"]))

    async def second(data: Any) -> None:
        order.append(("second", data["n"]))
        if data["n"] % 50 == 0:
            await trio.lowlevel.checkpoint()  # a handler that yields now and then

    dispatcher.on("E", first)
    dispatcher.on("E", second)
    await run(dispatcher, [("E", {"n": n}) for n in range(300)])
    assert order == [(name, n) for n in range(300) for name in ("first", "second")]
