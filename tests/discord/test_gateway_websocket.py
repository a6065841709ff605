"""The gateway's own websocket (`kimaki.discord._websocket`) against a wsproto server.

The gateway tests run it against the emulator; these pin the protocol cases the emulator never
sends: fragments, pings, an oversized message, a refused upgrade, a lost connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from kimaki.discord._websocket import (
    CloseReason,
    ConnectionClosed,
    HandshakeError,
    WebSocket,
    open_websocket,
)


class Server:
    """The server end, driven by the test one step at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)

    async def events(self) -> list[Event]:
        data = await self.stream.receive_some()
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def send(self, *events: Event) -> None:
        await self.stream.send_all(b"".join(self.ws.send(event) for event in events))

    async def accept(self, *then: Event) -> None:
        """Answer the upgrade; `then` goes out in the same write (the client's first read)."""
        request = await self.events()
        assert isinstance(request[0], Request)
        await self.send(AcceptConnection(), *then)


@asynccontextmanager
async def connected(
    *then: Event, max_message_size: int = 1 << 20
) -> AsyncIterator[tuple[WebSocket, Server]]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept, *then)
        ws = await open_websocket(
            client_stream, "gateway.test", "/?v=10", max_message_size=max_message_size
        )
    yield ws, server


async def messages(ws: WebSocket, count: int) -> Sequence[bytes | str]:
    got: list[bytes | str] = []
    while len(got) < count:
        got += await ws.receive_messages()
    return got


async def test_messages_sent_with_the_handshake_and_fragments_arrive_whole() -> None:
    async with connected(
        BytesMessage(b"ab", message_finished=False),
        BytesMessage(b"cd", message_finished=False),
        BytesMessage(b"ef"),
        TextMessage("hello"),
    ) as (ws, _):
        assert await messages(ws, 2) == [b"abcdef", "hello"]


async def test_a_burst_is_returned_from_one_read() -> None:
    async with connected() as (ws, server):
        await server.send(*(TextMessage(f"event {n}") for n in range(50)))
        assert await ws.receive_messages() == [f"event {n}" for n in range(50)]


async def test_pings_are_answered_and_sends_arrive() -> None:
    async with connected() as (ws, server):
        await server.send(Ping(b"are you there"), TextMessage("after the ping"))
        assert await messages(ws, 1) == ["after the ping"]
        assert await server.events() == [Pong(b"are you there")]
        await ws.send_message('{"op":1}')
        await ws.send_message(b"\x00\x01")
        received = await server.events()
        while len(received) < 2:
            received += await server.events()
        assert received == [TextMessage('{"op":1}'), BytesMessage(b"\x00\x01")]


async def test_server_close_comes_after_the_messages_before_it_and_is_answered() -> None:
    async with connected() as (ws, server):
        await server.send(TextMessage("last"), CloseConnection(4004, "Authentication failed"))
        assert await ws.receive_messages() == ["last"]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive_messages()
        assert closed.value.reason == CloseReason(4004, "Authentication failed")
        assert ws.closed == CloseReason(4004, "Authentication failed")
        answer = await server.events()
        assert isinstance(answer[0], CloseConnection)
        assert answer[0].code == 4004
        with pytest.raises(ConnectionClosed):
            await ws.send_message("too late")


async def test_a_lost_connection_is_an_abnormal_closure() -> None:
    async with connected() as (ws, server):
        await server.stream.aclose()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive_messages()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1006


async def test_an_oversized_message_closes_with_1009() -> None:
    async with connected(max_message_size=10) as (ws, server):
        await server.send(BytesMessage(b"x" * 6, message_finished=False), BytesMessage(b"y" * 6))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive_messages()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1009
        close = await server.events()
        assert isinstance(close[0], CloseConnection)
        assert close[0].code == 1009


async def test_our_close_waits_for_the_server_answer() -> None:
    async with connected() as (ws, server):

        async def answer() -> None:
            events = await server.events()
            assert isinstance(events[0], CloseConnection)
            assert (events[0].code, events[0].reason) == (4900, "kimaki is restarting")
            await server.send(events[0].response())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            with trio.fail_after(5):
                await ws.aclose(4900, "kimaki is restarting")
        assert ws.closed == CloseReason(4900, "kimaki is restarting")
        with pytest.raises(ConnectionClosed):
            await ws.send_message("after the close")
        await ws.aclose(1000)  # a second close does nothing


async def test_a_refused_upgrade_is_a_handshake_error() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)

    async def refuse() -> None:
        await server.events()
        await server.send(RejectConnection(status_code=403))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refuse)
        with pytest.raises(HandshakeError, match="403"):
            await open_websocket(client_stream, "gateway.test", "/", max_message_size=1024)


async def test_a_connection_closed_during_the_handshake_is_a_handshake_error() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def hang_up() -> None:
        await server_stream.receive_some()
        await server_stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up)
        with pytest.raises(HandshakeError):
            await open_websocket(client_stream, "gateway.test", "/", max_message_size=1024)


def frame(opcode: int, payload: bytes, *, fin: bool = True, first: int = 0) -> bytes:
    """A server frame written by hand, to send what wsproto would refuse to write."""
    head = bytes([(0x80 if fin else 0) | first | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    if len(payload) < 0x10000:
        return head + bytes([126]) + len(payload).to_bytes(2, "big") + payload
    return head + bytes([127]) + len(payload).to_bytes(8, "big") + payload


async def receive_until_closed(ws: WebSocket, into: list[bytes | str]) -> None:
    while True:
        into += await ws.receive_messages()


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x81\x85abcd" + bytes(5), 1002),  # masked: a server must not mask
        (frame(1, b"x", first=0x40), 1002),  # RSV1 without an agreed extension
        (frame(0, b"orphan"), 1002),  # a continuation outside a message
        (frame(1, b"a", fin=False) + frame(2, b"b"), 1002),  # a new message inside one
        (frame(9, b"p" * 126), 1002),  # a control frame over 125 bytes
        (frame(9, b"p", fin=False), 1002),  # a fragmented control frame
        (frame(3, b"?"), 1002),  # a reserved opcode
        (frame(1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (frame(8, b"\x03"), 1002),  # a one-byte close payload
        (frame(8, (1005).to_bytes(2, "big")), 1002),  # a local-only close code
        (frame(8, (1000).to_bytes(2, "big") + b"\xff"), 1007),  # a close reason not UTF-8
        (b"\x82\x7e\x00\x05hello", 1002),  # a length not in its shortest form
        (frame(2, b"z" * 2000), 1009),  # one frame over the limit
    ],
)
async def test_a_frame_the_rfc_forbids_fails_the_connection(wire: bytes, code: int) -> None:
    async with connected(TextMessage("before"), max_message_size=1024) as (ws, server):
        await server.stream.send_all(wire)
        received: list[bytes | str] = []
        with pytest.raises(ConnectionClosed) as closed:
            await receive_until_closed(ws, received)
        assert received == ["before"]
        assert closed.value.reason is not None
        assert closed.value.reason.code == code
        answer = await server.events()
        assert isinstance(answer[0], CloseConnection)
        assert answer[0].code == code


async def test_a_close_without_a_code_is_1005_and_answered_empty() -> None:
    async with connected() as (ws, server):
        await server.stream.send_all(frame(8, b""))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive_messages()
        assert closed.value.reason == CloseReason(1005, None)
        answer = await server.stream.receive_some()
        assert answer[:2] == b"\x88\x80"  # a close frame, masked, with no payload


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=60),
    messages=st.lists(
        st.tuples(st.binary(max_size=70_000) | st.text(max_size=300), st.integers(1, 4)),
        min_size=1,
        max_size=12,
    ),
)
@settings(max_examples=60, deadline=None)
def test_any_split_of_the_stream_gives_the_same_messages(
    sizes: list[int], messages: list[tuple[bytes | str, int]]
) -> None:
    """wsproto writes the server's frames (fragmented, with pings between); the reader gets
    them in reads of arbitrary sizes and must return exactly the messages sent."""

    def frames(server: WSConnection) -> bytes:
        wire = b""
        for data, pieces in messages:
            step = max(1, len(data) // pieces)
            chunks = [data[i : i + step] for i in range(0, len(data), step)] or [data]
            for index, chunk in enumerate(chunks):
                last = index == len(chunks) - 1
                event: Event = (
                    TextMessage(chunk, message_finished=last)
                    if isinstance(chunk, str)
                    else BytesMessage(chunk, message_finished=last)
                )
                wire += server.send(event)
                if not last and index == 0:
                    wire += server.send(Ping(b"mid-message"))
        return wire

    async def main() -> list[bytes | str]:
        client_stream, server_stream = trio.testing.memory_stream_pair()

        async def serve() -> None:
            server = WSConnection(ConnectionType.SERVER)
            server.receive_data(await server_stream.receive_some())
            list(server.events())
            rest, index = server.send(AcceptConnection()) + frames(server), 0
            while rest:
                size = sizes[index % len(sizes)] * 97
                await server_stream.send_all(rest[:size])
                rest, index = rest[size:], index + 1

        got: list[bytes | str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            ws = await open_websocket(client_stream, "h", "/", max_message_size=1 << 20)
            while len(got) < len(messages):
                got += await ws.receive_messages()
            nursery.cancel_scope.cancel()
        return got

    assert trio.run(main) == [data for data, _ in messages]
