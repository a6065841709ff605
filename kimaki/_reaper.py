"""The reaper: a tiny process every agent server runs under, so nothing it started outlives it.

`python -I -S kimaki/_reaper.py [--user UID:GID:GROUPS] -- <argv>` (run by path, standard
library only: it starts in a few tens of milliseconds and imports nothing of kimaki). The
daemon manages the reaper's pid as the agent server's pid; the reaper:

- marks itself a **child subreaper** (`PR_SET_CHILD_SUBREAPER`): every descendant that is
  orphaned, whatever session or process group it moved to (`setsid`), is re-parented to the
  reaper instead of to init, so it can always be found and killed;
- forks and execs the server (armed with `PR_SET_PDEATHSIG` SIGKILL, so it dies if the reaper
  is ever SIGKILLed itself), in the reaper's process group; with `--user`, the server's child
  alone switches to that user (KIMAKI_AGENT_USER), the reaper keeps the daemon's, so it can
  kill whatever the server starts;
- asks for a catchable signal (`KILL_NOW`) when the daemon dies, by any means, SIGKILL
  included. The daemon spawned it with SIGKILL as its parent-death signal, so the window
  before the reaper swaps it for `KILL_NOW` is covered too (there is no child yet to leave);
- on SIGTERM / SIGINT / SIGHUP (an orderly stop), sends SIGTERM to its process group (the
  server and the tools that stayed in it) and keeps waiting;
- when the server exits, on `KILL_NOW` (the daemon escalating after the stop grace) or when the
  daemon dies: SIGKILLs every remaining descendant (found by walking `/proc`, again until none
  is left, a subreaper's `waitpid` says when), reaps them all, and exits with the server's
  status (dying by the same signal when the server was killed by one).

Signals are blocked and taken with `sigtimedwait` in one loop: nothing runs concurrently, and
the periodic timeout re-checks the parent in case a parent-death signal was ever missed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

# Start-up time matters (every agent server start waits for it): `typing` and `contextlib`
# alone took longer to import than the rest of the reaper.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final, NoReturn

__all__ = ["KILL_NOW", "main"]

# Sent by the daemon to say "kill everything now" (its stop grace is over); also the reaper's
# parent-death signal. Not SIGKILL: the reaper must live long enough to kill the descendants.
KILL_NOW: Final = signal.SIGUSR1
_STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_WAITED: Final = frozenset({signal.SIGCHLD, KILL_NOW, *_STOP_SIGNALS})
_PR_SET_PDEATHSIG: Final = 1
_PR_SET_CHILD_SUBREAPER: Final = 36
_EXIT_CANNOT_EXEC: Final = 127
_CHECK_PARENT_EVERY: Final = 1.0


def _prctl() -> Callable[[int, int, int, int, int], int]:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _parents() -> dict[int, int]:
    """pid → parent pid of every process visible in /proc."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                fields = file.read().rpartition(b")")[2].split()
        except OSError:  # exited meanwhile
            continue
        parents[int(name)] = int(fields[1])
    return parents


def descendants(root: int) -> list[int]:
    """Every process below `root` in the process tree, found by walking /proc."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), ()):
            found.append(child)
            pending.append(child)
    return found


def _status_of(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


class _Reaper:
    def __init__(self, server: int) -> None:
        self.server = server
        self.returncode: int | None = None

    def reap_ready(self) -> bool:
        """Reap every exited child without blocking; False once there are no children."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.server:
                self.returncode = _status_of(status)

    def kill_all(self) -> None:
        """SIGKILL every descendant and reap them, until this process has no child left."""
        me = os.getpid()
        while True:
            for pid in descendants(me):
                try:  # noqa: SIM105 - contextlib costs start-up time
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            if pid == self.server:
                self.returncode = _status_of(status)


def _exit_like(returncode: int | None) -> NoReturn:
    sys.stderr.flush()
    if returncode is None:
        os._exit(1)
    if returncode >= 0:
        os._exit(returncode)
    signum = -returncode
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file of the reaper
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # these cannot be handled
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
    except (OSError, ValueError):
        pass
    os._exit(128 + signum)


def _start_server(
    argv: list[str], user: str | None, prctl: Callable[[int, int, int, int, int], int]
) -> int:
    pid = os.fork()
    if pid == 0:  # the server
        try:
            if user is not None:  # "uid:gid:group,group,..."; after this, no way back
                uid, gid, groups = user.split(":")
                os.setgroups([int(group) for group in groups.split(",") if group])
                os.setgid(int(gid))
                os.setuid(int(uid))
            # After the user change, which clears the parent-death signal.
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            for signum in _WAITED:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.execvp(argv[0], argv)
        except BaseException as exc:  # the child must never return
            try:
                os.write(2, f"kimaki reaper: cannot start {argv[0]}: {exc}\n".encode())
            finally:
                os._exit(_EXIT_CANNOT_EXEC)
    return pid


def _pass_on_stop(server: int) -> None:
    """SIGTERM to our process group when we lead one (the daemon starts us in a new session),
    else to the server alone: never to a group we merely belong to."""
    try:
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGTERM)
        else:
            os.kill(server, signal.SIGTERM)
    except OSError:
        pass


def main(args: list[str]) -> NoReturn:
    user = None
    if args[:1] == ["--user"] and len(args) >= 2:
        user, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.stderr.write("usage: _reaper.py [--user UID:GID:GROUPS] -- PROGRAM [ARG...]\n")
        os._exit(2)
    prctl = _prctl()
    parent = os.getppid()  # right: had the daemon died already, its SIGKILL would have come
    for signum in _WAITED:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
    prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    prctl(_PR_SET_PDEATHSIG, int(KILL_NOW), 0, 0, 0)
    reaper = _Reaper(_start_server(args, user, prctl))
    # The reaper keeps the server's stdio open as they are (it never uses them): the pipes the
    # daemon reads, and hands over across an in-place restart, are the reaper's fds too.
    if os.getppid() != parent:  # the daemon died before the new signal was armed
        reaper.kill_all()
        _exit_like(reaper.returncode)
    me = os.getpid()
    while True:
        info = signal.sigtimedwait(_WAITED, _CHECK_PARENT_EVERY)
        if info is None:
            if os.getppid() != parent:
                break
            continue
        if info.si_signo == signal.SIGCHLD:
            reaper.reap_ready()
            if reaper.returncode is not None:
                break
        elif info.si_signo == KILL_NOW:
            break
        elif info.si_pid != me:  # not the echo of our own group signal
            _pass_on_stop(reaper.server)
    reaper.kill_all()
    _exit_like(reaper.returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
