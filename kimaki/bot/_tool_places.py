"""Where an agent's tool call acts: from the grant it came with to its thread.

The grant says which session (an ACP session's own grant) or which agent server (an OpenCode
server's, shared by its sessions: the engine matches the call to the session running it) the
call comes from; the thread is the one whose live runtime has that session. Nothing the model
wrote takes part, so a tool can act only in its own thread and that thread's project channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, final

from kimaki.agents import Engine, Grants, ToolCallOwners
from kimaki.tools import ToolContext

__all__ = ["GrantedPlaces"]


class EngineByName(Protocol):
    def get(self, name: str | None = ...) -> Engine: ...


class SessionThreads(Protocol):
    """`kimaki.threads.Threads` is one."""

    def tool_context(self, session_id: str) -> ToolContext | None: ...


@final
class GrantedPlaces:
    """The tool routes' `ToolPlaces`: a grant's token → the calling session's thread."""

    def __init__(self, grants: Grants, engines: EngineByName, threads: SessionThreads) -> None:
        self._grants = grants
        self._engines = engines
        self._threads = threads

    def knows(self, token: str) -> bool:
        return self._grants.resolve(token) is not None

    async def context_for(
        self, token: str, tool: str, arguments: Mapping[str, Any]
    ) -> ToolContext | None:
        grant = self._grants.resolve(token)
        if grant is None:
            return None
        session_id = grant.session_id
        if session_id is None:
            try:
                engine = self._engines.get(grant.engine)
            except LookupError:
                return None
            if isinstance(engine, ToolCallOwners):
                session_id = await engine.tool_call_session(grant, tool, arguments)
        return None if session_id is None else self._threads.tool_context(session_id)
