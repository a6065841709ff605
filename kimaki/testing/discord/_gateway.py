"""The emulator's gateway: a websocket server that behaves like Discord's for one shard.

It speaks the same protocol as `kimaki.discord.gateway` expects from Discord (Hello, IDENTIFY
with a token check, READY and a GUILD_CREATE per guild, heartbeats and ACKs, RESUME with replay
of missed events, zlib-stream transport compression, Discord's close codes and its 120 sends per
60 s limit) and adds scripted faults for tests: op 7, op 9, any close code, dropped ACKs, slow
delivery, raw frames, a server that never answers IDENTIFY or RESUME, and a resume URL that
refuses connections. The waiters (`wait_for_identify()`, `wait_for_heartbeats(n)`, ...)
let a test synchronise on what the client did instead of sleeping.

Sessions outlive connections, like Discord's: events dispatched while a client is away are kept
(up to `replay_limit` per session) and replayed on RESUME. Like Discord's, READY names a resume
URL of its own (a second listener on the same server), which a test can make unreachable.
"""

from __future__ import annotations

import logging
import math
import secrets
import zlib
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final, final
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
import trio_websocket

from kimaki.discord._gateway_protocol import (
    API_VERSION,
    MAX_PAYLOAD_BYTES,
    SEND_LIMIT,
    ZLIB_SUFFIX,
    Opcode,
    SendWindow,
    ZlibStreamEncoder,
    decode_payload,
    encode_payload,
)

__all__ = ["GatewayServer", "GatewayServerStatistics"]

log = logging.getLogger("kimaki.emulator")

_APP_OPS: Final = frozenset(
    {
        Opcode.PRESENCE_UPDATE,
        Opcode.VOICE_STATE_UPDATE,
        Opcode.REQUEST_GUILD_MEMBERS,
        Opcode.REQUEST_SOUNDBOARD_SOUNDS,
    }
)
# Discord tolerates some lateness; a client silent for 1.5 intervals has missed a heartbeat.
_HEARTBEAT_GRACE: Final = 1.5


@final
@attrs.frozen
class GatewayServerStatistics:
    connections: int
    open_connections: int
    sessions: int
    identifies: int
    resumes: int
    heartbeats: int
    acks_sent: int
    acks_dropped: int
    events_dispatched: int
    missed_heartbeat_closes: int
    rate_limit_closes: int
    client_payloads: int
    client_close_codes: tuple[int, ...]


@attrs.frozen
class _Payload:
    text: str
    is_event: bool = False


@attrs.frozen
class _Raw:
    data: bytes


@attrs.frozen
class _Close:
    code: int
    reason: str


_Out = _Payload | _Raw | _Close


@attrs.define(eq=False)
class _Session:
    session_id: str
    log: deque[tuple[int, str]]
    sequence: int = 0
    connection: _Connection | None = None


@attrs.define(eq=False)
class _Connection:
    ws: trio_websocket.WebSocketConnection
    outbox: trio.MemorySendChannel[_Out]
    encoder: ZlibStreamEncoder | None
    interval: float
    last_heartbeat: float
    window: SendWindow = attrs.field(factory=SendWindow)
    session: _Session | None = None
    closing: bool = False

    def send(self, item: _Out) -> None:
        if not self.closing:
            self.outbox.send_nowait(item)


@final
class GatewayServer:
    """A fake Discord gateway; `port = await nursery.start(server.serve)`.

    `guilds()` is called at each IDENTIFY, so the READY and GUILD_CREATEs reflect the
    emulator's state at that moment. Knobs a test may change at any time:
    `heartbeat_interval` (seconds, for new connections), `frames_per_payload` (split each
    compressed payload over that many websocket messages), `compression_level` (zlib's, for
    new zlib-stream connections; a benchmark lowers it so that the server out-runs the clients
    it feeds), `close_on_connect` (close every new connection with this code before Hello)
    and `close_on_identify` (answer IDENTIFY by closing with this code, as Discord does with
    4004 or 4014), `ignore_identify` and `ignore_resume` (record the payload, then answer
    nothing, as a broken proxy or Discord-compatible server may; heartbeats are still
    acknowledged). `refuse_resumes()` closes the resume URL's listener, so connecting there is
    refused.
    """

    def __init__(
        self,
        *,
        token: str,
        user: dict[str, Any],
        guilds: Callable[[], list[dict[str, Any]]],
        heartbeat_interval: float = 41.25,
        frames_per_payload: int = 1,
        replay_limit: int = 10_000,
        application_flags: int = 0,
    ) -> None:
        self._token = token
        self._user = user
        self._guilds = guilds
        self.heartbeat_interval = heartbeat_interval
        self.frames_per_payload = frames_per_payload
        self.compression_level = zlib.Z_DEFAULT_COMPRESSION
        self.close_on_connect: int | None = None
        self.close_on_identify: int | None = None
        self.ignore_identify = False
        self.ignore_resume = False
        self._replay_limit = replay_limit
        self._application_flags = application_flags
        # False: the app's Message Content intent is not granted, so message events arrive
        # without their content (as Discord sends them to such apps).
        self.message_content = True
        # Called with each dispatch's JSON once written to a client socket (benchmarks time
        # "the event left the emulator" with it).
        self.on_event_sent: Callable[[str], None] | None = None
        self._port: int | None = None
        self._resume_port: int | None = None
        self._resume_listener = trio.CancelScope()
        self._resumes_refused = trio.Event()
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._identifies: list[dict[str, Any]] = []
        self._resumes: list[dict[str, Any]] = []
        self._client_payloads: list[dict[str, Any]] = []
        self._client_close_codes: list[int] = []
        self._acks_to_drop: float = 0
        self._event_delay = 0.0
        self._changed = trio.Event()
        self._counts = {
            "connections": 0,
            "heartbeats": 0,
            "acks_sent": 0,
            "acks_dropped": 0,
            "events_dispatched": 0,
            "missed_heartbeat_closes": 0,
            "rate_limit_closes": 0,
        }

    # -- running ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the gateway server is not serving yet")
        return f"ws://127.0.0.1:{self._port}"

    @property
    def resume_url(self) -> str:
        """The `resume_gateway_url` READY names: the same server on a port of its own."""
        if self._resume_port is None:
            raise RuntimeError("the gateway server is not serving yet")
        return f"ws://127.0.0.1:{self._resume_port}"

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    self._handle,
                    host,
                    port,
                    None,
                    max_message_size=1024 * 1024,
                )
            )
            self._port = server.port
            listeners = await trio.open_tcp_listeners(0, host=host)
            resume_server = trio_websocket.WebSocketServer(
                self._handle, listeners, handler_nursery=nursery, max_message_size=1024 * 1024
            )
            self._resume_port = resume_server.port
            nursery.start_soon(self._serve_resumes, resume_server)
            log.info("gateway listening on %s, resumes on %s", self.url, self.resume_url)
            task_status.started(server.port)

    async def _serve_resumes(self, server: trio_websocket.WebSocketServer) -> None:
        # Open connections live in the serving nursery: refusing new ones leaves them alone.
        try:
            with self._resume_listener:
                await server.run()
        finally:
            self._resumes_refused.set()  # the listening socket is closed

    def gateway_bot(self, *, remaining: int = 1000, reset_after_ms: int = 0) -> dict[str, Any]:
        """The JSON `GET /gateway/bot` answers for this server."""
        return {
            "url": self.url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": remaining,
                "reset_after": reset_after_ms,
                "max_concurrency": 1,
            },
        }

    # -- events -----------------------------------------------------------------------------

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a dispatch to every session, connected or not (kept for replay)."""
        if not self.message_content and event in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            data = _without_content(data, str(self._user.get("id")))
        for session in list(self._sessions.values()):
            self._emit(session, event, data)

    def _emit(self, session: _Session, event: str, data: Any) -> None:
        session.sequence += 1
        text = encode_payload(Opcode.DISPATCH, data, t=event, s=session.sequence)
        session.log.append((session.sequence, text))
        self._counts["events_dispatched"] += 1
        if session.connection is not None:
            session.connection.send(_Payload(text, is_event=True))

    # -- scripted faults --------------------------------------------------------------------

    def reconnect(self) -> None:
        """Op 7 to every connection."""
        self._broadcast(encode_payload(Opcode.RECONNECT, None))

    def request_heartbeat(self) -> None:
        """Op 1 to every connection: the client must heartbeat at once."""
        self._broadcast(encode_payload(Opcode.HEARTBEAT, None))

    def invalidate_session(self, *, resumable: bool) -> None:
        """Op 9 to every identified connection; a non-resumable one also ends its session."""
        for connection in list(self._connections):
            session = connection.session
            if session is None:
                continue
            connection.send(_Payload(encode_payload(Opcode.INVALID_SESSION, resumable)))
            if not resumable:
                self._end_session(session)

    def forget_sessions(self) -> None:
        """End every session without telling anyone: a later RESUME gets op 9 false."""
        for session in list(self._sessions.values()):
            self._end_session(session)

    async def refuse_resumes(self) -> None:
        """Close the resume URL's listener: once this returns, connecting there is refused (as
        with a resume URL that is gone), while the main URL from `GET /gateway/bot` works."""
        self._resume_listener.cancel()
        await self._resumes_refused.wait()

    def close_connections(self, code: int, reason: str = "") -> None:
        for connection in list(self._connections):
            self._close(connection, code, reason)

    def drop_acks(self, count: int | None = None) -> None:
        """Leave the next `count` heartbeats unanswered (all until `restore_acks()` if None)."""
        self._acks_to_drop = math.inf if count is None else count

    def restore_acks(self) -> None:
        self._acks_to_drop = 0

    def set_event_delay(self, seconds: float) -> None:
        """Slow delivery: wait this long before writing each dispatch."""
        self._event_delay = seconds

    def send_text(self, text: str) -> None:
        """A payload of any text, through the compressed stream when there is one."""
        self._broadcast(text)

    def send_bytes(self, data: bytes) -> None:
        """A raw binary websocket message, bypassing compression (corrupts a zlib stream)."""
        for connection in list(self._connections):
            connection.send(_Raw(data))

    def _broadcast(self, text: str) -> None:
        for connection in list(self._connections):
            connection.send(_Payload(text))

    # -- observation and waiters ------------------------------------------------------------

    @property
    def identifies(self) -> list[dict[str, Any]]:
        return list(self._identifies)

    @property
    def resumes(self) -> list[dict[str, Any]]:
        return list(self._resumes)

    @property
    def client_payloads(self) -> list[dict[str, Any]]:
        """Presence, voice state and other application payloads, in arrival order."""
        return list(self._client_payloads)

    def statistics(self) -> GatewayServerStatistics:
        return GatewayServerStatistics(
            open_connections=len(self._connections),
            sessions=len(self._sessions),
            identifies=len(self._identifies),
            resumes=len(self._resumes),
            client_payloads=len(self._client_payloads),
            client_close_codes=tuple(self._client_close_codes),
            **self._counts,
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    async def wait_for_identify(self, count: int = 1) -> dict[str, Any]:
        """Wait for the `count`-th IDENTIFY since the server started; return its `d`."""
        await self._wait_until(lambda: len(self._identifies) >= count)
        return self._identifies[count - 1]

    async def wait_for_resume(self, count: int = 1) -> dict[str, Any]:
        await self._wait_until(lambda: len(self._resumes) >= count)
        return self._resumes[count - 1]

    async def wait_for_heartbeats(self, count: int) -> None:
        await self._wait_until(lambda: self._counts["heartbeats"] >= count)

    async def wait_for_connections(self, count: int) -> None:
        await self._wait_until(lambda: self._counts["connections"] >= count)

    async def wait_for_client_close(self, count: int = 1) -> int:
        """Wait for the `count`-th close a client started; return its close code."""
        await self._wait_until(lambda: len(self._client_close_codes) >= count)
        return self._client_close_codes[count - 1]

    async def wait_for_client_payloads(self, count: int) -> list[dict[str, Any]]:
        await self._wait_until(lambda: len(self._client_payloads) >= count)
        return self.client_payloads

    # -- connections ------------------------------------------------------------------------

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        query = parse_qs(urlsplit(request.path).query)
        ws = await request.accept()
        outbox, outgoing = trio.open_memory_channel[_Out](math.inf)
        compress = query.get("compress") == ["zlib-stream"]
        connection = _Connection(
            ws=ws,
            outbox=outbox,
            encoder=ZlibStreamEncoder(self.compression_level) if compress else None,
            interval=self.heartbeat_interval,
            last_heartbeat=trio.current_time(),
        )
        self._connections.add(connection)
        self._counts["connections"] += 1
        self._notify()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, connection, outgoing)
                nursery.start_soon(self._watch_heartbeats, connection)
                if self.close_on_connect is not None:
                    self._close(connection, self.close_on_connect, "Scripted close.")
                elif query.get("v") != [str(API_VERSION)]:
                    self._close(connection, 4012, "Invalid API version.")
                elif query.get("encoding", ["json"]) != ["json"]:
                    self._close(connection, 4002, "Error while decoding payload.")
                else:
                    hello = {"heartbeat_interval": round(connection.interval * 1000)}
                    connection.send(_Payload(encode_payload(Opcode.HELLO, hello)))
                await self._read_loop(connection)
                nursery.cancel_scope.cancel()
        finally:
            self._connections.discard(connection)
            if connection.session is not None and connection.session.connection is connection:
                connection.session.connection = None
            self._notify()

    def _close(self, connection: _Connection, code: int, reason: str) -> None:
        connection.send(_Close(code, reason))
        connection.closing = True

    async def _write_loop(
        self, connection: _Connection, outgoing: trio.MemoryReceiveChannel[_Out]
    ) -> None:
        ws = connection.ws
        try:
            async for item in outgoing:
                if isinstance(item, _Close):
                    await ws.aclose(item.code, item.reason)
                    return
                if isinstance(item, _Raw):
                    await ws.send_message(item.data)
                    continue
                if item.is_event and self._event_delay > 0:
                    await trio.sleep(self._event_delay)
                if connection.encoder is None:
                    await ws.send_message(item.text)
                else:
                    for chunk in self._split(connection.encoder.encode(item.text)):
                        await ws.send_message(chunk)
                if item.is_event and self.on_event_sent is not None:
                    self.on_event_sent(item.text)
        except trio_websocket.ConnectionClosed:
            return

    def _split(self, data: bytes) -> list[bytes]:
        """Cut one compressed payload into websocket messages; only the last ends the payload."""
        parts = max(1, min(self.frames_per_payload, len(data) // 2))
        step = math.ceil(len(data) / parts)
        chunks = []
        start = 0
        while start < len(data):
            end = min(len(data), start + step)
            while end < len(data) and data[start:end].endswith(ZLIB_SUFFIX):
                end += 1
            chunks.append(data[start:end])
            start = end
        return chunks

    async def _watch_heartbeats(self, connection: _Connection) -> None:
        while True:
            deadline = connection.last_heartbeat + connection.interval * _HEARTBEAT_GRACE
            if trio.current_time() >= deadline:
                self._counts["missed_heartbeat_closes"] += 1
                if connection.session is not None:
                    self._end_session(connection.session)
                self._close(connection, 4009, "Session timed out.")
                return
            await trio.sleep_until(deadline)

    async def _read_loop(self, connection: _Connection) -> None:
        while True:
            try:
                message = await connection.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if not connection.closing:
                    code = exc.reason.code if exc.reason is not None else 1006
                    self._client_close_codes.append(code)
                    self._notify()
                return
            if connection.closing:
                continue
            now = trio.current_time()
            connection.window.record(now)
            if connection.window.count(now) > SEND_LIMIT:
                self._counts["rate_limit_closes"] += 1
                self._close(connection, 4008, "Rate limited.")
                continue
            size = len(message.encode() if isinstance(message, str) else message)
            payload = decode_payload(message) if size <= MAX_PAYLOAD_BYTES else None
            if payload is None:
                self._close(connection, 4002, "Error while decoding payload.")
                continue
            self._on_payload(connection, payload)
            self._notify()

    def _on_payload(self, connection: _Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == Opcode.HEARTBEAT and not isinstance(op, bool):
            connection.last_heartbeat = trio.current_time()
            self._counts["heartbeats"] += 1
            if self._acks_to_drop > 0:
                self._acks_to_drop -= 1
                self._counts["acks_dropped"] += 1
            else:
                self._counts["acks_sent"] += 1
                connection.send(_Payload(encode_payload(Opcode.HEARTBEAT_ACK, None)))
        elif op == Opcode.IDENTIFY:
            self._identify(connection, data)
        elif op == Opcode.RESUME:
            self._resume(connection, data)
        elif op in _APP_OPS:
            if connection.session is None:
                self._close(connection, 4003, "Not authenticated.")
            else:
                self._client_payloads.append(payload)
        else:
            self._close(connection, 4001, "Unknown opcode.")

    def _authenticate(self, connection: _Connection, data: Any, log: list[Any]) -> bool:
        """The checks IDENTIFY and RESUME share; False when the connection was closed."""
        if connection.session is not None:
            self._close(connection, 4005, "Already authenticated.")
            return False
        if not isinstance(data, dict):
            self._close(connection, 4002, "Error while decoding payload.")
            return False
        log.append(data)
        if data.get("token") != self._token:
            self._close(connection, 4004, "Authentication failed.")
            return False
        return True

    def _identify(self, connection: _Connection, data: Any) -> None:
        if not self._authenticate(connection, data, self._identifies):
            return
        if self.close_on_identify is not None:
            self._close(connection, self.close_on_identify, "Scripted close.")
            return
        if self.ignore_identify:
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0:
            self._close(connection, 4013, "Invalid intent(s).")
            return
        shard = data.get("shard", [0, 1])
        if not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(isinstance(n, int) for n in shard)
            and 0 <= shard[0] < shard[1]
        ):
            self._close(connection, 4010, "Invalid shard.")
            return
        session = _Session(secrets.token_hex(16), deque(maxlen=self._replay_limit))
        self._sessions[session.session_id] = session
        session.connection = connection
        connection.session = session
        guilds = self._guilds()
        ready = {
            "v": API_VERSION,
            "user": self._user,
            "guilds": [{"id": guild["id"], "unavailable": True} for guild in guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.resume_url,
            "shard": shard,
            "application": {"id": self._user.get("id"), "flags": self._application_flags},
        }
        self._emit(session, "READY", ready)
        for guild in guilds:
            self._emit(session, "GUILD_CREATE", guild)

    def _resume(self, connection: _Connection, data: Any) -> None:
        if not self._authenticate(connection, data, self._resumes):
            return
        if self.ignore_resume:
            return
        session = self._sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        oldest = session.log[0][0] if session is not None and session.log else 1
        if (
            session is None
            or not isinstance(seq, int)
            or seq > session.sequence
            or seq < oldest - 1
        ):
            connection.send(_Payload(encode_payload(Opcode.INVALID_SESSION, False)))
            return
        previous = session.connection
        if previous is not None and previous is not connection:
            previous.session = None
            self._close(previous, 4000, "Session resumed on another connection.")
        session.connection = connection
        connection.session = session
        for sequence, text in list(session.log):
            if sequence > seq:
                connection.send(_Payload(text, is_event=True))
        self._emit(session, "RESUMED", {})

    def _end_session(self, session: _Session) -> None:
        self._sessions.pop(session.session_id, None)
        if session.connection is not None:
            session.connection.session = None
            session.connection = None


def _without_content(message: dict[str, Any], bot_id: str) -> dict[str, Any]:
    """A message as an app without the Message Content intent receives it: no content,
    embeds, attachments or components, unless it is the app's own or mentions it."""
    author = message.get("author") or {}
    mentioned = any(str(user.get("id")) == bot_id for user in message.get("mentions") or [])
    if str(author.get("id")) == bot_id or mentioned:
        return message
    return {**message, "content": "", "embeds": [], "attachments": [], "components": []}
