"""`python -m kimaki`.

This is also the first code a daemon runs after re-executing itself (SIGUSR2, an in-place
upgrade). If the code now on disk cannot even be imported (a broken upgrade), the reason goes to
stderr and to the end of the daemon's log file, and the exit status is 70, so that systemd
(`Restart=on-failure`) starts it again and the person reading the log sees why. Only the
standard library is used on that path: the rest of kimaki is what failed to load.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import traceback

_EXIT_CANNOT_START = 70  # kimaki.errors.EXIT_CRASH
_LOG_FILE_ENV = "KIMAKI_LOG_FILE"  # kimaki._restart.LOG_FILE_ENV


def _cannot_start(exc: BaseException) -> int:
    reason = f"{type(exc).__name__}: {exc}"
    message = f"the installed kimaki cannot start, its code does not load ({reason})"
    sys.stderr.write(f"kimaki: {message}\n")
    sys.stderr.flush()
    log_file = os.environ.get(_LOG_FILE_ENV)
    if log_file:
        when = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        details = "".join(traceback.format_exception(exc)).rstrip()
        try:
            with open(log_file, "a", encoding="utf-8") as file:
                file.write(f"[{when}] [CRITICAL] [KIMAKI] {message}; exiting 70\n{details}\n")
        except OSError as error:
            sys.stderr.write(f"kimaki: could not write to {log_file}: {error}\n")
    return _EXIT_CANNOT_START


def _start() -> int:
    # Until the daemon listens for them: a reload (SIGUSR2) or snapshot request (SIGUSR1) that
    # arrives while it starts, or while it re-executes itself, must not kill it, which is
    # their default action. (Ignored signals stay ignored across `execv`.)
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    if sys.argv[1:2] in (["mcp-tools"], ["mcp-proxy"]):
        # Run by an agent, which waits for it: not the daemon's whole CLI.
        from kimaki._agent_side import main as agent_side

        return agent_side(sys.argv[1:])
    try:
        from kimaki.cli import main
    except Exception as exc:
        return _cannot_start(exc)
    return main()


if __name__ == "__main__":
    sys.exit(_start())
