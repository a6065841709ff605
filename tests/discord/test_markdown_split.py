"""Splitting long text into Discord-sized messages."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimaki.discord.markdown import Chunk, split_message, split_message_parts

FENCE_LINE = re.compile(r" {0,3}(`{3,})([^`\n]*)")


def open_fence_after(text: str) -> tuple[str, int] | None:
    """An independent line-based fence tracker: the block left open at the end of `text`."""
    state: tuple[str, int] | None = None
    for line in text.split("\n"):
        match = FENCE_LINE.fullmatch(line)
        if match is None:
            continue
        ticks = len(match.group(1))
        if state is None:
            state = (line.lstrip(" "), ticks)
        elif not match.group(2).strip() and ticks >= state[1]:
            state = None
    return state


# Whole grapheme clusters: a cut anywhere inside one would break a visible character.
CLUSTERS = [
    "a",
    "b",
    " ",
    "\n",
    "\n\n",
    "é",
    "e\u0301",  # e + combining acute
    "a\u0301\u0302\u0303",
    "👍🏽",  # skin tone modifier
    "❤️",  # heart + variation selector
    "👨‍👩‍👧‍👦",  # ZWJ family
    "🇫🇷",  # regional-indicator pair
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # tag sequence
    "`",
    "word",
    "\n```python\n",
    "\n```\n",
    "\n```js\n",
]


@st.composite
def texts(draw: st.DrawFn) -> tuple[str, set[int]]:
    parts = draw(st.lists(st.sampled_from(CLUSTERS), max_size=400))
    boundaries = {0}
    position = 0
    for part in parts:
        if part.isascii():  # markup and words: any cut inside keeps characters whole
            boundaries.update(range(position, position + len(part)))
        position += len(part)
        boundaries.add(position)
    return "".join(parts), boundaries


def check(text: str, limit: int) -> list[Chunk]:
    chunks = split_message_parts(text, limit)
    assert "".join(chunk.body for chunk in chunks) == text
    assert [c.text for c in chunks] == split_message(text, limit)
    for index, chunk in enumerate(chunks):
        assert len(chunk.text) <= limit
        assert chunk.body, "no empty chunks"
        assert chunk.close in ("", "```", "\n```")
        if chunk.reopen:
            assert FENCE_LINE.fullmatch(chunk.reopen.rstrip("\n"))
            previous = chunks[index - 1]
            assert previous.close, "a fence is only re-opened after it was closed"
            assert open_fence_after(previous.reopen + previous.body) is not None
    return chunks


@settings(max_examples=400, deadline=None)
@given(sample=texts(), limit=st.integers(min_value=32, max_value=300))
def test_chunks_fit_and_read_back_to_the_input(sample: tuple[str, set[int]], limit: int) -> None:
    text, boundaries = sample
    chunks = check(text, limit)
    position = 0
    for chunk in chunks[:-1]:
        position += len(chunk.body)
        assert position in boundaries, f"cut inside a grapheme at {position}"
        # Every message but the last leaves no code block open.
        assert open_fence_after(chunk.text) is None, chunk.text


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=3000), limit=st.integers(min_value=32, max_value=2000))
def test_any_text_fits_and_reads_back(text: str, limit: int) -> None:
    check(text, limit)


def test_short_text_is_one_message() -> None:
    assert split_message("hello") == ["hello"]
    assert split_message("x" * 2000) == ["x" * 2000]
    assert split_message("") == []


def test_paragraphs_are_preferred_over_lines_and_words() -> None:
    first = "First paragraph line one.\nline two of it."
    second = "Second paragraph " + "word " * 10
    chunks = split_message(f"{first}\n\n{second}", limit=60)
    assert chunks[0] == f"{first}\n\n"


def test_lines_then_words_then_hard_split() -> None:
    lines = "\n".join(f"line {i:02d} text" for i in range(10))
    assert all(c.endswith("\n") for c in split_message(lines, limit=40)[:-1])
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    chunks = split_message(words, limit=32)
    assert chunks[0] == "alpha beta gamma delta epsilon "
    long_word = "x" * 100
    assert split_message(long_word, limit=40) == ["x" * 40, "x" * 40, "x" * 20]


def test_code_fence_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})  # step {i}" for i in range(12))
    text = f"Here is the fix:\n\n```python\n{code}\n```\n\nDone."
    chunks = split_message(text, limit=120)
    assert len(chunks) > 2
    for chunk in chunks[1:-1]:
        assert chunk.startswith("```python\n")
    for chunk in chunks[:-1]:
        assert chunk.endswith(("```", "```\n\n"))
        assert open_fence_after(chunk) is None
    assert chunks[-1].endswith("Done.")


def test_graphemes_are_never_split() -> None:
    family = "👨‍👩‍👧‍👦"
    for chunk in split_message(family * 30, limit=40):
        assert len(chunk) % len(family) == 0
    flags = "🇫🇷🇩🇪🇯🇵"
    for chunk in split_message(flags * 20, limit=33):
        assert len(chunk) % 2 == 0
    accents = "e\u0301" * 50
    for chunk in split_message(accents, limit=33):
        assert chunk[0] == "e"


def test_limit_must_leave_room_for_fences() -> None:
    with pytest.raises(ValueError, match="at least"):
        split_message("text", limit=10)
