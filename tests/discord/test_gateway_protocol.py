"""The pure pieces of the gateway: close-code verdicts, zlib-stream framing, the send window."""

from __future__ import annotations

import contextlib
import json
import zlib

import hypothesis.strategies as st
import pytest
from hypothesis import given

from kimaki.discord._gateway_protocol import (
    ZLIB_SUFFIX,
    SendWindow,
    ZlibStreamCorrupt,
    ZlibStreamDecoder,
    ZlibStreamEncoder,
    decode_payload,
)
from kimaki.discord.gateway import classify_close
from kimaki.errors import ConfigError, CredentialsError


def test_close_codes_are_classified() -> None:
    verdicts = {code: classify_close(code) for code in [None, 1000, 1001, 1006, *range(4000, 4016)]}
    assert {code for code, v in verdicts.items() if v.action == "reidentify"} == {4007, 4009}
    fatal = {code: v.error for code, v in verdicts.items() if v.action == "fatal"}
    assert sorted(fatal) == [4004, 4010, 4011, 4012, 4013, 4014]
    assert isinstance(fatal[4004], CredentialsError)
    assert isinstance(fatal[4014], CredentialsError)
    assert "Message Content Intent" in str(fatal[4014])
    for code in (4010, 4011, 4012, 4013):
        error = fatal[code]
        assert isinstance(error, ConfigError)
        assert error.exit_code == 64
    assert all(v.error is None for v in verdicts.values() if v.action != "fatal")


@given(
    payloads=st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=10),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=10),
)
def test_zlib_stream_round_trips_across_any_frame_boundaries(
    payloads: list[str], cuts: list[int]
) -> None:
    encoder, decoder = ZlibStreamEncoder(), ZlibStreamDecoder()
    decoded = []
    for payload in payloads:
        data = encoder.encode(payload)
        frames, start = [], 0
        for cut in cuts:
            end = start + cut
            # Discord never ends a frame with the suffix before a payload is complete.
            if end >= len(data) or data[start:end].endswith(ZLIB_SUFFIX):
                continue
            frames.append(data[start:end])
            start = end
        frames.append(data[start:])
        results = [decoder.feed(frame) for frame in frames]
        assert results[:-1] == [None] * (len(frames) - 1)
        result = results[-1]
        assert result is not None
        decoded.append(result.decode())
    assert decoded == payloads


@given(garbage=st.binary(max_size=200))
def test_zlib_decoder_raises_only_its_own_error(garbage: bytes) -> None:
    decoder = ZlibStreamDecoder()
    with contextlib.suppress(ZlibStreamCorrupt):
        decoder.feed(garbage + ZLIB_SUFFIX)


def test_zlib_decoder_refuses_an_endless_frame() -> None:
    decoder = ZlibStreamDecoder(max_buffered=100)
    assert decoder.feed(b"x" * 100) is None
    with pytest.raises(ZlibStreamCorrupt):
        decoder.feed(b"x")


def test_zlib_decoder_reports_corruption() -> None:
    with pytest.raises(ZlibStreamCorrupt):
        ZlibStreamDecoder().feed(b"\xff\xfe\xfd" + ZLIB_SUFFIX)
    assert zlib.error not in ZlibStreamCorrupt.__mro__


@given(raw=st.text() | st.binary() | st.just("[" * 100_000))
def test_decode_payload_never_raises(raw: str | bytes) -> None:
    result = decode_payload(raw)
    assert result is None or isinstance(result, dict)


def _stdlib(raw: str | bytes) -> object:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@pytest.mark.parametrize(
    "raw",
    [
        '{"op":0,"d":{"id":"1","flags":4096},"s":7,"t":"MESSAGE_CREATE"}',
        b'{"content":"caf\xc3\xa9 \xf0\x9f\x8e\x89"}',
        '{"x":NaN,"y":-Infinity}',  # not JSON, but the standard library takes it
        '{"s":"\\ud800 alone"}',  # a lone surrogate escape
        '{"a":1,"a":2}',
        "\ufeff" + '{"bom":true}',
        '{"deep":' + "[" * 2000 + "]" * 2000 + "}",
        "[1, 2]",
        '{"unterminated":',
        b"\xff\xfe{",
    ],
)
def test_decode_payload_accepts_what_the_standard_library_accepts(raw: str | bytes) -> None:
    assert decode_payload(raw) == _stdlib(raw)


@given(raw=st.text() | st.binary())
def test_decode_payload_agrees_with_the_standard_library(raw: str | bytes) -> None:
    assert decode_payload(raw) == _stdlib(raw)


def test_an_integer_beyond_64_bits_is_the_one_difference() -> None:
    # Discord sends no such integer (ids are strings); orjson reads one as a float.
    raw = '{"n":123456789012345678901234567890,"ok":9223372036854775807}'
    assert decode_payload(raw) == {"n": 1.2345678901234568e29, "ok": 9223372036854775807}


@given(
    attempts=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.booleans()), min_size=1, max_size=400
    )
)
def test_send_window_never_lets_more_than_the_limit_through(
    attempts: list[tuple[float, bool]],
) -> None:
    window = SendWindow(limit=20, period=10.0)
    now = 0.0
    sent: list[tuple[float, bool]] = []
    for gap, priority in attempts:
        now += gap
        now = window.free_at(now, reserve=0 if priority else 3)
        window.record(now)
        sent.append((now, priority))
    for at, _ in sent:
        inside = [p for t, p in sent if at - 10.0 < t <= at]
        assert len(inside) <= 20
        assert len([p for p in inside if not p]) <= 20
    # Only priority sends use the last three slots: a normal send never sees 17+ others.
    for index, (at, priority) in enumerate(sent):
        before = [t for t, _ in sent[:index] if at - 10.0 < t <= at]
        if not priority:
            assert len(before) < 17
