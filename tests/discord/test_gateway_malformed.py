"""Malformed, truncated and unknown gateway input: logged and skipped, never a crash or a loss.

Each example runs a fresh emulator gateway and shard (on the autojump clock), injects frames
Discord would never send, then dispatches a sentinel: it must arrive exactly once, in order,
on a shard that is still ready.
"""

from __future__ import annotations

import json
import math
from typing import Any

import hypothesis.strategies as st
import trio
from hypothesis import HealthCheck, given, settings

from kimaki.discord._gateway_protocol import ZLIB_SUFFIX, Opcode, decode_payload
from kimaki.discord.gateway import GatewayEvent, GatewayShard
from kimaki.testing.discord._gateway import GatewayServer

TOKEN = "malformed-test-token-0123456789"
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
# Opcodes that change the connection on purpose (7, 9) are not malformed input.
harmless_ops = st.integers().filter(lambda op: op not in (Opcode.RECONNECT, Opcode.INVALID_SESSION))
not_an_int = st.none() | st.text(max_size=5) | st.floats() | st.booleans() | st.lists(st.none())
not_a_name = st.none() | st.integers() | st.floats() | st.booleans() | st.lists(st.none())


def dispatch_without_name_or_sequence() -> st.SearchStrategy[str]:
    def build(name: Any, sequence: Any, data: Any, drop: list[str]) -> str:
        payload = {"op": 0, "t": name, "s": sequence, "d": data}
        for key in drop:
            payload.pop(key, None)
        return json.dumps(payload)

    good_name = st.sampled_from(["MESSAGE_CREATE", "READY", "RESUMED", "GUILD_CREATE"])
    return st.one_of(
        st.builds(build, not_a_name, not_an_int, json_values, st.just([])),
        st.builds(build, good_name, not_an_int, json_values, st.just([])),
        st.builds(build, not_a_name, st.integers(), json_values, st.just([])),
        st.builds(build, good_name, st.integers(), json_values, st.just(["t"])),
        st.builds(build, good_name, st.integers(), json_values, st.just(["s"])),
    )


def is_not_a_real_payload(value: Any) -> bool:
    """Random JSON may spell a real dispatch, op 7 or op 9; those are not malformed."""
    return not (isinstance(value, dict) and value.get("op") in (0, 7, 9))


def truncated(text: str, cut: int) -> str:
    return text[: max(0, min(cut, len(text) - 1))]


valid_payload = json.dumps(
    {"op": 0, "t": "MESSAGE_CREATE", "s": 10**6, "d": {"id": "1", "content": "x" * 40}}
)
malformed_frames = st.one_of(
    st.text(max_size=200),
    st.builds(truncated, st.just(valid_payload), st.integers(min_value=0, max_value=100)),
    json_values.map(json.dumps),
    st.builds(lambda op, d: json.dumps({"op": op, "d": d}), harmless_ops, json_values),
    st.builds(lambda op: json.dumps({"op": op}), not_an_int),
    st.builds(lambda d: json.dumps({"op": Opcode.HELLO, "d": d}), json_values),
    st.builds(lambda d: json.dumps({"op": Opcode.HEARTBEAT_ACK, "d": d}), json_values),
    dispatch_without_name_or_sequence(),
).filter(lambda text: is_not_a_real_payload(decode_payload(text)))
unknown_events = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=30).filter(lambda name: name != "RESUMED"),
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    ),
    max_size=3,
)


async def run_against(
    inject: Any,
) -> tuple[list[GatewayEvent], GatewayShard, GatewayServer]:
    server = GatewayServer(token=TOKEN, user={"id": "9"}, guilds=list, frames_per_payload=2)
    with trio.fail_after(600):  # virtual seconds: a lost sentinel fails instead of hanging
        return await _run_against(server, inject)


async def _run_against(
    server: GatewayServer, inject: Any
) -> tuple[list[GatewayEvent], GatewayShard, GatewayServer]:
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        send, receive = trio.open_memory_channel[GatewayEvent](math.inf)

        async def fetch_gateway() -> dict[str, Any]:
            return server.gateway_bot()

        shard = GatewayShard(
            token=TOKEN, fetch_gateway=fetch_gateway, events=send, random_source=lambda: 0.5
        )
        await nursery.start(shard.run)
        inject(server)
        server.dispatch("MESSAGE_CREATE", {"content": "sentinel"})
        received = []
        async for event in receive:
            received.append(event)
            if event.data == {"content": "sentinel"}:
                break
        # Nothing else is pending: a heartbeat round trip later the buffer is still empty.
        await server.wait_for_heartbeats(server.statistics().heartbeats + 1)
        extra = []
        while True:
            try:
                extra.append(receive.receive_nowait())
            except trio.WouldBlock:
                break
        assert [e for e in extra if e.name != "RESUMED"] == []
        assert shard.state == "ready"
        nursery.cancel_scope.cancel()
    return received, shard, server


@SETTINGS
@given(frames=st.lists(malformed_frames, max_size=8), events=unknown_events)
async def test_malformed_payloads_and_unknown_events_are_skipped(
    autojump_clock: trio.abc.Clock, frames: list[str], events: list[tuple[str, dict[str, Any]]]
) -> None:
    def inject(server: GatewayServer) -> None:
        for frame in frames:
            server.send_text(frame)
        for name, data in events:
            server.dispatch(name, data)

    received, shard, server = await run_against(inject)
    assert [e.name for e in received] == ["READY", *[name for name, _ in events], "MESSAGE_CREATE"]
    assert [e.data for e in received[1:-1]] == [data for _, data in events]
    assert server.statistics().connections == 1  # skipped, not reconnected
    assert shard.statistics().events_received == len(received)


@SETTINGS
@given(garbage=st.binary(max_size=64), suffix=st.booleans())
async def test_corrupt_zlib_stream_reconnects_and_resumes_without_loss(
    autojump_clock: trio.abc.Clock, garbage: bytes, suffix: bool
) -> None:
    def inject(server: GatewayServer) -> None:
        server.send_bytes(garbage + (ZLIB_SUFFIX if suffix else b""))

    received, _shard, server = await run_against(inject)
    names = [e.name for e in received]
    assert names.count("MESSAGE_CREATE") == 1
    assert names[0] == "READY"
    assert names.count("READY") == 1
    stats = server.statistics()
    # Either the bytes happened to inflate (and were skipped) or the stream was replaced and
    # the session resumed; an incomplete frame simply waits for its suffix.
    assert stats.identifies == 1
    assert stats.connections == 1 + stats.resumes


async def test_corrupt_zlib_stream_is_replaced(autojump_clock: trio.abc.Clock) -> None:
    def inject(server: GatewayServer) -> None:
        server.send_bytes(b"\xff\xfenot deflate" + ZLIB_SUFFIX)

    received, shard, server = await run_against(inject)
    assert [e.name for e in received] == ["READY", "MESSAGE_CREATE"]
    assert server.statistics().resumes == 1
    assert shard.statistics().malformed_payloads == 1
