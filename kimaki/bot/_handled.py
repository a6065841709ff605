"""Handled events: what the bot already acted on, so a replayed gateway event changes nothing.

Discord replays every event after the sequence a RESUME names. After a crash (SIGKILL, OOM) the
stored sequence is older than what the bot handled, so messages and interactions arrive again.
Each one is recognised by its snowflake id:

- **in memory**, on the hot path: `claim()` is a dict lookup, and says True only the first time
  an id is seen by this process (the ids recorded by earlier processes are loaded at start);
- **in the store**, written at the point of no return: a message's id when its prompt is about
  to be sent, with the turn's record (`begin_turn`), or with the saved queue of an in-place
  restart; an interaction's id before its handler runs (`claim_interaction`). A message still
  waiting in a queue when the process dies is not recorded, so its replay serves it then.

The record is bounded: ids older than `RETENTION` (a RESUME can only reach recent events) are
swept from memory and the store once per `SWEEP_INTERVAL`, never per event.

Between a message being routed and its prompt reaching the agent (a queue behind a long turn,
a thread being opened) the message is only in memory. It is **held**: `oldest_held()` gives
the gateway the oldest sequence still held, and the gateway never saves a sequence past it, so
a crash has Discord replay the message rather than lose it. Recording a message settles its
hold; a hold older than `HOLD_LIMIT` is let go with a warning, so a path that forgets to settle
cannot pin the saved sequence for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Final, final

import trio

from kimaki.store import HandledEventLog, RunningTurn
from kimaki.threads import Prompt

__all__ = [
    "INTERACTION_TOKEN_LIFETIME",
    "RETENTION",
    "SWEEP_INTERVAL",
    "HandledEvents",
    "snowflake_time",
]

log = logging.getLogger("kimaki.handled")

DISCORD_EPOCH: Final = 1_420_070_400.0
"""The first second of 2015, where Discord's snowflake timestamps start."""
INTERACTION_TOKEN_LIFETIME: Final = 15 * 60.0
"""An interaction's token is valid this long after its creation; no answer is possible later."""
RETENTION: Final = 24 * 3600.0
HOLD_LIMIT: Final = 3600.0
SWEEP_INTERVAL: Final = 3600.0


def snowflake_time(snowflake: int) -> float:
    """When a snowflake was made, in seconds since the Unix epoch (its top 42 bits)."""
    return (snowflake >> 22) / 1000 + DISCORD_EPOCH


@final
class HandledEvents:
    """The ids of the messages and interactions this bot acted on. `load()` before any event."""

    def __init__(
        self,
        store: HandledEventLog,
        *,
        retention: float = RETENTION,
        sweep_interval: float = SWEEP_INTERVAL,
        clock: Callable[[], float] = time.time,
        current_sequence: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._store = store
        self._current_sequence = current_sequence
        self._held: dict[int, tuple[int, float]] = {}  # message id → (sequence, since)
        self._retention = retention
        self._sweep_interval = sweep_interval
        self._clock = clock
        self._seen: dict[int, float] = {}  # id → when it was first seen (or recorded)

    async def load(self) -> None:
        """What earlier processes recorded (before the first event of this one)."""
        self._seen.update(await self._store.handled_events())
        if self._seen:
            log.debug("%d handled event id(s) remembered", len(self._seen))

    def seen(self, event_id: int) -> bool:
        return event_id in self._seen

    def claim(self, event_id: int) -> bool:
        """True the first time `event_id` is offered; False for a replay (nothing is written)."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = self._clock()
        return True

    def hold(self, event_id: int) -> None:
        """The event being dispatched (`event_id`) is acted on later: keep the gateway from
        saving its sequence until it is recorded (or `settle`d)."""
        sequence = self._current_sequence()
        if sequence is not None:
            self._held.setdefault(event_id, (sequence, self._clock()))

    def settle(self, event_ids: Iterable[int]) -> None:
        """Nothing more to do for `event_ids` (recorded, or dropped on purpose)."""
        for event_id in event_ids:
            self._held.pop(event_id, None)

    def oldest_held(self) -> int | None:
        """The oldest sequence still held, for the gateway (about once a second)."""
        if not self._held:
            return None
        expired = self._clock() - HOLD_LIMIT
        for event_id, (sequence, since) in list(self._held.items()):
            if since < expired:
                log.warning(
                    "message %d (seq %d) held for over %.0f s without reaching the agent: no "
                    "longer kept for a replay",
                    event_id,
                    sequence,
                    HOLD_LIMIT,
                )
                del self._held[event_id]
        return min((sequence for sequence, _ in self._held.values()), default=None)

    async def record(self, kind: str, event_ids: Iterable[int]) -> None:
        """Remember `event_ids` in the store before an effect that cannot be undone: after a
        crash their replay is refused. Returns once they are written (the store writes them
        with the next call it starts, together with whatever else was recorded meanwhile)."""
        ids = list(event_ids)
        now = self._remember(ids)
        await self._store.record_handled([(event_id, kind) for event_id in ids], at=now)
        self.settle(ids)

    async def begin_turn(self, prompt: Prompt, turn: RunningTurn) -> None:
        """The prompt is about to be sent as `turn`: its messages (every one that joined it)
        are handled for good, recorded with the running turn in one write."""
        self._remember(prompt.message_ids)
        await self._store.begin_turn(turn, prompt.message_ids)
        self.settle(prompt.message_ids)

    def _remember(self, event_ids: Iterable[int]) -> float:
        """Mark `event_ids` seen (before their write: a replay meanwhile is refused); now."""
        now = self._clock()
        for event_id in event_ids:
            self._seen.setdefault(event_id, now)
        return now

    async def claim_interaction(self, interaction_id: int) -> bool:
        """True (and recorded) if the interaction should run now: seen for the first time and
        younger than its 15-minute token. Recorded before the handler runs, because what a
        command does (a thread, a merge) cannot be taken back."""
        age = self._clock() - snowflake_time(interaction_id)
        if age > INTERACTION_TOKEN_LIFETIME:
            log.info(
                "interaction %d is %.0f s old, past its 15-minute token: not executed",
                interaction_id,
                age,
            )
            return False
        if not self.claim(interaction_id):
            log.info("interaction %d was already handled (replayed): ignored", interaction_id)
            return False
        await self.record("interaction", [interaction_id])
        return True

    async def sweep(self) -> int:
        """Forget ids older than the retention, in memory and in the store; how many rows."""
        before = self._clock() - self._retention
        self._seen = {event_id: at for event_id, at in self._seen.items() if at >= before}
        return await self._store.forget_handled_before(before)

    async def run(self) -> None:
        """Sweep once per interval, until cancelled."""
        while True:
            await trio.sleep(self._sweep_interval)
            swept = await self.sweep()
            if swept:
                log.info("forgot %d handled event id(s) older than a day", swept)
