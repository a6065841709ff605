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

- the bot token, when it came from the environment, the credentials directory or the previous
  image: in a pipe whose read end's fd number is in `KIMAKI_TOKEN_FD`, never in the
  environment or argv. The new process reads it and closes the fd at once
  (`take_handed_token`).

Nothing else does: the gateway session, handed-over servers and running turns go through the
store, written before the exec.

The same exec, without a restart marker, also runs once at a cold start when the token was
given in `KIMAKI_BOT_TOKEN` (`exec_without_token_env`): `/proc/<pid>/environ` keeps the
environment the process was started with whatever it unsets later, and any process of the same
user (an agent's tool call) can read it. After that exec it holds no token.
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
    "TOKEN_ENV",
    "TOKEN_FD_ENV",
    "RestartMarker",
    "exec_self",
    "exec_without_token_env",
    "flush_output",
    "restart_command",
    "take_handed_token",
    "take_restart_marker",
]

log = logging.getLogger("kimaki.restart")

RESTART_ENV: Final = "KIMAKI_RESTARTED_FROM"
# Read by kimaki/__main__.py without importing anything else of kimaki: keep the name in sync.
LOG_FILE_ENV: Final = "KIMAKI_LOG_FILE"
TOKEN_ENV: Final = "KIMAKI_BOT_TOKEN"
TOKEN_FD_ENV: Final = "KIMAKI_TOKEN_FD"


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


def _token_fd(token: str) -> int:
    """The read end of a pipe holding `token` (its write end closed), close-on-exec until the
    exec. A token is far below a pipe's buffer, so the write cannot block."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, token.encode())
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def take_handed_token(environ: MutableMapping[str, str] | None = None) -> str | None:
    """The token the previous image handed over (`KIMAKI_TOKEN_FD`), or None. The variable is
    removed and the fd closed, whatever it holds: nothing started later can inherit either."""
    env = os.environ if environ is None else environ
    text = env.pop(TOKEN_FD_ENV, None)
    if text is None:
        return None
    try:
        fd = int(text)
    except ValueError:
        log.warning("ignoring %s=%r: not an fd number", TOKEN_FD_ENV, text)
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError as exc:
        log.warning("could not read the handed-over token from fd %d: %s", fd, exc.strerror)
        return None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace").strip() or None


def exec_without_token_env(token: str) -> NoReturn:
    """Start again (same pid, same command line) without `KIMAKI_BOT_TOKEN` in the environment,
    the token handed over privately instead. Not a restart: no marker, the log is new."""
    log.debug("re-executing without %s in the environment", TOKEN_ENV)
    _exec(None, token=token)


def exec_self(
    marker: RestartMarker,
    *,
    log_file: Path | None = None,
    pass_fds: Sequence[int] = (),
    environ: Mapping[str, str] | None = None,
    token: str | None = None,
) -> NoReturn:
    """Replace this process with a fresh start of the same command line (same pid); `token`
    (the one this process was given, not a stored one) is handed over privately.

    Log handlers and stdio are flushed first: `execv` does not run `atexit` or flush buffers.
    Raises `OSError` when the interpreter cannot be executed (it was removed by an upgrade);
    the caller then exits non-zero and systemd starts the service again.
    """
    log.info("re-executing %s (pid %d)", " ".join(restart_command()[:4]), os.getpid())
    _exec(marker, log_file=log_file, pass_fds=pass_fds, environ=environ, token=token)


def _exec(
    marker: RestartMarker | None,
    *,
    log_file: Path | None = None,
    pass_fds: Sequence[int] = (),
    environ: Mapping[str, str] | None = None,
    token: str | None = None,
) -> NoReturn:
    argv = restart_command()
    env = dict(os.environ if environ is None else environ)
    env.pop(TOKEN_ENV, None)
    env.pop(TOKEN_FD_ENV, None)
    if marker is not None:
        env[RESTART_ENV] = marker.encode()
    if log_file is not None:
        env[LOG_FILE_ENV] = str(log_file)
    else:
        env.pop(LOG_FILE_ENV, None)
    fds = list(pass_fds)
    if token is not None:
        token_fd = _token_fd(token)
        env[TOKEN_FD_ENV] = str(token_fd)
        fds.append(token_fd)
    for fd in fds:
        os.set_inheritable(fd, True)
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
