"""Exponential backoff with jitter: one rule for every retry loop in the daemon.

Reconnecting to Discord, retrying a REST call, restarting an agent server, re-opening an
agent's event stream: each waits longer after each consecutive failure, up to a cap, and
spreads the wait randomly so that many clients that failed together (a Discord outage, a
machine waking up) do not all come back at the same moment.
"""

from __future__ import annotations

from typing import final

import attrs

__all__ = ["Backoff"]


@final
@attrs.frozen
class Backoff:
    """The n-th consecutive failure (1-based) waits between `1 - jitter` and 1 times
    `min(cap, initial * factor ** (n - 1))`.

    `random` (in [0, 1)) is the caller's, so tests can pin it: 0 gives the shortest wait.
    """

    initial: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, random: float) -> float:
        exponent = min(max(attempt - 1, 0), 64)
        base = min(self.cap, self.initial * self.factor**exponent)
        return base * (1.0 - self.jitter + self.jitter * random)
