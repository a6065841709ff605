"""In-place restart: the daemon re-executes itself with the code now on disk (SIGUSR2).

`os.execv` keeps the pid, so systemd (`Type=notify`, `ExecReload=kill -USR2 $MAINPID`) keeps
supervising the same service, and the agent servers the daemon started stay its children. The
command line is the one the interpreter was started with (`sys.orig_argv`: `python -m kimaki
...`, interpreter options included), run by the same interpreter binary.

What crosses the exec:

- the environment, plus `KIMAKI_RESTARTED_FROM` (`RestartMarker`: who restarted and when), so
  the new process appends to the log instead of truncating it, adopts the agent servers handed
  over through the store, and reports how long the restart took; and `KIMAKI_LOG_FILE`, so
  that `kimaki/__main__.py` can write to the log why the new code cannot even be imported;
- the fds passed to `exec_self` (agent servers' output pipes), made inheritable at the last
  moment; every other fd stays close-on-exec, as Python creates them.

Nothing else does: the gateway session, handed-over servers and running turns go through the
store, written before the exec.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Final, NoReturn, final

import attrs

__all__ = [
    "LOG_FILE_ENV",
    "RESTART_ENV",
    "RestartMarker",
    "exec_self",
    "flush_output",
    "restart_command",
    "take_restart_marker",
]

log = logging.getLogger("kimaki.restart")

RESTART_ENV: Final = "KIMAKI_RESTARTED_FROM"
# Read by kimaki/__main__.py without importing anything else of kimaki: keep the name in sync.
LOG_FILE_ENV: Final = "KIMAKI_LOG_FILE"


@final
@attrs.frozen
class RestartMarker:
    """Who asked for the restart and when: `pid` of the process that exec'd (the same pid, or
    the marker is not ours), `requested_at` its `time.monotonic()` (CLOCK_MONOTONIC is
    system-wide, so the new process can subtract), and `reason`."""

    pid: int
    requested_at: float
    reason: str = "SIGUSR2"

    def encode(self) -> str:
        return f"{self.pid}:{self.requested_at!r}:{self.reason}"

    @classmethod
    def decode(cls, text: str) -> RestartMarker | None:
        pid, _, rest = text.partition(":")
        requested_at, _, reason = rest.partition(":")
        try:
            return cls(int(pid), float(requested_at), reason or "SIGUSR2")
        except ValueError:
            return None

    @property
    def elapsed(self) -> float:
        """Seconds since the restart was asked for."""
        return time.monotonic() - self.requested_at


def take_restart_marker(environ: MutableMapping[str, str] | None = None) -> RestartMarker | None:
    """The marker left by `exec_self` if this process is a restarted daemon, removed from the
    environment (so nothing started later inherits it). A marker naming another pid was
    inherited by mistake, not left by our own exec: it is ignored."""
    env = os.environ if environ is None else environ
    text = env.pop(RESTART_ENV, None)
    env.pop(LOG_FILE_ENV, None)
    if text is None:
        return None
    marker = RestartMarker.decode(text)
    if marker is None or marker.pid != os.getpid():
        log.warning("ignoring %s=%r: not left by this process", RESTART_ENV, text)
        return None
    return marker


def restart_command(
    orig_argv: Sequence[str] | None = None, executable: str | None = None
) -> list[str]:
    """The argv that starts this program again: `sys.orig_argv` with the interpreter's full
    path in front (a bare `python` in argv[0] would be looked up in PATH by the new process
    and could find another interpreter, without this virtualenv)."""
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    executable = executable or sys.executable
    if not argv or not executable:
        raise RuntimeError("cannot tell how this process was started")
    return [executable, *argv[1:]]


def exec_self(
    marker: RestartMarker,
    *,
    log_file: Path | None = None,
    pass_fds: Sequence[int] = (),
    environ: Mapping[str, str] | None = None,
) -> NoReturn:
    """Replace this process with a fresh start of the same command line (same pid).

    Log handlers and stdio are flushed first: `execv` does not run `atexit` or flush buffers.
    Raises `OSError` when the interpreter cannot be executed (it was removed by an upgrade);
    the caller then exits non-zero and systemd starts the service again.
    """
    argv = restart_command()
    env = dict(os.environ if environ is None else environ)
    env[RESTART_ENV] = marker.encode()
    if log_file is not None:
        env[LOG_FILE_ENV] = str(log_file)
    else:
        env.pop(LOG_FILE_ENV, None)
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    log.info("re-executing %s (pid %d)", " ".join(argv[:4]), os.getpid())
    flush_output()
    os.execve(argv[0], argv, env)


def flush_output() -> None:
    """Flush log handlers and stdio: before `execv` or `os._exit`, which skip the usual
    flushing at exit."""
    for name in ("kimaki", ""):
        for handler in logging.getLogger(name).handlers:
            with contextlib.suppress(OSError, ValueError):
                handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
