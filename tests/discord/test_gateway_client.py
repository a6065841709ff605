"""The gateway client against the emulator's gateway server, one test per rule of issue 3.

Every test runs on trio's autojump clock: waits of seconds or minutes of gateway time cost
nothing, and timings asserted here are virtual, exact and deterministic.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from kimaki.discord._gateway_protocol import INTENTS, Intent, Opcode, encode_payload
from kimaki.discord.gateway import (
    FINAL_CLOSE_CODE,
    HANDSHAKE_TIMEOUT,
    RESUMABLE_CLOSE_CODE,
    GatewayEvent,
    GatewaySession,
    GatewayShard,
    PayloadTooLarge,
    ShardClosed,
)
from kimaki.errors import ConfigError, CredentialsError
from kimaki.testing.discord._gateway import GatewayServer

TOKEN = "gateway-test-token-0123456789"
USER = {"id": "900", "username": "kimaki", "bot": True}
GUILDS = [
    {"id": "1", "name": "one", "channels": [], "roles": [], "members": []},
    {"id": "2", "name": "two", "channels": [], "roles": [], "members": []},
]


class MemoryStore:
    def __init__(self, session: GatewaySession | None = None) -> None:
        self.session = session
        self.saves: list[GatewaySession | None] = []
        self._saved = trio.Event()

    async def load_gateway_session(self) -> GatewaySession | None:
        return self.session

    async def save_gateway_session(self, session: GatewaySession | None) -> None:
        self.session = session
        self.saves.append(session)
        self._saved.set()
        self._saved = trio.Event()

    async def wait_for_save(self) -> None:
        await self._saved.wait()


@attrs.define
class Harness:
    server: GatewayServer
    shard: GatewayShard
    events: trio.MemoryReceiveChannel[GatewayEvent]
    nursery: trio.Nursery
    fetches: list[float]

    async def next_event(self, name: str | None = None) -> GatewayEvent:
        async for event in self.events:
            if name is None or event.name == name:
                return event
        raise AssertionError("the shard stopped")

    def drain(self) -> list[GatewayEvent]:
        received = []
        while True:
            try:
                received.append(self.events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return received


def make_shard(
    server: GatewayServer,
    events: trio.MemorySendChannel[GatewayEvent],
    *,
    token: str = TOKEN,
    store: MemoryStore | None = None,
    random_source: Callable[[], float] = lambda: 0.5,
    fetch: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    fetches: list[float] | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> GatewayShard:
    async def fetch_gateway() -> dict[str, Any]:
        if fetches is not None:
            fetches.append(trio.current_time())
        return server.gateway_bot()

    return GatewayShard(
        token=token,
        fetch_gateway=fetch or fetch_gateway,
        events=events,
        session_store=store,
        random_source=random_source,
        handshake_timeout=handshake_timeout,
    )


@asynccontextmanager
async def running(
    *,
    start: bool = True,
    store: MemoryStore | None = None,
    random_source: Callable[[], float] = lambda: 0.5,
    heartbeat_interval: float = 41.25,
    frames_per_payload: int = 1,
    buffer: float = math.inf,
    fetch: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> AsyncIterator[Harness]:
    server = GatewayServer(
        token=TOKEN,
        user=USER,
        guilds=lambda: GUILDS,
        heartbeat_interval=heartbeat_interval,
        frames_per_payload=frames_per_payload,
    )
    # An hour of virtual time: a broken rule fails the test at once instead of hanging it.
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            send, receive = trio.open_memory_channel[GatewayEvent](buffer)
            fetches: list[float] = []
            shard = make_shard(
                server,
                send,
                store=store,
                random_source=random_source,
                fetch=fetch,
                fetches=fetches,
                handshake_timeout=handshake_timeout,
            )
            harness = Harness(server, shard, receive, nursery, fetches)
            if start:
                await nursery.start(shard.run)
            yield harness
            nursery.cancel_scope.cancel()


def message(n: int) -> dict[str, Any]:
    return {"id": str(1000 + n), "channel_id": "10", "content": f"message {n}"}


async def test_identify_ready_and_guilds(autojump_clock: trio.abc.Clock) -> None:
    async with running() as h:
        identify = h.server.identifies[0]
        assert identify["intents"] == int(INTENTS)
        assert identify["intents"] == (1 << 0) | (1 << 9) | (1 << 15) | (1 << 7) | (1 << 12)
        assert Intent(identify["intents"]) == (
            Intent.GUILDS
            | Intent.GUILD_MESSAGES
            | Intent.MESSAGE_CONTENT
            | Intent.GUILD_VOICE_STATES
            | Intent.DIRECT_MESSAGES
        )
        assert identify["shard"] == [0, 1]
        assert h.shard.state == "ready"
        ready = await h.next_event()
        assert ready.name == "READY"
        assert ready.sequence == 1
        assert ready.data["user"] == USER
        creates = [await h.next_event(), await h.next_event()]
        assert [(e.name, e.data["id"]) for e in creates] == [
            ("GUILD_CREATE", "1"),
            ("GUILD_CREATE", "2"),
        ]
        assert h.shard.guild_count == 2


# -- heartbeats ----------------------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.1, 0.8])
async def test_first_heartbeat_is_jittered_then_every_interval(
    autojump_clock: trio.abc.Clock, jitter: float
) -> None:
    async with running(random_source=lambda: jitter, heartbeat_interval=40.0) as h:
        hello_at = trio.current_time()  # Hello, IDENTIFY and READY take no virtual time
        await h.server.wait_for_heartbeats(1)
        assert trio.current_time() - hello_at == pytest.approx(40.0 * jitter)
        first_at = trio.current_time()
        await h.server.wait_for_heartbeats(2)
        assert trio.current_time() - first_at == pytest.approx(40.0)
        await h.server.wait_for_heartbeats(3)
        assert trio.current_time() - first_at == pytest.approx(80.0)


async def test_server_heartbeat_request_is_answered_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running(heartbeat_interval=40.0) as h:
        await h.server.wait_for_heartbeats(1)
        asked_at = trio.current_time()
        h.server.request_heartbeat()
        await h.server.wait_for_heartbeats(2)
        assert trio.current_time() == pytest.approx(asked_at)
        # The schedule is unchanged: the next regular beat comes one interval after the first.
        await h.server.wait_for_heartbeats(3)
        assert trio.current_time() == pytest.approx(asked_at + 40.0)


async def test_latency_comes_from_the_ack(autojump_clock: trio.abc.Clock) -> None:
    async with running() as h:
        assert h.shard.statistics().latency is None
        await h.server.wait_for_heartbeats(2)
        await h.server.wait_for_heartbeats(3)  # the ACK of beat 2 was read before beat 3
        assert h.shard.latency is not None
        assert 0 <= h.shard.latency < 0.1
        stats = h.shard.statistics()
        assert stats.heartbeats_acked >= 2
        assert stats.latency == h.shard.latency


async def test_zombie_connection_is_closed_resumably_and_resumed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running(heartbeat_interval=40.0) as h:
        ready = await h.next_event("READY")
        h.server.drop_acks(1)
        await h.server.wait_for_heartbeats(1)
        unacked_at = trio.current_time()
        assert await h.server.wait_for_client_close() == RESUMABLE_CLOSE_CODE
        # Closed at the next beat's time instead of sending it.
        assert trio.current_time() == pytest.approx(unacked_at + 40.0)
        resume = await h.server.wait_for_resume()
        assert resume["session_id"] == ready.data["session_id"]
        assert resume["token"] == TOKEN
        await h.next_event("RESUMED")
        assert h.shard.state == "ready"
        stats = h.shard.statistics()
        assert stats.zombie_closes == 1
        assert stats.identifies == 1
        assert stats.resumes == 1


async def test_slow_consumer_does_not_make_a_zombie(autojump_clock: trio.abc.Clock) -> None:
    async with running(buffer=0, heartbeat_interval=10.0) as h:
        for n in range(500):
            h.server.dispatch("MESSAGE_CREATE", message(n))
        # Nobody reads events for ten heartbeat intervals.
        await h.server.wait_for_heartbeats(10)
        await h.server.wait_for_heartbeats(11)
        stats = h.shard.statistics()
        assert stats.zombie_closes == 0
        assert stats.heartbeats_acked >= 10
        assert h.server.statistics().connections == 1
        assert stats.events_backlog > 400
        names = [(await h.next_event()).name for _ in range(3)]
        assert names == ["READY", "GUILD_CREATE", "GUILD_CREATE"]
        contents = [(await h.next_event()).data["content"] for _ in range(500)]
        assert contents == [f"message {n}" for n in range(500)]


# -- reconnects ----------------------------------------------------------------------------


async def test_op7_reconnects_to_the_resume_url_and_resumes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running() as h:
        ready = await h.next_event("READY")
        assert len(h.fetches) == 1
        h.server.reconnect()
        assert await h.server.wait_for_client_close() == RESUMABLE_CLOSE_CODE
        resume = await h.server.wait_for_resume()
        assert resume["session_id"] == ready.data["session_id"]
        await h.next_event("RESUMED")
        assert len(h.fetches) == 1  # the resume URL from READY, not GET /gateway/bot
        assert len(h.server.identifies) == 1


async def test_op9_resumable_resumes(autojump_clock: trio.abc.Clock) -> None:
    async with running() as h:
        ready = await h.next_event("READY")
        h.server.invalidate_session(resumable=True)
        resume = await h.server.wait_for_resume()
        assert resume["session_id"] == ready.data["session_id"]
        await h.next_event("RESUMED")
        assert len(h.server.identifies) == 1


@pytest.mark.parametrize(("jitter", "wait"), [(0.0, 1.0), (0.5, 3.0), (1.0, 5.0)])
async def test_op9_not_resumable_waits_one_to_five_seconds_then_identifies(
    autojump_clock: trio.abc.Clock, jitter: float, wait: float
) -> None:
    async with running(random_source=lambda: jitter, heartbeat_interval=40.0) as h:
        first = await h.next_event("READY")
        await h.server.wait_for_heartbeats(2)  # well past the 5 s between identifies
        invalidated_at = trio.current_time()
        h.server.invalidate_session(resumable=False)
        await h.server.wait_for_identify(2)
        assert trio.current_time() - invalidated_at == pytest.approx(wait)
        second = await h.next_event("READY")
        assert second.data["session_id"] != first.data["session_id"]
        assert second.sequence == 1  # a new session counts from 1 and is not dropped
        assert h.server.resumes == []


@pytest.mark.parametrize("code", [4007, 4009])
async def test_session_ending_close_codes_identify_again(
    autojump_clock: trio.abc.Clock, code: int
) -> None:
    async with running() as h:
        await h.next_event("READY")
        identified_at = trio.current_time()
        h.server.close_connections(code)
        await h.server.wait_for_identify(2)
        assert h.server.resumes == []
        # One IDENTIFY per 5 s (max_concurrency 1).
        assert trio.current_time() - identified_at >= 5.0
        assert len(h.fetches) == 2
        await h.next_event("READY")
        assert h.shard.state == "ready"


@pytest.mark.parametrize("code", [4000, 4001, 4002, 4003, 4005, 4008, 1000, 1001, 1011, 4999])
async def test_other_close_codes_resume(autojump_clock: trio.abc.Clock, code: int) -> None:
    async with running() as h:
        ready = await h.next_event("READY")
        h.server.close_connections(code)
        resume = await h.server.wait_for_resume()
        assert resume["session_id"] == ready.data["session_id"]
        await h.next_event("RESUMED")
        assert len(h.server.identifies) == 1


async def test_failures_back_off_exponentially_up_to_a_minute_and_reset_when_healthy(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running(random_source=lambda: 0.0) as h:
        await h.next_event("READY")
        h.server.close_on_connect = 4000
        h.server.close_connections(4000)
        times = []
        for n in range(2, 12):
            await h.server.wait_for_connections(n)
            times.append(trio.current_time())
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        # Jitter pinned to its low end: half of 1, 2, 4, ... seconds, capped at half of 60.
        assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
        h.server.close_on_connect = None
        # Three failed connections to the resume URL gave the session up: a fresh one.
        await h.next_event("READY")
        healthy_at = trio.current_time()
        h.server.close_connections(4000)
        await h.server.wait_for_resume(1)
        assert trio.current_time() - healthy_at == pytest.approx(0.5)


# -- fatal close codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (4004, CredentialsError, "Discord rejected the bot token"),
        (4014, CredentialsError, "Privileged Gateway Intents → Message Content Intent"),
        (4010, ConfigError, "bug in kimaki"),
        (4011, ConfigError, "bug in kimaki"),
        (4012, ConfigError, "bug in kimaki"),
        (4013, ConfigError, "bug in kimaki"),
    ],
)
async def test_fatal_close_codes_stop_with_a_message_for_the_operator(
    autojump_clock: trio.abc.Clock, code: int, error: type[Exception], words: str
) -> None:
    async with running(start=False) as h:
        h.server.close_on_identify = code
        with pytest.raises(error, match=words) as caught:
            await h.shard.run()
        assert str(code) in str(caught.value)
        assert h.shard.state == "stopped"
        assert len(h.server.identifies) == 1  # no retry


async def test_wrong_token_is_rejected_with_exit_78(autojump_clock: trio.abc.Clock) -> None:
    async with running(start=False) as h:
        send, _receive = trio.open_memory_channel[GatewayEvent](math.inf)
        shard = make_shard(h.server, send, token="not-the-token-at-all")
        with pytest.raises(CredentialsError, match="rejected the bot token") as caught:
            await h.nursery.start(shard.run)
        assert caught.value.exit_code == 78
        assert "Reset Token" in str(caught.value)


# -- send limit --------------------------------------------------------------------------------


async def test_sends_stay_under_120_per_minute_and_heartbeats_still_go_out(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running(heartbeat_interval=20.0) as h:
        started_at = trio.current_time()
        for n in range(300):
            h.shard.send_nowait(Opcode.PRESENCE_UPDATE, {"status": "online", "n": n})
        await h.server.wait_for_client_payloads(300)
        elapsed = trio.current_time() - started_at
        server = h.server.statistics()
        stats = h.shard.statistics()
        assert server.rate_limit_closes == 0
        assert server.connections == 1
        # 117 per minute leave three slots for heartbeats: 300 sends need two full minutes.
        assert 120 <= elapsed < 130
        assert stats.sends == 300
        assert stats.sends_throttled > 0
        # Heartbeats kept their schedule (one every 20 s from 10 s) and were all acknowledged.
        assert server.heartbeats == int((elapsed - 10) // 20) + 1
        assert stats.zombie_closes == 0
        assert [p["d"]["n"] for p in h.server.client_payloads] == list(range(300))


async def test_send_waits_until_written(autojump_clock: trio.abc.Clock) -> None:
    async with running() as h:
        await h.shard.update_presence({"status": "idle", "activities": [], "afk": False})
        await h.shard.update_voice_state(1, None)
        payloads = await h.server.wait_for_client_payloads(2)
        assert [p["op"] for p in payloads] == [3, 4]
        assert payloads[1]["d"] == {
            "guild_id": "1",
            "channel_id": None,
            "self_mute": False,
            "self_deaf": False,
        }


async def test_payload_over_4096_bytes_is_refused_before_sending(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running() as h:
        with pytest.raises(PayloadTooLarge, match="4096"):
            h.shard.send_nowait(Opcode.PRESENCE_UPDATE, {"status": "x" * 4096})
        with pytest.raises(PayloadTooLarge):
            await h.shard.update_presence({"status": "é" * 2100})  # bytes, not characters
        await h.shard.update_presence({"status": "x" * 4000})  # under the limit: sent
        assert len(await h.server.wait_for_client_payloads(1)) == 1
        assert h.server.statistics().connections == 1


# -- compression, replay, sessions -------------------------------------------------------------


async def test_zlib_stream_payloads_split_across_frames(autojump_clock: trio.abc.Clock) -> None:
    async with running(frames_per_payload=7) as h:
        assert (await h.next_event()).name == "READY"
        big = {"id": "1", "channel_id": "10", "content": "wörds " * 20_000}
        for n in range(20):
            h.server.dispatch("MESSAGE_CREATE", message(n))
        h.server.dispatch("MESSAGE_CREATE", big)
        received = [await h.next_event() for _ in range(23)]
        assert [e.name for e in received[:2]] == ["GUILD_CREATE", "GUILD_CREATE"]
        assert [e.data for e in received[2:]] == [message(n) for n in range(20)] + [big]
        assert h.shard.statistics().malformed_payloads == 0


async def test_resume_replays_missed_events_exactly_once(autojump_clock: trio.abc.Clock) -> None:
    async with running() as h:
        for n in range(3):
            h.server.dispatch("MESSAGE_CREATE", message(n))
        h.server.close_connections(4000)
        for n in range(3, 6):  # the connection is closing: these wait for the replay
            h.server.dispatch("MESSAGE_CREATE", message(n))
        await h.server.wait_for_resume()
        await h.next_event("RESUMED")
        # A replay of something already received is dropped.
        h.server.send_text(encode_payload(0, message(2), t="MESSAGE_CREATE", s=5))
        h.server.dispatch("MESSAGE_CREATE", message(6))
        event = await h.next_event("MESSAGE_CREATE")
        assert event.data == message(6)
        received = [e for e in h.drain() if e.name == "MESSAGE_CREATE"]
        assert received == []
        assert h.shard.statistics().duplicates_dropped == 1


async def test_resume_replay_reaches_the_consumer_in_order(autojump_clock: trio.abc.Clock) -> None:
    async with running() as h:
        for n in range(3):
            h.server.dispatch("MESSAGE_CREATE", message(n))
        h.server.close_connections(4000)
        for n in range(3, 6):
            h.server.dispatch("MESSAGE_CREATE", message(n))
        await h.server.wait_for_resume()
        events: list[GatewayEvent] = []
        while not events or events[-1].name != "RESUMED":
            events.append(await h.next_event())
        contents = [e.data["content"] for e in events if e.name == "MESSAGE_CREATE"]
        assert contents == [f"message {n}" for n in range(6)]
        sequences = [e.sequence or 0 for e in events]
        assert sequences == sorted(set(sequences))


async def test_stored_session_resumes_after_a_restart(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStore()
    async with running(store=store) as h:
        ready = await h.next_event("READY")
        for n in range(2):
            h.server.dispatch("MESSAGE_CREATE", message(n))
        last = None
        for _ in range(4):
            last = await h.next_event()
        assert last is not None
        await h.shard.close(resumable=True)
        assert await h.server.wait_for_client_close() == RESUMABLE_CLOSE_CODE
        assert store.session == GatewaySession(
            ready.data["session_id"], last.sequence or 0, h.server.resume_url
        )
        for n in range(2, 4):  # while the daemon is down
            h.server.dispatch("MESSAGE_CREATE", message(n))

        send, receive = trio.open_memory_channel[GatewayEvent](math.inf)
        restarted = make_shard(h.server, send, store=store)
        await h.nursery.start(restarted.run)  # returns on RESUMED
        assert len(h.server.identifies) == 1
        resume = await h.server.wait_for_resume()
        assert resume["session_id"] == ready.data["session_id"]
        assert resume["seq"] == last.sequence
        replayed = [await receive.receive() for _ in range(3)]
        assert [e.name for e in replayed] == ["MESSAGE_CREATE", "MESSAGE_CREATE", "RESUMED"]
        assert [e.data for e in replayed[:2]] == [message(2), message(3)]
        assert restarted.state == "ready"


async def test_session_saved_on_ready_before_any_heartbeat(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with running(start=False, store=store) as h:
        began = trio.current_time()
        h.nursery.start_soon(h.shard.run)
        while store.session is None:
            await store.wait_for_save()
        assert trio.current_time() - began < 1.0
        assert h.server.statistics().heartbeats == 0
        assert store.session.resume_url == h.server.resume_url
        assert store.session.sequence >= 1


async def test_session_saved_once_the_consumer_is_done_not_per_beat(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with running(store=store) as h:
        ready = await h.next_event("READY")
        await h.next_event()
        await h.next_event()
        await h.server.wait_for_heartbeats(1)
        h.server.dispatch("MESSAGE_CREATE", message(1))
        event = await h.next_event()
        h.nursery.start_soon(h.next_event)  # done with it: waiting for the next
        await h.server.wait_for_heartbeats(2)
        assert store.session == GatewaySession(
            ready.data["session_id"], event.sequence or 0, h.server.resume_url
        )
        saves = len(store.saves)
        await h.server.wait_for_heartbeats(4)
        assert len(store.saves) == saves  # saved once per change, not per beat


async def test_stale_stored_session_falls_back_to_identify(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore(GatewaySession("gone", 41, "ws://127.0.0.1:1"))
    async with running(start=False, store=store) as h:
        store.session = GatewaySession("gone", 41, h.server.url)
        await h.nursery.start(h.shard.run)
        assert h.server.resumes[0]["session_id"] == "gone"
        assert len(h.server.identifies) == 1
        assert (await h.next_event()).name == "READY"
        assert store.session is None or store.session.session_id != "gone"


async def test_final_close_closes_with_1000_and_forgets_the_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with running(store=store) as h:
        await h.next_event("READY")
        await h.shard.close()
        assert await h.server.wait_for_client_close() == FINAL_CLOSE_CODE
        assert h.shard.state == "stopped"
        assert store.session is None
        h.drain()
        with pytest.raises(trio.EndOfChannel):  # the consumer sees the end of the events
            await h.events.receive()
        with pytest.raises(ShardClosed):
            h.shard.send_nowait(Opcode.PRESENCE_UPDATE, {"status": "online"})


async def test_cancelled_run_closes_with_1000(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStore()
    async with running(start=False, store=store) as h:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                await inner.start(h.shard.run)
                await h.server.wait_for_heartbeats(1)
                assert store.session is not None
                scope.cancel()
                cancelled_at = trio.current_time()
        # The close handshake completes at once (the shutdown does not wait out a timeout).
        assert trio.current_time() - cancelled_at < 1.0
        assert await h.server.wait_for_client_close() == FINAL_CLOSE_CODE
        assert h.shard.state == "stopped"
        assert store.session is None  # Discord ended the session; a restart identifies


# -- identify limits, guilds, secrets -------------------------------------------------------


async def test_session_start_limit_used_up_waits_for_reset(
    autojump_clock: trio.abc.Clock,
) -> None:
    server_box: list[GatewayServer] = []

    async def fetch() -> dict[str, Any]:
        return server_box[0].gateway_bot(remaining=0, reset_after_ms=30_000)

    async with running(start=False, fetch=fetch) as h:
        server_box.append(h.server)
        begun = trio.current_time()
        await h.nursery.start(h.shard.run)
        assert trio.current_time() - begun == pytest.approx(30.0)


async def test_guild_count_follows_guild_events(autojump_clock: trio.abc.Clock) -> None:
    async with running() as h:
        assert h.shard.guild_count == 2
        h.server.dispatch("GUILD_CREATE", {"id": "3", "name": "three"})
        h.server.dispatch("GUILD_DELETE", {"id": "3", "unavailable": True})
        await h.next_event("GUILD_DELETE")
        assert h.shard.guild_count == 3  # an outage keeps the bot in the guild
        h.server.dispatch("GUILD_DELETE", {"id": "3"})
        await h.next_event("GUILD_DELETE")
        assert h.shard.guild_count == 2
        assert h.shard.statistics().guild_count == 2


async def test_token_never_reaches_the_log(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kimaki")
    async with running() as h:
        h.server.reconnect()
        await h.server.wait_for_resume()
        await h.next_event("RESUMED")
    assert any(r.name == "kimaki.gateway" for r in caplog.records)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


# -- a gateway that does not answer (issue 12) -------------------------------------------------


async def test_unanswered_identify_is_closed_after_the_timeout_and_identified_again(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(start=False, heartbeat_interval=5.0) as h:
        h.server.ignore_identify = True
        h.nursery.start_soon(h.shard.run)
        await h.server.wait_for_identify(1)
        identified_at = trio.current_time()
        await h.server.wait_for_heartbeats(2)  # heartbeats go on, acknowledged...
        assert h.shard.state == "connecting"
        # ...but without READY the connection is given up after 15 s, counted as a failure
        # (a backoff of 0.75 s with the jitter at 0.5) and a fresh IDENTIFY follows.
        assert await h.server.wait_for_client_close() == RESUMABLE_CLOSE_CODE
        assert trio.current_time() - identified_at == pytest.approx(15.0)
        h.server.ignore_identify = False
        await h.server.wait_for_identify(2)
        assert trio.current_time() - identified_at == pytest.approx(15.75)
        assert (await h.next_event()).name == "READY"
        assert h.shard.state == "ready"
        assert h.server.resumes == []
    assert "did not answer IDENTIFY within 15 s (no READY)" in caplog.text


async def test_unanswered_resume_counts_as_an_invalid_session(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    async with running(store=store) as h:
        first = await h.next_event("READY")
        h.server.ignore_resume = True
        h.server.close_connections(4000)
        await h.server.wait_for_resume()
        resumed_at = trio.current_time()
        assert h.shard.state == "resuming"
        await h.server.wait_for_identify(2)
        # 15 s without an answer, then the backoff of a second consecutive failure (1.5 s).
        assert trio.current_time() - resumed_at == pytest.approx(16.5)
        second = await h.next_event("READY")
        assert second.data["session_id"] != first.data["session_id"]
        assert len(h.server.resumes) == 1  # identified afresh, not resumed again
        assert h.shard.state == "ready"
        while store.session is None:  # the dead session was dropped, the new one is saved
            await store.wait_for_save()
        assert store.session.session_id == second.data["session_id"]
    assert "did not answer RESUME within 15 s (no RESUMED, no op 9)" in caplog.text


async def test_handshake_timeout_is_configurable(autojump_clock: trio.abc.Clock) -> None:
    async with running(start=False, handshake_timeout=4.0) as h:
        h.server.ignore_identify = True
        h.nursery.start_soon(h.shard.run)
        await h.server.wait_for_identify(1)
        identified_at = trio.current_time()
        await h.server.wait_for_client_close()
        assert trio.current_time() - identified_at == pytest.approx(4.0)


async def test_a_long_replay_is_an_answer_to_resume(autojump_clock: trio.abc.Clock) -> None:
    async with running() as h:
        await h.next_event("READY")
        h.server.close_connections(4000)
        for n in range(30):  # missed while away, replayed one per second: 30 s before RESUMED
            h.server.dispatch("MESSAGE_CREATE", message(n))
        h.server.set_event_delay(1.0)
        await h.server.wait_for_resume()
        resumed_at = trio.current_time()
        await h.next_event("RESUMED")
        assert trio.current_time() - resumed_at > 30.0
        assert len(h.server.identifies) == 1
        assert len(h.server.resumes) == 1


async def test_refused_resume_url_falls_back_to_identify_after_three_attempts(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with running() as h:
        first = await h.next_event("READY")
        await h.server.refuse_resumes()
        dropped_at = trio.current_time()
        h.server.close_connections(4000)
        await h.server.wait_for_identify(2)
        # The close and three refused connections, each followed by the backoff (0.75, 1.5,
        # 3 and 6 s), then GET /gateway/bot and IDENTIFY.
        assert trio.current_time() - dropped_at == pytest.approx(11.25)
        assert len(h.fetches) == 2
        assert h.server.statistics().connections == 2  # the refused ones never got there
        second = await h.next_event("READY")
        assert second.data["session_id"] != first.data["session_id"]
        assert h.server.resumes == []
    assert "dropping the gateway session: 3 connections to its resume URL" in caplog.text


async def test_stored_session_with_a_refused_resume_url_identifies_at_start(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running(start=False) as h:
        await h.server.refuse_resumes()
        store = MemoryStore(GatewaySession("stored", 41, h.server.resume_url))
        send, receive = trio.open_memory_channel[GatewayEvent](math.inf)
        shard = make_shard(h.server, send, store=store)
        began = trio.current_time()
        await h.nursery.start(shard.run)  # returns on READY
        assert trio.current_time() - began < 10.0
        assert len(h.server.identifies) == 1
        assert (await receive.receive()).name == "READY"
        while store.session is None or store.session.session_id == "stored":
            await store.wait_for_save()  # dropped, then the new session saved


# -- the stored sequence follows the consumer (issue 19) ----------------------------------------


async def test_sequence_is_saved_as_events_are_handled_so_a_kill_replays_little(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    handled: list[GatewayEvent] = []
    on_disk: list[GatewaySession | None] = []  # what the store held when the process died
    killed = trio.Event()
    async with running(store=store, heartbeat_interval=600.0) as h:
        await h.next_event("READY")
        await h.next_event("GUILD_CREATE")
        await h.next_event("GUILD_CREATE")
        saves_before = len(store.saves)
        began = trio.current_time()

        async def consume() -> None:
            # An in-order consumer, as the dispatcher is: each event takes 0.1 s to handle.
            async for event in h.events:
                await trio.sleep(0.1)
                handled.append(event)
                if len(handled) == 100:
                    on_disk.append(store.session)  # SIGKILL: nothing more is written
                    killed.set()
                    return

        h.nursery.start_soon(consume)
        for n in range(300):
            h.server.dispatch("MESSAGE_CREATE", message(n))
        await killed.wait()
        elapsed = trio.current_time() - began
        # Batched: about one write per second of handling, never one per event.
        assert len(store.saves) - saves_before <= elapsed + 1
        await h.shard.close(resumable=True)

        [session] = on_disk
        assert session is not None
        last_handled = handled[-1].sequence or 0
        # Not ahead of what was handled (that would lose events), and at most a second of
        # handling (10 events) behind it, where a heartbeat-only save was 100 behind.
        assert last_handled - 11 <= session.sequence <= last_handled

        send, receive = trio.open_memory_channel[GatewayEvent](math.inf)
        restarted = make_shard(h.server, send, store=MemoryStore(session))
        await h.nursery.start(restarted.run)
        assert (await h.server.wait_for_resume())["seq"] == session.sequence
        replayed = [await receive.receive() for _ in range(last_handled - session.sequence)]
        assert [e.sequence for e in replayed] == list(range(session.sequence + 1, last_handled + 1))


async def test_event_the_consumer_still_holds_is_not_saved_as_handled(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with running(store=store) as h:
        for _ in range(3):
            await h.next_event()
        h.nursery.start_soon(h.next_event)  # done with the guilds, waiting for more
        await trio.sleep(2.0)
        assert store.session is not None
        assert store.session.sequence == 3
        h.server.dispatch("MESSAGE_CREATE", message(1))
        h.server.dispatch("MESSAGE_CREATE", message(2))
        await h.next_event()  # message 2 taken, and held: its handling has not ended
        await trio.sleep(5.0)
        assert store.session.sequence == 4
        h.nursery.start_soon(h.next_event)
        await trio.sleep(2.0)
        assert store.session.sequence == 5
