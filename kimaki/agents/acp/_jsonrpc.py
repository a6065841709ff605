"""JSON-RPC 2.0 over a byte stream, one JSON message per line: ACP's transport.

```
JsonRpcConnection.run (owns a nursery)
├─ reader: lines → responses resolve waiting `request()` calls
│                → requests from the peer: one task each (they may wait on a person)
│                → notifications: queued, delivered in order by the notifier task
└─ notifier: calls `on_notification` one at a time, in arrival order
```

Notifications keep their order because an agent's `session/update`s must be rendered in the
order it sent them; requests from the peer run concurrently because one of them (a permission
request) can wait minutes for a person while updates keep flowing.

A response is resolved as soon as it is read, possibly before the notifications that came
before it were handled; `notifications_delivered()` waits for those, so a caller can end a turn
after the last update the agent sent for it.

Exceptions:

```
JsonRpcError .............. the peer answered with an error object (code, message, data)
ConnectionClosedError ..... the connection ended before the answer came
```

Malformed input (bad JSON, a line over the limit, a message of no known shape) is logged and
skipped; it never ends the connection.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import attrs
import trio

from kimaki.errors import KimakiError

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "METHOD_NOT_FOUND",
    "ConnectionClosedError",
    "JsonRpcConnection",
    "JsonRpcError",
    "JsonRpcStatistics",
]

log = logging.getLogger("kimaki.acp")

METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
PARSE_ERROR: Final = -32700

DEFAULT_MAX_LINE: Final = 64 * 1024 * 1024

RequestHandler = Callable[[str, Any], Awaitable[Any]]
NotificationHandler = Callable[[str, Any], Awaitable[None]]


class JsonRpcError(KimakiError):
    """An error response. Raise it from a request handler to answer with that error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.data = data


class ConnectionClosedError(KimakiError):
    """The connection ended (the agent exited or closed its stdout) before an answer came."""


@final
@attrs.frozen
class JsonRpcStatistics:
    requests_sent: int
    requests_pending: int
    requests_received: int
    notifications_received: int
    malformed_lines: int


@attrs.define
class _Pending:
    done: trio.Event = attrs.Factory(trio.Event)
    result: Any = None
    error: JsonRpcError | None = None
    closed: bool = False


@final
class JsonRpcConnection:
    """One JSON-RPC peer. Call `request`/`notify` while `run` is running."""

    def __init__(
        self,
        send_stream: trio.abc.SendStream,
        receive_stream: trio.abc.ReceiveStream,
        *,
        on_request: RequestHandler,
        on_notification: NotificationHandler,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self._send_stream = send_stream
        self._receive_stream = receive_stream
        self._on_request = on_request
        self._on_notification = on_notification
        self._max_line = max_line
        self._send_lock = trio.StrictFIFOLock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._closed = False
        self._requests_sent = 0
        self._requests_received = 0
        self._notifications_received = 0
        self._notifications_handled = 0
        self._delivery_over = False
        self._handled_lot = trio.lowlevel.ParkingLot()
        self._malformed = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> JsonRpcStatistics:
        return JsonRpcStatistics(
            requests_sent=self._requests_sent,
            requests_pending=len(self._pending),
            requests_received=self._requests_received,
            notifications_received=self._notifications_received,
            malformed_lines=self._malformed,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connection until the peer closes it (then pending requests fail)."""
        notify_send, notify_receive = trio.open_memory_channel[tuple[str, Any]](math.inf)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver_notifications, notify_receive)
                task_status.started()
                async with notify_send:
                    await self._read(nursery, notify_send)
                # EOF: let queued notifications drain; handlers of peer requests are moot.
                nursery.cancel_scope.deadline = trio.current_time() + 5
        finally:
            self._close()
            self._delivery_over = True
            self._handled_lot.unpark_all()

    async def request(
        self, method: str, params: Any = None, *, on_sent: Callable[[], None] | None = None
    ) -> Any:
        """Send a request and wait for its result; raises JsonRpcError or ConnectionClosedError.

        `on_sent` is called once the request is written: a caller that runs the request in a
        task (`nursery.start`) can return as soon as the peer has it, and anything it sends
        afterwards (a cancel) is ordered after it.
        """
        if self._closed:
            raise ConnectionClosedError(f"cannot send {method}: the connection is closed")
        request_id = next(self._ids)
        pending = self._pending[request_id] = _Pending()
        try:
            message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
            if params is not None:
                message["params"] = params
            await self._send(message)
            self._requests_sent += 1
            if on_sent is not None:
                on_sent()
            await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.closed:
            raise ConnectionClosedError(f"the connection closed before {method} was answered")
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def notifications_delivered(self) -> None:
        """Wait until every notification received so far has been handled (or the connection
        is over). Never call it from a notification handler: it would wait for itself."""
        target = self._notifications_received
        while self._notifications_handled < target and not self._delivery_over:
            await self._handled_lot.park()
        await trio.lowlevel.checkpoint()

    async def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._send(message)

    async def _send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        async with self._send_lock:
            try:
                await self._send_stream.send_all(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._close()
                raise ConnectionClosedError(f"the agent's stdin is closed: {exc}") from None

    async def _read(
        self, nursery: trio.Nursery, notifications: trio.MemorySendChannel[tuple[str, Any]]
    ) -> None:
        buffer = bytearray()
        skipping = False  # inside a line that passed the limit: drop up to its newline
        while True:
            try:
                data = await self._receive_stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return
            buffer += data
            while True:
                newline = buffer.find(b"\n")
                if newline < 0:
                    if len(buffer) > self._max_line:
                        self._malformed += 1
                        log.warning("dropped a message over %d bytes", self._max_line)
                        buffer.clear()
                        skipping = True
                    break
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if skipping:
                    skipping = False
                    continue
                if len(line) > self._max_line:
                    self._malformed += 1
                    log.warning("dropped a message over %d bytes", self._max_line)
                    continue
                if line.strip():
                    await self._handle_line(line, nursery, notifications)

    async def _handle_line(
        self,
        line: bytes,
        nursery: trio.Nursery,
        notifications: trio.MemorySendChannel[tuple[str, Any]],
    ) -> None:
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self._malformed += 1
            log.warning("skipped a line that is not JSON: %.200r", line)
            return
        if not isinstance(message, dict):
            self._malformed += 1
            log.warning("skipped a message that is not an object: %.200r", line)
            return
        method = message.get("method")
        has_id = "id" in message
        if isinstance(method, str) and has_id:
            self._requests_received += 1
            nursery.start_soon(self._answer, message["id"], method, message.get("params"))
        elif isinstance(method, str):
            self._notifications_received += 1
            await notifications.send((method, message.get("params")))
        elif has_id and ("result" in message or "error" in message):
            self._resolve(message)
        else:
            self._malformed += 1
            log.warning("skipped a message of no known shape: %.200r", line)

    def _resolve(self, message: dict[str, Any]) -> None:
        pending = self._pending.get(message["id"]) if isinstance(message["id"], int) else None
        if pending is None:
            log.debug("response to an unknown or abandoned request %r", message["id"])
            return
        error = message.get("error")
        if error is not None:
            if isinstance(error, dict):
                pending.error = JsonRpcError(
                    int(error.get("code", INTERNAL_ERROR)),
                    str(error.get("message", "unknown error")),
                    error.get("data"),
                )
            else:
                pending.error = JsonRpcError(INTERNAL_ERROR, f"malformed error: {error!r}")
        else:
            pending.result = message.get("result")
        pending.done.set()

    async def _answer(self, request_id: Any, method: str, params: Any) -> None:
        response: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        try:
            response["result"] = await self._on_request(method, params)
        except JsonRpcError as exc:
            response["error"] = _error_object(exc)
        except Exception:
            log.exception("handling the agent's %s request failed", method)
            response["error"] = {"code": INTERNAL_ERROR, "message": "internal error"}
        try:
            await self._send(response)
        except ConnectionClosedError:
            log.debug("could not answer %s: the connection is closed", method)

    async def _deliver_notifications(
        self, notifications: trio.MemoryReceiveChannel[tuple[str, Any]]
    ) -> None:
        async with notifications:
            async for method, params in notifications:
                try:
                    await self._on_notification(method, params)
                except Exception:
                    log.exception("handling the agent's %s notification failed", method)
                finally:
                    self._notifications_handled += 1
                    self._handled_lot.unpark_all()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pending in self._pending.values():
            pending.closed = True
            pending.done.set()


def _error_object(exc: JsonRpcError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    return error
