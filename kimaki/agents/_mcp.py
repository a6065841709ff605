"""What an engine hands its agent of MCP: the servers a session sees, and the grants behind them.

Both engine families get their MCP servers from one `McpProvider` (the daemon's MCP policy), so
the policy is engine-neutral: an ACP agent receives the servers in `session/new`,
`session/load` and `session/resume` (`mcpServers`); an OpenCode server receives them in the
configuration it is started with, since OpenCode starts MCP servers per server, not per
session.

Every server kimaki itself runs for an agent (its tool server, the policy proxy in front of each
enabled server) reaches the daemon on the lock port with a **grant**: a capability token minted
for one session (ACP) or one agent server (OpenCode), bound to its directory, and revoked when
that session or server ends. A grant names no Discord ids: what it may act on is resolved by
the daemon from the session it belongs to, never from what the model writes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, Protocol, final, runtime_checkable

import attrs
import trio

__all__ = [
    "CONTROL_URL_ENV",
    "GRANT_ENV",
    "TOOL_SERVER_NAME",
    "Grants",
    "McpPlan",
    "McpProvider",
    "McpServer",
    "ToolCallBoard",
    "ToolCallOwners",
    "ToolGrant",
    "derived_token",
]

TOOL_SERVER_NAME: Final = "kimaki"
"""The name kimaki's tool server has in every agent's MCP configuration."""
CONTROL_URL_ENV: Final = "KIMAKI_CONTROL_URL"
GRANT_ENV: Final = "KIMAKI_GRANT"
"""What kimaki's MCP servers find in their environment: the lock port's URL, and the grant."""


@final
@attrs.frozen
class McpServer:
    """An MCP server handed to an agent: a command (`stdio`) or a URL (`http`, `sse`; passed
    only to agents that advertise them)."""

    name: str
    transport: Literal["stdio", "http", "sse"] = "stdio"
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    url: str = ""
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    def to_wire(self) -> dict[str, Any]:
        """The ACP `McpServer` shape."""
        if self.transport == "stdio":
            return {
                "name": self.name,
                "command": self.command,
                "args": list(self.args),
                "env": [{"name": k, "value": v} for k, v in self.env.items()],
            }
        return {
            "type": self.transport,
            "name": self.name,
            "url": self.url,
            "headers": [{"name": k, "value": v} for k, v in self.headers.items()],
        }


@final
@attrs.define(eq=False)
class ToolGrant:
    """A capability token for what kimaki runs beside one session or one agent server.

    `session_id` is set once the session exists (ACP: after `session/new`); an OpenCode server's
    grant has none, and each tool call is matched to the session making it by the engine.
    """

    token: str = attrs.field(repr=False)
    engine: str
    directory: Path
    session_id: str | None = None


@final
@attrs.frozen
class McpPlan:
    """The MCP servers an agent gets in one directory.

    `servers`: kimaki's tool server and, behind the policy proxy, every server the channel's
    policy enables. `switched_off`: the names of servers from the person's own OpenCode
    configuration that the policy does not enable, with their entries as written there (an
    OpenCode server is given them with `enabled: false`, since it reads that configuration too).
    """

    servers: tuple[McpServer, ...] = ()
    switched_off: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


class McpProvider(Protocol):
    """What the engines ask of the MCP layer (the daemon's `kimaki.mcp.McpPolicies` is one)."""

    async def plan(self, grant: ToolGrant) -> McpPlan:
        """The servers for `grant`'s directory under its channel's policy now."""
        ...


@final
class Grants:
    """The live grants by token: minted by the engines, resolved by the lock port's routes."""

    def __init__(self) -> None:
        self._by_token: dict[str, ToolGrant] = {}

    def mint(self, engine: str, directory: Path, *, token: str | None = None) -> ToolGrant:
        """A new grant; `token` when it must be one a running agent already holds (an agent
        server adopted after an in-place restart: see `derived_token`)."""
        grant = ToolGrant(token or secrets.token_urlsafe(32), engine, directory)
        self._by_token[grant.token] = grant
        return grant

    def revoke(self, grant: ToolGrant) -> None:
        self._by_token.pop(grant.token, None)

    def resolve(self, token: str) -> ToolGrant | None:
        """The live grant of `token`, or None (unknown, or revoked)."""
        grant = self._by_token.get(token)
        if grant is None or not secrets.compare_digest(grant.token, token):
            return None
        return grant

    def __len__(self) -> int:
        return len(self._by_token)


def derived_token(secret: str) -> str:
    """A grant token derived from an agent server's own password, so that the server adopted
    after an in-place restart (its password is handed over) gets its grant back without the
    token being stored. It grants nothing the agent, who sees both, could not already do."""
    return hashlib.sha256(b"kimaki-grant\0" + secret.encode()).hexdigest()


@runtime_checkable
class ToolCallOwners(Protocol):
    """An engine whose agent servers serve several sessions with one tool server (OpenCode):
    it tells which of its sessions is making a call of one of kimaki's tools."""

    async def tool_call_session(
        self, grant: ToolGrant, tool: str, arguments: Mapping[str, Any]
    ) -> str | None:
        """The id of the session in `grant`'s directory running this call, or None."""
        ...


@final
class ToolCallBoard:
    """The calls of kimaki's tools that an agent server's sessions are running now.

    An OpenCode server runs one tool server for all its sessions, and MCP tells a tool server
    nothing of the session calling it. The engine's event stream does: a tool part goes
    "running", with its input, before the tool is called. The board keeps those parts; a call
    arriving at the tool server is matched to the one running part with the same tool and the
    same input (each part is claimed once), waiting a moment for the event when the call is
    faster than the stream.
    """

    def __init__(self) -> None:
        self._parts: dict[str, tuple[str, str, str]] = {}  # part id -> (tool, input, session)
        self._claimed: set[str] = set()
        self._changed = trio.lowlevel.ParkingLot()

    def running(
        self, part_id: str, tool: str, arguments: Mapping[str, Any], session_id: str
    ) -> None:
        if part_id not in self._parts:
            self._parts[part_id] = (tool, _canonical(arguments), session_id)
            self._changed.unpark_all()

    def ended(self, part_id: str) -> None:
        self._parts.pop(part_id, None)
        self._claimed.discard(part_id)

    async def claim(self, tool: str, arguments: Mapping[str, Any], *, within: float) -> str | None:
        """The session of the unclaimed running call of `tool` with `arguments`, or None when
        none appears within `within` seconds."""
        wanted = (tool, _canonical(arguments))
        with trio.move_on_after(within):
            while True:
                for part_id, (name, text, session_id) in self._parts.items():
                    if part_id not in self._claimed and (name, text) == wanted:
                        self._claimed.add(part_id)
                        return session_id
                await self._changed.park()
        return None


def _canonical(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
