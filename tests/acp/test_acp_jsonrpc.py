"""The JSON-RPC line transport, between two connections or against a raw peer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from kimaki.agents.acp._jsonrpc import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    ConnectionClosedError,
    JsonRpcConnection,
    JsonRpcError,
)


async def no_requests(method: str, params: Any) -> Any:
    raise JsonRpcError(METHOD_NOT_FOUND, f"no method {method}")


async def ignore(method: str, params: Any) -> None:
    return None


@asynccontextmanager
async def raw_peer(
    *, max_line: int = 1 << 20, on_notification: Any = ignore, on_request: Any = no_requests
) -> AsyncIterator[tuple[JsonRpcConnection, trio.testing.MemorySendStream, Any]]:
    """A connection whose peer is the test itself, writing and reading raw bytes."""
    to_conn_send, to_conn_receive = trio.testing.memory_stream_one_way_pair()
    from_conn_send, from_conn_receive = trio.testing.memory_stream_one_way_pair()
    conn = JsonRpcConnection(
        from_conn_send,
        to_conn_receive,
        on_request=on_request,
        on_notification=on_notification,
        max_line=max_line,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        yield conn, to_conn_send, from_conn_receive
        nursery.cancel_scope.cancel()


async def read_message(stream: Any) -> dict[str, Any]:
    buffer = b""
    while not buffer.endswith(b"\n"):
        buffer += await stream.receive_some(1)
    message: dict[str, Any] = json.loads(buffer)
    return message


async def test_concurrent_requests_are_matched_to_their_answers() -> None:
    gates = {"slow": trio.Event(), "fast": trio.Event()}

    async def answer(method: str, params: Any) -> Any:
        await gates[params["which"]].wait()
        return {"echo": params["which"]}

    a_to_b_send, a_to_b_receive = trio.testing.memory_stream_one_way_pair()
    b_to_a_send, b_to_a_receive = trio.testing.memory_stream_one_way_pair()
    client = JsonRpcConnection(
        a_to_b_send, b_to_a_receive, on_request=no_requests, on_notification=ignore
    )
    agent = JsonRpcConnection(
        b_to_a_send, a_to_b_receive, on_request=answer, on_notification=ignore
    )
    results: dict[str, Any] = {}

    async def ask(which: str) -> None:
        results[which] = await client.request("work", {"which": which})

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await nursery.start(agent.run)
        async with trio.open_nursery() as asks:
            asks.start_soon(ask, "slow")
            asks.start_soon(ask, "fast")
            await trio.testing.wait_all_tasks_blocked()
            gates["fast"].set()  # answered first, though asked second
            await trio.testing.wait_all_tasks_blocked()
            assert results == {"fast": {"echo": "fast"}}
            gates["slow"].set()
        assert results == {"fast": {"echo": "fast"}, "slow": {"echo": "slow"}}
        with pytest.raises(JsonRpcError) as info:
            await agent.request("session/new")
        assert info.value.code == METHOD_NOT_FOUND
        assert client.statistics().requests_sent == 2
        assert agent.statistics().requests_received == 2
        nursery.cancel_scope.cancel()


async def test_notifications_arrive_in_order_while_a_peer_request_waits() -> None:
    seen: list[Any] = []
    permission = trio.Event()
    all_seen = trio.Event()

    async def on_request(method: str, params: Any) -> Any:
        await permission.wait()  # a person has not answered yet
        return {"outcome": "selected"}

    async def on_notification(method: str, params: Any) -> None:
        seen.append(params["n"])
        if len(seen) == 50:
            all_seen.set()

    async with raw_peer(on_request=on_request, on_notification=on_notification) as (
        _conn,
        to_conn,
        from_conn,
    ):
        await to_conn.send_all(
            b'{"jsonrpc":"2.0","id":"p1","method":"session/request_permission"}\n'
        )
        lines = b"".join(
            json.dumps({"jsonrpc": "2.0", "method": "session/update", "params": {"n": n}}).encode()
            + b"\n"
            for n in range(50)
        )
        # Split at awkward places: mid-line and mid-UTF-8 sequence boundaries don't matter.
        for start in range(0, len(lines), 37):
            await to_conn.send_all(lines[start : start + 37])
        await all_seen.wait()
        assert seen == list(range(50))
        permission.set()
        answer = await read_message(from_conn)
        assert answer == {"jsonrpc": "2.0", "id": "p1", "result": {"outcome": "selected"}}


async def test_error_answers() -> None:
    async def on_request(method: str, params: Any) -> Any:
        if method == "bad":
            raise JsonRpcError(-32602, "invalid params", {"field": "path"})
        raise RuntimeError("a bug")

    async with raw_peer(on_request=on_request) as (conn, to_conn, from_conn):
        await to_conn.send_all(b'{"jsonrpc":"2.0","id":1,"method":"bad"}\n')
        assert (await read_message(from_conn))["error"] == {
            "code": -32602,
            "message": "invalid params",
            "data": {"field": "path"},
        }
        await to_conn.send_all(b'{"jsonrpc":"2.0","id":2,"method":"buggy"}\n')
        assert (await read_message(from_conn))["error"]["code"] == INTERNAL_ERROR

        async def ask() -> None:
            with pytest.raises(JsonRpcError) as info:
                await conn.request("fs/read_text_file", {"path": "/x"})
            assert (info.value.code, info.value.message, info.value.data) == (
                -32000,
                "nope",
                [1],
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            sent = await read_message(from_conn)
            assert sent["method"] == "fs/read_text_file"
            await to_conn.send_all(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": sent["id"],
                        "error": {"code": -32000, "message": "nope", "data": [1]},
                    }
                ).encode()
                + b"\n"
            )


async def test_malformed_lines_are_skipped_and_the_connection_goes_on() -> None:
    async with raw_peer(max_line=100) as (conn, to_conn, from_conn):
        result: list[Any] = []

        async def ask() -> None:
            result.append(await conn.request("initialize", {"protocolVersion": 1}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            sent = await read_message(from_conn)
            await to_conn.send_all(b"this is not json\n")
            await to_conn.send_all(b"[1,2,3]\n")
            await to_conn.send_all(b'{"jsonrpc":"2.0"}\n')
            await to_conn.send_all(b"\xff\xfe\n")
            await to_conn.send_all(b'{"x":"' + b"a" * 300 + b'"}\n')  # over the line limit
            await to_conn.send_all(b'{"jsonrpc":"2.0","id":999,"result":1}\n')  # unknown id
            await to_conn.send_all(
                json.dumps({"jsonrpc": "2.0", "id": sent["id"], "result": {"ok": True}}).encode()
                + b"\n"
            )
        assert result == [{"ok": True}]
        assert conn.statistics().malformed_lines == 5


async def test_peer_exit_fails_pending_requests() -> None:
    async with raw_peer() as (conn, to_conn, from_conn):
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                with pytest.raises(ConnectionClosedError, match="before session/prompt"):
                    await conn.request("session/prompt", {})

            nursery.start_soon(ask)
            await read_message(from_conn)
            await to_conn.aclose()  # the agent process exited
        assert conn.closed
        with pytest.raises(ConnectionClosedError):
            await conn.request("session/new")


async def test_an_answer_can_wait_for_the_notifications_sent_before_it() -> None:
    """A prompt's answer is read at once, its updates are handled one by one: a caller that
    ends a turn on the answer must first wait for the updates that came before it."""
    handled: list[int] = []
    gate = trio.Event()

    async def slow_handler(method: str, params: Any) -> None:
        await gate.wait()
        handled.append(params["n"])

    async with raw_peer(on_notification=slow_handler) as (conn, to_conn, from_conn):
        async with trio.open_nursery() as nursery:
            answered: list[Any] = []
            sent = trio.Event()

            async def ask() -> None:
                answered.append(await conn.request("session/prompt", {}, on_sent=sent.set))
                await conn.notifications_delivered()
                answered.append(list(handled))

            nursery.start_soon(ask)
            await sent.wait()  # on_sent: the request is out before the answer can come
            request = await read_message(from_conn)
            updates = b"".join(
                json.dumps({"jsonrpc": "2.0", "method": "u", "params": {"n": n}}).encode() + b"\n"
                for n in range(3)
            )
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": {"stopReason": "end_turn"}}
            await to_conn.send_all(updates + json.dumps(answer).encode() + b"\n")
            await trio.testing.wait_all_tasks_blocked()
            assert answered == [{"stopReason": "end_turn"}]  # answered, updates not handled yet
            gate.set()
        assert answered == [{"stopReason": "end_turn"}, [0, 1, 2]]


async def test_waiting_for_notifications_ends_with_the_connection(autojump_clock: Any) -> None:
    async def never(method: str, params: Any) -> None:
        await trio.sleep_forever()

    async with raw_peer(on_notification=never) as (conn, to_conn, _from_conn):
        await to_conn.send_all(b'{"jsonrpc":"2.0","method":"u"}\n')
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(60) as waiting:
            await conn.notifications_delivered()
        assert waiting.cancelled_caught  # the handler is still busy
        await to_conn.aclose()
        with trio.fail_after(10):  # EOF: delivery gives up after its grace, waiters return
            await conn.notifications_delivered()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_bytes_never_crash_the_reader(chunks: list[bytes]) -> None:
    async def main() -> None:
        async with raw_peer(max_line=64) as (conn, to_conn, from_conn):
            for chunk in chunks:
                await to_conn.send_all(chunk)
            # Whatever came before, a well-formed request on its own line is still answered.
            await to_conn.send_all(b'\n{"jsonrpc":"2.0","id":"probe","method":"ping"}\n')
            while (answer := await read_message(from_conn)).get("id") != "probe":
                pass
            assert answer["error"]["code"] == METHOD_NOT_FOUND
            assert not conn.closed

    trio.run(main)
