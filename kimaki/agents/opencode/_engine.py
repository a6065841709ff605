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
with one line (a hung server too: see `ProbePolicy`), and so does giving up on the directory.

Servers outlive an in-place restart of the daemon: `handover()` gives up every ready server
without stopping it and describes each (pid, port, password, output pipes) for the store;
`open_opencode_engine(adopt=...)` in the re-executed process checks each with its stored
password and supervises it again, and `OpenCodeSession.resume_turn()` follows a turn that
kept running meanwhile (what the server did during the restart is replayed from its messages).
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import shlex
import string
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, final
from urllib.parse import urlsplit

import attrs
import trio

from kimaki._backoff import Backoff
from kimaki._log import register_secret
from kimaki.agents._directories import (
    DirectoryRegistry,
    Sessions,
    restart_server,
    supervised_server,
)
from kimaki.agents._engine import (
    AgentInfo,
    CommandInfo,
    Engine,
    EngineSession,
    ModelInfo,
    ModelRef,
    PermissionReply,
    ProviderModels,
)
from kimaki.agents._errors import (
    EngineError,
    EngineRequestError,
    EngineUnavailableError,
)
from kimaki.agents._extras import (
    HistoryEntry,
    KnownProjects,
    ServerRestart,
    SessionCatalog,
    SessionCompaction,
    SessionSummary,
    SessionTranscript,
    SessionUndo,
    TerminalAttach,
    UndoResult,
)
from kimaki.agents._handover import AgentServerHandover
from kimaki.agents._mcp import (
    TOOL_SERVER_NAME,
    Grants,
    McpPlan,
    McpProvider,
    ToolCallBoard,
    ToolGrant,
    derived_token,
)
from kimaki.agents._process import AgentProcess, LaunchSpec, child_environment, close_fds
from kimaki.agents._session import SendTurn, TurnRequest, TurnSession
from kimaki.agents._supervisor import AgentServer, ProbePolicy, RestartPolicy
from kimaki.agents.opencode._client import OpenCodeClient, file_part, text_part
from kimaki.agents.opencode._mapping import SessionMapper
from kimaki.agents.opencode._sse import SSEEvent, SSEParser
from kimaki.agents.opencode._wire import (
    MalformedEvent,
    MessageInfo,
    Part,
    PartUpdated,
    ServerConnected,
    ServerHeartbeat,
    SessionInfo,
    TextPart,
    ToolPart,
    WireEvent,
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
_LOST_IN_RESTART: Final = "the agent server stopped while kimaki restarted; the turn did not finish"
ENGINE_NAME: Final = "opencode"
# Compaction is a model call over the whole session: it may take minutes.
_COMPACT_TIMEOUT: Final = 10 * 60.0
_RESTARTED: Final = "the agent server was restarted"
_ALPHABET: Final = string.ascii_letters + string.digits


@final
@attrs.frozen
class OpenCodeConfig:
    """How the engine starts its servers.

    `command` is the binary (settings: `KIMAKI_OPENCODE_PATH`), possibly with leading arguments;
    ` serve --port 0 --hostname 127.0.0.1` is appended. `home_for`, when given, names the
    HOME (and XDG dirs) of the server of a directory; otherwise the person's own apply, so
    their OpenCode providers and logins work. `extra_env` is added to the allowlisted
    environment (e.g. `OPENCODE_CONFIG_CONTENT`). `probe`: how a server in use is checked
    for a hang (its health endpoint); None turns that off. `mcp` and `grants`: the MCP
    servers each server is configured with (kimaki's tool server, the policy's servers behind
    the proxy; see `kimaki.agents.McpProvider`) and the registry its grant goes in;
    `tool_call_wait` bounds how long a tool call waits to be matched to its session.
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
    # Seconds an adopted server (after an in-place restart) has to answer its health check.
    adopt_timeout: float = 5.0
    probe: ProbePolicy | None = attrs.field(factory=ProbePolicy)
    # KIMAKI_AGENT_USER: the OS user the server runs as (None: the daemon's).
    user: str | None = None
    mcp: McpProvider | None = None
    grants: Grants | None = None
    tool_call_wait: float = 10.0


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
class _OpenCodeDirectory:
    """One project directory: its supervised server (the hooks) and its open sessions."""

    def __init__(self, engine: OpenCodeEngine, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self.config = engine.config
        self.sessions: Sessions[OpenCodeSession] = Sessions()
        self.malformed_events = 0
        self._password = ""
        self._url: str | None = None  # of the current or last server
        self._rng = random.Random()
        self.tool_calls = ToolCallBoard()
        self.grant: ToolGrant | None = None  # of the current server's tool server
        self.server: AgentServer[OpenCodeConnection] = supervised_server(
            f"opencode[{directory}]", self, self.config, probe=self.config.probe
        )

    # ------------------------------------------------------------------ ServerHooks

    def launch_spec(self) -> LaunchSpec:
        self._password = secrets.token_urlsafe(32)
        register_secret(self._password)
        home = self.config.home_for(self.directory) if self.config.home_for else None
        extra = dict(self.config.extra_env)
        plan = self._mcp_plan()
        if plan is not None:
            extra["OPENCODE_CONFIG_CONTENT"] = json.dumps(
                with_mcp(extra.get("OPENCODE_CONFIG_CONTENT"), plan)
            )
        env = child_environment(
            home=home,
            passthrough=self.config.passthrough_env,
            extra={
                **extra,
                "OPENCODE_SERVER_PASSWORD": self._password,
                "OPENCODE_DISABLE_MODELS_FETCH": "1",
            },
        )
        argv = (*self.config.command, "serve", "--port", "0", "--hostname", "127.0.0.1")
        return LaunchSpec(
            argv=argv,
            cwd=self.directory,
            env=env,
            setting="KIMAKI_OPENCODE_PATH",
            user=self.config.user,
        )

    def _mcp_plan(self) -> McpPlan | None:
        """In the worker thread `launch_spec` runs in: a grant for the next server (the last
        one's is revoked) and the MCP servers it is configured with."""
        mcp, grants = self.config.mcp, self.config.grants
        if mcp is None or grants is None:
            return None
        self._new_grant(grants)
        assert self.grant is not None
        return trio.from_thread.run(mcp.plan, self.grant)

    def _new_grant(self, grants: Grants) -> None:
        if self.grant is not None:
            grants.revoke(self.grant)
        self.grant = grants.mint(ENGINE_NAME, self.directory, token=derived_token(self._password))

    def _revoke_grant(self) -> None:
        if self.grant is not None and self.config.grants is not None:
            self.config.grants.revoke(self.grant)
        self.grant = None

    async def connect(self, process: AgentProcess, nursery: trio.Nursery) -> OpenCodeConnection:
        if process.adopted:
            # It printed its URL to the previous process; its port came with the handover.
            assert self._url is not None
            url = self._url
        else:
            url = self._url = await _read_listening_url(process)
        client = OpenCodeClient(url, self._password)
        try:
            if process.adopted:
                with trio.move_on_after(self.config.adopt_timeout):
                    version = await _wait_healthy(client)
                    return OpenCodeConnection(client, process, version)
                raise EngineUnavailableError(
                    f"it did not answer {url}/global/health with its password "
                    f"within {self.config.adopt_timeout:.0f} s"
                )
            version = await _wait_healthy(client)
        except BaseException:
            with trio.CancelScope(shield=True):
                await client.aclose()
            raise
        return OpenCodeConnection(client, process, version)

    # ------------------------------------------------------------------ restart

    def adopt(self, handover: AgentServerHandover) -> bool:
        """Supervise the server the previous process image left running; False if it is gone
        (then the next request starts a new one)."""
        try:
            process = AgentProcess.adopt(
                handover.pid,
                started_at=handover.started_at,
                stdout_fd=handover.stdout_fd,
                stderr_fd=handover.stderr_fd,
            )
        except ProcessLookupError as exc:
            log.warning(
                "%s did not survive the restart (%s); a new one starts on the next request",
                self.server.name,
                exc,
            )
            return False
        register_secret(handover.password)
        self._password = handover.password
        if self.config.mcp is not None and self.config.grants is not None:
            self._new_grant(self.config.grants)  # the one its tool server holds
        self._url = f"http://127.0.0.1:{handover.port}"
        self.server.adopt(process)
        return True

    async def handover(self) -> AgentServerHandover | None:
        detached = await self.server.handover()
        if detached is None:
            return None
        port = urlsplit(self._url or "").port
        if port is None:  # cannot happen for a ready server; be safe rather than adopt blind
            close_fds(detached.stdout_fd, detached.stderr_fd)
            return None
        return AgentServerHandover(
            engine=ENGINE_NAME,
            directory=self.directory,
            pid=detached.process.pid,
            port=port,
            password=self._password,
            started_at=detached.process.started_at,
            stdout_fd=detached.stdout_fd,
            stderr_fd=detached.stderr_fd,
        )

    async def serve(self, connection: OpenCodeConnection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, connection.process, self.server.name)
            nursery.start_soon(self._load_context_limits, connection)
            await self._pump(connection, nursery)

    async def disconnect(self, connection: OpenCodeConnection) -> None:
        self._revoke_grant()  # its tool server ended with it
        connection._stream_lost()
        await connection.client.aclose()

    def crashed(self, message: str, *, gave_up: bool) -> None:
        self.sessions.server_lost(message)

    async def probe(self, connection: OpenCodeConnection) -> None:
        """The health endpoint, with the server's password (a hung server does not answer)."""
        await connection.client.health()

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
        self.server.heard()
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
            for open_session in self.sessions:
                if open_session.turn_id is not None:
                    nursery.start_soon(open_session._reconcile)
            return True
        session_id = getattr(wire, "session_id", None)
        target = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if target is not None:
            target._handle(wire)
            if isinstance(wire, PartUpdated) and isinstance(wire.part, ToolPart):
                self._note_tool_call(wire.part, target.session_id)
        return False

    def _note_tool_call(self, part: ToolPart, session_id: str) -> None:
        """Keep the board of kimaki's tool calls running in this server's sessions."""
        if not part.tool.startswith(TOOL_SERVER_NAME + "_"):
            return
        if part.status == "running":
            self.tool_calls.running(part.id, part.tool, part.input, session_id)
        elif part.status in ("completed", "error"):
            self.tool_calls.ended(part.id)

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
class OpenCodeSession(TurnSession[_OpenCodeDirectory, SessionMapper]):
    """One OpenCode session (implements `kimaki.agents.EngineSession`)."""

    def __init__(
        self, directory: _OpenCodeDirectory, info: SessionInfo, nursery: trio.Nursery
    ) -> None:
        mapper = SessionMapper(
            info.id,
            title=info.title,
            directory=str(directory.directory),
            context_limits=self._context_limit,
        )
        super().__init__(
            directory,
            info.id,
            mapper,
            touch=False,
            abort_wait=_ABORT_WAIT,
            lost_fallback="the agent server stopped",
        )
        self._nursery = nursery
        self._reconciling = False

    def _context_limit(self, provider_id: str | None, model_id: str | None) -> int | None:
        connection = self._dir.server.current
        return connection.context_limit(provider_id, model_id) if connection else None

    # ------------------------------------------------------------------ the interface

    def new_turn_id(self) -> str:
        # The turn's id is the id of the person's message in the session.
        return new_message_id()

    async def resume_turn(self, turn_id: str) -> bool:
        """Follow turn `turn_id`, started by the daemon before it restarted.

        Its events then arrive on `events` as for a turn `prompt()` started, ending with its
        `TurnEnded`: first what the server did so far, replayed from its messages (a renderer
        skips the part ids it already posted), then the live stream. When the server that ran
        the turn did not survive the restart, what it finished is replayed and the turn ends
        with an error. Returns False when the session has no message of the turn (the daemon
        was killed before the prompt was sent). Raises `TurnInProgressError` while another
        turn runs here.
        """
        async with self._prompt_lock:
            self._check_idle()
            connection = await self._stream_connection()
            messages = await connection.client.messages(self.session_id, limit=_RECONCILE_MESSAGES)
            if not any(info.id == turn_id or info.parent_id == turn_id for info, _ in messages):
                log.info("%s: turn %s never reached the agent", self.session_id, turn_id)
                return False
            self._mapper.begin_turn(turn_id)
            self._turns.begin()
        log.info("%s: following turn %s after the restart", self.session_id, turn_id)
        await self._reconcile(lost=None if connection.process.adopted else _LOST_IN_RESTART)
        return True

    async def reply_permission(self, request_id: str, reply: PermissionReply) -> None:
        connection = await self._dir.server.connection()
        await connection.client.reply_permission(request_id, reply)

    async def answer_question(self, request_id: str, answers: Sequence[Sequence[str]]) -> None:
        connection = await self._dir.server.connection()
        await connection.client.reply_question(request_id, answers)

    async def reject_question(self, request_id: str) -> None:
        connection = await self._dir.server.connection()
        await connection.client.reject_question(request_id)

    # ------------------------------------------------------------------ the turn's hooks

    async def _prepare_turn(self, request: TurnRequest) -> SendTurn:
        connection = await self._stream_connection()
        parts = [text_part(request.text)] if request.text else []
        parts += [file_part(f) for f in request.files]
        model, agent = request.model, request.agent

        async def send(message_id: str) -> None:
            # Never abandoned half-way: a caller cancelled meanwhile (a new message, an
            # in-place restart) waits for the server's answer (the client's timeouts bound
            # it), so the prompt is either the server's, with its turn id returned, or was
            # not sent. Nothing after it checkpoints before the id is returned.
            with trio.CancelScope(shield=True):
                await connection.client.prompt_async(
                    self.session_id, parts, message_id=message_id, model=model, agent=agent
                )

        return send

    def _turn_sent(self, turn_id: str) -> None:
        self._nursery.start_soon(self._watch_start, turn_id)

    async def _request_abort(self) -> None:
        try:
            connection = await self._dir.server.connection()
            await connection.client.abort(self.session_id)
        except EngineError as exc:
            log.warning("abort of %s failed: %s", self.session_id, exc)

    async def _abort_unanswered(self) -> None:
        await self._reconcile()

    # ------------------------------------------------------------------ internals

    async def _stream_connection(self) -> OpenCodeConnection:
        """The connection a turn runs on, its event stream up (or the turn's first events
        would be missed)."""
        connection = await self._dir.server.connection()
        await connection.wait_stream_ready()
        return connection

    def _handle(self, wire: WireEvent) -> None:
        self._emit_all(self._mapper.handle(wire))

    async def _watch_start(self, turn_id: str) -> None:
        await trio.sleep(_START_WATCHDOG)
        if self._mapper.turn_id == turn_id and not self._mapper.turn_confirmed:
            log.warning("%s: turn %s not seen on the stream; asking", self.session_id, turn_id)
            await self._reconcile()

    async def _reconcile(self, *, lost: str | None = None) -> None:
        """Catch up from the server's state after events may have been missed.

        `lost`: the server that ran the turn is gone, so an unfinished turn ends with this
        error instead of waiting.
        """
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
        busy = statuses.get(self.session_id) in ("busy", "retry")
        events += self._mapper.settle(busy=busy, lost=lost)
        self._emit_all(events)


@final
class OpenCodeEngine:
    """OpenCode behind the engine interface (implements `kimaki.agents.Engine`)."""

    name: Final = "opencode"

    def __init__(self, nursery: trio.Nursery, config: OpenCodeConfig) -> None:
        self.config = config
        self._nursery = nursery
        self._directories: DirectoryRegistry[_OpenCodeDirectory] = DirectoryRegistry(
            nursery, lambda directory: _OpenCodeDirectory(self, directory)
        )

    async def handover(self) -> list[AgentServerHandover]:
        """Give up every ready server without stopping it, for an in-place restart.

        Afterwards the engine serves no more requests (they fail with
        `EngineUnavailableError`); servers that were not ready are stopped when the engine's
        block exits. The fds in the records are close-on-exec duplicates: make them
        inheritable just before the exec (`kimaki._restart.exec_self` does).
        """
        handovers: list[AgentServerHandover] = []

        async def one(state: _OpenCodeDirectory) -> None:
            handover = await state.handover()
            if handover is not None:
                handovers.append(handover)

        async with trio.open_nursery() as nursery:
            for state in self._directories.states():
                nursery.start_soon(one, state)
        return sorted(handovers, key=lambda h: str(h.directory))

    async def stop_servers(self) -> None:
        """Stop every running server and wait for each (an orderly shutdown)."""
        await self._directories.stop_all()

    def server(self, directory: Path) -> AgentServer[OpenCodeConnection]:
        """The supervised server of `directory` (created, not started, if new)."""
        return self._directory(directory).server

    def adopt(self, handovers: Iterable[AgentServerHandover]) -> int:
        """Supervise the servers the previous process image handed over; returns how many
        were alive. Records of other engines are ignored (their owner closes their fds)."""
        adopted = 0
        for handover in handovers:
            if handover.engine != ENGINE_NAME:
                continue
            adopted += self._directory(handover.directory).adopt(handover)
        return adopted

    def _directory(self, directory: Path) -> _OpenCodeDirectory:
        return self._directories.get(directory)

    async def tool_call_session(
        self, grant: ToolGrant, tool: str, arguments: Mapping[str, Any]
    ) -> str | None:
        """Which session of `grant`'s server is calling kimaki's `tool` (`ToolCallOwners`)."""
        state = self._directory(grant.directory)
        if state.grant is not grant:
            return None  # a grant of a server that has since ended
        return await state.tool_calls.claim(
            f"{TOOL_SERVER_NAME}_{tool}", arguments, within=self.config.tool_call_wait
        )

    async def _client(self, directory: Path) -> OpenCodeClient:
        """The client of the server of `directory`, started if need be."""
        return (await self._directory(directory).server.connection()).client

    async def open_session(
        self, directory: Path, *, resume_id: str | None = None, title: str | None = None
    ) -> OpenCodeSession:
        state = self._directory(directory)

        async def opener(resume_id: str | None) -> OpenCodeSession:
            client = (await state.server.connection()).client
            if resume_id is not None:
                info = await client.get_session(resume_id)
            else:
                info = await client.create_session(title=title)
            return OpenCodeSession(state, info, self._nursery)

        return await state.sessions.open(resume_id, opener)

    async def list_models(self, directory: Path) -> list[ProviderModels]:
        return _providers(await (await self._client(directory)).providers())

    async def list_agents(self, directory: Path) -> list[AgentInfo]:
        client = await self._client(directory)
        return [
            AgentInfo(
                name=str(agent.get("name")),
                description=str(agent.get("description") or ""),
                primary=agent.get("mode") in ("primary", "all"),
            )
            for agent in await client.agents()
            if isinstance(agent.get("name"), str) and agent.get("hidden") is not True
        ]

    async def list_commands(self, directory: Path) -> list[CommandInfo]:
        client = await self._client(directory)
        return [
            CommandInfo(str(command["name"]), str(command.get("description") or ""))
            for command in await client.commands()
            if isinstance(command.get("name"), str)
        ]

    # ------------------------------------------------------------------ capabilities
    # (kimaki.agents._extras: what the bot's commands use beyond the engine interface)

    async def list_sessions(
        self, directory: Path, *, search: str = "", limit: int = 25
    ) -> list[SessionSummary]:
        state = self._directory(directory)
        client = (await state.server.connection()).client
        listed = await client.list_sessions(
            directory=str(state.directory), roots=True, search=search, limit=limit
        )
        return [
            SessionSummary(info.id, info.title, updated)
            for info, updated in listed
            if info.parent_id is None
        ][:limit]

    async def recent_messages(
        self, directory: Path, session_id: str, *, limit: int = 10
    ) -> list[HistoryEntry]:
        client = await self._client(directory)
        # Tool-only steps have no text: read more messages than are shown.
        messages = await client.messages(session_id, limit=limit * 4)
        entries: list[HistoryEntry] = []
        for info, parts in messages:
            text = _message_text(parts)
            if not text or info.role not in ("user", "assistant"):
                continue
            role: Literal["user", "assistant"] = "user" if info.role == "user" else "assistant"
            if entries and entries[-1].role == role and role == "assistant":
                # One answer spans several model steps (messages): show it as one.
                entries[-1] = HistoryEntry(role, entries[-1].text + "\n\n" + text)
            else:
                entries.append(HistoryEntry(role, text))
        return entries[-limit:]

    async def undo(self, directory: Path, session_id: str) -> UndoResult:
        """Revert to before the last person's message still shown (as OpenCode's TUI does)."""
        client = await self._client(directory)
        await self._stop_turn(client, session_id)
        point = await client.revert_point(session_id)
        users = await self._user_messages(client, session_id)
        earlier = [(m, parts) for m, parts in users if point is None or m.id < point]
        if not earlier:
            return UndoResult(False)
        message, parts = earlier[-1]
        await client.revert(session_id, message.id)
        return UndoResult(True, _message_text(parts))

    async def redo(self, directory: Path, session_id: str) -> UndoResult:
        """One `undo` back: revert to the next person's message, or restore everything."""
        client = await self._client(directory)
        point = await client.revert_point(session_id)
        if point is None:
            return UndoResult(False)
        users = await self._user_messages(client, session_id)
        later = [(m, parts) for m, parts in users if m.id > point]
        if later:
            message, parts = later[0]
            await client.revert(session_id, message.id)
            return UndoResult(True, _message_text(parts))
        await client.unrevert(session_id)
        return UndoResult(True)

    async def _user_messages(
        self, client: OpenCodeClient, session_id: str
    ) -> list[tuple[MessageInfo, list[Part]]]:
        messages = await client.messages(session_id)
        return sorted(
            ((info, parts) for info, parts in messages if info.role == "user"),
            key=lambda pair: pair[0].id,
        )

    async def _stop_turn(self, client: OpenCodeClient, session_id: str) -> None:
        statuses = await client.session_status()
        if statuses.get(session_id) in ("busy", "retry"):
            await client.abort(session_id)

    async def compact(
        self, directory: Path, session_id: str, *, model: ModelRef | None = None
    ) -> None:
        client = await self._client(directory)
        if model is None:
            # OpenCode needs a model to summarise with: the one the session last used.
            for info, _parts in reversed(await client.messages(session_id, limit=50)):
                if info.role == "assistant" and info.provider_id and info.model_id:
                    model = ModelRef(info.provider_id, info.model_id)
                    break
        if model is None:
            raise EngineRequestError(
                "this session has no model yet: send it a message first, or pick one with /model"
            )
        await client.summarize(session_id, model, request_timeout=_COMPACT_TIMEOUT)

    def server_directories(self) -> list[Path]:
        return self._directories.running()

    def retire_server(self, directory: Path) -> None:
        self._directories.retire(directory)

    async def restart_server(self, directory: Path) -> None:
        state = self._directory(directory)
        # A stop on request is not a crash: end the running turns here, or they would wait
        # for events from a process that is gone.
        await restart_server(
            state.server, before_stop=lambda: state.sessions.server_lost(_RESTARTED)
        )

    def attach_command(self, directory: Path, session_id: str) -> str:
        command = shlex.join((*self.config.command, "--session", session_id))
        return f"cd {shlex.quote(str(directory))} && {command}"

    async def known_projects(self) -> list[Path]:
        """From any server already running: starting one to answer would be too slow."""
        for state in self._directories.states():
            connection = state.server.current
            if connection is None:
                continue
            try:
                worktrees = await connection.client.projects()
            except EngineError as exc:
                log.debug("%s: no project list: %s", state.server.name, exc)
                continue
            return [Path(worktree) for worktree in worktrees if worktree not in ("", "/")]
        return []


@asynccontextmanager
async def open_opencode_engine(
    config: OpenCodeConfig | None = None,
    *,
    adopt: Iterable[AgentServerHandover] = (),
) -> AsyncIterator[OpenCodeEngine]:
    """The engine, with every server it starts stopped and reaped when the block exits
    (except those given up by `handover()`).

    `adopt`: the servers the daemon's previous process image handed over (the app reads them
    back from the store); each one alive is checked and supervised again.
    """
    async with trio.open_nursery() as nursery:
        engine = OpenCodeEngine(nursery, config or OpenCodeConfig())
        engine.adopt(adopt)
        try:
            yield engine
        finally:
            nursery.cancel_scope.cancel()


def _message_text(parts: Sequence[Part]) -> str:
    """The text a person would read in a message (no tool output, no injected context)."""
    texts = [p.text.strip() for p in parts if isinstance(p, TextPart) and not p.synthetic]
    return "\n\n".join(text for text in texts if text)


if TYPE_CHECKING:  # the engine interface is what the rest of the daemon sees: keep it honest

    def _conforms(engine: OpenCodeEngine, session: OpenCodeSession) -> tuple[Engine, EngineSession]:
        return engine, session

    def _capable(
        engine: OpenCodeEngine,
    ) -> tuple[
        SessionCatalog,
        SessionTranscript,
        SessionUndo,
        SessionCompaction,
        ServerRestart,
        TerminalAttach,
        KnownProjects,
    ]:
        return engine, engine, engine, engine, engine, engine, engine


def with_mcp(content: str | None, plan: McpPlan) -> dict[str, Any]:
    """An `OPENCODE_CONFIG_CONTENT` with `plan`'s MCP servers, over `content` (the configuration
    given in settings, if any). OpenCode merges it over the person's own configuration, so the
    servers from there that the policy does not enable are named again, switched off."""
    config: dict[str, Any] = json.loads(content) if content else {}
    entries: dict[str, Any] = dict(config.get("mcp") or {})
    for name, raw in plan.switched_off.items():
        entries[name] = {**raw, "enabled": False}
    for server in plan.servers:
        if server.transport == "stdio":
            entries[server.name] = {
                "type": "local",
                "command": [server.command, *server.args],
                "environment": dict(server.env),
                "enabled": True,
            }
        else:
            entries[server.name] = {
                "type": "remote",
                "url": server.url,
                "headers": dict(server.headers),
                "enabled": True,
            }
    config["mcp"] = entries
    return config
