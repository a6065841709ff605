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
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, final

import attrs
import trio

__all__ = [
    "DENIED_PREFIXES",
    "ENV_ALLOWLIST",
    "AgentProcess",
    "LaunchSpec",
    "StderrTail",
    "child_environment",
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


@final
class AgentProcess:
    """A running agent server process. Use `spawn()` to make one."""

    def __init__(self, popen: subprocess.Popen[bytes], spec: LaunchSpec) -> None:
        self._popen = popen
        self.spec = spec
        self.pid = popen.pid
        self.stderr_tail = StderrTail()
        self.stdin: trio.lowlevel.FdStream | None = _take_stream(popen, "stdin")
        self.stdout: trio.lowlevel.FdStream | None = _take_stream(popen, "stdout")
        self._stderr: trio.lowlevel.FdStream | None = _take_stream(popen, "stderr")
        self._pidfd: int | None
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self._pidfd = None

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
        if self._popen.returncode is not None:
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
        caller is being cancelled."""
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
    return AgentProcess(popen, spec)
