"""The OpenCode engine: one supervised `opencode serve` per project directory, driven over HTTP.

```
open_opencode_engine() (owns the engine nursery)
└─ ServerPool: AgentServer per directory (kimaki.agents._supervisor)
     process `opencode serve --port 0 --hostname 127.0.0.1`, cwd = directory,
     random OPENCODE_SERVER_PASSWORD (basic auth, user `opencode`), allowlisted environment
     readiness: the `listening on` line, then GET /global/health until healthy
     serve: drain stdout │ GET /event (SSE) → decode → route by session id → SessionMapper
            → EventQueue of that OpenCodeSession; reconnect with backoff 0.5 s → 30 s, and
            after a reconnect re-read status and messages of sessions with a running turn
```

Sessions outlive server processes: OpenCode keeps them on disk, so after a crash, a restart or
an idle stop the same session id works with the new process. A crash ends the running turns
with an error; giving up on the directory sends `ServerFailed` to its sessions once.
"""

from __future__ import annotations

import logging
import random
import secrets
import string
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio

from kimaki._backoff import Backoff
from kimaki._log import register_secret
from kimaki.agents._engine import (
    AgentInfo,
    AttachedFile,
    CommandInfo,
    Engine,
    EngineSession,
    EventQueue,
    ModelInfo,
    ModelRef,
    PermissionReply,
    ProviderModels,
)
from kimaki.agents._errors import (
    EngineError,
    EngineUnavailableError,
    TurnInProgressError,
)
from kimaki.agents._events import EngineEvent, ServerFailed, TurnEnded
from kimaki.agents._process import AgentProcess, LaunchSpec, child_environment
from kimaki.agents._supervisor import AgentServer, RestartPolicy, ServerPool
from kimaki.agents.opencode._client import OpenCodeClient, file_part, text_part
from kimaki.agents.opencode._mapping import SessionMapper
from kimaki.agents.opencode._sse import SSEEvent, SSEParser
from kimaki.agents.opencode._wire import (
    MalformedEvent,
    ServerConnected,
    ServerHeartbeat,
    SessionInfo,
    decode_event,
)

__all__ = [
    "OpenCodeConfig",
    "OpenCodeConnection",
    "OpenCodeEngine",
    "OpenCodeSession",
    "new_message_id",
    "open_opencode_engine",
]

log = logging.getLogger("kimaki.opencode")

_LISTENING: Final = "listening on "
_STREAM_WAIT: Final = 10.0
_ABORT_WAIT: Final = 10.0
_START_WATCHDOG: Final = 15.0
_RECONCILE_MESSAGES: Final = 100
_ALPHABET: Final = string.ascii_letters + string.digits


@final
@attrs.frozen
class OpenCodeConfig:
    """How the engine starts its servers.

    `command` is the binary (settings: `KIMAKI_OPENCODE_PATH`), possibly with leading arguments;
    ` serve --port 0 --hostname 127.0.0.1` is appended. `home_for`, when given, names the
    HOME (and XDG dirs) of the server of a directory; otherwise the person's own apply, so
    their OpenCode providers and logins work. `extra_env` is added to the allowlisted
    environment (e.g. `OPENCODE_CONFIG_CONTENT`).
    """

    command: tuple[str, ...] = ("opencode",)
    idle_timeout: float = 30 * 60.0
    ready_timeout: float = 30.0
    stop_grace: float = 5.0
    policy: RestartPolicy = attrs.field(factory=RestartPolicy)
    home_for: Callable[[Path], Path] | None = None
    extra_env: Mapping[str, str] = attrs.field(factory=dict)
    passthrough_env: tuple[str, ...] = ()
    stream_backoff: tuple[float, float] = (0.5, 30.0)


_last_ms = 0
_counter = 0


def new_message_id() -> str:
    """An id in OpenCode's ascending format: 48 bits of (ms << 12 | counter), 14 random chars.

    OpenCode orders a session's messages by id, so ours must sort after every message the
    server made before it: the counter starts high in its millisecond.
    """
    global _last_ms, _counter
    now = max(int(time.time() * 1000), _last_ms)
    if now != _last_ms:
        _last_ms, _counter = now, 0x800
    else:
        _counter += 1
    value = (now * 0x1000 + min(_counter, 0xFFF)) & 0xFFFF_FFFF_FFFF
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(14))
    return f"msg_{value:012x}{suffix}"


@final
class OpenCodeConnection:
    """A ready server: its client, and whether its event stream is connected."""

    def __init__(self, client: OpenCodeClient, process: AgentProcess, version: str) -> None:
        self.client = client
        self.process = process
        self.version = version
        self._stream_ready = trio.Event()
        self.context_limits: dict[tuple[str, str], int] = {}

    @property
    def stream_ready(self) -> bool:
        return self._stream_ready.is_set()

    async def wait_stream_ready(self) -> None:
        """Prompts wait for the stream, or the first events of their turn would be missed."""
        with trio.move_on_after(_STREAM_WAIT):
            await self._stream_ready.wait()
            return
        raise EngineUnavailableError("the OpenCode event stream did not connect")

    def _stream_connected(self) -> None:
        self._stream_ready.set()

    def _stream_lost(self) -> None:
        if self._stream_ready.is_set():
            self._stream_ready = trio.Event()

    def context_limit(self, provider_id: str | None, model_id: str | None) -> int | None:
        if provider_id is None or model_id is None:
            return None
        return self.context_limits.get((provider_id, model_id))


@final
class _Directory:
    """One project directory: its supervised server (the hooks) and its open sessions."""

    def __init__(self, engine: OpenCodeEngine, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self.config = engine.config
        self.sessions: dict[str, OpenCodeSession] = {}
        self.malformed_events = 0
        self._password = ""
        self._rng = random.Random()
        self.server: AgentServer[OpenCodeConnection] = AgentServer(
            f"opencode[{directory}]",
            self,
            policy=self.config.policy,
            idle_timeout=self.config.idle_timeout,
            ready_timeout=self.config.ready_timeout,
            stop_grace=self.config.stop_grace,
        )

    # ------------------------------------------------------------------ ServerHooks

    def launch_spec(self) -> LaunchSpec:
        self._password = secrets.token_urlsafe(32)
        register_secret(self._password)
        home = self.config.home_for(self.directory) if self.config.home_for else None
        env = child_environment(
            home=home,
            passthrough=self.config.passthrough_env,
            extra={
                **self.config.extra_env,
                "OPENCODE_SERVER_PASSWORD": self._password,
                "OPENCODE_DISABLE_MODELS_FETCH": "1",
            },
        )
        argv = (*self.config.command, "serve", "--port", "0", "--hostname", "127.0.0.1")
        return LaunchSpec(argv=argv, cwd=self.directory, env=env)

    async def connect(self, process: AgentProcess, nursery: trio.Nursery) -> OpenCodeConnection:
        url = await _read_listening_url(process)
        client = OpenCodeClient(url, self._password)
        try:
            version = await _wait_healthy(client)
        except BaseException:
            with trio.CancelScope(shield=True):
                await client.aclose()
            raise
        return OpenCodeConnection(client, process, version)

    async def serve(self, connection: OpenCodeConnection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, connection.process, self.server.name)
            nursery.start_soon(self._load_context_limits, connection)
            await self._pump(connection, nursery)

    async def disconnect(self, connection: OpenCodeConnection) -> None:
        connection._stream_lost()
        await connection.client.aclose()

    def crashed(self, message: str, *, gave_up: bool) -> None:
        for session in list(self.sessions.values()):
            session._server_crashed(message, gave_up=gave_up)

    # ------------------------------------------------------------------ events

    async def _pump(self, connection: OpenCodeConnection, nursery: trio.Nursery) -> None:
        initial, cap = self.config.stream_backoff
        backoff = Backoff(initial, cap, jitter=0.25)
        failures = 0
        while True:
            parser = SSEParser()
            connected = False

            def on_event(event: SSEEvent) -> None:
                nonlocal connected
                if self._dispatch(connection, event, nursery):
                    connected = True

            try:
                await connection.client.stream_events(on_event, parser)
                log.info("%s: event stream ended; reconnecting", self.server.name)
            except EngineError as exc:
                log.warning("%s: %s; reconnecting", self.server.name, exc)
            connection._stream_lost()
            failures = 1 if connected else failures + 1
            if parser.dropped_lines:
                log.warning(
                    "%s: dropped %d over-long SSE lines", self.server.name, parser.dropped_lines
                )
            if parser.retry is not None:  # the server said how long to wait
                wait = min(cap, parser.retry / 1000)
            else:
                wait = backoff.delay(failures, self._rng.random())
            await trio.sleep(wait)

    def _dispatch(
        self, connection: OpenCodeConnection, event: SSEEvent, nursery: trio.Nursery
    ) -> bool:
        """Route one SSE event; True when it was the stream's `server.connected`."""
        try:
            wire = decode_event(event.data)
        except MalformedEvent as exc:
            self.malformed_events += 1
            log.warning("%s: skipping a malformed event: %s", self.server.name, exc)
            return False
        if wire is None or isinstance(wire, ServerHeartbeat):
            return False
        if isinstance(wire, ServerConnected):
            connection._stream_connected()
            for open_session in self.sessions.values():
                if open_session.turn_id is not None:
                    nursery.start_soon(open_session._reconcile)
            return True
        session_id = getattr(wire, "session_id", None)
        target = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if target is not None:
            target._handle(wire)
        return False

    async def _load_context_limits(self, connection: OpenCodeConnection) -> None:
        try:
            body = await connection.client.providers()
        except EngineError as exc:
            log.debug("%s: no model limits: %s", self.server.name, exc)
            return
        for provider in _providers(body):
            for model in provider.models:
                if model.context_limit:
                    connection.context_limits[(provider.provider_id, model.id)] = (
                        model.context_limit
                    )


async def _read_listening_url(process: AgentProcess) -> str:
    """The URL from `opencode server listening on http://127.0.0.1:PORT` on stdout."""
    stdout = process.stdout
    if stdout is None:
        raise EngineUnavailableError("the server has no stdout")
    buffer = b""
    while True:
        data = await stdout.receive_some(4096)
        if not data:
            raise EngineUnavailableError("the server closed its output before listening")
        buffer += data
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").strip()
            if _LISTENING in line:
                return line.split(_LISTENING, 1)[1].split()[0].rstrip("/")
            if line:
                log.debug("opencode: %s", line)
        if len(buffer) > 65536:
            buffer = buffer[-4096:]


async def _wait_healthy(client: OpenCodeClient) -> str:
    delay = 0.02
    while True:
        try:
            return await client.health()
        except EngineError as exc:
            log.debug("not healthy yet: %s", exc)
        await trio.sleep(delay)
        delay = min(0.5, delay * 2)


async def _drain(process: AgentProcess, name: str) -> None:
    """Keep reading stdout after the listening line, so a chatty server never blocks on it."""
    stdout = process.stdout
    if stdout is None:
        return
    try:
        while data := await stdout.receive_some(65536):
            log.debug("%s stdout: %s", name, data.decode("utf-8", "replace").rstrip())
    except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
        return


def _providers(body: Mapping[str, Any]) -> list[ProviderModels]:
    defaults = body.get("default")
    defaults = defaults if isinstance(defaults, dict) else {}
    result = []
    providers = body.get("providers")
    for provider in providers if isinstance(providers, list) else []:
        if not isinstance(provider, dict) or not isinstance(provider.get("id"), str):
            continue
        models = []
        raw_models = provider.get("models")
        for key, model in (raw_models if isinstance(raw_models, dict) else {}).items():
            if not isinstance(model, dict):
                continue
            limit = model.get("limit")
            context = limit.get("context") if isinstance(limit, dict) else None
            models.append(
                ModelInfo(
                    id=str(model.get("id", key)),
                    name=str(model.get("name", key)),
                    context_limit=int(context) if isinstance(context, int | float) else None,
                )
            )
        provider_id = provider["id"]
        default = defaults.get(provider_id)
        result.append(
            ProviderModels(
                provider_id=provider_id,
                name=str(provider.get("name", provider_id)),
                models=tuple(models),
                default_model=default if isinstance(default, str) else None,
            )
        )
    return result


@final
class OpenCodeSession:
    """One OpenCode session (implements `kimaki.agents.EngineSession`)."""

    def __init__(self, directory: _Directory, info: SessionInfo, nursery: trio.Nursery) -> None:
        self._dir = directory
        self._nursery = nursery
        self.session_id = info.id
        self.directory = directory.directory
        self.events = EventQueue()
        self._mapper = SessionMapper(
            info.id,
            title=info.title,
            directory=str(directory.directory),
            context_limits=self._context_limit,
        )
        self._prompt_lock = trio.Lock()
        self._turn_over = trio.Event()
        self._holding = False
        self._reconciling = False
        self._closed = False

    @property
    def title(self) -> str:
        return self._mapper.title

    @property
    def turn_id(self) -> str | None:
        return self._mapper.turn_id

    def _context_limit(self, provider_id: str | None, model_id: str | None) -> int | None:
        connection = self._dir.server.current
        return connection.context_limit(provider_id, model_id) if connection else None

    # ------------------------------------------------------------------ the interface

    async def prompt(
        self,
        text: str,
        files: Sequence[AttachedFile] = (),
        *,
        model: ModelRef | None = None,
        agent: str | None = None,
    ) -> str:
        async with self._prompt_lock:
            if self._closed:
                raise EngineError("this session was closed")
            if self._mapper.turn_id is not None:
                raise TurnInProgressError("the previous turn is still running")
            connection = await self._dir.server.connection()
            await connection.wait_stream_ready()
            parts = [text_part(text)] if text else []
            parts += [file_part(f) for f in files]
            message_id = new_message_id()
            self._mapper.begin_turn(message_id)
            self._turn_over = trio.Event()
            self._hold()
            try:
                await connection.client.prompt_async(
                    self.session_id, parts, message_id=message_id, model=model, agent=agent
                )
            except BaseException:
                self._mapper.cancel_turn()
                self._release()
                self._turn_over.set()
                raise
            self._nursery.start_soon(self._watch_start, message_id)
            return message_id

    async def abort(self) -> None:
        turn_id = self._mapper.turn_id
        if turn_id is None:
            return
        self._mapper.request_abort()
        turn_over = self._turn_over
        try:
            connection = await self._dir.server.connection()
            await connection.client.abort(self.session_id)
        except EngineError as exc:
            log.warning("abort of %s failed: %s", self.session_id, exc)
        with trio.move_on_after(_ABORT_WAIT):
            await turn_over.wait()
            return
        await self._reconcile()
        if self._mapper.turn_id == turn_id:
            self._emit_all(self._mapper.end_turn("aborted"))

    async def reply_permission(self, request_id: str, reply: PermissionReply) -> None:
        connection = await self._dir.server.connection()
        await connection.client.reply_permission(request_id, reply)

    async def answer_question(self, request_id: str, answers: Sequence[Sequence[str]]) -> None:
        connection = await self._dir.server.connection()
        await connection.client.reply_question(request_id, answers)

    async def reject_question(self, request_id: str) -> None:
        connection = await self._dir.server.connection()
        await connection.client.reject_question(request_id)

    async def aclose(self) -> None:
        self._closed = True
        if self._dir.sessions.get(self.session_id) is self:
            del self._dir.sessions[self.session_id]
        self._release()
        self.events.close()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ internals

    def _hold(self) -> None:
        if not self._holding:
            self._holding = True
            self._dir.server.hold()

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self._dir.server.release()

    def _handle(self, wire: Any) -> None:
        self._emit_all(self._mapper.handle(wire))

    def _emit_all(self, events: list[EngineEvent]) -> None:
        for event in events:
            if isinstance(event, TurnEnded):
                self._release()
                self._turn_over.set()
            self.events.send_nowait(event)

    def _server_crashed(self, message: str, *, gave_up: bool) -> None:
        first_line = message.splitlines()[0] if message else "the agent server stopped"
        self._emit_all(self._mapper.end_turn("error", first_line))
        if gave_up:
            self.events.send_nowait(ServerFailed(message))

    async def _watch_start(self, turn_id: str) -> None:
        await trio.sleep(_START_WATCHDOG)
        if self._mapper.turn_id == turn_id and not self._mapper.turn_confirmed:
            log.warning("%s: turn %s not seen on the stream; asking", self.session_id, turn_id)
            await self._reconcile()

    async def _reconcile(self) -> None:
        """Catch up from the server's state after events may have been missed."""
        turn_id = self._mapper.turn_id
        if turn_id is None or self._reconciling:
            return
        self._reconciling = True
        try:
            connection = await self._dir.server.connection()
            statuses = await connection.client.session_status()
            messages = await connection.client.messages(self.session_id, limit=_RECONCILE_MESSAGES)
        except EngineError as exc:
            log.warning("%s: could not re-read the session: %s", self.session_id, exc)
            return
        finally:
            self._reconciling = False
        if self._mapper.turn_id != turn_id:
            return
        events = self._mapper.replay(messages)
        events += self._mapper.settle(busy=statuses.get(self.session_id) in ("busy", "retry"))
        self._emit_all(events)


@final
class OpenCodeEngine:
    """OpenCode behind the engine interface (implements `kimaki.agents.Engine`)."""

    name: Final = "opencode"

    def __init__(self, nursery: trio.Nursery, config: OpenCodeConfig) -> None:
        self.config = config
        self._nursery = nursery
        self._pool: ServerPool[Path, OpenCodeConnection] = ServerPool(nursery, self._server)
        self._directories: dict[Path, _Directory] = {}

    def _server(self, directory: Path) -> AgentServer[OpenCodeConnection]:
        state = self._directories[directory] = _Directory(self, directory)
        return state.server

    def _directory(self, directory: Path) -> _Directory:
        key = Path(directory).resolve()
        self._pool.get(key)
        return self._directories[key]

    def server(self, directory: Path) -> AgentServer[OpenCodeConnection]:
        """The supervised server of `directory` (created, not started, if new)."""
        return self._directory(directory).server

    async def open_session(
        self, directory: Path, *, resume_id: str | None = None, title: str | None = None
    ) -> OpenCodeSession:
        state = self._directory(directory)
        if resume_id is not None and resume_id in state.sessions:
            return state.sessions[resume_id]
        connection = await state.server.connection()
        if resume_id is not None:
            info = await connection.client.get_session(resume_id)
        else:
            info = await connection.client.create_session(title=title)
        existing = state.sessions.get(info.id)
        if existing is not None:
            return existing
        session = state.sessions[info.id] = OpenCodeSession(state, info, self._nursery)
        return session

    async def list_models(self, directory: Path) -> list[ProviderModels]:
        connection = await self._directory(directory).server.connection()
        return _providers(await connection.client.providers())

    async def list_agents(self, directory: Path) -> list[AgentInfo]:
        connection = await self._directory(directory).server.connection()
        return [
            AgentInfo(
                name=str(agent.get("name")),
                description=str(agent.get("description") or ""),
                primary=agent.get("mode") in ("primary", "all"),
            )
            for agent in await connection.client.agents()
            if isinstance(agent.get("name"), str) and agent.get("hidden") is not True
        ]

    async def list_commands(self, directory: Path) -> list[CommandInfo]:
        connection = await self._directory(directory).server.connection()
        return [
            CommandInfo(str(command["name"]), str(command.get("description") or ""))
            for command in await connection.client.commands()
            if isinstance(command.get("name"), str)
        ]


@asynccontextmanager
async def open_opencode_engine(
    config: OpenCodeConfig | None = None,
) -> AsyncIterator[OpenCodeEngine]:
    """The engine, with every server it starts stopped and reaped when the block exits."""
    async with trio.open_nursery() as nursery:
        engine = OpenCodeEngine(nursery, config or OpenCodeConfig())
        try:
            yield engine
        finally:
            nursery.cancel_scope.cancel()


if TYPE_CHECKING:  # the engine interface is what the rest of the daemon sees: keep it honest

    def _conforms(engine: OpenCodeEngine, session: OpenCodeSession) -> tuple[Engine, EngineSession]:
        return engine, session
