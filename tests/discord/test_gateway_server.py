"""The emulator's gateway server seen from a raw websocket client: it enforces Discord's rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_websocket

from kimaki.discord._gateway_protocol import ZlibStreamDecoder, encode_payload
from kimaki.testing.discord._gateway import GatewayServer

TOKEN = "server-test-token-0123456789"
QUERY = "/?v=10&encoding=json"


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[GatewayServer, int]]:
    server = GatewayServer(
        token=TOKEN, user={"id": "9"}, guilds=lambda: [{"id": "1"}], heartbeat_interval=10.0
    )
    with trio.fail_after(3600):  # virtual time: fail instead of hanging
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            yield server, port
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def client(port: int, path: str = QUERY) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, f"127.0.0.1:{port}", path)
            yield ws
            with trio.move_on_after(5):
                await ws.aclose()
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def receive(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str)
    payload = json.loads(message)
    assert isinstance(payload, dict)
    return payload


async def close_code(ws: trio_websocket.WebSocketConnection) -> int:
    while True:
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason.code if closed.reason is not None else -1


def identify(token: str = TOKEN, **extra: Any) -> str:
    return encode_payload(2, {"token": token, "intents": 513, "properties": {}, **extra})


async def test_hello_ready_and_guilds_uncompressed(autojump_clock: trio.abc.Clock) -> None:
    async with serving() as (server, port), client(port) as ws:
        assert await receive(ws) == {"op": 10, "d": {"heartbeat_interval": 10000}}
        await ws.send_message(identify())
        ready = await receive(ws)
        assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
        assert ready["d"]["guilds"] == [{"id": "1", "unavailable": True}]
        assert ready["d"]["resume_gateway_url"] == server.resume_url
        assert ready["d"]["application"] == {"id": "9", "flags": 0}
        guild = await receive(ws)
        assert (guild["t"], guild["s"], guild["d"]) == ("GUILD_CREATE", 2, {"id": "1"})


async def read_compressed(
    ws: trio_websocket.WebSocketConnection, decoder: ZlibStreamDecoder
) -> tuple[dict[str, Any], int]:
    frames = 0
    while True:
        message = await ws.get_message()
        assert isinstance(message, bytes)
        frames += 1
        if (data := decoder.feed(message)) is not None:
            return json.loads(data), frames


async def test_zlib_stream_when_asked(autojump_clock: trio.abc.Clock) -> None:
    async with serving() as (server, port):
        server.frames_per_payload = 3
        async with client(port, QUERY + "&compress=zlib-stream") as ws:
            decoder = ZlibStreamDecoder()
            hello, frames = await read_compressed(ws, decoder)
            assert (hello["op"], frames) == (10, 3)
            await ws.send_message(identify())
            ready, frames = await read_compressed(ws, decoder)
            assert (ready["t"], frames) == ("READY", 3)
            guild, _ = await read_compressed(ws, decoder)
            assert guild["t"] == "GUILD_CREATE"


async def test_zlib_stream_compression_level_for_new_connections(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A benchmark trades the server's ratio for its speed; the stream still decodes."""
    sizes = []
    async with serving() as (server, port):
        for level in (-1, 0):
            server.compression_level = level
            async with client(port, QUERY + "&compress=zlib-stream") as ws:
                decoder = ZlibStreamDecoder()
                await read_compressed(ws, decoder)  # hello
                await ws.send_message(identify())
                await read_compressed(ws, decoder)  # ready
                await read_compressed(ws, decoder)  # guild
                server.dispatch("MESSAGE_CREATE", {"content": "same words " * 200})
                message = await ws.get_message()
                assert isinstance(message, bytes)
                event = decoder.feed(message)
                assert event is not None
                assert json.loads(event)["d"] == {"content": "same words " * 200}
                sizes.append(len(message))
            server.forget_sessions()
    # Level 0 stores the 2,200 characters as they are; the default level squeezes the repeats.
    assert sizes[0] < 200 < 2200 < sizes[1]


@pytest.mark.parametrize(
    ("path", "first", "code"),
    [
        ("/?v=9&encoding=json", None, 4012),
        (QUERY, identify("wrong-token"), 4004),
        (QUERY, identify(intents="all"), 4013),
        (QUERY, identify(shard=[1, 1]), 4010),
        (QUERY, encode_payload(3, {"status": "online"}), 4003),
        (QUERY, encode_payload(42, None), 4001),
        (QUERY, "{not json", 4002),
        (QUERY, encode_payload(3, "x" * 5000), 4002),
    ],
)
async def test_discord_close_codes(
    autojump_clock: trio.abc.Clock, path: str, first: str | None, code: int
) -> None:
    async with serving() as (_server, port), client(port, path) as ws:
        if first is not None:
            await receive(ws)
            await ws.send_message(first)
        assert await close_code(ws) == code


async def test_already_authenticated(autojump_clock: trio.abc.Clock) -> None:
    async with serving() as (_server, port), client(port) as ws:
        await receive(ws)
        await ws.send_message(identify())
        await ws.send_message(identify())
        assert await close_code(ws) == 4005


async def test_more_than_120_sends_a_minute_closes_4008(autojump_clock: trio.abc.Clock) -> None:
    async with serving() as (server, port), client(port) as ws:
        await receive(ws)
        await ws.send_message(identify())
        for _ in range(119):
            await ws.send_message(encode_payload(1, None))
        await server.wait_for_heartbeats(119)
        assert server.statistics().rate_limit_closes == 0
        await ws.send_message(encode_payload(1, None))
        assert await close_code(ws) == 4008


async def test_a_client_that_stops_heartbeating_times_out(autojump_clock: trio.abc.Clock) -> None:
    async with serving() as (server, port), client(port) as ws:
        await receive(ws)
        await ws.send_message(identify())
        await ws.send_message(encode_payload(1, None))
        started = trio.current_time()
        assert await close_code(ws) == 4009
        assert trio.current_time() - started == pytest.approx(15.0)
        assert server.statistics().missed_heartbeat_closes == 1
        assert server.statistics().sessions == 0


async def test_resume_of_an_unknown_session_is_invalid(autojump_clock: trio.abc.Clock) -> None:
    async with serving() as (_server, port), client(port) as ws:
        await receive(ws)
        resume = {"token": TOKEN, "session_id": "nope", "seq": 3}
        await ws.send_message(encode_payload(6, resume))
        assert await receive(ws) == {"op": 9, "d": False}


async def test_resume_replays_what_was_missed(autojump_clock: trio.abc.Clock) -> None:
    async with serving() as (server, port):
        async with client(port) as ws:
            await receive(ws)
            await ws.send_message(identify())
            session_id = (await receive(ws))["d"]["session_id"]
            await receive(ws)
        await server.wait_for_client_close()
        server.dispatch("MESSAGE_CREATE", {"n": 1})
        server.dispatch("MESSAGE_CREATE", {"n": 2})
        async with client(port) as ws:
            await receive(ws)
            resume = {"token": TOKEN, "session_id": session_id, "seq": 3}
            await ws.send_message(encode_payload(6, resume))
            replay = [await receive(ws) for _ in range(2)]
            assert [(p["t"], p["s"], p["d"]) for p in replay] == [
                ("MESSAGE_CREATE", 4, {"n": 2}),
                ("RESUMED", 5, {}),
            ]
