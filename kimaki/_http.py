"""A small HTTP/1.1 server on trio and h11, shared by every server the project runs.

The daemon's control endpoint on the lock port, the Discord emulator's REST side, the fake
OpenCode server and the tests' fake model server all need the same thing: accept connections on
127.0.0.1, parse requests, hand each one to an async handler, and write back either a whole body
or a stream (Server-Sent Events, streamed chat completions). One implementation serves them all.

h11 does the parsing (it is already a dependency of httpx and trio-websocket); this module only
drives it. Connections are kept alive; each connection is one task in the server's nursery, so
cancelling the server's scope closes every connection with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, final
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

__all__ = ["Handler", "Request", "Response", "serve_http"]


_MAX_BODY: Final = 64 * 1024 * 1024
_READ_SIZE: Final = 64 * 1024


@final
@attrs.frozen
class Request:
    """One parsed request. Header names are lower-case."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client: tuple[str, int] | None = None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def bearer_token(self) -> str | None:
        """The token of an `Authorization: Bearer <token>` header, if there is one."""
        scheme, _, token = (self.header("authorization") or "").partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None


@final
@attrs.define
class Response:
    """A response: `body` is either the whole payload or an async iterator of chunks."""

    status: int = 200
    headers: list[tuple[str, str]] = attrs.Factory(list)
    body: bytes | AsyncIterator[bytes] = b""

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        payload = json.dumps(data).encode()
        return cls(status, [("content-type", "application/json"), *headers], payload)

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Response:
        return cls(status, [("content-type", f"{content_type}; charset=utf-8")], text.encode())

    @classmethod
    def empty(cls, status: int = 204) -> Response:
        return cls(status)

    @classmethod
    def stream(
        cls,
        chunks: AsyncIterator[bytes],
        content_type: str = "text/event-stream",
        status: int = 200,
    ) -> Response:
        headers = [("content-type", content_type), ("cache-control", "no-cache")]
        return cls(status, headers, chunks)


Handler = Callable[[Request], Awaitable[Response]]


async def serve_http(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "http",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handler` on `host:port` until cancelled; `nursery.start` returns the bound port.

    Raises `OSError` (before `started`) when the port cannot be bound, which is how the daemon
    detects that another instance holds the lock port.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port: int = listeners[0].socket.getsockname()[1]

    log = logging.getLogger(f"kimaki.{name}")

    async def serve_connection(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(stream, handler, log)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
            log.debug("connection ended: %r", exc)
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_accept_loop, listeners, serve_connection)
        task_status.started(bound_port)


async def _accept_loop(
    listeners: list[trio.SocketListener],
    serve_connection: Callable[[trio.SocketStream], Awaitable[None]],
) -> None:
    await trio.serve_listeners(serve_connection, listeners)


async def _serve_connection(
    stream: trio.SocketStream, handler: Handler, log: logging.Logger
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_BODY)
    try:
        peer = stream.socket.getpeername()
        client: tuple[str, int] | None = (str(peer[0]), int(peer[1]))
    except OSError:
        client = None
    while True:
        request = await _read_request(conn, stream, client)
        if request is None:
            return
        try:
            response = await handler(request)
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = Response.json({"error": "internal error"}, status=500)
        await _write_response(conn, stream, response)
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_READ_SIZE)
            conn.receive_data(data)
            continue
        return event


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream, client: tuple[str, int] | None
) -> Request | None:
    event = await _next_event(conn, stream)
    if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
        return None
    if not isinstance(event, h11.Request):
        return None
    body = bytearray()
    while True:
        part = await _next_event(conn, stream)
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > _MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(part, h11.EndOfMessage):
            break
        else:
            return None
    headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers)
    return Request(
        method=event.method.decode("ascii"),
        target=event.target.decode("latin-1"),
        headers=headers,
        body=bytes(body),
        client=client,
    )


async def _write_response(
    conn: h11.Connection, stream: trio.SocketStream, response: Response
) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    streaming = not isinstance(response.body, bytes)
    if streaming:
        headers.append((b"transfer-encoding", b"chunked"))
    elif response.status not in (204, 304):
        assert isinstance(response.body, bytes)
        headers.append((b"content-length", str(len(response.body)).encode()))
    await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
    if isinstance(response.body, bytes):
        if response.body and response.status not in (204, 304):
            await stream.send_all(conn.send(h11.Data(data=response.body)))
    else:
        chunks = response.body
        try:
            async for chunk in chunks:
                if chunk:
                    await stream.send_all(conn.send(h11.Data(data=chunk)))
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()
    await stream.send_all(conn.send(h11.EndOfMessage()))
