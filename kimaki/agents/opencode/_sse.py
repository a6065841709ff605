"""Server-Sent Events, parsed as the WHATWG HTML standard says (§9.2 "Server-sent events").

Incremental: feed it bytes as they arrive, in chunks of any size, and it returns the events
that became complete. Lines end with CRLF, LF or CR (a CR at the end of one chunk and the LF
at the start of the next are one line ending); a leading UTF-8 BOM is dropped; lines starting
with `:` are comments (keep-alives); `data:` lines accumulate joined by LF; `id:` (without NUL)
sets the last event id; `retry:` with only digits sets the reconnection time; unknown fields
are ignored; a blank line dispatches, unless no data was given.

A line longer than `max_line` bytes is dropped whole (logged by the caller through
`dropped_lines`), so a broken server cannot make the daemon buffer without bound.
"""

from __future__ import annotations

from typing import Final, final

import attrs

__all__ = ["SSEEvent", "SSEParser"]

_BOM: Final = "\ufeff"
DEFAULT_MAX_LINE: Final = 64 * 1024 * 1024


@final
@attrs.frozen
class SSEEvent:
    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


@final
class SSEParser:
    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._max_line = max_line
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long line, until its end
        self._after_cr = False  # the previous chunk ended with CR
        self._first_line = True
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.dropped_lines = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        start = 0
        if self._after_cr and chunk.startswith(b"\n"):
            start = 1
        self._after_cr = False
        length = len(chunk)
        while start < length:
            cr = chunk.find(b"\r", start)
            lf = chunk.find(b"\n", start)
            if cr == -1 and lf == -1:
                self._append(chunk[start:])
                break
            end = lf if cr == -1 else cr if lf == -1 else min(cr, lf)
            self._append(chunk[start:end])
            line_done = bytes(self._buffer)
            skipped = self._skipping
            self._buffer.clear()
            self._skipping = False
            if not skipped:
                event = self._line(line_done)
                if event is not None:
                    events.append(event)
            start = end + 1
            if chunk[end : end + 1] == b"\r":
                if end + 1 < length:
                    if chunk[end + 1 : end + 2] == b"\n":
                        start += 1
                else:
                    self._after_cr = True
        return events

    def _append(self, data: bytes) -> None:
        if self._skipping or not data:
            return
        if len(self._buffer) + len(data) > self._max_line:
            self._buffer.clear()
            self._skipping = True
            self.dropped_lines += 1
            return
        self._buffer += data

    def _line(self, raw: bytes) -> SSEEvent | None:
        line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_data:
            self._event = ""
            return None
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self.last_event_id,
            retry=self.retry,
        )
        self._data = []
        self._has_data = False
        self._event = ""
        return event
