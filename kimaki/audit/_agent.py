"""`/audit ask`: a private, short-lived agent whose only tool is `query_audit`.

Each question gets an agent of its own: a new engine (so a new agent server or ACP process)
started in an empty temporary directory outside the data dir and every project, one session,
one turn, then the engine closed (its server stopped) and the directory deleted. The agent is
handed one MCP server, kimaki's tool server, with a grant from the asker's own `Grants`: the
lock port's tool routes resolve those tokens with `AuditPlaces` to an `AuditToolContext` and
serve them `AUDIT_TOOLS` (only `query_audit`), while the grants of every thread's agent live in
the daemon's registry and are served the ordinary box, which has no `query_audit`.

What the agent program may do besides: OpenCode is given a configuration that switches off
every built-in tool and every other MCP server (`restricted_opencode_config`); any ACP agent is
given only that one MCP server; and whatever asks for permission anyway is refused, and
questions are rejected. The turn has a time limit; the answer is the agent's final text.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final, final

import trio

from kimaki._audit import audit
from kimaki._redact import redact
from kimaki.agents import (
    TOOL_SERVER_NAME,
    Engine,
    EngineError,
    EngineSession,
    Grants,
    McpPlan,
    McpProvider,
    PermissionRequested,
    QuestionAsked,
    TextCompleted,
    ToolGrant,
    TurnEnded,
    first_line,
)
from kimaki.audit._store import AuditStore
from kimaki.audit._tool import AuditReader, AuditToolContext
from kimaki.errors import KimakiError
from kimaki.tools import ToolContext

__all__ = [
    "AuditAgent",
    "AuditMcp",
    "AuditPlaces",
    "EngineOpener",
    "ReaderOpener",
    "read_only_trail",
    "restricted_opencode_config",
]

log = logging.getLogger("kimaki.audit")

ReaderOpener = Callable[[], AbstractAsyncContextManager[AuditReader]]
"""Opens the audit store read-only (`AuditStore.open_read_only`) for one question."""
EngineOpener = Callable[[McpProvider, Grants], AbstractAsyncContextManager[Engine]]
"""Opens a fresh engine whose agents get MCP from the provider and grants from the registry
(the daemon makes OpenCode's or an ACP agent's; a test, whatever it drives)."""

QUERY_TOOL_NAME: Final = f"{TOOL_SERVER_NAME}_query_audit"
"""The tool's name as OpenCode shows it to the model: `<server>_<tool>`."""

_PROMPT: Final = """\
You answer one question about kimaki's audit trail: the record of what happened in a Discord \
channel where people drive AI coding agents (messages, slash commands, agent turns, tool calls, \
permission answers, deliveries).
Your only tool is query_audit (search the trail; filters: kind, person, text, since, until, \
limit). You have no files, no shell and no other tool: do not try any. Query as often as you \
need, then answer briefly and plainly, citing times (UTC) and user ids. If the trail does not \
say, say so; do not guess.

Question: {question}"""


def read_only_trail(path: Path) -> ReaderOpener:
    """The audit file at `path`, opened read-only (`mode=ro`: SQLite refuses writes) for each
    question and closed after it."""

    @asynccontextmanager
    async def open_reader() -> AsyncIterator[AuditReader]:
        async with await AuditStore.open_read_only(path) as store:
            yield store

    return open_reader


def restricted_opencode_config(base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An OpenCode configuration (for `OPENCODE_CONFIG_CONTENT`) over `base` in which only
    kimaki's `query_audit` is a tool: every built-in tool and every other MCP server's tools
    are switched off (`tools`), and denied should one come back (`permission`), for every
    persona (a person's own agent definitions may name tools of their own)."""
    config: dict[str, Any] = dict(base or {})
    tools = {"*": False, QUERY_TOOL_NAME: True}
    permission = {"*": "deny", QUERY_TOOL_NAME: "allow"}
    config["tools"] = tools
    config["permission"] = permission
    # A person's agents from their own configuration: the same switches in each persona
    # kimaki might use (the default build persona is the one the asker prompts).
    agents: dict[str, Any] = dict(config.get("agent") or {})
    for name in ("build", "plan", "general", "explore"):
        agents[name] = {**dict(agents.get(name) or {}), "tools": tools, "permission": permission}
    config["agent"] = agents
    config["instructions"] = []
    return config


@final
class AuditMcp:
    """The audit agent's `McpProvider`: kimaki's tool server only, with the agent's grant.

    It asks the daemon's policy (`base`) for the plan of the grant's directory (a temporary
    one no channel owns, so the policy enables no server there) and keeps only kimaki's own
    tool server; the person's OpenCode servers stay switched off.
    """

    def __init__(self, base: McpProvider) -> None:
        self._base = base

    async def plan(self, grant: ToolGrant) -> McpPlan:
        plan = await self._base.plan(grant)
        servers = tuple(s for s in plan.servers if s.name == TOOL_SERVER_NAME)
        return McpPlan(servers=servers, switched_off=plan.switched_off)


@final
class AuditPlaces:
    """The tool routes' `ToolPlaces` for audit agents: a token of the asker's `Grants` → the
    context of the question whose directory it was minted for; nothing else resolves."""

    def __init__(self, grants: Grants) -> None:
        self._grants = grants
        self._questions: dict[Path, AuditToolContext] = {}

    def knows(self, token: str) -> bool:
        grant = self._grants.resolve(token)
        return grant is not None and grant.directory in self._questions

    async def context_for(
        self, token: str, tool: str, arguments: Mapping[str, Any]
    ) -> ToolContext | None:
        grant = self._grants.resolve(token)
        return None if grant is None else self._questions.get(grant.directory)

    def open(self, context: AuditToolContext) -> None:
        self._questions[context.directory] = context

    def close(self, context: AuditToolContext) -> None:
        self._questions.pop(context.directory, None)


@final
class AuditAgent:
    """The `AuditAsker` behind `/audit ask`: one private agent per question.

    `open_reader`: the audit store opened read-only for one question (and closed after, so no
    connection to the trail outlives it). `open_engine`: a fresh engine per question, wired
    to `AuditMcp(mcp)` and the asker's grants. `time_limit`: seconds a question may take,
    agent start included. `temp_root`: where the temporary directories go (the system's temp
    dir by default; it must be outside the data dir and every project). `owner`: the OS user
    the agent runs as (KIMAKI_AGENT_USER), given the directory. At most `concurrent`
    questions run at once; others wait their turn.
    """

    def __init__(
        self,
        *,
        open_reader: ReaderOpener,
        mcp: McpProvider,
        open_engine: EngineOpener,
        data_dir: Path,
        time_limit: float = 120.0,
        temp_root: Path | None = None,
        owner: str | None = None,
        concurrent: int = 2,
    ) -> None:
        self._open_reader = open_reader
        self._owner = owner
        self._mcp = AuditMcp(mcp)
        self._open_engine = open_engine
        self._data_dir = data_dir
        self._time_limit = time_limit
        self._temp_root = temp_root
        self._limiter = trio.CapacityLimiter(concurrent)
        self.grants = Grants()
        """The audit agents' grants, apart from every thread agent's."""
        self.places = AuditPlaces(self.grants)

    async def ask(
        self, question: str, *, channel_id: int, user_id: int, everywhere: bool = False
    ) -> str:
        """The agent's answer to `question` about `channel_id`'s trail (every channel's when
        `everywhere`: the bot's owner asking). Failures and the time limit are answered in
        words, for the asker; the log has the details."""
        started = time.monotonic()
        async with self._limiter:
            try:
                async with self._open_reader() as reader:
                    answer = await self._ask(reader, question, channel_id, user_id, everywhere)
            except KimakiError as exc:  # no audit file, a store that cannot be read
                log.warning("audit question by %d in %d: %s", user_id, channel_id, exc)
                answer = f"The audit agent could not answer: {first_line(str(exc))}"
        # The question itself is part of the trail (who looked, at what).
        audit(
            "audit.asked",
            channel_id=channel_id,
            user_id=user_id,
            question=question,
            everywhere=everywhere,
            seconds=round(time.monotonic() - started, 1),
        )
        return answer

    async def _ask(
        self, reader: AuditReader, question: str, channel_id: int, user_id: int, everywhere: bool
    ) -> str:
        directory = await trio.to_thread.run_sync(self._make_directory)
        context = AuditToolContext(
            reader=reader,
            channel_id=channel_id,
            asker_id=user_id,
            directory=directory,
            data_dir=self._data_dir,
            everywhere=everywhere,
        )
        self.places.open(context)
        try:
            with trio.move_on_after(self._time_limit):
                try:
                    return redact(await self._run(directory, question))
                except EngineError as exc:
                    log.warning("audit question by %d in %d failed: %s", user_id, channel_id, exc)
                    return f"The audit agent could not answer: {first_line(str(exc))}"
            log.warning(
                "audit question by %d in %d: no answer within %.0f s",
                user_id,
                channel_id,
                self._time_limit,
            )
            return (
                f"The audit agent did not answer within {self._time_limit:.0f} s; "
                "ask something narrower."
            )
        finally:
            self.places.close(context)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, directory, True)

    def _make_directory(self) -> Path:
        root = self._temp_root or Path(tempfile.gettempdir())
        directory = Path(tempfile.mkdtemp(prefix="kimaki-audit-", dir=root)).resolve()
        if directory.is_relative_to(self._data_dir.resolve()):
            shutil.rmtree(directory, ignore_errors=True)
            raise EngineError(
                "the temporary directory would be inside the data dir; set TMPDIR elsewhere"
            )
        if self._owner is not None:  # the agent's user works there, and nobody else
            shutil.chown(directory, self._owner)
        return directory

    async def _run(self, directory: Path, question: str) -> str:
        """The answer; an `EngineError` when the agent could not give one. The engine's own
        nursery wraps what fails inside it in exception groups: one made only of engine
        errors is that error."""
        failed: EngineError | None = None
        try:
            async with self._open_engine(self._mcp, self.grants) as engine:
                try:
                    session = await engine.open_session(directory, title="audit question")
                    try:
                        return await _one_turn(session, _PROMPT.format(question=question.strip()))
                    finally:
                        with trio.CancelScope(shield=True), trio.move_on_after(5):
                            await session.abort()
                            await session.aclose()
                except EngineError as exc:
                    failed = exc  # raised after the engine closed, outside its nursery
        except BaseExceptionGroup as group:
            engine_errors, rest = group.split(EngineError)
            if rest is not None or engine_errors is None:
                raise
            failed = _first_leaf(engine_errors)
        assert failed is not None
        raise failed


def _first_leaf(group: BaseExceptionGroup[EngineError]) -> EngineError:
    first = group.exceptions[0]
    return first if isinstance(first, EngineError) else _first_leaf(first)


async def _one_turn(session: EngineSession, prompt: str) -> str:
    """Send `prompt`, refuse every permission and question, and return the final text."""
    turn_id = await session.prompt(prompt)
    answer = ""
    async for event in session.events:
        if isinstance(event, PermissionRequested):
            # Nothing of the audit agent's needs a person's yes: whatever asks is not its tool.
            await session.reply_permission(event.request_id, "reject")
        elif isinstance(event, QuestionAsked):
            await session.reject_question(event.request_id)
        elif isinstance(event, TextCompleted):
            answer = event.text  # the last text part is the answer
        elif isinstance(event, TurnEnded) and event.turn_id == turn_id:
            if event.stop_reason not in ("end_turn", "max_tokens") and not answer:
                raise EngineError(event.message or f"the turn ended: {event.stop_reason}")
            break
    return answer.strip() or "The audit agent gave no answer."
