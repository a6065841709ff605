"""How much time the OpenCode engine adds to a turn, against the real `opencode serve`.

    python bench/engine_overhead.py [--opencode PATH] [--turns 20]

Runs one real OpenCode server (the binary from `--opencode`, `KIMAKI_TEST_OPENCODE`, or
`opencode` on PATH) against the fake model server, in one session, and times each turn:

- **prompt → model request**: from calling `session.prompt()` to the request arriving at the
  model server. Ours is the send path (the call until httpx is handed the request); the rest is
  OpenCode (HTTP handling, building the model request).
- **last token → TurnEnded**: from the model server writing its last token to the consumer
  receiving `TurnEnded`. Ours is from the bytes of the closing `session.idle` event arriving on
  the SSE socket to `TurnEnded` leaving the session's queue (decode, mapping, queueing, task
  switch); the rest is OpenCode finishing the turn.
- **per event**: the same "bytes received → event delivered" for every event of every turn.

Everything runs in one process, so all stamps are `time.perf_counter()`. The stamps inside the
engine come from wrapping two internals (the SSE parser's `feed` and the session's `_emit_all`):
benchmark instrumentation, not an API.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from kimaki.agents import EngineEvent, TextDelta, TurnEnded
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.agents.opencode import _engine as engine_module
from kimaki.agents.opencode._sse import SSEParser
from kimaki.testing.model_server import ModelServer, Reply, opencode_config

REPLY = "The quick brown fox jumps over the lazy dog. " * 4


class _Stamps:
    feed_at = 0.0
    emitted: dict[int, float] = {}  # noqa: RUF012 - one run per process
    request_sent: list[float] = []  # noqa: RUF012


class _StampingParser(SSEParser):
    def feed(self, chunk: bytes) -> list[Any]:
        _Stamps.feed_at = time.perf_counter()
        return super().feed(chunk)


def _instrument() -> None:
    engine_module.SSEParser = _StampingParser  # type: ignore[misc]
    original = engine_module.OpenCodeSession._emit_all

    def emit_all(self: Any, events: list[EngineEvent]) -> None:
        for event in events:
            _Stamps.emitted[id(event)] = _Stamps.feed_at
        original(self, events)

    engine_module.OpenCodeSession._emit_all = emit_all  # type: ignore[method-assign]


def _ms(values: list[float]) -> str:
    if not values:
        return "   n/a"
    return f"{statistics.median(values) * 1000:7.2f}"


def _p95(values: list[float]) -> str:
    if len(values) < 2:
        return _ms(values)
    return f"{statistics.quantiles(values, n=20)[-1] * 1000:7.2f}"


async def run(binary: str, turns: int, warmup: int) -> None:
    _instrument()
    model = ModelServer(default_reply=Reply.text(REPLY, chunk_size=16))
    tmp = Path(tempfile.mkdtemp(prefix="kimaki-bench-"))
    project = tmp / "project"
    project.mkdir()
    prompt_to_request: list[float] = []
    send_path: list[float] = []
    opencode_send: list[float] = []
    token_to_end: list[float] = []
    ours_end: list[float] = []
    per_event: list[float] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(model.serve)
        config = OpenCodeConfig(
            command=(binary,),
            home_for=lambda directory: tmp / "home",
            extra_env={"OPENCODE_CONFIG_CONTENT": json.dumps(opencode_config(port))},
            ready_timeout=60.0,
        )
        async with open_opencode_engine(config) as engine:
            started = time.perf_counter()
            session = await engine.open_session(project, title="bench")
            print(f"server start + session: {(time.perf_counter() - started):.2f} s")
            connection = engine.server(project).current
            assert connection is not None

            async def on_request(request: httpx.Request) -> None:
                if request.url.path.endswith("/prompt_async"):
                    _Stamps.request_sent.append(time.perf_counter())

            connection.client._http.event_hooks["request"].append(on_request)
            for n in range(warmup + turns):
                before = len(model.agent_requests)
                t0 = time.perf_counter()
                await session.prompt(f"turn {n}")
                turn_end_at = 0.0
                turn_events: list[tuple[EngineEvent, float]] = []
                with trio.fail_after(60):
                    async for event in session.events:
                        turn_events.append((event, time.perf_counter()))
                        if isinstance(event, TurnEnded):
                            turn_end_at = turn_events[-1][1]
                            break
                request = model.agent_requests[before]
                timing = await model.wait_for_timing(request.index)
                if n < warmup:
                    continue
                sent = _Stamps.request_sent[-1]
                prompt_to_request.append(request.arrived_at - t0)
                send_path.append(sent - t0)
                opencode_send.append(request.arrived_at - sent)
                token_to_end.append(turn_end_at - timing.last_token_at)
                for event, delivered in turn_events:
                    received = _Stamps.emitted.pop(id(event), None)
                    if received is None:
                        continue
                    per_event.append(delivered - received)
                    if isinstance(event, TurnEnded):
                        ours_end.append(delivered - received)
                _Stamps.emitted.clear()
            deltas = sum(isinstance(e, TextDelta) for e, _ in turn_events)
        nursery.cancel_scope.cancel()

    print(f"\nOpenCode engine overhead, medians over {turns} turns (ms); {deltas} deltas per turn")
    print(f"{'':44}{'median':>8}{'p95':>9}")
    rows = [
        ("prompt() → model request, total", prompt_to_request),
        ("  ours: prompt() → request to httpx", send_path),
        ("  OpenCode: request sent → model request", opencode_send),
        ("last token → TurnEnded delivered, total", token_to_end),
        ("  ours: idle bytes in → TurnEnded out", ours_end),
        ("any event: bytes in → event out (ours)", per_event),
    ]
    for label, values in rows:
        print(f"{label:44}{_ms(values):>8} {_p95(values):>8}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--opencode",
        default=os.environ.get("KIMAKI_TEST_OPENCODE") or shutil.which("opencode"),
        help="the opencode binary (default: $KIMAKI_TEST_OPENCODE, else opencode on PATH)",
    )
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    if not args.opencode:
        print("no opencode binary: pass --opencode or set KIMAKI_TEST_OPENCODE", file=sys.stderr)
        return 2
    trio.run(run, args.opencode, args.turns, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
