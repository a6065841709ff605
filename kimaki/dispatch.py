"""Gateway events → typed models → the handlers that subscribed to them.

One task reads the shard's event channel. Each event name has handlers registered with the
model class its `data` converts to; conversion happens once per event, and a payload that does
not convert is logged and skipped (a malformed event never reaches a handler, and never stops
the dispatcher).

Handlers run in one of two ways:

- **in order** (the default): awaited one after another in the dispatcher task, so events reach
  them in gateway order. The message router is one: it only *submits* to thread runtimes,
  which is quick, and the order of messages in a thread is the order the person sent them.
- **concurrently**: started in the dispatcher's nursery, for handlers that must not wait for
  each other, such as interactions (each has 3 seconds to be acknowledged).

A handler may also name an `accept` check, awaited in order with the raw `data` before any
conversion: when it says no, that handler is skipped and its model is not built. Most events
of a busy guild are messages in channels the bot does not serve; the router's check drops them
for the price of a few dictionary lookups instead of a whole `Message` (see
docs/performance.md).

A handler's exception is logged and the dispatcher goes on: one bad event or one bug in a
handler cannot stop the bot from hearing the next message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, final

import attrs
import trio

from kimaki.discord.errors import ModelError
from kimaki.discord.gateway import GatewayEvent
from kimaki.discord.models import structure

__all__ = ["Dispatcher", "DispatcherStatistics"]

log = logging.getLogger("kimaki.dispatch")

T = TypeVar("T")
Handler = Callable[[Any], Awaitable[None]]
_EVENTS_PER_TURN: Final = 64
Accept = Callable[[Any], Awaitable[bool]]


@final
@attrs.frozen
class DispatcherStatistics:
    events: int
    handled: int
    malformed: int
    handler_errors: int
    declined: int = 0  # skipped unconverted: a handler's `accept` said no


@attrs.define
class _Subscription:
    handler: Handler
    model: type[Any] | None
    concurrent: bool
    accept: Accept | None = None


@final
class Dispatcher:
    """Routes gateway events to handlers; register with `on()` before `run()`."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, list[_Subscription]] = {}
        self._events = 0
        self._sequence: int | None = None
        self._handled = 0
        self._malformed = 0
        self._errors = 0
        self._declined = 0
        self._finished = trio.Event()

    def on(
        self,
        event: str,
        handler: Callable[[T], Awaitable[None]],
        *,
        model: type[T] | None = None,
        concurrent: bool = False,
        accept: Accept | None = None,
    ) -> None:
        """Call `handler` with each `event`'s data, converted to `model` (raw JSON if None).

        `accept`, if given, sees the raw data first, in gateway order even for a concurrent
        handler (so it must be quick): False skips the handler without converting anything.
        """
        subscription = _Subscription(handler, model, concurrent, accept)
        self._subscriptions.setdefault(event, []).append(subscription)

    @property
    def sequence(self) -> int | None:
        """The sequence of the event being dispatched (or last dispatched): an in-order
        handler reads it to know which event it acts on."""
        return self._sequence

    def statistics(self) -> DispatcherStatistics:
        return DispatcherStatistics(
            self._events, self._handled, self._malformed, self._errors, self._declined
        )

    async def run(self, events: trio.MemoryReceiveChannel[GatewayEvent]) -> None:
        """Handle events until the channel is closed and drained (the shard stopped)."""
        try:
            async with trio.open_nursery() as nursery, events:
                in_a_row = 0
                while True:
                    # What is already there is taken without a trip through the scheduler
                    # per event (a burst is dispatched in one go); a checkpoint every
                    # `_EVENTS_PER_TURN` events, before the next is taken, still lets other
                    # tasks run meanwhile.
                    if in_a_row >= _EVENTS_PER_TURN:
                        await trio.lowlevel.checkpoint()
                        in_a_row = 0
                    try:
                        event = events.receive_nowait()
                        in_a_row += 1
                    except trio.WouldBlock:
                        try:
                            event = await events.receive()
                        except trio.EndOfChannel:
                            break
                        in_a_row = 0
                    except trio.EndOfChannel:
                        break
                    self._events += 1
                    self._sequence = event.sequence
                    await self._dispatch(event, nursery)
        finally:
            self._finished.set()

    async def wait_finished(self) -> None:
        """Until `run()` has returned: after the shard stopped, every event it handed on has
        been handled (concurrent handlers included). An in-place restart waits for this before
        the bot saves what the next process must continue."""
        await self._finished.wait()

    async def _dispatch(self, event: GatewayEvent, nursery: trio.Nursery) -> None:
        subscriptions = self._subscriptions.get(event.name)
        if not subscriptions:
            return
        converted: dict[type[Any] | None, Any] = {}
        for subscription in subscriptions:
            if subscription.accept is not None and not await self._accepts(subscription, event):
                continue
            model = subscription.model
            if model not in converted:
                try:
                    converted[model] = event.data if model is None else structure(event.data, model)
                except ModelError as exc:
                    self._malformed += 1
                    log.warning(
                        "skipped a malformed %s (seq %s): %s", event.name, event.sequence, exc
                    )
                    return
            if subscription.concurrent:
                nursery.start_soon(self._call, subscription.handler, converted[model], event)
            else:
                await self._call(subscription.handler, converted[model], event)

    async def _accepts(self, subscription: _Subscription, event: GatewayEvent) -> bool:
        assert subscription.accept is not None
        try:
            accepted = await subscription.accept(event.data)
        except Exception:
            self._errors += 1
            log.exception("handling %s (seq %s) failed", event.name, event.sequence)
            return False
        if not accepted:
            self._declined += 1
        return accepted

    async def _call(self, handler: Handler, data: Any, event: GatewayEvent) -> None:
        try:
            await handler(data)
            self._handled += 1
        except Exception:
            self._errors += 1
            log.exception("handling %s (seq %s) failed", event.name, event.sequence)
