"""Wire facts of Discord's gateway shared by the client (`kimaki.discord.gateway`) and the fake
server of the emulator (`kimaki.testing.discord`): opcodes, intents, limits, zlib-stream framing
and the sliding send window. Both sides importing one definition keeps them from drifting apart.
"""

from __future__ import annotations

import collections
import enum
import json
import zlib
from typing import Any, Final, final

import orjson

from kimaki.errors import KimakiError

__all__ = [
    "API_VERSION",
    "INTENTS",
    "MAX_PAYLOAD_BYTES",
    "SEND_LIMIT",
    "SEND_PERIOD",
    "ZLIB_SUFFIX",
    "Intent",
    "Opcode",
    "SendWindow",
    "ZlibStreamCorrupt",
    "ZlibStreamDecoder",
    "ZlibStreamEncoder",
    "decode_payload",
    "encode_payload",
]

API_VERSION: Final = 10
# Discord's own limits, per connection: 120 payloads per 60 s and 4096 bytes each.
SEND_LIMIT: Final = 120
SEND_PERIOD: Final = 60.0
MAX_PAYLOAD_BYTES: Final = 4096
ZLIB_SUFFIX: Final = b"\x00\x00\xff\xff"


class Opcode(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    REQUEST_SOUNDBOARD_SOUNDS = 31


class Intent(enum.IntFlag):
    GUILDS = 1 << 0
    GUILD_VOICE_STATES = 1 << 7
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


# Exactly what the daemon needs; MESSAGE_CONTENT is the one privileged intent among them.
INTENTS: Final = (
    Intent.GUILDS
    | Intent.GUILD_MESSAGES
    | Intent.MESSAGE_CONTENT
    | Intent.GUILD_VOICE_STATES
    | Intent.DIRECT_MESSAGES
)


def encode_payload(op: int, data: Any, **extra: Any) -> str:
    """One gateway payload as compact JSON text (Discord counts its limit on this text)."""
    return json.dumps({"op": op, "d": data, **extra}, separators=(",", ":"), ensure_ascii=False)


def decode_payload(text: str | bytes) -> dict[str, Any] | None:
    """The payload object in `text`, or None when it is not JSON or not a JSON object.

    orjson parses it (about a third of the CPU time of `json.loads` on a typical message).
    What orjson refuses and the standard library takes (NaN and infinities, a lone surrogate
    escape, nesting past 1024 levels, UTF-16) is parsed again by `json.loads`, so what is
    accepted is the standard library's, and so are the values, but for one case: an integer
    beyond 64 bits becomes a float. Discord sends none (its ids are strings, because
    JavaScript cannot hold them as numbers); checking the text for one first would cost more
    than orjson saves.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


class ZlibStreamCorrupt(KimakiError):
    """The zlib stream cannot be inflated any further; the connection must be replaced."""


@final
class ZlibStreamDecoder:
    """Inflates `compress=zlib-stream` frames: one inflater for the whole connection, and a
    payload is complete only when the buffered bytes end with the sync-flush suffix."""

    def __init__(self, *, max_buffered: int = 64 * 1024 * 1024) -> None:
        self._inflater = zlib.decompressobj()
        self._buffer = bytearray()
        self._max_buffered = max_buffered

    def feed(self, chunk: bytes) -> bytes | None:
        """Add one websocket message; return the inflated payload once one is complete."""
        self._buffer += chunk
        if not self._buffer.endswith(ZLIB_SUFFIX):
            if len(self._buffer) > self._max_buffered:
                raise ZlibStreamCorrupt(f"no flush suffix after {len(self._buffer)} bytes")
            return None
        try:
            data = self._inflater.decompress(bytes(self._buffer))
        except zlib.error as exc:
            raise ZlibStreamCorrupt(str(exc)) from exc
        finally:
            self._buffer.clear()
        return data


@final
class ZlibStreamEncoder:
    """The server half of zlib-stream: one deflater per connection, each payload sync-flushed."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._deflater = zlib.compressobj(level)

    def encode(self, text: str) -> bytes:
        data = text.encode()
        return self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)


@final
class SendWindow:
    """Sends in the last `period` seconds, sliding: the client asks when it may send, the fake
    server asks whether a client went over."""

    def __init__(self, *, limit: int = SEND_LIMIT, period: float = SEND_PERIOD) -> None:
        self.limit = limit
        self.period = period
        self._times: collections.deque[float] = collections.deque()

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self._times)

    def free_at(self, now: float, *, reserve: int = 0) -> float:
        """The earliest time a send fits while leaving `reserve` slots unused; `now` if free."""
        self._prune(now)
        allowed = self.limit - reserve
        if len(self._times) < allowed:
            return now
        # The oldest sends leave the window one by one; wait for enough of them to leave.
        return self._times[len(self._times) - allowed] + self.period

    def record(self, now: float) -> None:
        self._times.append(now)
