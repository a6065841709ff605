"""REST rate limiting against a fake Discord that enforces its own limits and sends real headers.

The fake answers through `httpx.MockTransport`; every request takes `LATENCY` seconds of trio
time, so requests that the client lets run in parallel really overlap. Time is trio's
`autojump_clock`: waits of seconds cost nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from kimaki.discord.errors import Forbidden, RateLimited
from kimaki.discord.models import InteractionCallbackType
from kimaki.discord.rest import RESTClient

LATENCY = 0.1
DEFERRED = InteractionCallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GAbCdE.fake-token-for-tests-only-xxxxxxxxxxxx"


@attrs.define
class Seen:
    time: float
    method: str
    path: str


@attrs.define
class FakeDiscord:
    """Enforces per-(bucket, major) windows and a global 50/s; answers 429 when exceeded."""

    # route prefix → (bucket hash, limit, window seconds)
    limits: dict[str, tuple[str, int, float]] = attrs.field(factory=dict)
    global_limit: int = 50
    seen: list[Seen] = attrs.field(factory=list)
    server_429s: int = 0
    in_flight: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))
    max_in_flight: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))
    # Scripted answers, taken first-in first-out before the normal behaviour.
    script: list[Callable[[httpx.Request], httpx.Response]] = attrs.field(factory=list)
    _windows: dict[str, tuple[float, int]] = attrs.field(factory=dict)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        now = trio.current_time()
        path = request.url.path.removeprefix("/api/v10")
        self.seen.append(Seen(now, request.method, path))
        recent = [s for s in self.seen if s.time > now - 1.0 and "/interactions/" not in s.path]
        assert len(recent) <= self.global_limit, "client broke the global limit"
        route = f"{request.method} {path}"
        self.in_flight[route] += 1
        self.max_in_flight[route] = max(self.max_in_flight[route], self.in_flight[route])
        try:
            await trio.sleep(LATENCY)
        finally:
            self.in_flight[route] -= 1
        if self.script:
            return self.script.pop(0)(request)
        return self._limited(request.method, path, trio.current_time())

    def _limited(self, method: str, path: str, now: float) -> httpx.Response:
        matching = [v for k, v in self.limits.items() if f"{method} {path}".startswith(k)]
        if not matching:
            return httpx.Response(200, json={"ok": True})
        bucket, limit, window = matching[0]
        major = path.split("/")[2]
        key = f"{bucket}:{major}"
        reset_at, used = self._windows.get(key, (now + window, 0))
        if now >= reset_at:
            reset_at, used = now + window, 0
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Bucket": bucket,
            "X-RateLimit-Reset-After": f"{reset_at - now:.3f}",
        }
        if used >= limit:
            self.server_429s += 1
            headers["X-RateLimit-Remaining"] = "0"
            headers["X-RateLimit-Scope"] = "user"
            body = {"message": "You are being rate limited.", "retry_after": reset_at - now}
            return httpx.Response(429, json={**body, "global": False}, headers=headers)
        used += 1
        self._windows[key] = (reset_at, used)
        headers["X-RateLimit-Remaining"] = str(limit - used)
        return httpx.Response(200, json={"ok": True}, headers=headers)


def client_for(fake: FakeDiscord, **kwargs: Any) -> RESTClient:
    return RESTClient(
        TOKEN,
        base_url="https://discord.test/api/v10",
        transport=httpx.MockTransport(fake.handle),
        **kwargs,
    )


async def typing(client: RESTClient, channel_id: int, done: dict[int, list[float]]) -> None:
    await client.trigger_typing(channel_id)
    done[channel_id].append(trio.current_time())


async def test_same_bucket_hash_on_two_channels_does_not_block(autojump_clock: Any) -> None:
    fake = FakeDiscord(limits={"POST /channels/": ("typing-hash", 2, 5.0)})
    done: dict[int, list[float]] = defaultdict(list)
    async with client_for(fake) as client:
        await client.trigger_typing(1)  # learn the bucket
        async with trio.open_nursery() as nursery:
            nursery.start_soon(typing, client, 1, done)
            nursery.start_soon(typing, client, 1, done)
            nursery.start_soon(typing, client, 2, done)
    assert fake.server_429s == 0
    start = fake.seen[0].time
    # Channel 2 has its own window: it is not delayed by channel 1's exhausted one.
    assert done[2][0] - start < 1.0
    # Channel 1 had 2 per 5 s: the third request (second in the nursery) waits for the reset.
    assert sorted(done[1])[0] - start < 1.0
    assert sorted(done[1])[1] - start >= 5.0


async def test_unknown_bucket_sends_one_request_until_the_first_answer(
    autojump_clock: Any,
) -> None:
    fake = FakeDiscord(limits={"POST /channels/": ("typing-hash", 5, 5.0)})
    async with client_for(fake) as client, trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(client.trigger_typing, 7)
    times = [s.time for s in fake.seen]
    assert times[0] < times[1], "the first request on an unknown route went alone"
    # After the first answer named the bucket (5 per window), the rest went together.
    assert times[1] == times[2] == times[3]
    assert fake.max_in_flight["POST /channels/7/typing"] == 3
    assert fake.server_429s == 0


async def test_remaining_zero_waits_for_reset_without_a_429(autojump_clock: Any) -> None:
    fake = FakeDiscord(limits={"POST /channels/": ("typing-hash", 5, 5.0)})
    async with client_for(fake) as client:
        for _ in range(12):
            await client.trigger_typing(3)
        stats = client.statistics()
    assert fake.server_429s == 0
    assert stats.rate_limited == 0
    assert stats.requests == 12
    first = fake.seen[0].time
    assert fake.seen[5].time - first >= 5.0
    assert fake.seen[10].time - first >= 10.0


async def test_global_limit_is_fifty_per_second(autojump_clock: Any) -> None:
    fake = FakeDiscord()
    async with client_for(fake) as client, trio.open_nursery() as nursery:
        for channel in range(130):
            nursery.start_soon(client.trigger_typing, channel)
    # FakeDiscord asserts ≤ 50 in every 1 s window; 130 requests need more than 2 s.
    assert len(fake.seen) == 130
    assert fake.seen[-1].time - fake.seen[0].time >= 2.0


async def test_requests_held_by_the_global_limit_go_out_first_come_first_served(
    autojump_clock: Any,
) -> None:
    fake = FakeDiscord()
    async with client_for(fake) as client, trio.open_nursery() as nursery:
        for channel in range(80):
            nursery.start_soon(client.trigger_typing, channel)
            await trio.testing.wait_all_tasks_blocked()  # in line before the next one asks
    # 50 went at once; the 30 that waited for room in the window went in the order they asked.
    held = [s.path for s in fake.seen[50:]]
    assert held == [f"/channels/{channel}/typing" for channel in range(50, 80)]
    assert fake.seen[50].time - fake.seen[0].time >= 1.0


async def test_interaction_callbacks_do_not_wait_for_the_global_limit(
    autojump_clock: Any,
) -> None:
    fake = FakeDiscord()
    async with client_for(fake) as client, trio.open_nursery() as nursery:
        for channel in range(100):
            nursery.start_soon(client.trigger_typing, channel)
        await trio.sleep(0.01)  # the 100 GETs have taken the global budget
        start = trio.current_time()
        await client.create_interaction_response(1, "tok", DEFERRED)
        elapsed = trio.current_time() - start
    assert elapsed < 0.5


def _json_429(
    retry_after: float | None, *, is_global: bool = False, headers: dict[str, str] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    body: dict[str, Any] = {"message": "You are being rate limited.", "global": is_global}
    if retry_after is not None:
        body["retry_after"] = retry_after

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=body, headers=headers or {})

    return answer


async def test_429_waits_retry_after_from_the_body(autojump_clock: Any) -> None:
    fake = FakeDiscord(script=[_json_429(2.5)])
    async with client_for(fake) as client:
        await client.trigger_typing(1)
        stats = client.statistics()
    assert len(fake.seen) == 2
    assert fake.seen[1].time - fake.seen[0].time >= 2.5
    assert stats.rate_limited == 1
    assert stats.retries == 1


async def test_429_waits_retry_after_header_when_the_body_has_none(autojump_clock: Any) -> None:
    fake = FakeDiscord(script=[_json_429(None, headers={"Retry-After": "3"})])
    async with client_for(fake) as client:
        await client.trigger_typing(1)
    assert fake.seen[1].time - fake.seen[0].time >= 3.0


async def test_global_429_pauses_every_other_route(autojump_clock: Any) -> None:
    fake = FakeDiscord(
        script=[_json_429(4.0, is_global=True, headers={"X-RateLimit-Global": "true"})]
    )
    async with client_for(fake) as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.trigger_typing, 1)
        await trio.sleep(1.0)  # the 429 has arrived
        await client.trigger_typing(2)
    other = [s for s in fake.seen if s.path == "/channels/2/typing"]
    assert other[0].time >= fake.seen[0].time + LATENCY + 4.0


async def test_persistent_429_raises_rate_limited(autojump_clock: Any) -> None:
    fake = FakeDiscord(script=[_json_429(1.0)] * 10)
    async with client_for(fake, max_rate_limit_retries=2) as client:
        with pytest.raises(RateLimited) as info:
            await client.trigger_typing(1)
    assert info.value.status == 429
    assert info.value.retry_after == 1.0
    assert len(fake.seen) == 3


def _cloudflare(request: httpx.Request) -> httpx.Response:
    html = "<html><body>error code: 1015 You are being rate limited</body></html>"
    return httpx.Response(429, text=html, headers={"Content-Type": "text/html"})


async def test_cloudflare_429_pauses_everything_and_logs_loudly(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDiscord(script=[_cloudflare])
    async with client_for(fake) as client:
        with pytest.raises(RateLimited):
            await client.trigger_typing(1)
        banned_at = trio.current_time()
        assert client.statistics().paused_for >= 59.0
        # Interactions too: the ban is on the IP, not on the bot's global budget.
        await client.create_interaction_response(5, "tok", DEFERRED)
    assert fake.seen[1].time - banned_at >= 60.0
    errors = [r for r in caplog.records if r.name == "kimaki.rest" and r.levelno == logging.ERROR]
    assert errors, "a Cloudflare ban must be logged at ERROR"
    assert "Cloudflare" in errors[0].getMessage()


async def test_after_a_cloudflare_pause_one_request_probes_first(autojump_clock: Any) -> None:
    fake = FakeDiscord(script=[_cloudflare])
    async with client_for(fake) as client:
        with pytest.raises(RateLimited):
            await client.trigger_typing(1)
        async with trio.open_nursery() as nursery:
            for channel in range(2, 6):
                nursery.start_soon(client.trigger_typing, channel)
    probes = sorted(s.time for s in fake.seen[1:])
    assert probes[0] < probes[1], "the first request after the pause went alone"
    assert probes[1] == probes[3]


async def test_invalid_requests_are_counted_over_ten_minutes(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"code": 50013, "message": "Missing Permissions"})

    fake = FakeDiscord(script=[forbidden] * 150)
    caplog.set_level(logging.WARNING, logger="kimaki.rest")
    async with client_for(fake) as client:
        for _ in range(150):
            with pytest.raises(Forbidden, match="Missing Permissions"):
                await client.trigger_typing(1)
        assert client.statistics().invalid_requests_10min == 150
        warnings = [r.getMessage() for r in caplog.records if "invalid requests" in r.getMessage()]
        assert len(warnings) == 1
        assert warnings[0].startswith("100 invalid requests")
        await trio.sleep(601)
        assert client.statistics().invalid_requests_10min == 0
