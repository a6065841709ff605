"""Splitting long text into Discord messages without breaking its Markdown or its characters.

Discord's limit is 2000 characters, counted in Unicode code points (its API is Python and
counts `len(str)`, confirmed by Discord staff in discord/discord-api-docs#1315), so Python's
`len` is the measure here too.

Where a chunk ends, in order of preference: after a blank line (paragraph), after a newline,
after a space, then anywhere that is not inside a grapheme, and only as a last resort anywhere
at all (a single "character" longer than the limit, e.g. 3000 combining marks). A chunk that
ends inside a fenced code block gets a closing fence, and the next one re-opens it with the
same info string (```python), so each message renders as code on its own.

Fences are recognised line by line, as CommonMark does: a line of three or more backticks
(indented at most three spaces) opens a block, with an optional info string, and a line of at
least as many backticks closes it.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from typing import Final, final

import attrs

__all__ = ["Chunk", "split_message", "split_message_parts"]

DISCORD_LIMIT: Final = 2000
MIN_LIMIT: Final = 32

_OPEN: Final = re.compile(r" {0,3}(`{3,})([^`\n]*)")
_CLOSE: Final = re.compile(r" {0,3}(`{3,})[ \t]*")
_ZWJ: Final = "\u200d"

# Preference order of cut kinds (lower is better).
_PARAGRAPH, _LINE, _WORD, _GRAPHEME = range(4)


@final
@attrs.frozen
class Chunk:
    """One message: `reopen` + `body` + `close`. The bodies concatenate back to the input;
    `reopen`/`close` are the fence lines inserted around a code block cut in two."""

    reopen: str
    body: str
    close: str

    @property
    def text(self) -> str:
        return self.reopen + self.body + self.close


@attrs.frozen
class _Fence:
    opener: str  # what re-opens the block: the opening line without its indentation
    ticks: int


def _is_extend(char: str) -> bool:
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences (subdivision flags)
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _is_surrogate_pair_split(text: str, i: int) -> bool:
    return 0xD800 <= ord(text[i - 1]) <= 0xDBFF and 0xDC00 <= ord(text[i]) <= 0xDFFF


def _grapheme_boundary(text: str, i: int) -> bool:
    """Whether a cut between `text[i-1]` and `text[i]` keeps every grapheme whole."""
    if i <= 0 or i >= len(text):
        return True
    before, after = text[i - 1], text[i]
    if before == "\r":
        return after != "\n"
    if before == "\n":
        return True
    if _is_surrogate_pair_split(text, i):
        return False
    if after == _ZWJ or before == _ZWJ or _is_extend(after):
        return False
    if _is_regional_indicator(before) and _is_regional_indicator(after):
        # Flags are pairs: count the run of indicators before the cut.
        run = 0
        j = i - 1
        while j >= 0 and _is_regional_indicator(text[j]):
            run += 1
            j -= 1
        return run % 2 == 0
    return True


class _Lines:
    """Line starts and the fence state at the start of each line."""

    def __init__(self, text: str, limit: int) -> None:
        self.starts: list[int] = []
        self.fence_line: list[bool] = []
        self.state_before: list[_Fence | None] = []
        state: _Fence | None = None
        pos = 0
        while True:
            end = text.find("\n", pos)
            line = text[pos:] if end < 0 else text[pos:end]
            self.starts.append(pos)
            self.state_before.append(state)
            is_fence = False
            if state is None:
                match = _OPEN.fullmatch(line)
                if match:
                    opener = line.lstrip(" ")
                    if len(opener) + 1 > limit // 4:  # too long to repeat: keep the backticks
                        opener = match.group(1)
                    state = _Fence(opener, len(match.group(1)))
                    is_fence = True
            else:
                match = _CLOSE.fullmatch(line)
                if match and len(match.group(1)) >= state.ticks:
                    state = None
                    is_fence = True
            self.fence_line.append(is_fence)
            if end < 0:
                break
            pos = end + 1
        self.final_state = state
        self.length = len(text)

    def state_at(self, q: int) -> _Fence | None:
        """The fence open at position `q` (a cut inside a line takes the line's start state)."""
        if q >= self.length:
            return self.final_state
        return self.state_before[bisect.bisect_right(self.starts, q) - 1]

    def inside_fence_line(self, q: int) -> bool:
        index = bisect.bisect_right(self.starts, q) - 1
        return self.fence_line[index] and self.starts[index] < q


def _close_for(text: str, q: int, fence: _Fence | None) -> str:
    if fence is None or q >= len(text):
        return ""
    ticks = "`" * fence.ticks
    return ticks if text[q - 1] == "\n" else "\n" + ticks


def _cut_kind(text: str, pos: int, q: int) -> int | None:
    if q - 2 >= pos and text[q - 2] == "\n" and text[q - 1] == "\n":
        return _PARAGRAPH
    if text[q - 1] == "\n":
        return _LINE
    if not _grapheme_boundary(text, q):
        return None
    if text[q - 1] in " \t":
        return _WORD
    return _GRAPHEME


def split_message_parts(text: str, limit: int = DISCORD_LIMIT) -> list[Chunk]:
    """Split `text` into chunks whose `.text` is at most `limit` characters each."""
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}, got {limit}")
    chunks: list[Chunk] = []
    if not text:
        return chunks
    lines = _Lines(text, limit)
    pos = 0
    fence: _Fence | None = None
    while pos < len(text):
        reopen = fence.opener + "\n" if fence is not None else ""
        room = limit - len(reopen)
        end = min(len(text), pos + room)
        if end == len(text):
            chunks.append(Chunk(reopen, text[pos:], ""))
            break
        best: list[int | None] = [None, None, None, None]
        fallback: int | None = None
        for q in range(end, pos, -1):
            state = lines.state_at(q)
            if (q - pos) + len(_close_for(text, q, state)) > room:
                continue
            if fallback is None and not _is_surrogate_pair_split(text, q):
                fallback = q
            if lines.inside_fence_line(q):
                continue
            kind = _cut_kind(text, pos, q)
            if kind is not None and best[kind] is None:
                best[kind] = q
                if kind == _PARAGRAPH:
                    break
        chosen = _choose(best, pos, room)
        if chosen is None:
            chosen = fallback if fallback is not None else pos + 1
        state = lines.state_at(chosen)
        chunks.append(Chunk(reopen, text[pos:chosen], _close_for(text, chosen, state)))
        fence = state
        pos = chosen
    return chunks


def _choose(best: list[int | None], pos: int, room: int) -> int | None:
    # The most natural cut, unless it wastes more than half the message; then the longest.
    for kind in (_PARAGRAPH, _LINE, _WORD):
        q = best[kind]
        if q is not None and q - pos >= room // 2:
            return q
    natural = [q for q in best[:_GRAPHEME] if q is not None]
    if natural:
        return max(natural)
    return best[_GRAPHEME]


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """`text` as messages of at most `limit` characters; `[]` for empty text.

    Joined together, without the fence lines inserted where a code block was cut, the
    messages are exactly `text`. Discord refuses blank messages: a chunk can be whitespace
    only when `text` has more whitespace in a row than fits, so callers skip blank chunks.
    """
    return [chunk.text for chunk in split_message_parts(text, limit)]
