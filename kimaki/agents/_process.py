"""Agent server child processes: started clean, stopped for sure, never left behind.

- **Environment**: an allowlist (`child_environment`). Nothing named `KIMAKI_*` or `DISCORD_*`
  ever passes, whatever the allowlist says: an agent can run `env`, and the bot token must not
  be in what it sees.
- **Own process group** (a new session): stopping signals the whole group, so the tools an
  agent started (a shell, a language server) go with it, and a Ctrl-C in the daemon's terminal
  reaches the daemon, which then stops its agents in order.
- **Parent-death signal** (Linux): the child asks the kernel to send it SIGKILL when the daemon
  dies, even by SIGKILL, so no agent server outlives it. SIGKILL, not SIGTERM: the signal is
  sent once, with nobody left to escalate, and `opencode serve` 1.18.33 was seen to stay busy
  for more than 15 s after a SIGTERM. (Its own children, e.g. a running shell command, are
  then orphaned; an orderly stop signals the whole group instead, SIGTERM first.)

Why not `trio.lowlevel.open_process`: it forks from a worker thread, and Linux delivers the
parent-death signal when the *thread* that forked exits, which trio's idle worker threads do
after ten seconds. So the fork happens here, in the trio thread (a few milliseconds), and the
exit is awaited through a pidfd, the way trio itself does it on Linux.

**Surviving an in-place restart.** The daemon re-executes itself (`os.execv`, same pid) on
SIGUSR2 from that same main thread, so the parent-death signal does not fire and the servers
stay its children. `detach()` hands over the read ends of a server's output pipes (duplicated;
the exec keeps them open once made inheritable), so the server never writes into a closed
pipe; `AgentProcess.adopt()` in the new process wraps the pid and those fds again. The pid is
checked to be a child of this process first: a stale record can never make us signal a
stranger that reused the pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol, final

import attrs
import trio

__all__ = [
    "DENIED_PREFIXES",
    "ENV_ALLOWLIST",
    "AgentProcess",
    "LaunchSpec",
    "StderrTail",
    "child_environment",
    "close_fds",
    "spawn",
]

log = logging.getLogger("kimaki.agents")

# Copied from the daemon's environment when present. Provider keys are the agent's own
# credentials (the person configured them for it); matched by suffix below.
ENV_ALLOWLIST: Final = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "TMPDIR",
        "COLORTERM",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_CACHE_HOME",
        "XDG_STATE_HOME",
        "XDG_RUNTIME_DIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)
_ALLOWED_PREFIXES: Final = ("LC_",)
_ALLOWED_SUFFIXES: Final = ("_API_KEY",)
DENIED_PREFIXES: Final = ("KIMAKI_", "DISCORD_")
_XDG_DIRS: Final = {
    "XDG_CONFIG_HOME": ".config",
    "XDG_DATA_HOME": ".local/share",
    "XDG_CACHE_HOME": ".cache",
    "XDG_STATE_HOME": ".local/state",
}

_PR_SET_PDEATHSIG: Final = 1
_STOP_GRACE: Final = 5.0


def _denied(name: str) -> bool:
    return name.upper().startswith(DENIED_PREFIXES)


def child_environment(
    *,
    home: Path | None = None,
    extra: Mapping[str, str] | None = None,
    passthrough: Iterable[str] = (),
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of an agent server: allowlisted names from `source` (default
    `os.environ`), plus `passthrough` names, plus `extra` values.

    With `home`, HOME and the XDG base directories all point inside it (created), so the agent
    neither reads nor writes the person's own configuration. Denied names never pass, not even
    through `extra`.
    """
    source = os.environ if source is None else source
    allowed = set(passthrough)
    env = {
        name: value
        for name, value in source.items()
        if name in ENV_ALLOWLIST
        or name in allowed
        or name.startswith(_ALLOWED_PREFIXES)
        or name.endswith(_ALLOWED_SUFFIXES)
    }
    env.setdefault("PATH", os.defpath)
    if home is not None:
        env["HOME"] = str(home)
        for name, relative in _XDG_DIRS.items():
            path = home / relative
            path.mkdir(parents=True, exist_ok=True)
            env[name] = str(path)
    env.update(extra or {})
    return {name: value for name, value in env.items() if not _denied(name)}


@final
@attrs.frozen
class LaunchSpec:
    """How to start one agent server. `env` is the child's whole environment."""

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    stdin: bool = False


@final
class StderrTail:
    """The last `limit` bytes a process wrote to stderr, for error messages."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > self._limit:
            del self._buffer[: len(self._buffer) - self._limit]

    def text(self, max_lines: int = 20) -> str:
        lines = self._buffer.decode("utf-8", "replace").splitlines()
        return "\n".join(line for line in lines[-max_lines:] if line.strip())


def _parent_death_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def hook() -> None:  # runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the daemon died before the signal was armed
            os._exit(1)

    return hook


class _Child(Protocol):
    """What `AgentProcess` needs of a child: `subprocess.Popen`, or an adopted pid."""

    @property
    def returncode(self) -> int | None: ...

    def wait(self) -> int: ...


@final
class _AdoptedChild:
    """A child this process did not start in its current image (it was started before an
    `os.execv`): reaped with `waitpid` like any child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped elsewhere; like Popen, assume success
                self.returncode = 0
            else:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


@final
class AgentProcess:
    """A running agent server process. `spawn()` starts one; `adopt()` takes one over after
    an in-place restart."""

    def __init__(
        self,
        child: _Child,
        pid: int,
        spec: LaunchSpec | None,
        *,
        stdin: trio.lowlevel.FdStream | None = None,
        stdout: trio.lowlevel.FdStream | None = None,
        stderr: trio.lowlevel.FdStream | None = None,
        started_at: float | None = None,
        pidfd: int | None = None,
    ) -> None:
        self._popen = child
        self.spec = spec
        self.pid = pid
        # Wall-clock time of the start, kept across restarts (for operations).
        self.started_at = time.time() if started_at is None else started_at
        self.adopted = not isinstance(child, subprocess.Popen)
        self.stderr_tail = StderrTail()
        self.stdin = stdin
        self.stdout = stdout
        self._stderr = stderr
        self._detached = False
        self._pidfd: int | None = pidfd
        if pidfd is None:
            try:
                self._pidfd = os.pidfd_open(pid)
            except (AttributeError, OSError):
                self._pidfd = None

    @classmethod
    def adopt(
        cls,
        pid: int,
        *,
        started_at: float,
        stdout_fd: int | None = None,
        stderr_fd: int | None = None,
    ) -> AgentProcess:
        """Take over `pid`, a child left running by this process's previous image.

        `stdout_fd`/`stderr_fd` (inherited pipe read ends) are owned by the result. Raises
        `ProcessLookupError` when `pid` is not a running child of this process; the fds are
        closed then.
        """
        try:
            pidfd = _open_child(pid)
        except BaseException:
            close_fds(stdout_fd, stderr_fd)
            raise
        for fd in (stdout_fd, stderr_fd):
            if fd is not None:
                os.set_inheritable(fd, False)  # not into the next agent server we start

        def stream(fd: int | None) -> trio.lowlevel.FdStream | None:
            return None if fd is None else trio.lowlevel.FdStream(fd)

        return cls(
            _AdoptedChild(pid),
            pid,
            None,
            stdout=stream(stdout_fd),
            stderr=stream(stderr_fd),
            started_at=started_at,
            pidfd=pidfd,
        )

    def detach(self) -> tuple[int | None, int | None]:
        """Give the process up without stopping it (an in-place restart hands it over).

        Returns duplicates of the stdout and stderr pipe read ends (None for those it has not),
        still close-on-exec: the caller makes them inheritable right before the exec. After
        this, `stop()` and `send_signal_group()` leave the process alone.
        """
        self._detached = True
        if isinstance(self._popen, subprocess.Popen):
            # No longer this Popen's to reap: with a return code set, subprocess neither warns
            # about it nor reaps it behind the adopter's back when the object is collected.
            self._popen.returncode = 0
            self._popen = _AdoptedChild(self.pid)

        def duplicate(stream: trio.lowlevel.FdStream | None) -> int | None:
            return None if stream is None else os.dup(stream.fileno())

        return duplicate(self.stdout), duplicate(self._stderr)

    @property
    def detached(self) -> bool:
        return self._detached

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def pump_stderr(self, on_line: Callable[[str], None] | None = None) -> None:
        """Keep the stderr tail (and pass lines on) until the process closes stderr."""
        stream = self._stderr
        if stream is None:
            return
        pending = b""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            while data := await stream.receive_some(65536):
                self.stderr_tail.feed(data)
                if on_line is not None:
                    *lines, pending = (pending + data).split(b"\n")
                    for line in lines:
                        on_line(line.decode("utf-8", "replace").rstrip("\r"))
                    pending = pending[-4096:]

    async def wait(self) -> int:
        """Wait for the process to exit, then reap it; returns the exit code.

        Any number of tasks may wait at once (each on its own duplicate of the pidfd).
        """
        if self._popen.returncode is None:
            if self._pidfd is not None:
                pidfd = os.dup(self._pidfd)
                try:
                    await trio.lowlevel.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
            else:  # no pidfd (not Linux ≥ 5.3): a worker thread waits instead
                await trio.to_thread.run_sync(self._popen.wait, abandon_on_cancel=True)
            if self._popen.returncode is None:
                self._sweep_group()
                self._popen.wait()
                self._close_pidfd()
        returncode = self._popen.returncode
        assert returncode is not None
        return returncode

    def send_signal_group(self, sig: int) -> None:
        if self._popen.returncode is not None or self._detached:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _sweep_group(self) -> None:
        # The leader is a zombie until reaped, so its pid still names the group: kill whatever
        # it left behind in it before the pid can be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def stop(self, grace: float = _STOP_GRACE) -> int:
        """SIGTERM to the group, SIGKILL after `grace` seconds; always reaped, even when the
        caller is being cancelled. A detached process is left running (returns -1)."""
        if self._detached:
            self._close_pidfd()
            return -1
        with trio.CancelScope(shield=True):
            self.send_signal_group(signal.SIGTERM)
            with trio.move_on_after(grace):
                await self.wait()
            if self._popen.returncode is None:
                log.warning("agent server %d ignored SIGTERM for %.0f s: SIGKILL", self.pid, grace)
                self.send_signal_group(signal.SIGKILL)
            await self.wait()
        returncode = self._popen.returncode
        assert returncode is not None
        return returncode

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def aclose_streams(self) -> None:
        for stream in (self.stdin, self.stdout, self._stderr):
            if stream is not None:
                await stream.aclose()


def close_fds(*fds: int | None) -> None:
    """Close what is open of `fds` (handed-over pipe ends no process will read)."""
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _open_child(pid: int) -> int:
    """A pidfd for `pid` if it is a running child of this process; else `ProcessLookupError`.

    While a child is unreaped its pid cannot be reused, so once the parent is checked to be
    us, the pidfd names the right process.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            fields = file.read().rpartition(")")[2].split()
    except OSError:
        raise ProcessLookupError(f"process {pid} does not exist") from None
    state, parent = fields[0], int(fields[1])
    if parent != os.getpid():
        raise ProcessLookupError(f"process {pid} is not a child of this process")
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        raise ProcessLookupError(f"process {pid} has exited")
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        raise ProcessLookupError(f"process {pid} cannot be watched: {exc}") from None


def _take_stream(popen: subprocess.Popen[bytes], name: str) -> trio.lowlevel.FdStream | None:
    file = getattr(popen, name)
    if file is None:
        return None
    stream = trio.lowlevel.FdStream(os.dup(file.fileno()))
    file.close()
    setattr(popen, name, None)
    return stream


def spawn(spec: LaunchSpec) -> AgentProcess:
    """Start `spec` in its own process group, armed to die with the daemon.

    Raises `OSError` (e.g. `FileNotFoundError` for a missing binary).
    """
    argv: Sequence[str] = spec.argv
    if os.sep in argv[0] and not os.path.isabs(argv[0]):
        # Relative to the daemon's directory, not the project's (the child's cwd).
        argv = (os.path.abspath(argv[0]), *argv[1:])
    popen = subprocess.Popen(
        argv,
        cwd=spec.cwd,
        env=dict(spec.env),
        stdin=subprocess.PIPE if spec.stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_parent_death_hook(),
        close_fds=True,
    )
    log.debug("started %s (pid %d) in %s", argv[0], popen.pid, spec.cwd)
    return AgentProcess(
        popen,
        popen.pid,
        spec,
        stdin=_take_stream(popen, "stdin"),
        stdout=_take_stream(popen, "stdout"),
        stderr=_take_stream(popen, "stderr"),
    )
