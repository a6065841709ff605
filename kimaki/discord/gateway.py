"""The Discord gateway client: one shard, one websocket at a time, kept alive for weeks.

`GatewayShard.run()` is a supervisor loop. Each pass opens one connection (its own nursery with
a reader, a heartbeat task and a sender), runs it until it ends, and decides from how it ended
what comes next: RESUME the session, IDENTIFY afresh, or stop with a fatal error. That decision
for server close codes lives in one function, `classify_close`. Backoff belongs to the
supervisor: planned reconnects (op 7, op 9, a zombie connection) after a healthy connection go
at once; failures wait a jittered exponential delay that resets after a healthy connection.

Dispatches go straight into the memory channel given to the constructor while the consumer
keeps up; when it falls behind they go to an unbounded internal buffer that a separate task
drains in order. The reader therefore never waits for the consumer: heartbeat ACKs keep being
read while the daemon is busy, so a slow consumer cannot make the connection look like a
zombie. Each dispatch carries a sequence number; one at or below the last seen is a
replay we already have and is dropped, so every event reaches the daemon exactly once.

The session (id, sequence, resume URL) is saved through an injected `GatewaySessionStore`, so a
restarted daemon resumes instead of identifying. While the shard runs, a task saves it at most
once per `SESSION_SAVE_INTERVAL` as events are handled, with the sequence of the last event the
consumer has finished with (see `_checkpoint`), so a daemon killed with SIGKILL resumes close to
where it was and loses nothing; the hot path only sets an event. When the shard stops, the
sequence saved is the last one handed on: the daemon drains the channel before it restarts.
Closing with 1000 ends the session on Discord's side, so only a final shutdown does that; every
reconnect and `close(resumable=True)` closes with 4900.

A server that does not answer is not waited for: READY must follow IDENTIFY, and RESUMED (or
op 9) must follow RESUME, within the handshake timeout (a replay in progress counts as an
answer); otherwise the connection is closed, counted as a failure, and the next one identifies
afresh. After `RESUME_ATTEMPTS` failed connections to a session's resume URL the session is
dropped and the shard identifies through the URL `GET /gateway/bot` gives.

Exceptions:

```
KimakiError
├── GatewayError ............... misuse of a shard
│   ├── PayloadTooLarge ........ a payload over 4096 bytes, refused before sending
│   └── ShardClosed ............ a send on a shard that has stopped
└── FatalError (kimaki.errors) . raised by run()
    ├── ConfigError ............ close 4010-4013: a bug in how kimaki connects
    └── CredentialsError ....... close 4004 (bad token) and 4014 (Message Content intent off)
```
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Protocol, final
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
import trio

from kimaki._backoff import Backoff
from kimaki._log import register_secret
from kimaki.discord._gateway_protocol import (
    API_VERSION,
    INTENTS,
    MAX_PAYLOAD_BYTES,
    Opcode,
    SendWindow,
    ZlibStreamCorrupt,
    ZlibStreamDecoder,
    decode_payload,
    encode_payload,
)
from kimaki.discord._websocket import (
    CloseReason,
    ConnectionClosed,
    HandshakeError,
    WebSocket,
    open_websocket,
)
from kimaki.errors import ConfigError, CredentialsError, FatalError, KimakiError

__all__ = [
    "FINAL_CLOSE_CODE",
    "INTENTS",
    "RESUMABLE_CLOSE_CODE",
    "CloseVerdict",
    "GatewayError",
    "GatewayEvent",
    "GatewaySession",
    "GatewaySessionStore",
    "GatewayShard",
    "GatewayState",
    "GatewayStatistics",
    "PayloadTooLarge",
    "ShardClosed",
    "classify_close",
]

log = logging.getLogger("kimaki.gateway")

# Any code but 1000/1001 keeps the session resumable; 4900 is outside Discord's own range.
RESUMABLE_CLOSE_CODE: Final = 4900
FINAL_CLOSE_CODE: Final = 1000

HEARTBEAT_RESERVE: Final = 3  # send slots per window only heartbeats may use
IDENTIFY_SPACING: Final = 5.0  # one IDENTIFY per 5 s per max_concurrency bucket (one shard)
RECONNECT_BACKOFF: Final = Backoff(initial=1.0, cap=60.0)
CONNECT_TIMEOUT: Final = 20.0
HELLO_TIMEOUT: Final = 20.0
CLOSE_TIMEOUT: Final = 5.0
SAVE_TIMEOUT: Final = 5.0
HANDSHAKE_TIMEOUT: Final = 15.0  # the default; KIMAKI_GATEWAY_HANDSHAKE_TIMEOUT sets it
RESUME_ATTEMPTS: Final = 3  # failed connections to a resume URL before identifying afresh
SESSION_SAVE_INTERVAL: Final = 1.0  # at most one session write per second while running
# Sequences of the last events handed on, to tell which one the consumer has finished with;
# more than the daemon's event channel holds (256).
_RECENT_SEQUENCES: Final = 1024
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
RECEIVE_BYTES: Final = 65536  # per socket read: a burst of events is parsed in one wake-up
# Events parsed from one read before the reader lets the consumer run: a burst reaches the
# dispatcher in batches instead of piling up behind a full channel.
_EVENTS_PER_TURN: Final = 64
_APP_SENDABLE: Final = frozenset(
    {
        Opcode.PRESENCE_UPDATE,
        Opcode.VOICE_STATE_UPDATE,
        Opcode.REQUEST_GUILD_MEMBERS,
        Opcode.REQUEST_SOUNDBOARD_SOUNDS,
    }
)

GatewayState = Literal["connecting", "ready", "resuming", "stopped"]


class GatewayError(KimakiError):
    """A shard was asked to do something it cannot."""


class PayloadTooLarge(GatewayError, ValueError):
    """Discord closes the connection on a payload over 4096 bytes; we refuse it first."""


class ShardClosed(GatewayError):
    """The shard has stopped; nothing more can be sent through it."""


@final
@attrs.frozen
class GatewayEvent:
    """One dispatch as Discord sent it: `data` is the raw JSON `d`, converted downstream."""

    name: str
    sequence: int | None
    data: Any


@final
@attrs.frozen
class GatewaySession:
    """What a restarted daemon needs to RESUME its gateway session instead of identifying.

    `sequence` is the last event handed to the daemon, so anything received but not yet
    handled when the process stopped is replayed by Discord.
    """

    session_id: str
    sequence: int
    resume_url: str


class GatewaySessionStore(Protocol):
    """Where the session is kept between runs (the store's `gateway` facet is one)."""

    async def load_gateway_session(self) -> GatewaySession | None: ...

    async def save_gateway_session(self, session: GatewaySession | None) -> None: ...


@final
@attrs.frozen
class GatewayStatistics:
    state: GatewayState
    guild_count: int
    latency: float | None
    connections: int
    identifies: int
    resumes: int
    events_received: int
    events_dispatched: int
    events_backlog: int
    duplicates_dropped: int
    malformed_payloads: int
    heartbeats_sent: int
    heartbeats_acked: int
    zombie_closes: int
    sends: int
    sends_throttled: int


@attrs.define
class _Counters:
    connections: int = 0
    identifies: int = 0
    resumes: int = 0
    events_received: int = 0
    events_dispatched: int = 0
    duplicates_dropped: int = 0
    malformed_payloads: int = 0
    heartbeats_sent: int = 0
    heartbeats_acked: int = 0
    zombie_closes: int = 0
    sends: int = 0
    sends_throttled: int = 0


@final
@attrs.frozen
class CloseVerdict:
    """What to do after Discord closed the connection with some code."""

    action: Literal["resume", "reidentify", "fatal"]
    error: FatalError | None = None


_TOKEN_FIX: Final = (
    "copy the token from the Discord Developer Portal (Applications → your app → Bot → "
    "Reset Token) into kimaki's settings and restart"
)
_CONNECT_BUG: Final = "this is a bug in kimaki, please report it with the log file"


def classify_close(code: int | None) -> CloseVerdict:
    """The one place that decides what a gateway close code means for us.

    4007 (invalid sequence) and 4009 (session timed out) end the session: IDENTIFY again.
    4004 and 4014 need the person running the daemon; 4010-4013 are our bugs. Everything
    else, 4000-4003/4005/4008, 1000/1001/1006 from Discord and codes we do not know, is a
    dropped connection: RESUME.
    """
    if code == 4004:
        return CloseVerdict(
            "fatal", CredentialsError(f"Discord rejected the bot token (close 4004): {_TOKEN_FIX}")
        )
    if code == 4014:
        return CloseVerdict(
            "fatal",
            CredentialsError(
                "Discord refused the Message Content intent (close 4014): switch on Developer "
                "Portal → Applications → your app → Bot → Privileged Gateway Intents → "
                "Message Content Intent, then restart kimaki"
            ),
        )
    bugs = {
        4010: "Discord rejected the shard kimaki sent in IDENTIFY (close 4010 invalid shard)",
        4011: "Discord requires sharding for this bot (close 4011); kimaki runs one shard",
        4012: f"Discord rejected gateway API version {API_VERSION} (close 4012)",
        4013: f"Discord rejected the intents {int(INTENTS)} kimaki sent (close 4013)",
    }
    if code in bugs:
        return CloseVerdict("fatal", ConfigError(f"{bugs[code]}: {_CONNECT_BUG}"))
    if code in (4007, 4009):
        return CloseVerdict("reidentify")
    return CloseVerdict("resume")


@attrs.frozen
class _End:
    """How one connection ended and what the supervisor does next."""

    reason: str
    next: Literal["resume", "reidentify", "stop"]
    close_code: int = RESUMABLE_CLOSE_CODE  # ours, if the socket is still open
    unplanned: bool = True  # counts towards backoff
    error: FatalError | None = None
    wait: float = 0.0


@attrs.define(eq=False)
class _Outgoing:
    text: str
    sent: trio.Event = attrs.field(factory=trio.Event)
    failed: bool = False


class _GatewayUnavailable(Exception):
    pass


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _connect_url(base: str) -> str:
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise _GatewayUnavailable(f"not a websocket URL: {base!r}")
    query = urlencode({"v": API_VERSION, "encoding": "json", "compress": "zlib-stream"})
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


_ssl_context: ssl.SSLContext | None = None


async def _tls_context() -> ssl.SSLContext:
    """One context for every connection, made off the event loop: loading the CA bundle takes
    about 0.1 s, which would stall everything at each reconnect (and each restart)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = await trio.to_thread.run_sync(ssl.create_default_context)
    return _ssl_context


async def _open_stream(url: str) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "wss":
        return await trio.open_ssl_over_tcp_stream(
            host,
            parts.port or 443,
            ssl_context=await _tls_context(),
            https_compatible=True,
        )
    return await trio.open_tcp_stream(host, parts.port or 80)


@final
class GatewayShard:
    """One gateway shard: `await nursery.start(shard.run)` returns once it is READY/RESUMED.

    `fetch_gateway` returns the JSON of `GET /gateway/bot`; it is called before each fresh
    IDENTIFY, which also respects `session_start_limit`. `random_source` is injectable so
    tests can pin the jitter. The `events` channel is closed when `run()` returns.
    `handshake_timeout` bounds the wait for READY after IDENTIFY and for RESUMED after RESUME.
    `held` names the oldest sequence whose event the consumer still holds open (a message whose
    prompt waits in a queue): the saved sequence stays below it, so a process killed now has
    that event replayed instead of losing it.
    """

    def __init__(
        self,
        *,
        token: str,
        fetch_gateway: Callable[[], Awaitable[dict[str, Any]]],
        events: trio.MemorySendChannel[GatewayEvent],
        session_store: GatewaySessionStore | None = None,
        random_source: Callable[[], float] = random.random,
        shard: tuple[int, int] = (0, 1),
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        held: Callable[[], int | None] | None = None,
    ) -> None:
        register_secret(token)
        self._token = token
        self._fetch_gateway = fetch_gateway
        self._events = events
        self._store = session_store
        self._random = random_source
        self._shard = shard
        self.handshake_timeout = handshake_timeout
        self._held = held

        self._session_id: str | None = None
        self._resume_url: str | None = None
        self._sequence: int | None = None  # last received, for RESUME and heartbeats
        self._delivered: int | None = None  # last handed to the consumer, saved at the end
        # Sequences (this session's) of the last events handed on, newest last; and the newest
        # sequence known to be safe to resume from when they cannot tell (see `_checkpoint`).
        self._recent: deque[int] = deque(maxlen=_RECENT_SEQUENCES)
        self._checkpoint_floor: int | None = None
        self._saved: GatewaySession | None = None
        self._save_lock = trio.Lock()
        self._persist_wanted = trio.Event()

        self._buffer_in, self._buffer_out = trio.open_memory_channel[
            tuple[GatewayEvent, str | None]
        ](math.inf)
        self._forwarding = False  # the forwarder holds an event it has not handed on yet
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_nonempty = trio.Event()

        self._state: GatewayState = "stopped"
        self._guild_ids: set[str] = set()
        self._latency: float | None = None
        self._counters = _Counters()
        self._last_identify_at = -math.inf

        self._task_status: trio.TaskStatus[None] | None = None
        self._supervisor_scope = trio.CancelScope()
        self._stop_code: int | None = None
        self._running = False
        self._stopped = trio.Event()

    # -- observation ------------------------------------------------------------------------

    @property
    def state(self) -> GatewayState:
        return self._state

    @property
    def guild_count(self) -> int:
        return len(self._guild_ids)

    @property
    def guild_ids(self) -> frozenset[int]:
        """The guilds READY and GUILD_CREATE/DELETE say the bot is in (none after a RESUME)."""
        return frozenset(int(guild_id) for guild_id in self._guild_ids if guild_id.isdigit())

    @property
    def latency(self) -> float | None:
        """Seconds between the last heartbeat and its ACK; None before the first ACK."""
        return self._latency

    def statistics(self) -> GatewayStatistics:
        return GatewayStatistics(
            state=self._state,
            guild_count=self.guild_count,
            latency=self._latency,
            events_backlog=self._buffer_out.statistics().current_buffer_used,
            **attrs.asdict(self._counters),
        )

    # -- sending ----------------------------------------------------------------------------

    def send_nowait(self, op: int, data: Any) -> None:
        """Queue a payload (presence, voice state, member request) for the next ready connection.

        Raises `PayloadTooLarge` at once for a payload over 4096 bytes, `ValueError` for an
        opcode the shard sends itself, and `ShardClosed` once the shard has stopped.
        """
        self._enqueue(op, data)

    async def send(self, op: int, data: Any) -> None:
        """Like `send_nowait`, then wait until the payload is written to a connection."""
        item = self._enqueue(op, data)
        await item.sent.wait()
        if item.failed:
            raise ShardClosed("the gateway shard stopped before the payload was sent")

    async def update_presence(self, presence: dict[str, Any]) -> None:
        await self.send(Opcode.PRESENCE_UPDATE, presence)

    async def update_voice_state(
        self,
        guild_id: int | str,
        channel_id: int | str | None,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
    ) -> None:
        await self.send(
            Opcode.VOICE_STATE_UPDATE,
            {
                "guild_id": str(guild_id),
                "channel_id": None if channel_id is None else str(channel_id),
                "self_mute": self_mute,
                "self_deaf": self_deaf,
            },
        )

    def _enqueue(self, op: int, data: Any) -> _Outgoing:
        if op not in _APP_SENDABLE:
            raise ValueError(f"opcode {op} is not one the application sends itself")
        text = encode_payload(op, data)
        size = len(text.encode())
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"gateway payload (op {op}) is {size} bytes, over Discord's limit of "
                f"{MAX_PAYLOAD_BYTES}; it was not sent"
            )
        if self._stopped.is_set() or self._stop_code is not None:
            raise ShardClosed("the gateway shard has stopped")
        item = _Outgoing(text)
        self._outbox.append(item)
        self._outbox_nonempty.set()
        return item

    async def _next_outgoing(self) -> _Outgoing:
        while not self._outbox:
            self._outbox_nonempty = trio.Event()
            await self._outbox_nonempty.wait()
        return self._outbox[0]

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self, *, resumable: bool = False) -> None:
        """Stop the shard and wait for `run()` to return.

        `resumable=True` is for a graceful restart: the socket closes with 4900 and the session
        is saved, so the next daemon RESUMEs. Otherwise the close is final (1000) and Discord
        ends the session.
        """
        if self._stop_code is None:
            self._stop_code = RESUMABLE_CLOSE_CODE if resumable else FINAL_CLOSE_CODE
        self._supervisor_scope.cancel()
        if self._running:
            await self._stopped.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected until cancelled (closes with 1000) or `close()`; raises `FatalError`."""
        if self._running or self._stopped.is_set():
            raise RuntimeError("a GatewayShard can run only once")
        self._running = True
        self._task_status = task_status
        self._state = "connecting"
        fatal: FatalError | None = None
        try:
            await self._load_session()
            async with self._events, trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_events)
                nursery.start_soon(self._persist_when_asked)
                with self._supervisor_scope:
                    try:
                        await self._supervise()
                    except FatalError as exc:
                        fatal = exc
                nursery.cancel_scope.cancel()
        finally:
            self._state = "stopped"
            self._fail_outbox()
            with trio.CancelScope(shield=True), trio.move_on_after(SAVE_TIMEOUT):
                await self._save_session(final=True)
            self._stopped.set()
        if fatal is not None:
            log.error("%s", fatal)
            raise fatal

    def _fail_outbox(self) -> None:
        while self._outbox:
            item = self._outbox.popleft()
            item.failed = True
            item.sent.set()

    async def _supervise(self) -> None:
        failures = 0
        resume_failures = 0  # consecutive connections to the resume URL that never resumed
        pause = 0.0
        while True:
            self._state = "resuming" if self._can_resume() else "connecting"
            if pause > 0:
                log.info("reconnecting in %.1f s", pause)
                await trio.sleep(pause)
            resuming = self._can_resume()
            end, healthy = await self._connect_once()
            if end.error is not None:
                raise end.error
            if end.next == "stop":
                return
            if end.next == "reidentify":
                self._forget_session()
            if healthy:
                failures = resume_failures = 0
            elif resuming and end.next == "resume":
                resume_failures += 1
                if resume_failures >= RESUME_ATTEMPTS:
                    log.warning(
                        "dropping the gateway session: %d connections to its resume URL %s "
                        "failed (last: %s); identifying through GET /gateway/bot instead",
                        resume_failures,
                        self._resume_url,
                        end.reason,
                    )
                    self._forget_session()
                    resume_failures = 0
            if end.unplanned or not healthy:
                failures += 1
            backoff = RECONNECT_BACKOFF.delay(failures, self._random()) if failures else 0.0
            pause = max(end.wait, backoff)

    async def _connect_once(self) -> tuple[_End, bool]:
        resuming = self._can_resume()
        try:
            if resuming:
                assert self._resume_url is not None
                url = _connect_url(self._resume_url)
            else:
                url = _connect_url(await self._gateway_url_for_identify())
        except _GatewayUnavailable as exc:
            return _End(f"cannot find the gateway: {exc}", "resume"), False
        self._counters.connections += 1
        log.debug("connecting to %s (%s)", url, "resume" if resuming else "identify")
        parts = urlsplit(url)
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await _open_stream(url)
        except (OSError, trio.TooSlowError) as exc:
            return _End(f"could not connect: {exc!r}", "resume"), False
        connection: _Connection | None = None
        failure: BaseException | None = None
        try:
            # Nothing of the websocket runs in the background: when run() is cancelled, the
            # close handshake in `_close_socket` (shielded, bounded) reads the server's answer.
            ws: WebSocket | None = None
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    ws = await open_websocket(
                        stream,
                        parts.netloc,
                        f"{parts.path}?{parts.query}",
                        max_message_size=MAX_MESSAGE_BYTES,
                        receive_size=RECEIVE_BYTES,
                    )
                connection = _Connection(self, ws, resuming=resuming)
                await connection.run()
            finally:
                if ws is not None and connection is not None:
                    await self._close_socket(ws, connection)
        except* (HandshakeError, trio.TooSlowError, OSError) as group:
            failure = group.exceptions[0]
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
        if connection is None or connection.end is None:
            return _End(f"could not connect: {failure!r}", "resume"), False
        end = connection.end
        log.info("gateway connection ended: %s", end.reason)
        return end, connection.healthy

    async def _close_socket(self, ws: WebSocket, connection: _Connection) -> None:
        if self._stop_code is not None:
            code = self._stop_code
        elif connection.end is not None:
            code = connection.end.close_code
        else:  # run() was cancelled: a final shutdown
            code = FINAL_CLOSE_CODE
        if ws.closed is not None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            await ws.aclose(code, "kimaki is restarting" if code != FINAL_CLOSE_CODE else None)
        if code == FINAL_CLOSE_CODE:
            self._forget_session()  # Discord ends a session closed with 1000

    async def _gateway_url_for_identify(self) -> str:
        try:
            info = await self._fetch_gateway()
        except FatalError:
            raise
        except Exception as exc:
            raise _GatewayUnavailable(f"GET /gateway/bot failed: {exc!r}") from exc
        url = info.get("url") if isinstance(info, dict) else None
        if not isinstance(url, str):
            raise _GatewayUnavailable(f"GET /gateway/bot returned no url: {info!r}")
        limit = info.get("session_start_limit")
        limit = limit if isinstance(limit, dict) else {}
        remaining, reset_after = limit.get("remaining"), limit.get("reset_after")
        if isinstance(remaining, int) and remaining <= 0 and isinstance(reset_after, int | float):
            log.warning(
                "Discord's daily session start limit (%s) is used up; waiting %.0f s before "
                "identifying",
                limit.get("total"),
                reset_after / 1000,
            )
            await trio.sleep(max(0.0, reset_after / 1000))
        # With max_concurrency buckets, shard N identifies in bucket N % max_concurrency, one
        # IDENTIFY per bucket per 5 s. One shard means one bucket, so: one per 5 s.
        await trio.sleep_until(self._last_identify_at + IDENTIFY_SPACING)
        return url

    # -- session ----------------------------------------------------------------------------

    def _can_resume(self) -> bool:
        return (
            self._session_id is not None
            and self._resume_url is not None
            and self._sequence is not None
        )

    def _forget_session(self) -> None:
        self._session_id = self._resume_url = None
        self._sequence = self._delivered = self._checkpoint_floor = None
        self._recent.clear()
        self._persist_wanted.set()

    def _checkpoint(self) -> int | None:
        """The sequence of the last event the consumer has finished with, as far as the shard
        can tell without its help, so a process killed now loses nothing on RESUME.

        Events still in the channel are not finished, and neither is the one the consumer
        took last unless it is back waiting for the next: an in-order consumer (the
        dispatcher) finishes an event before it takes another. When `_recent` does not reach
        that far back, the floor: the last sequence saved, or READY's.
        """
        stats = self._events.statistics()
        behind = stats.current_buffer_used + (0 if stats.tasks_waiting_receive else 1)
        sequence = self._recent[-1 - behind] if behind < len(self._recent) else None
        if sequence is None or (
            self._checkpoint_floor is not None and sequence < self._checkpoint_floor
        ):
            return self._below_held(self._checkpoint_floor)
        return self._below_held(sequence)

    def _below_held(self, sequence: int | None) -> int | None:
        """`sequence`, or less where the consumer still holds an event at or below it."""
        held = self._held() if self._held is not None else None
        if held is None or sequence is None or sequence < held:
            return sequence
        return held - 1

    def _stored_session(self, *, final: bool) -> GatewaySession | None:
        """What to save: at the end, the last event handed on (the daemon drains the channel
        before it restarts); while running, the checkpoint."""
        if self._session_id is None or self._resume_url is None:
            return None
        sequence = self._below_held(self._delivered) if final else self._checkpoint()
        if sequence is None:
            return None
        return GatewaySession(self._session_id, sequence, self._resume_url)

    async def _load_session(self) -> None:
        if self._store is None:
            return
        try:
            session = await self._store.load_gateway_session()
        except Exception:
            log.warning("could not load the stored gateway session; identifying", exc_info=True)
            return
        if session is None:
            return
        self._session_id, self._resume_url = session.session_id, session.resume_url
        self._sequence = self._delivered = self._checkpoint_floor = session.sequence
        self._saved = session
        log.info("resuming the stored gateway session at sequence %d", session.sequence)

    async def _save_session(self, *, final: bool = False) -> bool:
        """Save the session if it changed; True when something was written."""
        if self._store is None:
            return False
        async with self._save_lock:
            session = self._stored_session(final=final)
            if session is None and self._session_id is not None and not final:
                return False  # a session whose checkpoint is not known yet: keep what is saved
            if session == self._saved:
                return False
            try:
                await self._store.save_gateway_session(session)
            except Exception:
                log.warning("could not save the gateway session", exc_info=True)
                return False
            self._saved = session
            if session is not None and session.session_id == self._session_id:
                self._checkpoint_floor = session.sequence
            return True

    def _consumer_behind(self) -> bool:
        return self._session_id is not None and self._checkpoint() != self._delivered

    async def _persist_when_asked(self) -> None:
        """Save the session when asked (each event handed on asks, which costs the hot path
        only setting an event), at most once per `SESSION_SAVE_INTERVAL`. While the consumer
        still holds events, ask again after the interval, so what it finishes is saved even
        when no new event comes."""
        while True:
            await self._persist_wanted.wait()
            self._persist_wanted = trio.Event()
            wrote = await self._save_session()
            if wrote or self._consumer_behind():
                await trio.sleep(SESSION_SAVE_INTERVAL)
            if self._consumer_behind():
                self._persist_wanted.set()

    # -- events -----------------------------------------------------------------------------

    async def _forward_events(self) -> None:
        """Hand the buffered events on, in order: as many as the channel has room for at once,
        without a trip through the scheduler each, then each as soon as there is room."""
        async for first in self._buffer_out:
            self._forwarding = True
            item: tuple[GatewayEvent, str | None] | None = first
            try:
                while item is not None:
                    event, session_id = item
                    try:
                        self._events.send_nowait(event)
                    except trio.WouldBlock:
                        await self._events.send(event)
                    self._handed_on(event, session_id)
                    try:
                        item = self._buffer_out.receive_nowait()
                    except trio.WouldBlock:
                        item = None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.info("nobody reads gateway events any more; stopping the shard")
                if self._stop_code is None:
                    self._stop_code = FINAL_CLOSE_CODE
                self._supervisor_scope.cancel()
                return
            finally:
                self._forwarding = False

    def _hand_on(self, event: GatewayEvent) -> None:
        """Give `event` to the consumer: directly when it keeps up, else through the buffer.

        The direct path saves two trips through the scheduler per event; it is taken only
        when nothing is buffered or in flight, so events keep their order either way.
        """
        if not self._forwarding and not self._buffer_out.statistics().current_buffer_used:
            try:
                self._events.send_nowait(event)
            except trio.WouldBlock:
                pass  # the consumer is behind: buffer from here on
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the forwarder notices and stops the shard
            else:
                self._handed_on(event, self._session_id)
                return
        self._buffer_in.send_nowait((event, self._session_id))

    def _handed_on(self, event: GatewayEvent, session_id: str | None) -> None:
        self._counters.events_dispatched += 1
        if session_id is not None and session_id == self._session_id and event.sequence:
            self._delivered = event.sequence
            self._recent.append(event.sequence)
        self._persist_wanted.set()

    def _on_dispatch(self, connection: _Connection, payload: dict[str, Any]) -> None:
        name, sequence, data = payload.get("t"), payload.get("s"), payload.get("d")
        if not isinstance(name, str) or not _is_int(sequence):
            self._counters.malformed_payloads += 1
            log.warning("skipped a dispatch without an event name or sequence: %.200r", payload)
            return
        assert isinstance(sequence, int)
        if self._sequence is not None and sequence <= self._sequence:
            self._counters.duplicates_dropped += 1
            log.debug("dropped %s #%d, already received", name, sequence)
            return
        self._sequence = sequence
        self._counters.events_received += 1
        if name == "READY":
            self._on_ready(connection, data)
        elif name == "RESUMED":
            log.info("resumed session at sequence %d", sequence)
            self._became_ready(connection)
        elif name in ("GUILD_CREATE", "GUILD_DELETE") and isinstance(data, dict):
            guild_id = data.get("id")
            if isinstance(guild_id, str | int):
                if name == "GUILD_CREATE":
                    self._guild_ids.add(str(guild_id))
                elif not data.get("unavailable"):  # an outage keeps the bot in the guild
                    self._guild_ids.discard(str(guild_id))
        self._hand_on(GatewayEvent(name, sequence, data))

    def _on_ready(self, connection: _Connection, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        session_id, resume_url = data.get("session_id"), data.get("resume_gateway_url")
        if isinstance(session_id, str) and isinstance(resume_url, str):
            self._session_id, self._resume_url = session_id, resume_url
        else:
            log.warning("READY without session_id/resume_gateway_url; cannot resume later")
        # Nothing downstream needs READY itself again: a resume may replay from after it.
        self._checkpoint_floor = self._sequence
        guilds = data.get("guilds")
        self._guild_ids = {
            str(guild["id"])
            for guild in (guilds if isinstance(guilds, list) else [])
            if isinstance(guild, dict) and isinstance(guild.get("id"), str | int)
        }
        log.info("ready: %d guilds", len(self._guild_ids))
        self._became_ready(connection)

    def _became_ready(self, connection: _Connection) -> None:
        self._state = "ready"
        connection.mark_healthy()
        if self._task_status is not None:
            task_status, self._task_status = self._task_status, None
            task_status.started()

    def _handshake_payload(self, resuming: bool) -> str:
        if resuming:
            self._counters.resumes += 1
            log.info("resuming session at sequence %s", self._sequence)
            return encode_payload(
                Opcode.RESUME,
                {"token": self._token, "session_id": self._session_id, "seq": self._sequence},
            )
        self._forget_session()  # a new session starts its sequence at 1
        self._counters.identifies += 1
        self._last_identify_at = trio.current_time()
        log.info("identifying (intents %d)", int(INTENTS))
        return encode_payload(
            Opcode.IDENTIFY,
            {
                "token": self._token,
                "intents": int(INTENTS),
                "properties": {"os": sys.platform, "browser": "kimaki", "device": "kimaki"},
                "shard": list(self._shard),
            },
        )


@final
class _Connection:
    """One websocket: a reader, a heartbeat task and a sender in one nursery.

    Any task ends the connection with `finish()`, which records why (the first reason wins)
    and cancels the nursery; the supervisor reads `end` afterwards.
    """

    def __init__(self, shard: GatewayShard, ws: WebSocket, *, resuming: bool) -> None:
        self._shard = shard
        self._counters = shard._counters
        self._ws = ws
        self._resuming = resuming
        self._decoder = ZlibStreamDecoder()
        self._window = SendWindow()
        self._nursery: trio.Nursery | None = None
        self._hello = trio.Event()
        self._interval = 0.0
        self._beat_now = trio.Event()
        self._ack_pending = False
        self._heartbeat_sent_at = 0.0
        self._ready_for_sends = trio.Event()
        self._handshake_scope: trio.CancelScope | None = None
        self.healthy = False
        self.end: _End | None = None

    async def run(self) -> _End:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._read_loop)
            nursery.start_soon(self._heartbeat_loop)
            nursery.start_soon(self._send_loop)
        assert self.end is not None  # the tasks only return after finish()
        return self.end

    def finish(self, end: _End) -> None:
        if self.end is None:
            self.end = end
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def mark_healthy(self) -> None:
        self.healthy = True
        self._ready_for_sends.set()

    # -- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            try:
                messages = await self._ws.receive_messages()
            except ConnectionClosed as exc:
                self.finish(self._end_for_close(exc.reason))
                return
            for index, message in enumerate(messages, start=1):
                self._take(message)
                if self.end is not None:
                    return  # the rest of the read is not for this connection any more
                if index % _EVENTS_PER_TURN == 0:
                    await trio.lowlevel.checkpoint()

    def _take(self, message: bytes | str) -> None:
        if isinstance(message, bytes):
            try:
                raw = self._decoder.feed(message)
            except ZlibStreamCorrupt as exc:
                self._counters.malformed_payloads += 1
                log.warning("the compressed gateway stream is corrupt (%s); reconnecting", exc)
                self.finish(_End("corrupt zlib stream", "resume"))
                return
            if raw is None:
                return
        else:
            raw = message.encode()
        payload = decode_payload(raw)
        if payload is None:
            self._counters.malformed_payloads += 1
            log.warning("skipped a gateway payload that is not a JSON object: %.200r", raw)
            return
        self._handle(payload)

    @staticmethod
    def _end_for_close(reason: CloseReason | None) -> _End:
        code = reason.code if reason is not None else None
        detail = f"Discord closed the connection with {code}"
        if reason is not None and reason.reason:
            detail += f" ({reason.reason})"
        verdict = classify_close(code)
        if verdict.action == "fatal":
            return _End(detail, "stop", FINAL_CLOSE_CODE, error=verdict.error)
        return _End(detail, verdict.action)

    def _handle(self, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if not _is_int(op):
            self._counters.malformed_payloads += 1
            log.warning("skipped a gateway payload without an opcode: %.200r", payload)
        elif op == Opcode.DISPATCH:
            if self._handshake_scope is not None and not self.healthy:
                # A replay before RESUMED is the server answering: wait on while it lasts.
                self._handshake_scope.deadline = trio.current_time() + self._shard.handshake_timeout
            self._shard._on_dispatch(self, payload)
        elif op == Opcode.HEARTBEAT:
            self._beat_now.set()
        elif op == Opcode.HEARTBEAT_ACK:
            if self._ack_pending:
                self._ack_pending = False
                self._counters.heartbeats_acked += 1
                self._shard._latency = trio.current_time() - self._heartbeat_sent_at
        elif op == Opcode.HELLO:
            self._on_hello(data)
        elif op == Opcode.RECONNECT:
            self.finish(_End("Discord asked for a reconnect (op 7)", "resume", unplanned=False))
        elif op == Opcode.INVALID_SESSION:
            if data is True:
                self.finish(_End("invalid session, resumable (op 9)", "resume", unplanned=False))
            else:
                wait = 1 + 4 * self._shard._random()
                self.finish(
                    _End("invalid session (op 9)", "reidentify", unplanned=False, wait=wait)
                )
        else:
            log.debug("ignored gateway opcode %s", op)

    def _on_hello(self, data: Any) -> None:
        interval = data.get("heartbeat_interval") if isinstance(data, dict) else None
        if self._hello.is_set():
            log.debug("ignored a second Hello")
        elif (
            isinstance(interval, int | float)
            and not isinstance(interval, bool)
            and 0 < interval < math.inf
        ):
            self._interval = interval / 1000
            self._hello.set()
        else:
            self._counters.malformed_payloads += 1
            log.warning("skipped a Hello without a usable heartbeat_interval: %.200r", data)

    # -- writing ----------------------------------------------------------------------------

    async def _send_reserved(self, text: str) -> bool:
        """Send a payload of our own (heartbeat, IDENTIFY, RESUME); it may use reserved slots."""
        await trio.sleep_until(self._window.free_at(trio.current_time()))
        self._window.record(trio.current_time())
        try:
            await self._ws.send_message(text)
        except ConnectionClosed:
            return False  # the reader sees the close and ends the connection
        return True

    async def _heartbeat_loop(self) -> None:
        with trio.move_on_after(HELLO_TIMEOUT):
            await self._hello.wait()
        if not self._hello.is_set():
            self.finish(_End(f"no Hello within {HELLO_TIMEOUT:.0f} s", "resume"))
            return
        if not await self._send_reserved(self._shard._handshake_payload(self._resuming)):
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._watch_handshake)
        next_beat = trio.current_time() + self._interval * self._shard._random()
        while True:
            with trio.move_on_at(next_beat):
                await self._beat_now.wait()
            requested = self._beat_now.is_set()
            if requested:
                self._beat_now = trio.Event()
            else:
                if self._ack_pending:
                    self._counters.zombie_closes += 1
                    log.warning("no heartbeat ACK since the last heartbeat; reconnecting")
                    self.finish(_End("zombie connection", "resume", unplanned=False))
                    return
                next_beat = trio.current_time() + self._interval
            self._ack_pending = True
            self._heartbeat_sent_at = trio.current_time()
            if not await self._send_reserved(
                encode_payload(Opcode.HEARTBEAT, self._shard._sequence)
            ):
                return
            self._counters.heartbeats_sent += 1
            self._shard._persist_wanted.set()

    async def _watch_handshake(self) -> None:
        """READY must follow IDENTIFY, and RESUMED or op 9 must follow RESUME, in time.

        A proxy or Discord-compatible server that never answers would otherwise keep the
        shard "connecting" for ever while heartbeats go on. An unanswered RESUME is taken as
        op 9 false: the session is given up and the next connection identifies.
        """
        timeout = self._shard.handshake_timeout
        with trio.move_on_after(timeout) as self._handshake_scope:
            await self._ready_for_sends.wait()
        if self.healthy:
            return
        if self._resuming:
            log.warning(
                "the gateway did not answer RESUME within %g s (no RESUMED, no op 9); treating "
                "the session as invalid: closing and identifying afresh",
                timeout,
            )
            self.finish(_End(f"no RESUMED within {timeout:g} s of RESUME", "reidentify"))
        else:
            log.warning(
                "the gateway did not answer IDENTIFY within %g s (no READY); closing and "
                "identifying again",
                timeout,
            )
            self.finish(_End(f"no READY within {timeout:g} s of IDENTIFY", "reidentify"))

    async def _send_loop(self) -> None:
        await self._ready_for_sends.wait()
        shard = self._shard
        while True:
            item = await shard._next_outgoing()
            now = trio.current_time()
            free_at = self._window.free_at(now, reserve=HEARTBEAT_RESERVE)
            if free_at > now:
                self._counters.sends_throttled += 1
                log.debug("gateway send limit reached; waiting %.1f s", free_at - now)
                await trio.sleep_until(free_at)
                continue
            self._window.record(now)
            try:
                await self._ws.send_message(item.text)
            except ConnectionClosed:
                return  # the item stays queued for the next connection
            if shard._outbox and shard._outbox[0] is item:
                shard._outbox.popleft()
            self._counters.sends += 1
            item.sent.set()
