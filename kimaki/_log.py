"""Logging: one file per run, one line format, and secrets that never leave the process.

Every module logs through `logging.getLogger("kimaki.<area>")`; the formatter turns the last
part of the logger name into the line's prefix, so `kimaki.gateway` writes
`[2026-11-21T18:00:00.123+00:00] [INFO] [GATEWAY] message`.

Redaction (`kimaki._redact`) happens in the formatter, after the message, its arguments and any
traceback have been rendered to text, so no path (an f-string, an exception's repr, a logged
request) can carry a registered secret past it. The bot token is registered as soon as it is
known; so are agent server passwords.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import Final, TextIO

from kimaki._redact import REDACTED, redact, register_secret

__all__ = [
    "FILE_ONLY",
    "REDACTED",
    "close_log_file",
    "configure_logging",
    "open_log_file",
    "redact",
    "register_secret",
]

# `log.error(..., extra={FILE_ONLY: True})` keeps a record (a traceback) out of stderr.
FILE_ONLY: Final = "kimaki_file_only"


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = record.name.rsplit(".", 1)[-1].upper() if record.name != "kimaki" else "KIMAKI"
        when = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        line = f"[{when}] [{record.levelname}] [{prefix}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return redact(line)


class _StderrFormatter(_Formatter):
    """Human-readable stderr: the same line without tracebacks (they go to the file only)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class _SafeErrors:
    """The stdlib prints a failed record's raw arguments to stderr; that could leak a secret."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"kimaki: a log line could not be written ({type(exc).__name__})\n")


class _StderrHandler(_SafeErrors, logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time, not the object seen at start-up."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class _FileHandler(_SafeErrors, logging.FileHandler):
    pass


def configure_logging(*, verbose: bool = False) -> None:
    """Log `kimaki.*` records to stderr: one line each, tracebacks left to the log file."""
    root = logging.getLogger("kimaki")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    # httpx logs every request at INFO; the REST client logs what matters itself.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stderr_handler = _StderrHandler()
    stderr_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    stderr_handler.setFormatter(_StderrFormatter())
    stderr_handler.addFilter(lambda record: not getattr(record, FILE_ONLY, False))
    root.addHandler(stderr_handler)


def open_log_file(path: Path, *, append: bool = False) -> logging.Handler:
    """Start this run's log file, truncating the last run's (or continuing it: `append`, after
    an in-place restart); returns the handler to close."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    handler = _FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(_Formatter())
    logging.getLogger("kimaki").addHandler(handler)
    return handler


def close_log_file(handler: logging.Handler) -> None:
    logging.getLogger("kimaki").removeHandler(handler)
    handler.close()
