"""The ACP engine: one supervised agent process per project directory, spoken to over stdio.

```
open_acp_engine(AcpConfig(agent=...)) (owns the engine nursery; engine name `acp:<agent>`)
└─ ServerPool: AgentServer per directory (kimaki.agents._supervisor)
     process: the agent's command, cwd = directory, its runtime home, allowlisted environment
     connect: JSON-RPC reader in the process nursery, then `initialize` (protocol 1)
     serve: until the agent closes its output
     per session (AcpSession): `session/new` | `session/resume` | `session/load`, then turns:
        prompt() ─► `session/prompt` (a task in the process nursery; returns once written)
                    `session/update`s ─► decoded (_wire) ─► UpdateMapper ─► EventQueue
                    the answer's stopReason ─► TurnEnded (after the updates before it)
        abort()  ─► `session/cancel`; pending permission requests answered `cancelled`
        agent requests: `session/request_permission` ─► PermissionRequested, answered by
                    reply_permission(); `fs/*` inside the directory; anything else: not found
```

Sessions outlive processes when the agent can resume them: after a crash, a restart or an idle
stop, the next use of a session resumes it in the new process (`session/resume` when the agent
advertises it, else `session/load`, whose replayed history is not shown again). A crash ends the
running turn with one line, and so does giving up on the directory.

What we tell the agent we can do is what we do: `fs.readTextFile`/`writeTextFile` (when
`serve_files`), no terminals. ACP has no questions: `answer_question`/`reject_question` raise
`EngineRequestError`.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, final
from urllib.parse import quote

import attrs
import trio

from kimaki._version import __version__
from kimaki.agents._directories import (
    DirectoryRegistry,
    Sessions,
    restart_server,
    supervised_server,
)
from kimaki.agents._engine import (
    AgentInfo,
    AttachedFile,
    CommandInfo,
    Engine,
    EngineSession,
    ModelRef,
    PermissionReply,
    ProviderModels,
)
from kimaki.agents._errors import (
    AgentLoginRequiredError,
    EngineRequestError,
    EngineUnavailableError,
    SessionNotFoundError,
    login_fix,
)
from kimaki.agents._events import (
    PermissionRequested,
    PermissionResolved,
    TurnEnded,
)
from kimaki.agents._extras import SessionSummary
from kimaki.agents._mcp import Grants, McpProvider, McpServer, ToolGrant
from kimaki.agents._process import AgentProcess, LaunchSpec
from kimaki.agents._session import SendTurn, TurnRequest, TurnSession
from kimaki.agents._supervisor import AgentServer, RestartPolicy
from kimaki.agents.acp._agents import AgentCommand
from kimaki.agents.acp._files import FileRequestError, read_text, write_text
from kimaki.agents.acp._jsonrpc import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    ConnectionClosedError,
    JsonRpcConnection,
    JsonRpcError,
)
from kimaki.agents.acp._mapping import Catalog, UpdateMapper, stop_reason, tool_summary
from kimaki.agents.acp._wire import (
    AvailableCommandsUpdate,
    EmptyAnswer,
    Implementation,
    InitializeResult,
    JsonValue,
    MalformedMessage,
    PermissionOption,
    PermissionRequest,
    PromptResult,
    ReadTextFile,
    SessionInfo,
    SessionList,
    SessionNotification,
    SessionState,
    SessionUpdate,
    WriteTextFile,
    auth_methods,
    decode,
    decode_answer,
)

__all__ = [
    "PROTOCOL_VERSION",
    "AcpConfig",
    "AcpConnection",
    "AcpEngine",
    "AcpSession",
    "AgentCapabilities",
    "McpServer",
    "open_acp_engine",
]

log = logging.getLogger("kimaki.acp")

T = TypeVar("T")

PROTOCOL_VERSION: Final = 1
AUTH_REQUIRED: Final = -32000
_EXIT_AFTER_EOF: Final = 2.0
_COMMANDS_WAIT: Final = 2.0
_LIST_PAGES: Final = 10
_ALLOW: Final[Mapping[str, tuple[str, ...]]] = {
    "once": ("allow_once", "allow_always"),
    "always": ("allow_always", "allow_once"),
    "reject": ("reject_once", "reject_always"),
}


@final
@attrs.frozen
class AcpConfig:
    """How the engine starts its agent (one engine per agent; see `resolve_agent`).

    `extra_env` is added to the agent's own environment (e.g. `OPENCODE_CONFIG_CONTENT`).
    `mcp_servers` are given to every session, or computed per directory; `mcp` adds the
    servers of the daemon's MCP policy to each session, with a grant minted for that session
    in `grants` (revoked when the session closes). `abort_wait` bounds
    how long `abort()` waits for the agent to end the turn before ending it here.
    """

    agent: AgentCommand
    idle_timeout: float = 30 * 60.0
    ready_timeout: float = 30.0
    stop_grace: float = 5.0
    policy: RestartPolicy = attrs.field(factory=RestartPolicy)
    extra_env: Mapping[str, str] = attrs.field(factory=dict)
    mcp_servers: Sequence[McpServer] | Callable[[Path], Sequence[McpServer]] = ()
    serve_files: bool = True
    abort_wait: float = 10.0
    # KIMAKI_AGENT_USER: the OS user the agent runs as (None: the daemon's).
    user: str | None = None
    mcp: McpProvider | None = None
    grants: Grants | None = None


@final
@attrs.frozen
class AgentCapabilities:
    """What the agent said about itself in `initialize`."""

    protocol_version: int
    name: str = ""
    version: str = ""
    load_session: bool = False
    resume: bool = False
    list_sessions: bool = False
    image: bool = False
    embedded_context: bool = False
    mcp_http: bool = False
    mcp_sse: bool = False
    auth_methods: tuple[str, ...] = ()

    @classmethod
    def of(cls, answer: InitializeResult) -> AgentCapabilities:
        caps = answer.agent_capabilities
        session = caps.session_capabilities
        info = answer.agent_info or Implementation()
        return cls(
            protocol_version=answer.protocol_version,
            name=info.name,
            version=info.version,
            load_session=caps.load_session,
            resume=session.resume is not None,
            list_sessions=session.list is not None,
            image=caps.prompt_capabilities.image,
            embedded_context=caps.prompt_capabilities.embedded_context,
            mcp_http=caps.mcp_capabilities.http,
            mcp_sse=caps.mcp_capabilities.sse,
            auth_methods=tuple(method.label for method in answer.auth_methods),
        )


def _session_summary(info: SessionInfo) -> SessionSummary:
    updated = 0.0
    if info.updated_at is not None:
        with suppress(ValueError):
            updated = datetime.datetime.fromisoformat(info.updated_at).timestamp()
    return SessionSummary(info.session_id, info.title or "", updated)


@final
class AcpConnection:
    """A ready agent process: its JSON-RPC connection and what it can do."""

    def __init__(self, directory: _AcpDirectory, process: AgentProcess, nursery: trio.Nursery):
        if process.stdin is None or process.stdout is None:
            raise EngineUnavailableError("the agent has no stdin/stdout")
        self.process = process
        self.nursery = nursery
        self.capabilities = AgentCapabilities(PROTOCOL_VERSION)
        self._directory = directory
        self.rpc = JsonRpcConnection(
            process.stdin,
            process.stdout,
            on_request=self._on_request,
            on_notification=self._on_notification,
        )
        self.closed = trio.Event()

    async def run_rpc(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.rpc.run(task_status=task_status)
        finally:
            self.closed.set()

    async def _on_request(self, method: str, params: object) -> JsonValue:
        return await self._directory.agent_request(self, method, params)

    async def _on_notification(self, method: str, params: object) -> None:
        self._directory.agent_notification(method, params)
        await trio.lowlevel.checkpoint()


@attrs.define
class _PendingPermission:
    options: tuple[PermissionOption, ...]
    done: trio.Event = attrs.Factory(trio.Event)
    option_id: str | None = None

    def choose(self, reply: PermissionReply | None) -> None:
        if self.done.is_set():
            return
        for kind in _ALLOW.get(reply or "", ()):
            for option in self.options:
                if option.kind == kind:
                    self.option_id = option.option_id
                    break
            if self.option_id is not None:
                break
        self.done.set()


@final
class _AcpDirectory:
    """One project directory: its supervised agent process (the hooks) and its sessions."""

    def __init__(self, engine: AcpEngine, directory: Path) -> None:
        self.engine = engine
        self.config = engine.config
        self.agent = engine.config.agent
        self.directory = directory
        self.sessions: Sessions[AcpSession] = Sessions()
        self.catalog = Catalog(self.agent.name)
        self._loading: set[str] = set()
        self._probed: AcpConnection | None = None
        self._probe_lock = trio.Lock()
        self._commands_seen = trio.Event()
        self.server: AgentServer[AcpConnection] = supervised_server(
            f"acp:{self.agent.name}[{directory}]", self, self.config
        )

    # ------------------------------------------------------------------ ServerHooks

    def launch_spec(self) -> LaunchSpec:
        env = self.agent.environment(self.config.extra_env)
        return LaunchSpec(
            argv=self.agent.argv,
            cwd=self.directory,
            env=env,
            stdin=True,
            setting="KIMAKI_AGENTS",
            user=self.config.user,
        )

    async def connect(self, process: AgentProcess, nursery: trio.Nursery) -> AcpConnection:
        connection = AcpConnection(self, process, nursery)
        await nursery.start(connection.run_rpc)
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "clientCapabilities": {
                "fs": {
                    "readTextFile": self.config.serve_files,
                    "writeTextFile": self.config.serve_files,
                },
                "terminal": False,
            },
            "clientInfo": {"name": "kimaki", "title": "Kimaki", "version": __version__},
        }
        try:
            result = await connection.rpc.request("initialize", params)
        except JsonRpcError as exc:
            if exc.code == AUTH_REQUIRED:
                methods = tuple(method.label for method in auth_methods(exc.data))
                raise self.login_required(methods) from None
            raise EngineUnavailableError(f"initialize failed: {exc.message}") from None
        except ConnectionClosedError:
            raise EngineUnavailableError("the agent closed its output during initialize") from None
        try:
            answer = decode_answer(InitializeResult, result, "initialize")
        except MalformedMessage as exc:
            raise EngineUnavailableError(f"the agent gave a malformed answer to {exc}") from None
        capabilities = AgentCapabilities.of(answer)
        if capabilities.protocol_version != PROTOCOL_VERSION:
            raise EngineUnavailableError(
                f"the agent speaks ACP version {capabilities.protocol_version}; "
                f"kimaki speaks version {PROTOCOL_VERSION}"
            )
        connection.capabilities = capabilities
        log.info("%s: %s %s", self.server.name, capabilities.name or "agent", capabilities.version)
        return connection

    async def serve(self, connection: AcpConnection) -> None:
        await connection.closed.wait()
        with trio.move_on_after(_EXIT_AFTER_EOF):
            await connection.process.wait()
            return  # the supervisor reports the exit, with its code and stderr
        raise EngineUnavailableError("the agent closed its output but kept running")

    async def disconnect(self, connection: AcpConnection) -> None:
        stopped = connection.process.returncode is None  # stopped by us, not crashed
        for session in self.sessions:
            if session._connection is connection:
                session._connection = None
                if stopped:
                    session._server_lost("the agent was stopped")
        if self._probed is connection:
            self._probed = None
        await trio.lowlevel.checkpoint()

    def crashed(self, message: str, *, gave_up: bool) -> None:
        self.sessions.server_lost(message)

    async def probe(self, connection: AcpConnection) -> None:
        """Never called: ACP defines no request that only asks whether the agent is alive
        (`initialize` may not be repeated), so ACP servers run without a `ProbePolicy`."""
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ from the agent

    def agent_notification(self, method: str, params: object) -> None:
        if method != "session/update":
            log.debug("%s: ignoring %s", self.server.name, method)
            return
        try:
            notification = decode(SessionNotification, params, method)
        except MalformedMessage as exc:
            log.warning("%s: skipping a malformed %s (%.200r)", self.server.name, exc, params)
            return
        session_id, update = notification.session_id, notification.update
        if session_id in self._loading:
            return  # a replayed history: already shown when it happened
        self.catalog.take_update(update)
        if isinstance(update, AvailableCommandsUpdate):
            self._commands_seen.set()
        session = self.sessions.get(session_id)
        if session is not None:
            session._update(update)

    async def agent_request(
        self, connection: AcpConnection, method: str, params: object
    ) -> JsonValue:
        """Answer what the agent asks; a malformed request is answered invalid-params."""
        try:
            if method == "session/request_permission":
                request = decode(PermissionRequest, params, method)
                session = self.sessions.get(request.session_id)
                if session is None:
                    return _CANCELLED
                return await session._permission(connection, request)
            if method in _FILE_REQUESTS and self.config.serve_files:
                file_request = decode(_FILE_REQUESTS[method], params, method)
                session = self.sessions.get(file_request.session_id)
                if session is None:
                    raise JsonRpcError(
                        INVALID_PARAMS, f"unknown session {file_request.session_id!r}"
                    )
                return await session._file_request(method, file_request)
        except MalformedMessage as exc:
            raise JsonRpcError(INVALID_PARAMS, str(exc)) from None
        log.info(
            "%s: the agent asked for %s, which kimaki does not offer", self.server.name, method
        )
        raise JsonRpcError(METHOD_NOT_FOUND, f"kimaki does not implement {method}")

    # ------------------------------------------------------------------ to the agent

    def mint_grant(self) -> ToolGrant | None:
        """A grant for a session about to be opened (None: no MCP policy here)."""
        if self.config.mcp is None or self.config.grants is None:
            return None
        return self.config.grants.mint(self.engine.name, self.directory)

    def revoke_grant(self, grant: ToolGrant | None) -> None:
        if grant is not None and self.config.grants is not None:
            self.config.grants.revoke(grant)

    async def mcp_servers(
        self, connection: AcpConnection, grant: ToolGrant | None
    ) -> list[dict[str, Any]]:
        servers = self.config.mcp_servers
        chosen = list(servers(self.directory) if callable(servers) else servers)
        if grant is not None and self.config.mcp is not None:
            chosen += (await self.config.mcp.plan(grant)).servers
        caps = connection.capabilities
        out = []
        for server in chosen:
            if (server.transport == "http" and not caps.mcp_http) or (
                server.transport == "sse" and not caps.mcp_sse
            ):
                log.warning(
                    "%s: the agent cannot use the %s MCP server %s; not passed",
                    self.server.name,
                    server.transport,
                    server.name,
                )
                continue
            out.append(server.to_wire())
        return out

    async def call(
        self, connection: AcpConnection, method: str, params: object, answer: type[T]
    ) -> T:
        """A request whose failure a person should read: engine errors, not JSON-RPC ones;
        its answer decoded as `answer`.

        The server counts as busy meanwhile: an idle stop never cuts a request short.
        """
        try:
            with self.server.busy():
                result = await connection.rpc.request(method, params)
        except ConnectionClosedError:
            raise EngineUnavailableError(
                f"{self.agent.name} stopped while answering {method}"
            ) from None
        except JsonRpcError as exc:
            if exc.code == AUTH_REQUIRED:
                raise self.login_required(connection.capabilities.auth_methods) from None
            raise EngineRequestError(
                f"{self.agent.name} refused {method}: {exc.message}", status=exc.code
            ) from None
        try:
            return decode_answer(answer, result, method)
        except MalformedMessage as exc:
            name = self.agent.name
            raise EngineRequestError(f"{name} gave a malformed answer to {exc}") from None

    def login_required(self, methods: Sequence[str]) -> AgentLoginRequiredError:
        """The agent answered `auth_required` (-32000): one line naming how to log it in."""
        home = f" with HOME={self.agent.home}" if self.agent.home is not None else ""
        how = " or ".join(methods) if methods else None
        return AgentLoginRequiredError(
            f"{self.agent.name} needs a login first: {login_fix(self.agent.name, how, home=home)}"
        )

    async def new_session(
        self, connection: AcpConnection, grant: ToolGrant | None = None
    ) -> tuple[str, SessionState]:
        servers = await self.mcp_servers(connection, grant)
        params = {"cwd": str(self.directory), "mcpServers": servers}
        state = await self.call(connection, "session/new", params, SessionState)
        if not state.session_id:
            raise EngineRequestError(f"{self.agent.name} answered session/new without an id")
        self.catalog.take_session(state)
        if grant is not None:
            grant.session_id = state.session_id
        return state.session_id, state

    async def attach(self, session: AcpSession, connection: AcpConnection) -> None:
        """Make `session` known to this process (after a restart, or on a resume)."""
        caps = connection.capabilities
        if caps.resume:
            method = "session/resume"
        elif caps.load_session:
            method = "session/load"
        else:
            log.info("%s cannot resume sessions", self.server.name)
            raise SessionNotFoundError(session.session_id)
        params = {
            "sessionId": session.session_id,
            "cwd": str(self.directory),
            "mcpServers": await self.mcp_servers(connection, session.grant),
        }
        self._loading.add(session.session_id)
        try:
            with self.server.busy():
                state = await self.call(connection, method, params, SessionState)
                await connection.rpc.notifications_delivered()
        except EngineRequestError as exc:
            if exc.status == AUTH_REQUIRED:
                raise
            log.info("%s: %s of %s failed: %s", self.server.name, method, session.session_id, exc)
            raise SessionNotFoundError(session.session_id) from None
        finally:
            self._loading.discard(session.session_id)
        self.catalog.take_session(state)
        session.catalog.take_session(state)
        session._connection = connection

    async def ready(self, session: AcpSession) -> AcpConnection:
        connection = await self.server.connection()
        if session._connection is not connection:
            await self.attach(session, connection)
        return connection

    async def known_catalog(self, *, commands: bool = False) -> Catalog:
        """What the agent offers here; asks for a session once per process when nothing is
        known yet (agents advertise models and modes per session)."""
        async with self._probe_lock:
            connection = await self.server.connection()
            if not self.catalog.known and self._probed is not connection:
                self._probed = connection
                await self.new_session(connection)
        if commands and self.catalog.commands is None:
            with trio.move_on_after(_COMMANDS_WAIT):
                await self._commands_seen.wait()
        return self.catalog


_turn_ids = itertools.count(1)
_CANCELLED: Final[JsonValue] = {"outcome": {"outcome": "cancelled"}}
_FILE_REQUESTS: Final[Mapping[str, type[ReadTextFile] | type[WriteTextFile]]] = {
    "fs/read_text_file": ReadTextFile,
    "fs/write_text_file": WriteTextFile,
}


def _new_id(prefix: str) -> str:
    return f"{prefix}-{next(_turn_ids)}-{secrets.token_hex(4)}"


@final
class AcpSession(TurnSession[_AcpDirectory, UpdateMapper]):
    """One ACP session (implements `kimaki.agents.EngineSession`)."""

    def __init__(
        self,
        directory: _AcpDirectory,
        session_id: str,
        title: str,
        grant: ToolGrant | None = None,
    ) -> None:
        # What its kimaki MCP servers hold (see `kimaki.agents.McpProvider`); revoked on close.
        self.grant = grant
        super().__init__(
            directory,
            session_id,
            UpdateMapper(title=title, directory=str(directory.directory)),
            touch=True,
            abort_wait=directory.config.abort_wait,
            lost_fallback="the agent stopped",
        )
        self.catalog = Catalog(directory.agent.name)
        self.catalog.copy_from(directory.catalog)
        self._connection: AcpConnection | None = None
        self._permissions: dict[str, _PendingPermission] = {}

    @property
    def current_model(self) -> ModelRef | None:
        return self.catalog.current_model()

    @property
    def current_agent(self) -> str | None:
        return self.catalog.current_agent()

    # ------------------------------------------------------------------ the interface

    def new_turn_id(self) -> str:
        return _new_id("turn")

    async def resume_turn(self, turn_id: str) -> bool:
        """ACP agents do not survive a restart (their stdio went with the old process), and
        keep no record of turns a new one could read, so the turn cannot be followed: it ends
        with an error saying so. Sending the prompt again is the person's call, since the turn
        may already have changed files."""
        await trio.lowlevel.checkpoint()
        self.events.send_nowait(
            TurnEnded(
                turn_id,
                "error",
                "the agent was stopped when kimaki restarted; send the message again",
            )
        )
        return True

    async def reply_permission(self, request_id: str, reply: PermissionReply) -> None:
        pending = self._permissions.get(request_id)
        if pending is None:
            raise EngineRequestError("this permission request is no longer pending")
        pending.choose(reply)
        self.events.send_nowait(PermissionResolved(request_id, reply))
        await trio.lowlevel.checkpoint()

    async def answer_question(self, request_id: str, answers: Sequence[Sequence[str]]) -> None:
        raise EngineRequestError("ACP agents ask no questions; there is nothing to answer")

    async def reject_question(self, request_id: str) -> None:
        raise EngineRequestError("ACP agents ask no questions; there is nothing to reject")

    # ------------------------------------------------------------------ the turn's hooks

    async def _prepare_turn(self, request: TurnRequest) -> SendTurn:
        connection = await self._dir.ready(self)
        blocks = self._blocks(request.text, request.files, connection.capabilities)
        await self._choose(connection, request.model, request.agent)

        async def send(turn_id: str) -> None:
            try:
                await connection.nursery.start(self._run_turn, connection, turn_id, blocks)
            except (ConnectionClosedError, RuntimeError):
                raise EngineUnavailableError(
                    f"{self._dir.agent.name} stopped before the prompt reached it"
                ) from None

        return send

    async def _request_abort(self) -> None:
        self._cancel_permissions()
        connection = self._connection
        if connection is not None:
            try:
                await connection.rpc.notify("session/cancel", {"sessionId": self.session_id})
            except ConnectionClosedError:
                log.debug("%s: cancel not sent, the agent is gone", self.session_id)

    async def _abort_unanswered(self) -> None:
        log.warning("%s: the agent did not end the turn after a cancel", self.session_id)

    def _closing(self) -> None:
        self._cancel_permissions()
        self._dir.revoke_grant(self.grant)

    # ------------------------------------------------------------------ turns

    def _blocks(
        self, text: str, files: Sequence[AttachedFile], caps: AgentCapabilities
    ) -> list[dict[str, Any]]:
        name = self._dir.agent.name
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        for file in files:
            if file.mime.startswith("image/"):
                if not caps.image:
                    raise EngineRequestError(f"{name} does not accept images ({file.filename})")
                data = base64.b64encode(file.data).decode("ascii")
                blocks.append({"type": "image", "data": data, "mimeType": file.mime})
                continue
            try:
                content: str | None = file.data.decode("utf-8")
            except UnicodeDecodeError:
                content = None
            uri = f"attachment:///{quote(file.filename)}"
            if caps.embedded_context:
                resource: dict[str, Any] = {"uri": uri, "mimeType": file.mime}
                if content is not None:
                    resource["text"] = content
                else:
                    resource["blob"] = base64.b64encode(file.data).decode("ascii")
                blocks.append({"type": "resource", "resource": resource})
            elif content is not None:
                blocks.append({"type": "text", "text": f"{file.filename}:\n```\n{content}\n```"})
            else:
                raise EngineRequestError(f"{name} does not accept binary files ({file.filename})")
        return blocks or [{"type": "text", "text": ""}]

    async def _choose(
        self, connection: AcpConnection, model: ModelRef | None, persona: str | None
    ) -> None:
        """Select the model and the persona (the `agent` a prompt names: an ACP mode, not the
        agent program `self._dir.agent`) before a prompt."""
        name = self._dir.agent.name
        catalog = self.catalog
        if model is not None and catalog.current_model() != model:
            choice = catalog.model_value(model)
            if choice is None:
                raise EngineRequestError(f"{name} does not offer the model {model}")
            config_id, value = choice
            state = await self._dir.call(
                connection,
                "session/set_config_option",
                {"sessionId": self.session_id, "configId": config_id, "value": value},
                SessionState,
            )
            catalog.take_config_options(state.config_options)
        if persona is not None and catalog.current_agent() != persona:
            how = catalog.mode_choice(persona)
            if how is None:
                raise EngineRequestError(f"{name} has no agent or mode called {persona}")
            kind, ident = how
            if kind == "config":
                state = await self._dir.call(
                    connection,
                    "session/set_config_option",
                    {"sessionId": self.session_id, "configId": ident, "value": persona},
                    SessionState,
                )
                catalog.take_config_options(state.config_options)
            else:
                await self._dir.call(
                    connection,
                    "session/set_mode",
                    {"sessionId": self.session_id, "modeId": persona},
                    EmptyAnswer,
                )
                catalog.current_mode = persona

    async def _run_turn(
        self,
        connection: AcpConnection,
        turn_id: str,
        blocks: list[dict[str, Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        sent = False

        def on_sent() -> None:
            nonlocal sent
            sent = True
            task_status.started()

        params = {"sessionId": self.session_id, "prompt": blocks}
        try:
            result = await connection.rpc.request("session/prompt", params, on_sent=on_sent)
        except ConnectionClosedError:
            if not sent:
                raise
            return  # the process is gone: disconnect() or crashed() ends the turn
        except JsonRpcError as exc:
            await connection.rpc.notifications_delivered()
            self._emit_all(
                self._mapper.end_turn(turn_id, "error", f"{self._dir.agent.name}: {exc.message}")
            )
            return
        except Exception as exc:
            if not sent:
                raise
            log.exception("%s: the turn failed", self.session_id)
            self._emit_all(self._mapper.end_turn(turn_id, "error", repr(exc)))
            return
        await connection.rpc.notifications_delivered()
        try:
            answer = decode_answer(PromptResult, result, "session/prompt")
        except MalformedMessage as exc:  # cannot happen (every field has a default): be safe
            log.warning("%s: %s", self.session_id, exc)
            answer = PromptResult()
        self._emit_all(self._mapper.end_turn(turn_id, stop_reason(answer.stop_reason)))

    # ------------------------------------------------------------------ from the agent

    def _update(self, update: SessionUpdate) -> None:
        self.catalog.take_update(update)
        self._emit_all(self._mapper.handle(update))

    async def _permission(self, connection: AcpConnection, request: PermissionRequest) -> JsonValue:
        await connection.rpc.notifications_delivered()  # the tool call it is about comes first
        if self._closed or self._mapper.abort_requested:
            return _CANCELLED
        tool = request.tool_call
        self._emit_all(self._mapper.permission_tool(tool))
        summary = tool_summary(tool.raw_input, tool.locations or (), str(self.directory))
        request_id = _new_id("permission")
        pending = self._permissions[request_id] = _PendingPermission(request.options)
        patterns = (summary,) if summary else ()
        offers_always = any(option.kind == "allow_always" for option in request.options)
        self.events.send_nowait(
            PermissionRequested(
                request_id=request_id,
                permission=tool.kind if tool.kind and tool.kind != "other" else "tool",
                title=tool.title or summary or "a tool call",
                patterns=patterns,
                always=patterns if offers_always else (),
                call_id=tool.tool_call_id or None,
            )
        )
        try:
            await pending.done.wait()
        finally:
            self._permissions.pop(request_id, None)
            if not pending.done.is_set():  # the agent went away while a person was deciding
                self.events.send_nowait(PermissionResolved(request_id, "reject"))
        if pending.option_id is None:
            return _CANCELLED
        return {"outcome": {"outcome": "selected", "optionId": pending.option_id}}

    def _cancel_permissions(self) -> None:
        """Answer what waits for a person `cancelled` (ACP requires it after a cancel)."""
        for request_id, pending in list(self._permissions.items()):
            if not pending.done.is_set():
                pending.choose(None)
                self.events.send_nowait(PermissionResolved(request_id, "reject"))

    async def _file_request(self, method: str, request: ReadTextFile | WriteTextFile) -> JsonValue:
        try:
            if isinstance(request, ReadTextFile):
                content = await trio.to_thread.run_sync(
                    read_text, self.directory, request.path, request.line, request.limit
                )
                return {"content": content}
            await trio.to_thread.run_sync(write_text, self.directory, request.path, request.content)
            return {}
        except FileRequestError as exc:
            log.info("%s: %s refused: %s", self.session_id, method, exc.message)
            raise JsonRpcError(exc.code, exc.message) from None


@final
class AcpEngine:
    """An ACP agent behind the engine interface (implements `kimaki.agents.Engine`).

    `name` is `acp:<agent name>` (`acp:opencode`, `acp:kiro`, `acp:<program>` for a custom
    command), so it never collides with the HTTP `opencode` engine in a registry.
    """

    def __init__(self, nursery: trio.Nursery, config: AcpConfig) -> None:
        self.config = config
        self.name: Final = f"acp:{config.agent.name}"
        self._directories: DirectoryRegistry[_AcpDirectory] = DirectoryRegistry(
            nursery, lambda directory: _AcpDirectory(self, directory)
        )

    def _directory(self, directory: Path) -> _AcpDirectory:
        return self._directories.get(directory)

    def server(self, directory: Path) -> AgentServer[AcpConnection]:
        """The supervised agent process of `directory` (created, not started, if new)."""
        return self._directory(directory).server

    async def open_session(
        self, directory: Path, *, resume_id: str | None = None, title: str | None = None
    ) -> AcpSession:
        state = self._directory(directory)

        async def opener(resume_id: str | None) -> AcpSession:
            connection = await state.server.connection()
            grant = state.mint_grant()
            try:
                if resume_id is None:
                    session_id, created = await state.new_session(connection, grant)
                    session = AcpSession(state, session_id, title or "", grant)
                    session.catalog.take_session(created)
                    session._connection = connection
                else:
                    if grant is not None:
                        grant.session_id = resume_id
                    session = AcpSession(state, resume_id, title or "", grant)
                    await state.attach(session, connection)
            except BaseException:
                state.revoke_grant(grant)
                raise
            return session

        return await state.sessions.open(resume_id, opener)

    async def list_models(self, directory: Path) -> list[ProviderModels]:
        return (await self._directory(directory).known_catalog()).models()

    async def list_sessions(
        self, directory: Path, *, search: str = "", limit: int = 25
    ) -> list[SessionSummary]:
        """The agent's sessions of `directory` (`session/list`), most recent first; raises
        `EngineRequestError` when the agent cannot list them."""
        state = self._directory(directory)
        connection = await state.server.connection()
        if not connection.capabilities.list_sessions:
            raise EngineRequestError(f"{self.config.agent.name} cannot list its sessions")
        found: list[SessionSummary] = []
        cursor: str | None = None
        for _ in range(_LIST_PAGES):
            params: dict[str, str] = {"cwd": str(state.directory)}
            if cursor is not None:
                params["cursor"] = cursor
            page = await state.call(connection, "session/list", params, SessionList)
            for info in page.sessions:
                summary = _session_summary(info)
                if search.lower() in summary.title.lower():
                    found.append(summary)
            cursor = page.next_cursor
            if cursor is None:
                break
        found.sort(key=lambda s: s.updated_at, reverse=True)
        return found[:limit]

    def server_directories(self) -> list[Path]:
        return self._directories.running()

    def retire_server(self, directory: Path) -> None:
        self._directories.retire(directory)

    async def restart_server(self, directory: Path) -> None:
        """Stop the agent of `directory` and start it again; running turns end with an error,
        sessions resume in the new process on their next prompt."""
        await restart_server(self._directory(directory).server)

    async def stop_servers(self) -> None:
        """Stop every agent process and wait for each (an orderly shutdown, with the SIGTERM
        grace, while the daemon still runs). ACP agents cannot be handed over to an in-place
        restart: their stdio goes with this process; their sessions resume afterwards."""
        await self._directories.stop_all()

    async def list_agents(self, directory: Path) -> list[AgentInfo]:
        return (await self._directory(directory).known_catalog()).agents()

    async def list_commands(self, directory: Path) -> list[CommandInfo]:
        catalog = await self._directory(directory).known_catalog(commands=True)
        return list(catalog.commands or [])


@asynccontextmanager
async def open_acp_engine(config: AcpConfig) -> AsyncIterator[AcpEngine]:
    """The engine, with every agent process it starts stopped and reaped when the block exits."""
    async with trio.open_nursery() as nursery:
        engine = AcpEngine(nursery, config)
        try:
            yield engine
        finally:
            nursery.cancel_scope.cancel()


if TYPE_CHECKING:  # the engine interface is what the rest of the daemon sees: keep it honest

    def _conforms(engine: AcpEngine, session: AcpSession) -> tuple[Engine, EngineSession]:
        return engine, session
