"""Agent servers under supervision: one nursery per server, started on demand, restarted on
crash, stopped when idle. Shared by every engine (OpenCode's `opencode serve`, ACP agents).

```
ServerPool (the engine's nursery)
└─ AgentServer.run, one per key (a project directory, an ACP agent in a directory)
     wait for demand ─► spawn ─► hooks.connect (readiness, ≤ ready_timeout, raced with exit)
       ▲                          │ ready: hooks.serve (the event stream) runs beside it
       │                          ▼
       ├── idle / stop() ◄── wait: process exit │ idle_timeout without activity │ stop()
       ├── backoff ◄──────── crash (exit while ready, a failed health probe, a failed start):
       │                     restart after 0.5 s ×2 … ≤ 30 s; five crashes within 60 s: give
       │                     up, tell hooks.crashed(gave_up), wait for the next connection()
       └── stopped ◄──────── a setup error (the program is missing, the agent needs a login):
                             no retry; the next connection() request tries again
```

An engine gives the supervisor its `ServerHooks`: how to launch, how to tell the server is
ready (OpenCode: the `listening on` line, then `GET /global/health`; ACP: `initialize`), what to
run while it is up, and what to do when it crashes. Everything uses trio's clock.

Start failures (the server exits, is killed or never becomes ready) answer the requests
waiting for the server right away with `EngineUnavailableError`, whose message ends with the
server's last stderr lines: a person sees why, not a timeout. Each is one more crash: the
server is started again after the backoff, and given up like a crash loop. A setup error
(`AgentSetupError`: the program is missing, the agent wants a login) is answered the same way
but not retried, since a retry cannot help; its message names the fix.

Hung servers: with a `ProbePolicy`, a server in use (held by a running turn) is probed
(`hooks.probe`, e.g. OpenCode's health endpoint with its password) every `interval`, and at
once when it has sent nothing (`heard()`) for `silence`. A probe that fails or does not answer
within `timeout` is a crash: the process is stopped (SIGTERM, then SIGKILL), the running turns
end through `hooks.crashed`, and the server is restarted after the backoff.

In-place restart: `handover()` ends the supervision of a ready server without stopping the
process (its connection is released, its output pipes duplicated for the next process), and
the next process `adopt()`s it: the same loop, with the adopted process in place of a spawn
and `hooks.connect` checking it is still the server it was (OpenCode: health with the stored
password). An adopted server that fails that check is stopped and started again on demand.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
import random
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Final, Generic, Protocol, TypeVar, final

import attrs
import trio

from kimaki._backoff import Backoff
from kimaki.agents._errors import (
    DOCTOR_HINT,
    AgentNotInstalledError,
    AgentSetupError,
    EngineError,
    EngineUnavailableError,
    first_line,
    setup_fix,
)
from kimaki.agents._process import AgentProcess, LaunchSpec, spawn

__all__ = [
    "AgentServer",
    "DetachedServer",
    "ProbePolicy",
    "RestartPolicy",
    "ServerHooks",
    "ServerPool",
    "ServerState",
    "ServerStatistics",
]

log = logging.getLogger("kimaki.agents")

ConnT = TypeVar("ConnT")
KeyT = TypeVar("KeyT", bound=Hashable)


class ServerState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    FAILED = "failed"


@final
@attrs.frozen
class RestartPolicy:
    initial_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.25
    healthy_reset: float = 60.0
    max_crashes: int = 5
    crash_window: float = 60.0

    def delay(self, consecutive: int, rng: random.Random) -> float:
        """Delay before restart number `consecutive` (1-based), jittered so that servers that
        crashed together do not restart together."""
        backoff = Backoff(self.initial_delay, self.max_delay, self.factor, self.jitter)
        return backoff.delay(consecutive, rng.random())


@final
@attrs.frozen
class ProbePolicy:
    """When a server in use is asked whether it still answers (seconds).

    `interval`: between probes while a turn holds the server; `silence`: probe at once when the
    server has sent nothing for this long during a turn; `timeout`: the probe's answer bound.
    """

    interval: float = 60.0
    silence: float = 60.0
    timeout: float = 10.0


class ServerHooks(Protocol[ConnT]):
    """What an engine tells the supervisor about its kind of server."""

    def launch_spec(self) -> LaunchSpec:
        """How to start the next process. Runs in a worker thread, so it may block on the file
        system (creating the agent's home, copying its credentials)."""
        ...

    async def connect(self, process: AgentProcess, nursery: trio.Nursery) -> ConnT:
        """Wait until the server is ready and return a connection to it.

        `nursery` lives exactly as long as the process: a hook that must read while it
        connects (ACP's JSON-RPC reader, which carries the `initialize` answer) starts that
        task there. Raise `EngineUnavailableError` with a reason on failure; the supervisor
        bounds the wait and appends the stderr tail.
        """
        ...

    async def serve(self, connection: ConnT) -> None:
        """Runs while the server is up (e.g. the event stream); cancelled when it stops."""
        ...

    async def probe(self, connection: ConnT) -> None:
        """Check the ready server still answers; raise `EngineError` if it says it is not well.
        Only called with a `ProbePolicy`, which bounds it."""
        ...

    async def disconnect(self, connection: ConnT) -> None:
        """The server is stopping or gone: release the connection. Runs shielded."""
        ...

    def crashed(self, message: str, *, gave_up: bool) -> None:
        """The server died while in use (`gave_up`: it will not be restarted on its own)."""
        ...


@final
@attrs.frozen
class ServerStatistics:
    state: ServerState
    pid: int | None
    starts: int
    crashes: int
    start_failures: int
    busy: int
    last_error: str | None


@attrs.define
class _Crash:
    message: str
    start_failure: bool
    # What the requests waiting for the start are answered with.
    error: type[EngineUnavailableError] = EngineUnavailableError
    # False when starting again cannot help (a setup error) or is not wanted yet (an adopted
    # server that failed its check: a new one starts on the next request).
    retry: bool = True


@final
@attrs.frozen
class DetachedServer:
    """A server given up by `AgentServer.handover()`: still running, for the next process.

    `stdout_fd`/`stderr_fd` are this process's (close-on-exec) duplicates of the output pipes.
    """

    process: AgentProcess
    stdout_fd: int | None
    stderr_fd: int | None


class _HandedOver:
    """`_serve`'s outcome when the server was handed over."""


_HANDED_OVER: Final = _HandedOver()


def _with_stderr(message: str, process: AgentProcess | None) -> str:
    tail = process.stderr_tail.text() if process is not None else ""
    return f"{message}\n{tail}" if tail else message


@final
class AgentServer(Generic[ConnT]):
    """One supervised agent server. `run()` must be running (in the engine's nursery) for
    `connection()` to start it."""

    def __init__(
        self,
        name: str,
        hooks: ServerHooks[ConnT],
        *,
        policy: RestartPolicy | None = None,
        idle_timeout: float = 30 * 60.0,
        ready_timeout: float = 30.0,
        stop_grace: float = 5.0,
        probe: ProbePolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._hooks = hooks
        self._policy = policy or RestartPolicy()
        self._idle_timeout = idle_timeout
        self._ready_timeout = ready_timeout
        self._stop_grace = stop_grace
        self._probe = probe
        self._rng = rng or random.Random()
        self._state = ServerState.STOPPED
        self._connection: ConnT | None = None
        self._process: AgentProcess | None = None
        self._demand = trio.Event()
        self._changed = trio.lowlevel.ParkingLot()
        self._wake = trio.Event()
        self._closed = False
        self._stop_requested = False
        self._retire_requested = False
        self._last_activity = -math.inf
        self._busy = 0
        self._crash_times: list[float] = []
        self._consecutive = 0
        self._failures = 0
        self._last_error: str | None = None
        self._error_type: type[EngineUnavailableError] = EngineUnavailableError
        self._last_heard = -math.inf
        self._held = trio.Event()
        self._starts = 0
        self._crashes = 0
        self._start_failures = 0
        self._adopted: AgentProcess | None = None
        self._handover_requested = False
        self._handover_done = trio.Event()
        self._detached: DetachedServer | None = None

    # ----------------------------------------------------------------- for engines

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def process(self) -> AgentProcess | None:
        return self._process

    async def connection(self) -> ConnT:
        """The ready server's connection, starting it if needed.

        Raises `EngineUnavailableError` when this start fails or the server was given up.
        """
        self.touch()
        if self._closed:
            raise EngineUnavailableError(f"{self.name}: the agent supervisor has stopped")
        if self._state is ServerState.FAILED:
            self._crash_times.clear()
            self._consecutive = 0
            self._set_state(ServerState.STOPPED)
        failures = self._failures
        self._demand.set()
        while True:
            if self._state is ServerState.READY and self._connection is not None:
                return self._connection
            if self._failures != failures:
                raise self._error_type(self._last_error or f"{self.name} is unavailable")
            if self._closed:
                raise EngineUnavailableError(f"{self.name}: the agent supervisor has stopped")
            await self._changed.park()

    async def wait_for_state(self, *states: ServerState) -> None:
        """Wait until the server is in one of `states` (for operations and tests)."""
        while self._state not in states:
            await self._changed.park()

    async def wait_for_process(self) -> AgentProcess:
        """The server's process, once it has one (starting or ready; for operations, tests)."""
        while self._process is None:
            await self._changed.park()
        return self._process

    def touch(self) -> None:
        """Session activity: pushes the idle stop back."""
        self._last_activity = trio.current_time()

    def heard(self) -> None:
        """The server sent something (an event, a heartbeat): it is not silent."""
        self._last_heard = trio.current_time()

    @property
    def current(self) -> ConnT | None:
        """The connection if the server is ready now (never starts it)."""
        return self._connection if self._state is ServerState.READY else None

    def hold(self) -> None:
        """A turn started: no idle stop until the matching `release()`."""
        if not self._busy:
            self.heard()  # the silence of a turn counts from its start
        self._busy += 1
        self._held.set()
        self._poke()

    def release(self) -> None:
        self._busy = max(0, self._busy - 1)
        if not self._busy:
            self._held = trio.Event()
        self.touch()
        self._poke()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """`hold()` for the duration of a block."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    def stop(self) -> None:
        """Stop the server now (as if idle); the next `connection()` starts it again."""
        self._stop_requested = True
        self._poke()

    def retire(self) -> None:
        """Stop the server once no turn holds it (now, if none does): what it was started
        with has changed (its MCP servers), and the next turn must start one with the new.
        A server that is not running is left alone: the next start reads the new anyway."""
        if self._state in (ServerState.READY, ServerState.STARTING):
            self._retire_requested = True
            self._poke()

    def adopt(self, process: AgentProcess) -> None:
        """Supervise `process` (left running by the previous process image) as this server.

        Call before the first `connection()`. `hooks.connect` then checks the process instead
        of a fresh one; if the check fails, the process is stopped and the next request starts
        a new server.
        """
        if self._state is not ServerState.STOPPED or self._adopted is not None:
            raise RuntimeError(f"{self.name} already has a process")
        self._adopted = process
        self.touch()
        self._demand.set()

    async def handover(self) -> DetachedServer | None:
        """Stop supervising without stopping the process, for an in-place restart.

        Returns the detached server, or None when there was no ready server to hand over (one
        that is starting or backing off is stopped as usual when the engine closes). Either
        way this server accepts no more requests.
        """
        if self._closed:
            return None
        self._closed = True
        self._changed.unpark_all()  # waiting requests fail: the daemon is restarting
        if self._state is not ServerState.READY or self._process is None:
            return None
        self._handover_requested = True
        self._poke()
        await self._handover_done.wait()
        return self._detached

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            state=self._state,
            pid=self._process.pid if self._process is not None else None,
            starts=self._starts,
            crashes=self._crashes,
            start_failures=self._start_failures,
            busy=self._busy,
            last_error=self._last_error,
        )

    # ----------------------------------------------------------------- the loop

    def _poke(self) -> None:
        self._wake.set()

    def _set_state(self, state: ServerState) -> None:
        self._state = state
        self._changed.unpark_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise until cancelled; the process is always stopped and reaped on the way out."""
        task_status.started()
        try:
            while True:
                await self._demand.wait()
                self._stop_requested = self._retire_requested = False
                crash = await self._run_once()
                if self._handover_requested:
                    return
                if crash is None:
                    self._consecutive = 0
                    self._demand = trio.Event()
                    self._set_state(ServerState.STOPPED)
                    continue
                await self._after_crash(crash)
        finally:
            self._closed = True
            self._connection = None
            self._set_state(ServerState.STOPPED)
            self._handover_done.set()

    async def _after_crash(self, crash: _Crash) -> None:
        now = trio.current_time()
        self._crashes += 1
        self._last_error = crash.message
        self._error_type = crash.error
        if not crash.retry:
            # Answer the waiting requests; start again on the next one.
            log.warning("%s", crash.message)
            self._start_failures += 1
            self._failures += 1
            self._demand = trio.Event()
            self._set_state(ServerState.STOPPED)
            return
        self._crash_times = [t for t in self._crash_times if now - t < self._policy.crash_window]
        self._crash_times.append(now)
        self._consecutive += 1
        if len(self._crash_times) >= self._policy.max_crashes:
            message = (
                f"{self.name} crashed {len(self._crash_times)} times within "
                f"{self._policy.crash_window:.0f} s; not restarting it until the next request.\n"
                f"{crash.message}"
            )
            log.error("%s", message)
            self._last_error = message
            self._error_type = EngineUnavailableError
            if crash.start_failure:
                self._start_failures += 1
            self._failures += 1
            self._demand = trio.Event()
            self._set_state(ServerState.FAILED)
            self._hooks.crashed(message, gave_up=True)
            return
        delay = self._policy.delay(self._consecutive, self._rng)
        log.warning("%s; restarting in %.1f s", crash.message, delay)
        if crash.start_failure:
            # The requests waiting for this start hear why now; the restart is for the next.
            self._start_failures += 1
            self._failures += 1
        else:
            self._hooks.crashed(crash.message, gave_up=False)
        self._set_state(ServerState.BACKOFF)
        await trio.sleep(delay)

    async def _run_once(self) -> _Crash | None:
        """Start the server and keep it until it exits (a crash), idles out or is stopped."""
        self._set_state(ServerState.STARTING)
        if self._adopted is not None:
            process, self._adopted = self._adopted, None
        else:
            try:
                spec = await trio.to_thread.run_sync(self._hooks.launch_spec)
            except OSError as exc:  # e.g. the agent's home cannot be created
                return _Crash(f"{self.name}: could not prepare its start: {exc}", True)
            try:
                process = spawn(spec)
            except OSError as exc:
                return self._spawn_failed(spec, exc)
            self._starts += 1
        self._process = process
        self._changed.unpark_all()
        exited = trio.Event()
        stderr_done = trio.Event()

        async def watch_exit() -> None:
            await process.wait()
            exited.set()
            self._poke()

        async def pump_stderr() -> None:
            try:
                await process.pump_stderr(lambda line: log.debug("%s: %s", self.name, line))
            finally:
                stderr_done.set()

        connection: ConnT | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_exit)
                nursery.start_soon(pump_stderr)
                connected = await self._connect(process, nursery, exited, stderr_done)
                if isinstance(connected, _Crash):
                    nursery.cancel_scope.cancel()
                    return connected
                connection = connected
                outcome = await self._serve(nursery, process, connection, exited, stderr_done)
                nursery.cancel_scope.cancel()
            return None if isinstance(outcome, _HandedOver) else outcome
        finally:
            self._connection = None
            with trio.CancelScope(shield=True):
                # The connection's tasks are gone by now; release it, then the process.
                if connection is not None:
                    await self._hooks.disconnect(connection)
                await process.stop(self._stop_grace)
                await process.aclose_streams()
            self._process = None

    def _spawn_failed(self, spec: LaunchSpec, exc: OSError) -> _Crash:
        """Why `spec` could not be started, said as a person can act on it (never an errno)."""
        program = spec.argv[0]
        name = os.path.basename(program)
        if not spec.cwd.is_dir():
            return _Crash(f"{self.name}: the project directory {spec.cwd} does not exist", True)
        if isinstance(exc, FileNotFoundError | PermissionError | NotADirectoryError) or (
            exc.errno == errno.ENOEXEC
        ):
            found = "is not installed" if isinstance(exc, FileNotFoundError) else "cannot be run"
            message = f"{name} {found} (`{program}`): {setup_fix(program, setting=spec.setting)}"
            return _Crash(message, True, AgentNotInstalledError, retry=False)
        return _Crash(f"{self.name}: could not start {program}: {exc.strerror or exc}", True)

    async def _connect(
        self,
        process: AgentProcess,
        process_nursery: trio.Nursery,
        exited: trio.Event,
        stderr_done: trio.Event,
    ) -> ConnT | _Crash:
        result: list[ConnT] = []
        failure: list[str] = []
        setup: list[AgentSetupError] = []

        async def connect(cancel_scope: trio.CancelScope) -> None:
            try:
                result.append(await self._hooks.connect(process, process_nursery))
            except AgentSetupError as exc:
                setup.append(exc)
            except EngineUnavailableError as exc:
                failure.append(str(exc))
            except Exception as exc:
                log.exception("%s: readiness check failed", self.name)
                failure.append(repr(exc))
            cancel_scope.cancel()

        async def exit_during_start(cancel_scope: trio.CancelScope) -> None:
            await exited.wait()
            cancel_scope.cancel()

        with trio.move_on_after(self._ready_timeout) as timeout:
            async with trio.open_nursery() as race:
                race.start_soon(connect, race.cancel_scope)
                race.start_soon(exit_during_start, race.cancel_scope)
        if result and not exited.is_set():
            return result[0]
        if result:
            with trio.CancelScope(shield=True):
                await self._hooks.disconnect(result[0])
        if setup:
            return _Crash(f"{setup[0]}", True, type(setup[0]), retry=False)
        if failure and not exited.is_set():
            with trio.move_on_after(1.0):  # a server that closed its output is usually exiting
                await exited.wait()
        if exited.is_set():
            with trio.move_on_after(1.0):
                await stderr_done.wait()
            said = process.stderr_tail.text(max_lines=1)
            message = (
                f"{self.name} exited with code {process.returncode} while starting"
                f"{f': {said}' if said else ''} ({DOCTOR_HINT})"
            )
        elif failure:
            message = f"{self.name} failed to start: {failure[0]}"
        elif timeout.cancelled_caught:
            message = f"{self.name} was not ready after {self._ready_timeout:.0f} s"
        else:
            message = f"{self.name} failed to start"
        if process.adopted:
            message = (
                f"{message} (the server pid {process.pid} left by the previous process could "
                "not be adopted; a new one starts on the next request)"
            )
        return _Crash(_with_stderr(message, process), True, retry=not process.adopted)

    async def _run_serve(self, connection: ConnT, errors: list[str]) -> None:
        try:
            await self._hooks.serve(connection)
        except Exception as exc:
            log.exception("%s: the connection task failed", self.name)
            errors.append(f"the connection to the agent failed: {exc!r}")
            self._poke()

    async def _serve(
        self,
        nursery: trio.Nursery,
        process: AgentProcess,
        connection: ConnT,
        exited: trio.Event,
        stderr_done: trio.Event,
    ) -> _Crash | _HandedOver | None:
        self._connection = connection
        ready_at = trio.current_time()
        self.touch()  # the idle time counts from here: a slow start must not end it at once
        self.heard()  # and so does its silence
        self._set_state(ServerState.READY)
        if process.adopted:
            log.info("%s adopted (pid %d)", self.name, process.pid)
        else:
            log.info("%s ready (pid %d)", self.name, process.pid)
        serve_errors: list[str] = []
        nursery.start_soon(self._run_serve, connection, serve_errors)
        probe_failures: list[str] = []
        if self._probe is not None:
            nursery.start_soon(self._watch_health, self._probe, connection, probe_failures)
        while True:
            if serve_errors:
                return _Crash(f"{self.name}: {serve_errors[0]}", False)
            if probe_failures and not exited.is_set():
                return _Crash(probe_failures[0], False)
            if exited.is_set():
                self._connection = None
                if trio.current_time() - ready_at >= self._policy.healthy_reset:
                    self._consecutive = 0
                with trio.move_on_after(1.0):
                    await stderr_done.wait()
                message = f"{self.name} exited unexpectedly (code {process.returncode})"
                return _Crash(_with_stderr(message, process), False)
            if self._handover_requested:
                self._connection = None
                stdout_fd, stderr_fd = process.detach()
                self._detached = DetachedServer(process, stdout_fd, stderr_fd)
                log.info("%s handed over (pid %d keeps running)", self.name, process.pid)
                return _HANDED_OVER
            if self._stop_requested:
                log.info("%s stopping on request", self.name)
                return None
            if self._retire_requested and not self._busy:
                log.info("%s stopping: what it was started with changed", self.name)
                return None
            deadline = math.inf if self._busy else self._last_activity + self._idle_timeout
            if trio.current_time() >= deadline:
                log.info("%s idle for %.0f s; stopping it", self.name, self._idle_timeout)
                return None
            self._wake = trio.Event()
            with trio.move_on_at(deadline):
                await self._wake.wait()

    async def _watch_health(
        self, policy: ProbePolicy, connection: ConnT, failures: list[str]
    ) -> None:
        """While a turn holds the server: probe it every `interval`, and at once after
        `silence` without a word from it. A failed probe ends `_serve` with a crash."""
        last_probe = trio.current_time()
        while True:
            if not self._busy:
                await self._held.wait()
                last_probe = trio.current_time()
                continue
            now = trio.current_time()
            quiet_since = max(self._last_heard, last_probe)
            due = min(last_probe + policy.interval, quiet_since + policy.silence)
            if now < due:
                await trio.sleep_until(due)
                continue
            silent = now - self._last_heard
            if silent >= policy.silence:
                log.warning(
                    "%s: nothing from it for %.0f s during a turn; probing its health",
                    self.name,
                    silent,
                )
            last_probe = now
            reason = await self._probe_once(policy, connection)
            if reason is not None:
                message = f"{self.name} stopped answering ({reason}); restarting it"
                log.error("%s", message)
                failures.append(message)
                self._poke()
                return

    async def _probe_once(self, policy: ProbePolicy, connection: ConnT) -> str | None:
        """None when the server answered its probe, else why not."""
        with trio.move_on_after(policy.timeout):
            try:
                await self._hooks.probe(connection)
            except EngineError as exc:
                return f"its health check failed: {first_line(str(exc))}"
            return None
        return f"no answer to its health check within {policy.timeout:g} s"


@final
class ServerPool(Generic[KeyT, ConnT]):
    """The engine's agent servers by key, each supervised in the pool's nursery."""

    def __init__(
        self, nursery: trio.Nursery, factory: Callable[[KeyT], AgentServer[ConnT]]
    ) -> None:
        self._nursery = nursery
        self._factory = factory
        self._servers: dict[KeyT, AgentServer[ConnT]] = {}

    def get(self, key: KeyT) -> AgentServer[ConnT]:
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = self._factory(key)
            self._nursery.start_soon(server.run, name=f"agent server {server.name}")
        return server

    def servers(self) -> dict[KeyT, AgentServer[ConnT]]:
        return dict(self._servers)

    async def stop_all(self) -> None:
        """Stop every running server and wait for each: an orderly shutdown, where the
        processes get their SIGTERM grace while the daemon still runs (not only once the
        engine's nursery unwinds)."""
        async with trio.open_nursery() as nursery:
            for server in self._servers.values():
                if server.state in (ServerState.READY, ServerState.STARTING):
                    server.stop()
                    nursery.start_soon(
                        server.wait_for_state, ServerState.STOPPED, ServerState.FAILED
                    )
