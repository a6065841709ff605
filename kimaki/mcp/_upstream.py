"""Reaching one MCP server of the catalog: a stdio child or a Streamable HTTP endpoint, as the
SDK's `ClientSession`, initialized.

The proxy runs inside an agent, whose environment holds its server's password, so a stdio
server must get exactly its configured env plus `PATH`. The SDK's `stdio_client` always merges
a default environment (HOME, USER, SHELL...) into it and reads pipes through threads, so stdio
has its own small trio transport here: the child in a process group of its own, its lines
pumped into the SDK's memory streams by a nursery, and the whole group killed when the context
ends, on any path. The same line framing serves the other side too (`json_line_streams`: the
proxy and the test server on their own stdin and stdout). HTTP is the SDK's
`streamable_http_client`, with the entry's headers on its client.

Every failure to start, to initialize or to stay connected becomes one `UpstreamError` whose
message says which server and why, with secrets redacted: it is shown to the agent (the proxy's
-32002) and in Discord (`/mcp` "Scan").
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal, TypeAlias, final

import anyio
import attrs
import httpx
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.shared.message import SessionMessage

from kimaki._log import redact, register_secret
from kimaki._version import __version__
from kimaki.errors import KimakiError
from kimaki.mcp._catalog import CatalogEntry

__all__ = [
    "Streams",
    "UpstreamError",
    "UpstreamTool",
    "json_line_streams",
    "list_upstream_tools",
    "open_upstream",
    "read_json_lines",
    "unreachable",
    "write_json_lines",
]

log = logging.getLogger("kimaki.mcp")

Streams: TypeAlias = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]
]
"""What the SDK's sessions run over: messages in (or a line that did not parse), messages out."""

_CLIENT: Final = types.Implementation(name="kimaki", version=__version__)
_READ_SIZE: Final = 64 * 1024
_MAX_LINE: Final = 64 * 1024 * 1024
# A stdio server gets this long to exit once its input is closed, before its group is killed.
_GRACE: Final = 2.0
# A tool may work for minutes; an HTTP answer may take that long to start.
_HTTP_READ_TIMEOUT: Final = 300.0
_MAX_PAGES: Final = 100


class UpstreamError(KimakiError):
    """An MCP server could not be started or reached, or failed during a request."""


@final
@attrs.frozen
class UpstreamTool:
    """A tool a server offers, as `/mcp` shows it."""

    name: str
    description: str = ""


def unreachable(server: str, why: str) -> UpstreamError:
    """The one wording of a server that cannot be used, for the agent and for Discord."""
    return UpstreamError(f'MCP server "{server}" is unreachable: {redact(why)}')


@asynccontextmanager
async def open_upstream(
    entry: CatalogEntry,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 (to start and initialize; the session stays open)
    stderr: Literal["inherit", "discard"] = "inherit",
) -> AsyncIterator[ClientSession]:
    """A session with `entry`'s server, initialized within `timeout` seconds.

    Raises `UpstreamError` when the server cannot be started or reached, does not initialize,
    or fails later (its process ends, its HTTP endpoint errs). A stdio server's stderr goes to
    ours (`inherit`) or nowhere (`discard`), never through the log.
    """
    for secret in (*entry.env.values(), *entry.headers.values()):
        register_secret(secret)
    ready = False
    try:
        async with (
            _transport(entry, timeout, stderr) as (read_stream, write_stream),
            ClientSession(read_stream, write_stream, client_info=_CLIENT) as session,
        ):
            try:
                with trio.fail_after(timeout):
                    await session.initialize()
            except trio.TooSlowError:
                raise unreachable(entry.name, f"no answer within {timeout:g} s") from None
            ready = True
            yield session
    except BaseException as exc:
        failure = _failure(exc, anything=not ready)
        if failure is None:
            single = _single(exc)
            if single is exc:
                raise
            raise single from None
        if isinstance(failure, UpstreamError):
            raise failure from exc
        raise unreachable(entry.name, _why(failure)) from exc


async def list_upstream_tools(
    entry: CatalogEntry,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 (two deadlines: to start, then to list)
) -> list[UpstreamTool]:
    """Every tool `entry`'s server offers (initialize, then tools/list through every page)."""
    tools: list[UpstreamTool] = []
    async with open_upstream(entry, timeout=timeout, stderr="discard") as session:
        cursor: str | None = None
        try:
            with trio.fail_after(timeout):
                for _ in range(_MAX_PAGES):
                    page = await session.list_tools(
                        params=types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    )
                    tools.extend(UpstreamTool(t.name, t.description or "") for t in page.tools)
                    cursor = page.nextCursor
                    if not cursor:
                        break
        except trio.TooSlowError:
            raise unreachable(entry.name, f"tools/list unanswered within {timeout:g} s") from None
    return tools


# -- transports ------------------------------------------------------------------------------


@asynccontextmanager
async def _transport(
    entry: CatalogEntry, connect_timeout: float, stderr: Literal["inherit", "discard"]
) -> AsyncIterator[Streams]:
    if entry.transport == "stdio":
        async with _stdio_streams(entry, stderr) as streams:
            yield streams
        return
    client = httpx.AsyncClient(
        headers=dict(entry.headers), timeout=httpx.Timeout(connect_timeout, read=_HTTP_READ_TIMEOUT)
    )
    async with (
        client,
        streamable_http_client(entry.url, http_client=client) as (read_stream, write_stream, _),
    ):
        yield read_stream, write_stream


@asynccontextmanager
async def _stdio_streams(
    entry: CatalogEntry, stderr: Literal["inherit", "discard"]
) -> AsyncIterator[Streams]:
    """The child, its own process group, with exactly its env plus PATH; killed on exit."""
    env = {"PATH": os.environ.get("PATH", os.defpath), **entry.env}
    try:
        process = await trio.lowlevel.open_process(
            [entry.command, *entry.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if stderr == "discard" else None,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise unreachable(entry.name, f"{entry.command!r} cannot be started: {why}") from None
    incoming, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, outgoing = anyio.create_memory_object_stream[SessionMessage](0)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_from_child, process, incoming, entry.name)
            nursery.start_soon(_to_child, process, outgoing)
            try:
                yield read_stream, write_stream
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for stream in (incoming, read_stream, write_stream, outgoing):
            stream.close()
        await _stop(process)


async def _from_child(
    process: trio.Process, sink: MemoryObjectSendStream[SessionMessage | Exception], name: str
) -> None:
    assert process.stdout is not None
    async with sink:
        await read_json_lines(process.stdout, sink)
        # End of its output: it has exited, or is about to.
        code = process.poll()
        if code is None:
            with trio.move_on_after(_GRACE):
                code = await process.wait()
        raise unreachable(name, _ended(code))


def _ended(code: int | None) -> str:
    if code is None:
        return "it closed its output"
    if code < 0:
        return f"it was killed by signal {-code}"
    return f"it exited with code {code}"


async def _to_child(
    process: trio.Process, source: MemoryObjectReceiveStream[SessionMessage]
) -> None:
    assert process.stdin is not None
    # A child that stopped reading has exited or will: its output's end says how.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        async with source:
            await write_json_lines(source, process.stdin)


async def _stop(process: trio.Process) -> None:
    """Close its input, give it `_GRACE` to exit, then kill whatever is left of its group."""
    with trio.CancelScope(shield=True):
        if process.stdin is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await process.stdin.aclose()
        with trio.move_on_after(_GRACE):
            await process.wait()
        # Grandchildren stay in the group after the server itself exits.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:  # it left the group (setsid): it goes on its own
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


# -- JSON lines (the MCP stdio framing) ------------------------------------------------------


async def read_json_lines(
    source: trio.abc.ReceiveStream, sink: MemoryObjectSendStream[SessionMessage | Exception]
) -> None:
    """Each line of `source` as a message into `sink` (or the error it raised), until EOF."""
    parts: list[bytes | bytearray] = []
    size = 0
    while True:
        chunk = await source.receive_some(_READ_SIZE)
        if not chunk:
            return
        lines: list[bytes | bytearray] = list(chunk.split(b"\n"))
        rest = lines.pop()
        if lines:
            lines[0] = b"".join((*parts, lines[0]))
            parts, size = [], 0
            for line in lines:
                if line.strip():
                    await sink.send(_parse(line))
        if rest:
            parts.append(rest)
            size += len(rest)
            if size > _MAX_LINE:
                raise UpstreamError(f"an MCP message longer than {_MAX_LINE} bytes")


def _parse(line: bytes | bytearray) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.JSONRPCMessage.model_validate_json(line))
    except ValueError as exc:  # pydantic's ValidationError is one
        return exc


async def write_json_lines(
    source: MemoryObjectReceiveStream[SessionMessage], sink: trio.abc.SendStream
) -> None:
    """Each message from `source` as one line on `sink`, until `source` is closed."""
    async for item in source:
        data = item.message.model_dump_json(by_alias=True, exclude_none=True)
        await sink.send_all(data.encode() + b"\n")


@asynccontextmanager
async def json_line_streams(
    receive: trio.abc.ReceiveStream, send: trio.abc.SendStream
) -> AsyncIterator[Streams]:
    """A server's side of stdio (its stdin and stdout) as the SDK's streams.

    The end of input closes the read stream, so the SDK's server returns; on the way out,
    what the server already sent is written before the pumps stop. A client that stopped
    reading ends the context quietly.
    """
    incoming, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, outgoing = anyio.create_memory_object_stream[SessionMessage](0)
    drained = trio.Event()
    async with trio.open_nursery() as nursery:

        async def pump_in() -> None:
            async with incoming:
                await read_json_lines(receive, incoming)

        async def pump_out() -> None:
            try:
                async with outgoing:
                    await write_json_lines(outgoing, send)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()
            finally:
                drained.set()

        nursery.start_soon(pump_in)
        nursery.start_soon(pump_out)
        try:
            yield read_stream, write_stream
        finally:
            write_stream.close()
            try:
                with trio.move_on_after(_GRACE):
                    await drained.wait()
            finally:
                nursery.cancel_scope.cancel()
                read_stream.close()


# -- failures --------------------------------------------------------------------------------

_TRANSPORT_FAILURES: Final = (
    UpstreamError,
    OSError,
    httpx.HTTPError,
    McpError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


def _failure(exc: BaseException, *, anything: bool) -> BaseException | None:
    """The exception in `exc` (a group or not) that says the server failed, if one does.

    `anything`: while starting, every error is the server's; once the session is handed out,
    only transport errors are (the rest came from the caller's own code).
    """
    for leaf in _leaves(exc):
        if isinstance(leaf, UpstreamError):
            return leaf
    for leaf in _leaves(exc):
        if isinstance(leaf, _TRANSPORT_FAILURES) or (anything and isinstance(leaf, Exception)):
            return leaf
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _single(exc: BaseException) -> BaseException:
    """The caller's own exception out of the groups the nurseries wrapped it in."""
    leaves = _leaves(exc)
    if len(leaves) == 1 and not isinstance(leaves[0], trio.Cancelled):
        return leaves[0]
    return exc


def _why(exc: BaseException) -> str:
    """A failure in a few words, without URLs (they may carry keys) or values."""
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        return f"HTTP {response.status_code} {response.reason_phrase}".strip()
    if isinstance(exc, httpx.TimeoutException):
        return "the HTTP request timed out"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, McpError):
        return f"it answered with an error: {exc.error.message}"
    if isinstance(exc, trio.TooSlowError | TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(
        exc,
        trio.BrokenResourceError
        | trio.ClosedResourceError
        | anyio.BrokenResourceError
        | anyio.ClosedResourceError
        | anyio.EndOfStream,
    ):
        return "the connection closed"
    return f"{type(exc).__name__}: {exc}"
