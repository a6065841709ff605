"""Agent server child processes: started clean, stopped for sure, never left behind.

- **Environment**: an allowlist (`child_environment`). Nothing named `KIMAKI_*` or `DISCORD_*`
  ever passes, whatever the allowlist says: an agent can run `env`, and the bot token must not
  be in what it sees.
- **Own process group** (a new session): stopping signals the whole group, so the tools an
  agent started (a shell, a language server) go with it, and a Ctrl-C in the daemon's terminal
  reaches the daemon, which then stops its agents in order.
- **Under a reaper** (Linux, `kimaki/_reaper.py`): the process the daemon starts and manages
  is a tiny child subreaper that runs the server. Whatever the server starts, even a tool that
  calls `setsid` and ignores SIGTERM, is its descendant or is re-parented to it when orphaned,
  and it SIGKILLs all of them when the server exits, when the stop grace is over, or when the
  daemon dies (by SIGKILL too: its parent-death signal). The reaper's exit status is the
  server's. An orderly stop sends SIGTERM to the reaper, which passes it to its process group;
  after the grace, `KILL_NOW` makes it kill everything.
- **Parent-death signal** (Linux): the reaper is started with SIGKILL as its parent-death
  signal, then swaps it for a catchable one so it can clean up first. SIGKILL, not SIGTERM,
  for the server once the daemon is gone: nobody is left to escalate, and `opencode serve`
  1.18.33 was seen to stay busy for more than 15 s after a SIGTERM.

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
import errno
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol, final

import attrs
import trio

from kimaki._reaper import KILL_NOW
from kimaki._redact import register_environment

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
# After KILL_NOW, how long the reaper gets to kill and reap everything before it is SIGKILLed
# with its group (it never should need it: SIGKILL is immediate).
_KILL_WAIT: Final = 5.0
_REAPER: Final = str(Path(__file__).resolve().parent.parent / "_reaper.py")


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

    The values of its secret-named variables (a provider's API key) are registered with the
    redactor: an agent that prints its environment shows `[REDACTED:NAME]` in the thread.
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
    result = {name: value for name, value in env.items() if not _denied(name)}
    register_environment(result)
    return result


@final
@attrs.frozen
class LaunchSpec:
    """How to start one agent server. `env` is the child's whole environment; `setting` names
    the setting that chooses the program (for the fix when it is missing)."""

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    stdin: bool = False
    setting: str | None = None
    # Run as this OS user (KIMAKI_AGENT_USER) instead of the daemon's; needs root.
    user: str | None = None


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
        under_reaper: bool | None = None,
    ) -> None:
        self._popen = child
        self.spec = spec
        self.pid = pid
        # Started as `_reaper.py -- <server>` (None: look at its command line, for a process
        # adopted from an earlier image, which may predate the reaper).
        self.under_reaper = _runs_reaper(pid) if under_reaper is None else under_reaper
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

    def _signal(self, sig: int) -> None:
        if self._popen.returncode is not None or self._detached:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, sig)

    async def stop(self, grace: float = _STOP_GRACE) -> int:
        """SIGTERM to the group, everything killed after `grace` seconds; always reaped, even
        when the caller is being cancelled. A detached process is left running (returns -1).

        Under the reaper, the signals go to the reaper alone (it passes SIGTERM to its group,
        and on `KILL_NOW` kills every descendant, wherever it moved); a SIGKILL would leave
        those to init, so the group gets one only if the reaper itself does not exit.
        """
        if self._detached:
            self._close_pidfd()
            return -1
        with trio.CancelScope(shield=True):
            if self.under_reaper:
                self._signal(signal.SIGTERM)
            else:
                self.send_signal_group(signal.SIGTERM)
            with trio.move_on_after(grace):
                await self.wait()
            if self._popen.returncode is None:
                log.warning(
                    "agent server %d ignored SIGTERM for %.0f s: killing it and what it started",
                    self.pid,
                    grace,
                )
                if self.under_reaper:
                    self._signal(KILL_NOW)
                    self.send_signal_group(signal.SIGCONT)  # a stopped reaper must act on it
                    with trio.move_on_after(_KILL_WAIT):
                        await self.wait()
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


def _runs_reaper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            argv = file.read().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"_reaper.py") for arg in argv[:4])


def _resolve(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`argv` with its program as an absolute path, found the way `execvp` would find it;
    `FileNotFoundError` / `PermissionError` as `Popen` would raise them, so a missing program
    is reported at once rather than as the reaper's exit status."""
    program = argv[0]
    if os.sep in program:
        # Relative to the daemon's directory, not the project's (the child's cwd).
        path: str | None = os.path.abspath(program)
        assert path is not None
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    else:
        path = shutil.which(program, path=env.get("PATH", os.defpath))
        if path is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return [path, *argv[1:]]


def _switch_user(name: str, env: dict[str, str]) -> tuple[str, ...]:
    """The reaper's `--user` option for `name` (it drops to that user in the server's child
    only, so it can still kill whatever the server starts), and `env` pointed at that user's
    home instead of the daemon's. `PermissionError` unless the daemon runs as root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PermissionError(errno.EINVAL, f"no user {name!r} (KIMAKI_AGENT_USER)") from None
    if os.geteuid() != 0:
        raise PermissionError(
            errno.EPERM, f"running agents as {name!r} (KIMAKI_AGENT_USER) needs root"
        )
    groups = os.getgrouplist(name, entry.pw_gid)
    own_home = os.path.expanduser("~")
    for variable in ("HOME", *_XDG_DIRS):
        value = env.get(variable)
        if value is None or value == own_home or value.startswith(own_home + os.sep):
            env.pop(variable, None)  # the daemon's own: not the agent's to use
    env.setdefault("HOME", entry.pw_dir)
    env["USER"] = env["LOGNAME"] = name
    ids = f"{entry.pw_uid}:{entry.pw_gid}:{','.join(str(group) for group in groups)}"
    return ("--user", ids)


def _take_stream(popen: subprocess.Popen[bytes], name: str) -> trio.lowlevel.FdStream | None:
    file = getattr(popen, name)
    if file is None:
        return None
    stream = trio.lowlevel.FdStream(os.dup(file.fileno()))
    file.close()
    setattr(popen, name, None)
    return stream


def spawn(spec: LaunchSpec) -> AgentProcess:
    """Start `spec` under the reaper, in its own process group, armed to die with the daemon.

    Raises `OSError` (e.g. `FileNotFoundError` for a missing binary).
    """
    under_reaper = sys.platform.startswith("linux")
    env = dict(spec.env)
    register_environment(env)  # whoever built it (`child_environment` did, for the engines)
    if under_reaper:
        server = _resolve(spec.argv, spec.env)
        user = _switch_user(spec.user, env) if spec.user else ()
        # -I -S: no site, no environment, no user paths; the reaper needs only the stdlib.
        argv: Sequence[str] = (sys.executable, "-I", "-S", _REAPER, *user, "--", *server)
    elif spec.user:
        raise PermissionError(errno.EPERM, "running agents as another user needs Linux")
    else:
        argv = spec.argv
        if os.sep in argv[0] and not os.path.isabs(argv[0]):
            argv = (os.path.abspath(argv[0]), *argv[1:])
    popen = subprocess.Popen(
        argv,
        cwd=spec.cwd,
        env=env,
        stdin=subprocess.PIPE if spec.stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_parent_death_hook(),
        close_fds=True,
    )
    log.debug("started %s (pid %d) in %s", spec.argv[0], popen.pid, spec.cwd)
    return AgentProcess(
        popen,
        popen.pid,
        spec,
        under_reaper=under_reaper,
        stdin=_take_stream(popen, "stdin"),
        stdout=_take_stream(popen, "stdout"),
        stderr=_take_stream(popen, "stderr"),
    )
