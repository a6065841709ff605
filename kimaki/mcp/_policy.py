"""The per-channel MCP policy: which catalog servers a channel's agents get, and how.

`McpPolicies` is the door: the engines ask it for a session's servers (`plan`, it is their
`McpProvider`), the policy proxy asks it (through the lock port) what it may pass on
(`proxy_plan`), and `/mcp` reads and changes the policy and scans servers through it.

What an agent is handed names kimaki's own commands only (`kimaki mcp-tools`,
`kimaki mcp-proxy --server X`) and two variables: the lock port's URL and the session's grant.
The upstream's command line, environment and headers stay in the daemon; the proxy fetches
them with its grant, so a model that reads its own configuration learns no secret, and a
grant whose session ended fetches nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, final

import attrs
import trio

from kimaki._audit import audit
from kimaki.agents import CONTROL_URL_ENV, GRANT_ENV, McpPlan, McpServer, ToolGrant
from kimaki.errors import KimakiError
from kimaki.mcp._catalog import RESERVED_NAME, CatalogEntry, McpConfigError
from kimaki.mcp._proxy import ProxyPlan
from kimaki.mcp._upstream import list_upstream_tools
from kimaki.store import ScannedTool, ScanRecord, ServerPolicy

__all__ = [
    "BUILTIN_SERVER",
    "CatalogLoader",
    "DirectoryChannels",
    "McpPolicies",
    "McpPolicyError",
    "PolicyStore",
    "UnknownServerError",
]

log = logging.getLogger("kimaki.mcp")

BUILTIN_SERVER: Final = RESERVED_NAME
"""kimaki's own tool server: on in every channel, never in the policy."""

CatalogLoader = Callable[[], Mapping[str, CatalogEntry]]
"""Reads the catalog (`<data-dir>/mcp.json` and the OpenCode configurations) now; blocking,
run in a worker thread. Called at each use, so an edited mcp.json counts without a restart."""


class McpPolicyError(KimakiError, ValueError):
    """A policy change that cannot be made (the message says why, for the person asking)."""


class UnknownServerError(McpPolicyError, LookupError):
    """The named server is not in the catalog (any more)."""


class PolicyStore(Protocol):
    """Where the policies and scans are kept (`kimaki.store.McpPolicyStore` is one)."""

    async def policy(self, channel_id: int) -> dict[str, ServerPolicy]: ...

    async def set_policy(
        self, channel_id: int, server: str, policy: ServerPolicy | None
    ) -> None: ...

    async def scan(self, server: str) -> ScanRecord | None: ...

    async def put_scan(self, scan: ScanRecord) -> None: ...


class DirectoryChannels(Protocol):
    """The project channel a session's directory belongs to: a project's directory, or the
    worktree of one of its threads (the daemon wires it over its records)."""

    async def channel_of_directory(self, directory: Path) -> int | None: ...


@final
@attrs.frozen(kw_only=True)
class McpPolicies:
    """The MCP policy of every project channel, and what it means for an agent.

    `on_change(channel_id)` is awaited after a change of that channel's policy: the daemon
    ends its agents' use of the old set there, so the next turn runs with the new one.
    """

    _catalog: CatalogLoader = attrs.field(alias="catalog")
    _store: PolicyStore = attrs.field(alias="store")
    _channels: DirectoryChannels = attrs.field(alias="channels")
    _control_url: str = attrs.field(alias="control_url")
    _on_change: Callable[[int], Awaitable[None]] = attrs.field(alias="on_change")
    _tool_server_command: tuple[str, ...] = attrs.field(
        alias="tool_server_command", default=(sys.executable, "-m", "kimaki")
    )
    _scan_timeout: float = attrs.field(alias="scan_timeout", default=30.0)

    # ---- what the engines and the proxy ask

    async def plan(self, grant: ToolGrant) -> McpPlan:
        """kimaki's tool server, then each catalog server the grant's channel enables (behind
        the proxy); the person's OpenCode servers it does not enable are switched off.

        A catalog that cannot be read (a broken mcp.json) leaves only kimaki's tool server,
        with a warning in the log: one bad file must not stop every agent.
        """
        channel_id = await self._channels.channel_of_directory(grant.directory)
        try:
            catalog = await self.catalog()
        except McpConfigError as exc:
            log.warning("MCP servers left out for %s: %s", grant.directory, exc)
            catalog = {}
        enabled = await self._store.policy(channel_id) if channel_id is not None else {}
        env = {CONTROL_URL_ENV: self._control_url, GRANT_ENV: grant.token}
        command, *base = self._tool_server_command
        servers = [
            McpServer(BUILTIN_SERVER, command=command, args=(*base, "mcp-tools"), env=dict(env))
        ]
        switched_off: dict[str, Mapping[str, Any]] = {}
        for name in sorted(catalog):
            entry = catalog[name]
            if name in enabled:
                args = (*base, "mcp-proxy", "--server", name)
                servers.append(McpServer(name, command=command, args=args, env=dict(env)))
            elif entry.source == "opencode":
                switched_off[name] = entry.raw
        return McpPlan(servers=tuple(servers), switched_off=switched_off)

    async def proxy_plan(self, grant: ToolGrant, server: str) -> ProxyPlan | None:
        """What the proxy for `server` passes on under the grant's channel's policy; None when
        the server is not in the catalog or that channel does not enable it."""
        channel_id = await self._channels.channel_of_directory(grant.directory)
        if channel_id is None:
            return None
        policy = (await self._store.policy(channel_id)).get(server)
        if policy is None:
            return None
        entry = (await self.catalog()).get(server)
        if entry is None:
            return None
        return ProxyPlan(entry, policy.allowed)

    # ---- what `/mcp` asks

    async def catalog(self) -> dict[str, CatalogEntry]:
        """The catalog as the files say now (raises `McpConfigError` for a broken mcp.json)."""
        entries = await trio.to_thread.run_sync(self._catalog)
        return {name: entries[name] for name in sorted(entries) if name != BUILTIN_SERVER}

    async def policy(self, channel_id: int) -> dict[str, ServerPolicy]:
        """The servers the channel enables, by name (kimaki's own is always on, not listed)."""
        return await self._store.policy(channel_id)

    async def set_policy(
        self,
        channel_id: int,
        server: str,
        policy: ServerPolicy | None,
        *,
        announce: Callable[[], Awaitable[None]] | None = None,
        user_id: int | None = None,
    ) -> bool:
        """Enable `server` in the channel as `policy` says, or switch it off (None).

        Returns whether anything changed. After a change, `announce` (the command's post in
        the channel) and then `on_change` are awaited. `user_id`: who changed it, for the
        audit trail.
        """
        if server.casefold() == BUILTIN_SERVER:
            raise McpPolicyError(f'the "{BUILTIN_SERVER}" server is always on')
        if policy is not None and server not in await self.catalog():
            raise UnknownServerError(f'there is no MCP server "{server}" in the catalog')
        if (await self._store.policy(channel_id)).get(server) == policy:
            return False
        await self._store.set_policy(channel_id, server, policy)
        log.info(
            "MCP policy of channel %d: %s %s",
            channel_id,
            server,
            "off" if policy is None else policy.mode,
        )
        audit(
            "mcp.policy_changed",
            channel_id=channel_id,
            user_id=user_id,
            server=server,
            mode="off" if policy is None else policy.mode,
            tools=sorted(policy.tools) if policy is not None else [],
        )
        if announce is not None:
            await announce()
        await self._on_change(channel_id)
        return True

    async def scan(self, server: str, *, refresh: bool) -> ScanRecord:
        """The server's tools: the last scan, or (`refresh`, or never scanned) a new one.

        Raises `UnknownServerError`, `McpConfigError`, or `UpstreamError` when the server
        cannot be started or reached.
        """
        if not refresh:
            cached = await self._store.scan(server)
            if cached is not None:
                return cached
        entry = (await self.catalog()).get(server)
        if entry is None:
            raise UnknownServerError(f'there is no MCP server "{server}" in the catalog')
        tools = await list_upstream_tools(entry, timeout=self._scan_timeout)
        record = ScanRecord(
            server=server,
            tools=tuple(ScannedTool(tool.name, tool.description) for tool in tools),
            scanned_at=time.time(),
        )
        await self._store.put_scan(record)
        return record
