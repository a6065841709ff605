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

A handler's exception is logged and the dispatcher goes on: one bad event or one bug in a
handler cannot stop the bot from hearing the next message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, final

import attrs
import trio

from kimaki.discord.errors import ModelError
from kimaki.discord.gateway import GatewayEvent
from kimaki.discord.models import structure

__all__ = ["Dispatcher", "DispatcherStatistics"]

log = logging.getLogger("kimaki.dispatch")

T = TypeVar("T")
Handler = Callable[[Any], Awaitable[None]]


@final
@attrs.frozen
class DispatcherStatistics:
    events: int
    handled: int
    malformed: int
    handler_errors: int


@attrs.define
class _Subscription:
    handler: Handler
    model: type[Any] | None
    concurrent: bool


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
        self._finished = trio.Event()

    def on(
        self,
        event: str,
        handler: Callable[[T], Awaitable[None]],
        *,
        model: type[T] | None = None,
        concurrent: bool = False,
    ) -> None:
        """Call `handler` with each `event`'s data, converted to `model` (raw JSON if None)."""
        subscription = _Subscription(handler, model, concurrent)
        self._subscriptions.setdefault(event, []).append(subscription)

    @property
    def sequence(self) -> int | None:
        """The sequence of the event being dispatched (or last dispatched): an in-order
        handler reads it to know which event it acts on."""
        return self._sequence

    def statistics(self) -> DispatcherStatistics:
        return DispatcherStatistics(self._events, self._handled, self._malformed, self._errors)

    async def run(self, events: trio.MemoryReceiveChannel[GatewayEvent]) -> None:
        """Handle events until the channel is closed and drained (the shard stopped)."""
        try:
            async with trio.open_nursery() as nursery, events:
                async for event in events:
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

    async def _call(self, handler: Handler, data: Any, event: GatewayEvent) -> None:
        try:
            await handler(data)
            self._handled += 1
        except Exception:
            self._errors += 1
            log.exception("handling %s (seq %s) failed", event.name, event.sequence)
