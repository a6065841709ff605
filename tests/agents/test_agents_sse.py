from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from kimaki.agents.opencode import SSEEvent, SSEParser

# Field values as a server can send them: no line breaks inside a line.
_value = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=40
)
_events = st.lists(
    st.tuples(
        st.lists(_value, min_size=1, max_size=4),  # data lines
        st.one_of(st.none(), _value.filter(lambda v: v and not v.startswith(" "))),  # event type
    ),
    max_size=6,
)
_newline = st.sampled_from(["\n", "\r\n", "\r"])


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def _parse(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


@given(_events, _newline, st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_events_survive_any_line_endings_and_chunking(
    events: list[tuple[list[str], str | None]], newline: str, cuts: list[int], comments: bool
) -> None:
    text = ""
    for data_lines, kind in events:
        if comments:
            text += ": keep-alive" + newline
        if kind is not None:
            text += f"event: {kind}{newline}"
        for line in data_lines:
            text += f"data: {line}{newline}"
        text += newline
    encoded = text.encode()
    parsed = _parse(_chunks(encoded, cuts))
    assert [(e.data, e.event) for e in parsed] == [
        ("\n".join(lines), kind or "message") for lines, kind in events
    ]


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=6))
def test_arbitrary_bytes_never_break_the_parser(data: bytes, cuts: list[int]) -> None:
    whole = _parse([data])
    assert _parse(_chunks(data, cuts)) == whole


def test_spec_details() -> None:
    parser = SSEParser()
    stream = (
        "\ufeffdata:no space\n"
        "data:  two spaces\n"
        "id: 7\n"
        "retry: 1500\n"
        "retry: soon\n"
        "unknown: field\n"
        "data\n"
        "\n"
        "event: only-type\n"
        "\n"
        ": comment\n"
        "id: a\0b\n"
        "data: last\n"
        "\n"
        "data: never dispatched"
    ).encode()
    events = parser.feed(stream)
    assert events == [
        SSEEvent(data="no space\n two spaces\n", event="message", id="7", retry=1500),
        SSEEvent(data="last", event="message", id="7", retry=1500),
    ]
    assert parser.retry == 1500


def test_cr_at_chunk_end_then_lf_is_one_line_ending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == [SSEEvent("a")]
    assert parser.feed(b"\ndata: b\n\n") == [SSEEvent("b")]


def test_over_long_lines_are_dropped_not_buffered() -> None:
    parser = SSEParser(max_line=16)
    events = parser.feed(b"data: " + b"x" * 40)
    events += parser.feed(b"y" * 40 + b"\n\ndata: ok\n\n")
    assert events == [SSEEvent("ok")]
    assert parser.dropped_lines == 1
