"""The gateway's websocket: read by the gateway's own reader task, frames parsed in place.

A general websocket library keeps a reader task of its own and hands each message over through
a queue, which costs a trip through the scheduler per message on both sides of the queue; and
a general frame parser (wsproto's, in pure Python) costs more per gateway event than inflating
and parsing its JSON. The gateway is one client with one reader, so `receive_messages()` parses
what one socket read brought and returns every message complete so far: a burst of events
costs one wake-up, and each frame a few slices (see docs/performance.md).

What the gateway needs and nothing more: the client's opening handshake and the frames it
sends (wsproto: masking, the HTTP upgrade), the server's frames (`_FrameReader`, RFC 6455
§5: unmasked, no extension), text and binary messages (fragmented or not) up to a size limit,
pings answered, and the closing handshake in both directions. A frame the RFC forbids fails
the connection with 1002 (1007 for bad UTF-8, 1009 for a message over the limit), as wsproto
would. Sends are serialised by a lock (the reader answers pings while the heartbeat and sender
tasks send). Nothing runs in the background: `aclose()` reads the peer's close frame itself,
so the caller shields it and bounds it with a timeout.
"""

from __future__ import annotations

import contextlib
from typing import Final, final

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason as WireCloseCode
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from kimaki.errors import KimakiError

__all__ = [
    "ABNORMAL_CLOSURE",
    "CloseReason",
    "ConnectionClosed",
    "HandshakeError",
    "WebSocket",
    "open_websocket",
]

NO_STATUS: Final = 1005  # a close frame without a code
ABNORMAL_CLOSURE: Final = 1006  # no close frame: the connection was lost
PROTOCOL_ERROR: Final = 1002
INVALID_DATA: Final = 1007
MESSAGE_TOO_BIG: Final = 1009
MAX_HANDSHAKE_BYTES: Final = 64 * 1024
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0, 1, 2, 8, 9, 10
_ABNORMAL_CLOSURES: Final = (trio.BrokenResourceError, trio.ClosedResourceError)


@final
@attrs.frozen
class CloseReason:
    """Why a websocket closed: the close frame's code and reason (ours or the peer's)."""

    code: int
    reason: str | None = None


class ConnectionClosed(KimakiError):
    """The websocket is closed; `reason` says how (None if it never opened)."""

    def __init__(self, reason: CloseReason | None) -> None:
        super().__init__(reason)
        self.reason = reason


class HandshakeError(KimakiError):
    """The server did not accept the websocket upgrade."""


class _Fail(Exception):
    """The server broke the protocol: fail the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _valid_close_code(code: int) -> bool:
    """What a peer may send (RFC 6455 §7.4): the defined codes that are not local-only, and
    3000-4999 (libraries, applications: Discord's are 4000-4014)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1013 or 3000 <= code <= 4999


@final
class _FrameReader:
    """The server's frames out of the byte stream: (opcode, fin, payload) each.

    Bytes are joined only once a whole frame can be there, so a large frame arriving over
    many reads is copied once, not once per read.
    """

    def __init__(self, max_frame: int) -> None:
        self._max_frame = max_frame
        self._chunks: list[bytes] = []
        self._size = 0
        self._need = 2  # bytes buffered before parsing can get further

    def feed(self, data: bytes) -> list[tuple[int, bool, bytes]]:
        self._chunks.append(data)
        self._size += len(data)
        if self._size < self._need:
            return []
        buf = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        frames: list[tuple[int, bool, bytes]] = []
        pos, end_of_data = 0, len(buf)
        need = 2
        while end_of_data - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            if second & 0x80:
                raise _Fail(PROTOCOL_ERROR, "a masked frame from the server")
            if first & 0x70:
                raise _Fail(PROTOCOL_ERROR, "reserved bits set, and no extension was agreed")
            length, start = second & 0x7F, pos + 2
            if length >= 126:
                width = 2 if length == 126 else 8
                if end_of_data - start < width:
                    need = 2 + width
                    break
                length = int.from_bytes(buf[start : start + width], "big")
                start += width
                if length < (126 if width == 2 else 0x10000) or length >> 63:
                    raise _Fail(PROTOCOL_ERROR, "a payload length not in its shortest form")
            if length > self._max_frame:
                raise _Fail(MESSAGE_TOO_BIG, f"a message over {self._max_frame} bytes")
            end = start + length
            if end > end_of_data:
                need = end - pos
                break
            frames.append((first & 0x0F, bool(first & 0x80), buf[start:end]))
            pos = end
        rest = buf[pos:] if pos < end_of_data else b""
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        self._need = need
        return frames


async def open_websocket(
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    max_message_size: int,
    receive_size: int = 65536,
) -> WebSocket:
    """Run the client's opening handshake on `stream`; raise `HandshakeError` if refused."""
    protocol = WSConnection(ConnectionType.CLIENT)
    try:
        await stream.send_all(protocol.send(Request(host=host, target=resource)))
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = await stream.receive_some(receive_size)
            if not data:
                raise HandshakeError("the server closed the connection during the handshake")
            answer += data
            if len(answer) > MAX_HANDSHAKE_BYTES and b"\r\n\r\n" not in answer:
                raise HandshakeError("the server's answer to the upgrade has no end")
        # The answer's head goes to wsproto; what follows it is already websocket frames.
        head_end = answer.index(b"\r\n\r\n") + 4
        protocol.receive_data(answer[:head_end])
        for event in protocol.events():
            if isinstance(event, AcceptConnection):
                assert protocol.connection is not None
                websocket = WebSocket(
                    stream,
                    protocol.connection,
                    max_message_size=max_message_size,
                    receive_size=receive_size,
                )
                if head_end < len(answer):
                    await websocket._take(answer[head_end:])
                return websocket
            if isinstance(event, RejectConnection):
                raise HandshakeError(f"the server refused the websocket ({event.status_code})")
        raise HandshakeError("the server's answer is not a websocket upgrade")
    except RemoteProtocolError as exc:
        raise HandshakeError(f"the server's answer is not a websocket upgrade: {exc}") from None
    except _ABNORMAL_CLOSURES as exc:
        raise HandshakeError(f"the connection was lost during the handshake: {exc!r}") from None


@final
class WebSocket:
    """An open client websocket; build it with `open_websocket()`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Connection,
        *,
        max_message_size: int,
        receive_size: int,
    ) -> None:
        self._stream = stream
        self._protocol = protocol  # for what we send; what we receive is `_frames`'
        self._frames = _FrameReader(max_message_size)
        self._max_message_size = max_message_size
        self._receive_size = receive_size
        self._send_lock = trio.StrictFIFOLock()
        self._messages: list[bytes | str] = []
        self._fragmented: int | None = None  # the opcode of a message still in pieces
        self._parts: list[bytes] = []
        self._size = 0
        self.closed: CloseReason | None = None

    async def receive_messages(self) -> list[bytes | str]:
        """Every message complete so far, oldest first, after waiting for at least one.

        Messages that arrived before a close are returned first; after them, raises
        `ConnectionClosed`. Only one task may call this at a time.
        """
        while not self._messages:
            if self.closed is not None:
                raise ConnectionClosed(self.closed)
            try:
                data = await self._stream.receive_some(self._receive_size)
            except _ABNORMAL_CLOSURES:
                data = b""
            if not data:
                self._lost("the connection was lost")
                continue
            await self._take(bytes(data))
        messages, self._messages = self._messages, []
        return messages

    async def send_message(self, message: str | bytes) -> None:
        """Send one message; `ConnectionClosed` if the websocket is closed."""
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        await self._send(event)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """The closing handshake: send our close frame, then read until the peer's (or the end
        of the stream). The caller bounds it with a timeout; the stream stays the caller's."""
        if self.closed is not None:
            return
        self.closed = CloseReason(code, reason)
        try:
            await self._send(CloseConnection(code, reason), closing=True)
            while True:
                data = await self._stream.receive_some(self._receive_size)
                if not data:
                    return
                for opcode, _, payload in self._frames.feed(bytes(data)):
                    if opcode == _CLOSE:
                        return
                    if opcode == _PING:
                        await self._send_quietly(Pong(payload))
        except (*_ABNORMAL_CLOSURES, ConnectionClosed, _Fail):
            return

    # -- receiving ---------------------------------------------------------------------------

    async def _take(self, data: bytes) -> None:
        """Handle the frames `data` completes (stopping at a close)."""
        try:
            for opcode, fin, payload in self._frames.feed(data):
                if opcode < _CLOSE:
                    self._add_data(opcode, fin, payload)
                    continue
                if not fin or len(payload) > 125:
                    raise _Fail(PROTOCOL_ERROR, "a control frame fragmented or over 125 bytes")
                if opcode == _PING:
                    await self._send_quietly(Pong(payload))
                elif opcode == _CLOSE:
                    await self._closed_by_peer(payload)
                    return
                elif opcode != _PONG:
                    raise _Fail(PROTOCOL_ERROR, f"a frame with the unknown opcode {opcode}")
        except _Fail as failure:
            if self.closed is None:
                self.closed = CloseReason(failure.code, failure.reason)
                await self._send_quietly(CloseConnection(failure.code, failure.reason))

    def _add_data(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == _CONTINUATION:
            if self._fragmented is None:
                raise _Fail(PROTOCOL_ERROR, "a continuation frame outside a message")
        elif opcode not in (_TEXT, _BINARY):
            raise _Fail(PROTOCOL_ERROR, f"a frame with the unknown opcode {opcode}")
        elif self._fragmented is not None:
            raise _Fail(PROTOCOL_ERROR, "a new message before the last one was finished")
        elif fin:  # the usual case: a whole message in one frame
            self._messages.append(_message(opcode, payload))
            return
        else:
            self._fragmented = opcode
        self._parts.append(payload)
        self._size += len(payload)
        if self._size > self._max_message_size:
            raise _Fail(MESSAGE_TOO_BIG, f"a message over {self._max_message_size} bytes")
        if fin:
            opcode, data = self._fragmented, b"".join(self._parts)
            self._fragmented, self._parts, self._size = None, [], 0
            self._messages.append(_message(opcode, data))

    async def _closed_by_peer(self, payload: bytes) -> None:
        if not payload:
            code, reason = NO_STATUS, ""
        elif len(payload) == 1:
            raise _Fail(PROTOCOL_ERROR, "a close frame with a one-byte payload")
        else:
            code = int.from_bytes(payload[:2], "big")
            if not _valid_close_code(code):
                raise _Fail(PROTOCOL_ERROR, f"a close frame with the invalid code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise _Fail(INVALID_DATA, "a close reason that is not UTF-8") from None
        if self.closed is None:  # the server closes first: answer with its code
            self.closed = CloseReason(code, reason or None)
            answer = WireCloseCode.NO_STATUS_RCVD if code == NO_STATUS else code  # empty
            await self._send_quietly(CloseConnection(answer, reason))

    def _lost(self, why: str) -> None:
        if self.closed is None:
            self.closed = CloseReason(ABNORMAL_CLOSURE, why)

    # -- sending -----------------------------------------------------------------------------

    async def _send_quietly(self, event: Event) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send(event, closing=True)

    async def _send(self, event: Event, *, closing: bool = False) -> None:
        if self.closed is not None and not closing:
            raise ConnectionClosed(self.closed)
        async with self._send_lock:
            try:
                data = self._protocol.send(event)
            except LocalProtocolError:
                raise ConnectionClosed(self.closed) from None
            try:
                await self._stream.send_all(data)
            except _ABNORMAL_CLOSURES:
                self._lost("the connection was lost while sending")
                raise ConnectionClosed(self.closed) from None


def _message(opcode: int, data: bytes) -> bytes | str:
    if opcode == _BINARY:
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise _Fail(INVALID_DATA, "a text message that is not UTF-8") from None
