"""What every engine keeps per project directory: its supervised server and its open sessions.

Both engines run one agent process per project directory (`opencode serve`, an ACP agent) and
route what it sends to the sessions opened there. How they speak to the process differs; how
they find a directory's state, start and restart its server and tell its sessions it crashed
does not, so that lives here once:

```
DirectoryRegistry (over the engine's ServerPool; keys are resolved paths)
└─ per directory: the engine's DirectoryState (also its ServerHooks), with
     .server    AgentServer made by supervised_server()
     .sessions  Sessions: the open sessions by id, told when the server is lost
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, final

import trio

from kimaki.agents._supervisor import (
    AgentServer,
    ProbePolicy,
    RestartPolicy,
    ServerHooks,
    ServerPool,
    ServerState,
)

__all__ = [
    "DirectoryRegistry",
    "DirectoryState",
    "ServerSettings",
    "Sessions",
    "restart_server",
    "supervised_server",
]

ConnT = TypeVar("ConnT")


class ServerSettings(Protocol):
    """The part of an engine's config that says how its servers are supervised."""

    @property
    def policy(self) -> RestartPolicy: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def ready_timeout(self) -> float: ...
    @property
    def stop_grace(self) -> float: ...


def supervised_server(
    name: str,
    hooks: ServerHooks[ConnT],
    settings: ServerSettings,
    *,
    probe: ProbePolicy | None = None,
) -> AgentServer[ConnT]:
    """A directory's server, supervised as the engine's config says (`probe`: for engines
    whose servers can be asked cheaply whether they still answer)."""
    return AgentServer(
        name,
        hooks,
        policy=settings.policy,
        idle_timeout=settings.idle_timeout,
        ready_timeout=settings.ready_timeout,
        stop_grace=settings.stop_grace,
        probe=probe,
    )


async def restart_server(
    server: AgentServer[Any], *, before_stop: Callable[[], None] | None = None
) -> None:
    """Stop `server` if it runs or starts, wait until it has, and start it again.

    `before_stop` runs only when there is something to stop: an engine whose sessions would
    otherwise wait for events from the gone process ends their turns there.
    """
    if server.state in (ServerState.READY, ServerState.STARTING):
        if before_stop is not None:
            before_stop()
        server.stop()
        await server.wait_for_state(ServerState.STOPPED, ServerState.FAILED)
    await server.connection()


class _Session(Protocol):
    @property
    def session_id(self) -> str: ...

    def _server_lost(self, message: str) -> None: ...


SessionT = TypeVar("SessionT", bound=_Session)


@final
class Sessions(Generic[SessionT]):
    """The open sessions of one directory, by id: one object per session id, so events of a
    session reach the one its owner reads, however often it is opened."""

    def __init__(self) -> None:
        self._by_id: dict[str, SessionT] = {}

    def get(self, session_id: str) -> SessionT | None:
        return self._by_id.get(session_id)

    def __iter__(self) -> Iterator[SessionT]:
        """A snapshot: a session may close while the caller goes through them."""
        return iter(list(self._by_id.values()))

    def add(self, session: SessionT) -> SessionT:
        """Register `session`, unless one with its id was opened meanwhile: that one wins."""
        return self._by_id.setdefault(session.session_id, session)

    async def open(
        self, resume_id: str | None, opener: Callable[[str | None], Awaitable[SessionT]]
    ) -> SessionT:
        """The session `resume_id` if it is open here; else the one `opener` opens (a new one
        for None), registered by `add`."""
        known = self._by_id.get(resume_id) if resume_id is not None else None
        if known is not None:
            return known
        return self.add(await opener(resume_id))

    def remove(self, session: SessionT) -> None:
        """Forget `session` if it is the registered one (a closed duplicate changes nothing)."""
        if self._by_id.get(session.session_id) is session:
            del self._by_id[session.session_id]

    def server_lost(self, message: str) -> None:
        """The directory's server crashed, hung, was given up or was stopped under them: every
        session hears it (and ends its running turn)."""
        for session in self:
            session._server_lost(message)


class DirectoryState(Protocol):
    """An engine's state for one project directory (`_OpenCodeDirectory`, `_AcpDirectory`), as
    the shared parts (`DirectoryRegistry`, the session skeleton `TurnSession`) see it."""

    @property
    def directory(self) -> Path: ...

    @property
    def server(self) -> AgentServer[Any]: ...

    @property
    def sessions(self) -> Sessions[Any]: ...


StateT = TypeVar("StateT", bound=DirectoryState)


@final
class DirectoryRegistry(Generic[StateT]):
    """An engine's per-directory states, each created with its server on first use.

    The `ServerPool` owns the servers (and runs them in the engine's nursery); this keeps the
    state object beside each, under the same resolved path, so `./x` and `/abs/x` share both.
    """

    def __init__(self, nursery: trio.Nursery, make_state: Callable[[Path], StateT]) -> None:
        self._make_state = make_state
        self._states: dict[Path, StateT] = {}
        self._pool: ServerPool[Path, Any] = ServerPool(nursery, self._new_server)

    def _new_server(self, directory: Path) -> AgentServer[Any]:
        state = self._states[directory] = self._make_state(directory)
        return state.server

    def get(self, directory: Path) -> StateT:
        """The state of `directory` (created, its server not started, if new)."""
        key = Path(directory).resolve()
        self._pool.get(key)
        return self._states[key]

    def states(self) -> list[StateT]:
        return list(self._states.values())

    def running(self) -> list[Path]:
        """The directories whose server is running or starting (`ServerRetire`)."""
        live = (ServerState.READY, ServerState.STARTING)
        return [path for path, state in self._states.items() if state.server.state in live]

    def retire(self, directory: Path) -> None:
        """`AgentServer.retire` for the server of `directory`, if it has one."""
        state = self._states.get(Path(directory).resolve())
        if state is not None:
            state.server.retire()

    async def stop_all(self) -> None:
        """Stop every running server and wait for each (`ServerPool.stop_all`)."""
        await self._pool.stop_all()
