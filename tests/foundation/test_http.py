from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import httpx
import trio

from kimaki._control import ControlServer, query_health
from kimaki._http import Request, Response, serve_http


async def test_requests_responses_and_keep_alive() -> None:
    seen: list[tuple[str, str, dict[str, list[str]], bytes, str | None]] = []

    async def handler(request: Request) -> Response:
        seen.append(
            (request.method, request.path, request.query, request.body, request.header("X-Tag"))
        )
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return Response.json({"echo": request.json()}, status=201)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, handler)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            first = await client.post("/a?x=1&x=2", json={"n": 1}, headers={"X-Tag": "t"})
            second = await client.post("/b", json=[1, 2])
            boom = await client.get("/boom")
        nursery.cancel_scope.cancel()

    assert (first.status_code, first.json()) == (201, {"echo": {"n": 1}})
    assert (second.status_code, second.json()) == (201, {"echo": [1, 2]})
    assert boom.status_code == 500
    assert boom.json() == {"error": "internal error"}
    assert seen[0] == ("POST", "/a", {"x": ["1", "2"]}, b'{"n":1}', "t")
    assert seen[1][1] == "/b"


async def test_streamed_response_arrives_chunk_by_chunk() -> None:
    release = trio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        await release.wait()
        yield b"data: second\n\n"

    async def handler(request: Request) -> Response:
        return Response.stream(events())

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, handler)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
            client.stream("GET", "/event") as response,
            aclosing(response.aiter_lines()) as lines,
        ):
            assert await lines.__anext__() == "data: first"
            assert await lines.__anext__() == ""
            release.set()  # the second event exists only after the first was read
            assert await lines.__anext__() == "data: second"
        nursery.cancel_scope.cancel()


async def test_control_server_health_and_unknown_paths(tmp_path: Path) -> None:
    health = {"pid": 1, "version": "x", "data_dir": str(tmp_path), "gateway": "ready", "guilds": 2}
    server = ControlServer(port=0, data_dir=tmp_path, health=lambda: health)

    async def echo(request: Request) -> Response:
        return Response.json({"ok": True})

    server.add_route("POST", "/projects", echo)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        assert await query_health(port) == health
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/nope")).status_code == 404
            assert (await client.get("/projects")).status_code == 405
            assert (await client.post("/projects")).json() == {"ok": True}
        nursery.cancel_scope.cancel()


async def test_query_health_of_nothing_is_none() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    assert await query_health(port) is None
