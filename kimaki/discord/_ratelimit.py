"""Discord REST rate limiting: per-bucket windows, the global limit, and ban avoidance.

Discord tells us its limits after the fact, in response headers, so the limiter learns:

- A route (method + path template) whose bucket is unknown sends one request at a time: the
  bucket's lock is held until the first response names the bucket (`X-RateLimit-Bucket`) and
  its window (`Limit`, `Remaining`, `Reset-After`). Routes without those headers are unlimited.
- A known bucket is keyed by its hash *and* the route's major parameter, so two channels with
  the same bucket hash do not slow each other down. Requests take from `remaining` before they
  are sent and wait for the reset when it is spent: steady traffic gets no 429s at all.
- At most `global_limit` requests per second overall (interaction endpoints are exempt, as
  Discord documents); a 429 with `global: true` pauses every other route for `retry_after`.
- A 429 that is not Discord's JSON comes from Cloudflare: the IP is being banned. Everything
  (interactions too) pauses for at least a minute, doubling while it repeats, and afterwards
  one request at a time probes until an ordinary answer comes back.
- 401, 403 and 429 (except `X-RateLimit-Scope: shared`) responses are counted over a sliding
  ten minutes: 10,000 of them get the IP banned, so growth past thresholds is logged.

All times are trio's clock, so tests run on `autojump_clock`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Final, Literal, final

import attrs
import trio

from kimaki.discord._routes import CompiledRoute

__all__ = ["InvalidRequestWindow", "RateLimitHit", "RateLimiter", "Slot"]

log = logging.getLogger("kimaki.rest")

CLOUDFLARE_MIN_PAUSE: Final = 60.0
CLOUDFLARE_MAX_PAUSE: Final = 3600.0
INVALID_REQUEST_WINDOW: Final = 600.0
INVALID_REQUEST_BAN: Final = 10_000
INVALID_REQUEST_THRESHOLDS: Final = (100, 500, 1_000, 2_500, 5_000, 7_500, 9_000)
# Responses within this many seconds of the same reset belong to the same window.
_SAME_WINDOW: Final = 0.2
_SWEEP_EVERY: Final = 300.0
_IDLE_BUCKET: Final = 600.0


@attrs.define
class _Bucket:
    key: str
    lock: trio.Lock = attrs.Factory(trio.Lock)
    # False until a response described the bucket: until then requests go one at a time.
    known: bool = False
    # None: no limit (the route sent no rate-limit headers) or not known yet.
    limit: int | None = None
    remaining: int = 1
    reset_at: float = 0.0
    window: float = 0.0
    last_used: float = 0.0

    def update(self, limit: int, remaining: int, reset_at: float, reset_after: float) -> None:
        if self.known and reset_at < self.reset_at - _SAME_WINDOW:
            return  # a late answer from a window that has already reset
        if not self.known or reset_at > self.reset_at + _SAME_WINDOW:
            self.remaining = remaining
        else:
            # Same window: requests still in flight were already taken from our count.
            self.remaining = min(self.remaining, remaining)
        self.limit = limit
        self.reset_at = max(self.reset_at, reset_at)
        self.window = max(self.window, reset_after)
        self.known = True


@final
@attrs.frozen
class RateLimitHit:
    """What a 429 meant: `scope` decides who waits, `retry_after` how long (seconds)."""

    scope: Literal["bucket", "global", "cloudflare"]
    retry_after: float


@final
class InvalidRequestWindow:
    """401/403/429 responses in the last ten minutes, logged as the count grows."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._logged = 0

    def count(self, now: float) -> int:
        times = self._times
        while times and times[0] <= now - INVALID_REQUEST_WINDOW:
            times.popleft()
        count = len(times)
        if count < self._logged:  # the window drained: warn again if it grows back
            self._logged = max((t for t in INVALID_REQUEST_THRESHOLDS if t <= count), default=0)
        return count

    def add(self, now: float, status: int) -> None:
        self._times.append(now)
        count = self.count(now)
        crossed = max((t for t in INVALID_REQUEST_THRESHOLDS if t <= count), default=0)
        if crossed > self._logged:
            self._logged = crossed
            log.warning(
                "%d invalid requests (401/403/429) in the last 10 minutes, latest %d; "
                "Discord bans the IP at %d",
                count,
                status,
                INVALID_REQUEST_BAN,
            )


@final
class Slot:
    """One admitted request; `record()` its response so the limiter learns from it."""

    def __init__(self, limiter: RateLimiter, compiled: CompiledRoute, bucket: _Bucket) -> None:
        self._limiter = limiter
        self._compiled = compiled
        self._bucket = bucket

    def record(self, status: int, headers: Mapping[str, str], body: bytes) -> RateLimitHit | None:
        """Update buckets from `headers`; for a 429, say what kind it was."""
        return self._limiter._record(self._compiled, self._bucket, status, headers, body)


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


@final
class RateLimiter:
    def __init__(self, *, global_limit: int = 50, global_period: float = 1.0) -> None:
        self._global_limit = global_limit
        self._global_period = global_period
        self._route_hashes: dict[str, str] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._sent: deque[float] = deque()
        self._global_until = 0.0
        self._banned_until = 0.0
        self._ban_pause = CLOUDFLARE_MIN_PAUSE
        self._suspect_ban = False
        self._probe_lock = trio.Lock()
        self._global_line = trio.Lock()  # fair: FIFO
        self._next_sweep = 0.0
        self.invalid_requests = InvalidRequestWindow()

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    def ban_suspected(self) -> bool:
        """Whether the last answer was Cloudflare's: requests then go one at a time."""
        return self._suspect_ban

    def paused_for(self) -> float:
        """Seconds until a global or Cloudflare pause ends (0 when none)."""
        return max(0.0, max(self._global_until, self._banned_until) - trio.current_time())

    def _key(self, compiled: CompiledRoute) -> str:
        bucket_hash = self._route_hashes.get(compiled.route.key)
        if bucket_hash is None:
            return f"?{compiled.route.key}:{compiled.major}"
        return f"{bucket_hash}:{compiled.major}"

    @contextlib.asynccontextmanager
    async def acquire(self, compiled: CompiledRoute) -> AsyncIterator[Slot]:
        """Wait until `compiled` may be sent; the caller sends and records inside the block."""
        self._sweep()
        while True:
            key = self._key(compiled)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(key)
            await bucket.lock.acquire()
            # While we waited, the first response may have revealed the route's real bucket.
            if self._key(compiled) == key and self._buckets.get(key) is bucket:
                break
            bucket.lock.release()
        holding_bucket = True
        holding_probe = False
        try:
            await self._wait_for_room(bucket)
            if bucket.limit is not None:
                bucket.remaining -= 1
            bucket.last_used = trio.current_time()
            if bucket.known:
                bucket.lock.release()
                holding_bucket = False
            if self._suspect_ban:
                await self._probe_lock.acquire()
                holding_probe = True
                if not self.ban_suspected():  # the probe before us got an ordinary answer
                    self._probe_lock.release()
                    holding_probe = False
            await self._wait_global(compiled)
            yield Slot(self, compiled, bucket)
        finally:
            if holding_probe:
                self._probe_lock.release()
            if holding_bucket:
                bucket.lock.release()

    async def _wait_for_room(self, bucket: _Bucket) -> None:
        while True:
            now = trio.current_time()
            if bucket.remaining <= 0 and now >= bucket.reset_at:
                # A new window; its real reset arrives with the next response.
                bucket.remaining = bucket.limit if bucket.limit is not None else 1
                bucket.reset_at = now + bucket.window
            if bucket.remaining > 0:
                return
            log.debug("bucket %s exhausted; waiting %.3fs", bucket.key, bucket.reset_at - now)
            await trio.sleep_until(bucket.reset_at)

    async def _wait_global(self, compiled: CompiledRoute) -> None:
        if compiled.route.interaction:  # exempt from the global limit, not from a ban
            while True:
                until = self._banned_until  # a new ban while asleep moves it on
                if trio.current_time() >= until:
                    return
                await trio.sleep_until(until)
        # In line, first come first served: only the first waits for room in the window. (Were
        # every waiter to watch it, each freed slot would wake them all, and a backlog of N
        # requests would cost N wake-ups per request sent.)
        async with self._global_line:
            while True:
                now = trio.current_time()
                until = max(self._banned_until, self._global_until)
                if now < until:
                    await trio.sleep_until(until)
                    continue
                sent = self._sent
                while sent and sent[0] <= now - self._global_period:
                    sent.popleft()
                if len(sent) < self._global_limit:
                    sent.append(now)
                    return
                await trio.sleep_until(sent[0] + self._global_period)

    def _record(
        self,
        compiled: CompiledRoute,
        bucket: _Bucket,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> RateLimitHit | None:
        now = trio.current_time()
        target = bucket
        bucket_hash = headers.get("x-ratelimit-bucket")
        if bucket_hash:
            route_key = compiled.route.key
            if self._route_hashes.get(route_key) != bucket_hash:
                self._route_hashes[route_key] = bucket_hash
                if not bucket.known:
                    self._buckets.pop(bucket.key, None)
            key = self._key(compiled)
            target = self._buckets.get(key) or self._buckets.setdefault(key, _Bucket(key))
            target.last_used = now
            limit = headers.get("x-ratelimit-limit")
            remaining = headers.get("x-ratelimit-remaining")
            reset_after = _float(headers.get("x-ratelimit-reset-after"))
            if limit and remaining and limit.isdigit() and remaining.isdigit() and reset_after:
                target.update(int(limit), int(remaining), now + reset_after, reset_after)
        elif status != 429 and not bucket.known:
            bucket.known = True  # a route Discord does not rate-limit

        if status != 429:
            if self._suspect_ban and status < 500:
                log.warning("Discord answers again; the Cloudflare pause is over")
            self._suspect_ban = False
            self._ban_pause = CLOUDFLARE_MIN_PAUSE
            if status in (401, 403):
                self.invalid_requests.add(now, status)
            return None

        try:
            data = json.loads(body)
        except ValueError:
            data = None
        scope = headers.get("x-ratelimit-scope", "")
        if scope != "shared":
            self.invalid_requests.add(now, status)
        if not isinstance(data, dict):
            return self._cloudflare(now, _float(headers.get("retry-after")))

        retry_after = (
            _float(str(data.get("retry_after")))
            or _float(headers.get("retry-after"))
            or _float(headers.get("x-ratelimit-reset-after"))
            or 1.0
        )
        if data.get("global") or scope == "global" or headers.get("x-ratelimit-global"):
            self._global_until = max(self._global_until, now + retry_after)
            log.warning(
                "global rate limit hit on %s %s; every route waits %.2fs",
                compiled.route.method,
                compiled.loggable_path,
                retry_after,
            )
            return RateLimitHit("global", retry_after)
        target.remaining = 0
        target.reset_at = max(target.reset_at, now + retry_after)
        log.warning(
            "rate limited (%s) on %s %s; retrying in %.2fs",
            scope or "bucket",
            compiled.route.method,
            compiled.loggable_path,
            retry_after,
        )
        return RateLimitHit("bucket", retry_after)

    def _cloudflare(self, now: float, retry_after: float | None) -> RateLimitHit:
        pause = max(self._ban_pause, retry_after or 0.0)
        self._ban_pause = min(pause * 2, CLOUDFLARE_MAX_PAUSE)
        self._banned_until = max(self._banned_until, now + pause)
        self._suspect_ban = True
        log.error(
            "Cloudflare answered 429 without Discord's JSON: this IP is being banned for too "
            "many invalid requests. Pausing all REST calls for %.0fs; then one at a time",
            pause,
        )
        return RateLimitHit("cloudflare", pause)

    def _sweep(self) -> None:
        # Buckets are per channel; threads come and go for weeks, so idle ones are dropped.
        now = trio.current_time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY
        idle = [
            key
            for key, bucket in self._buckets.items()
            if not bucket.lock.locked()
            and bucket.last_used < now - _IDLE_BUCKET
            and bucket.reset_at < now
        ]
        for key in idle:
            del self._buckets[key]
