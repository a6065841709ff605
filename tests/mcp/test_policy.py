"""The per-channel MCP policy: what an agent is handed (`plan`), what a proxy may fetch
(`proxy_plan`, through `POST /mcp/plan` on the lock port), and the policy kept in the store."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from kimaki._control import ControlServer, control_url
from kimaki.agents import Grants, McpProvider, ToolGrant
from kimaki.mcp._catalog import McpConfigError, load_catalog
from kimaki.mcp._policy import McpPolicies, McpPolicyError, UnknownServerError
from kimaki.mcp._proxy import ProxyPlan, fetch_plan
from kimaki.mcp._retire import retire_channel_servers
from kimaki.mcp._routes import install_mcp_routes
from kimaki.mcp._upstream import UpstreamError
from kimaki.store import ChannelRecord, ScannedTool, ScanRecord, ServerPolicy, Store
from kimaki.testing.mcp_server import TOOLS

CHANNEL = 1001
OTHER_CHANNEL = 1002
CONTROL = "http://127.0.0.1:4321"
TOOL_SERVER = ("/opt/kimaki/bin/python", "-m", "kimaki")
SECRET = "s3cr3t-value"


def echo_entry(**fields: Any) -> dict[str, Any]:
    """An mcp.json entry for the test MCP server, run as a real child."""
    return {"command": sys.executable, "args": ["-m", "kimaki.testing.mcp_server"], **fields}


@attrs.define
class Directories:
    """The project channel of each directory (the daemon answers from its records)."""

    channels: dict[Path, int] = attrs.Factory(dict)

    async def channel_of_directory(self, directory: Path) -> int | None:
        return self.channels.get(directory)


@attrs.define
class World:
    store: Store
    policies: McpPolicies
    grants: Grants
    mcp_json: Path
    opencode_json: Path
    project: Path
    changes: list[int]

    def write_catalog(self, servers: Mapping[str, Any]) -> None:
        self.mcp_json.write_text(json.dumps({"mcpServers": servers}))

    def grant(self, directory: Path | None = None) -> ToolGrant:
        return self.grants.mint("opencode", directory or self.project)


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A store with one project channel, a catalog of two mcp.json servers and one of the
    person's OpenCode servers, and the policy over them."""
    project = tmp_path / "project"
    project.mkdir()
    mcp_json = tmp_path / "mcp.json"
    opencode_json = tmp_path / "opencode.json"
    opencode_json.write_text(
        json.dumps(
            {
                "mcp": {
                    "docs": {
                        "type": "remote",
                        "url": "https://docs.example/mcp",
                        "headers": {"Authorization": f"Bearer {SECRET}"},
                    }
                }
            }
        )
    )
    changes: list[int] = []

    async def on_change(channel_id: int) -> None:
        changes.append(channel_id)

    async with await Store.open(tmp_path / "kimaki.db") as store:
        for channel_id in (CHANNEL, OTHER_CHANNEL):
            await store.places.put_channel(
                ChannelRecord(channel_id=channel_id, directory=project, guild_id=1, app_id=2)
            )
        policies = McpPolicies(
            catalog=lambda: load_catalog(mcp_json, [opencode_json]),
            store=store.mcp,
            channels=Directories({project: CHANNEL}),
            control_url=CONTROL,
            on_change=on_change,
            tool_server_command=TOOL_SERVER,
        )
        found = World(store, policies, Grants(), mcp_json, opencode_json, project, changes)
        found.write_catalog(
            {
                "echo": echo_entry(env={"ECHO_TOKEN": SECRET}),
                "search": {"url": "https://search.example/mcp", "headers": {"X-Key": SECRET}},
            }
        )
        yield found


# ---- the plan an agent is handed


async def test_only_kimakis_tool_server_by_default_and_the_persons_servers_switched_off(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        provider: McpProvider = w.policies
        grant = w.grant()
        plan = await provider.plan(grant)
        [kimaki] = plan.servers
        assert kimaki.name == "kimaki"
        assert kimaki.transport == "stdio"
        assert (kimaki.command, kimaki.args) == (
            "/opt/kimaki/bin/python",
            ("-m", "kimaki", "mcp-tools"),
        )
        assert dict(kimaki.env) == {"KIMAKI_CONTROL_URL": CONTROL, "KIMAKI_GRANT": grant.token}
        # The person's own OpenCode server is off unless the channel enables it; the entry is
        # handed back as written, so OpenCode can be told `enabled: false` for it.
        assert set(plan.switched_off) == {"docs"}
        assert plan.switched_off["docs"]["url"] == "https://docs.example/mcp"


async def test_enabled_servers_run_behind_the_proxy_without_their_secrets(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.policies.set_policy(CHANNEL, "search", ServerPolicy.only(["find"]))
        await w.policies.set_policy(CHANNEL, "docs", ServerPolicy.every_tool())
        grant = w.grant()
        plan = await w.policies.plan(grant)
        assert [s.name for s in plan.servers] == ["kimaki", "docs", "search"]
        for server in plan.servers[1:]:
            assert server.transport == "stdio"
            assert server.command == "/opt/kimaki/bin/python"
            assert server.args == ("-m", "kimaki", "mcp-proxy", "--server", server.name)
            assert dict(server.env) == {"KIMAKI_CONTROL_URL": CONTROL, "KIMAKI_GRANT": grant.token}
            assert not server.headers
            assert not server.url
        assert SECRET not in repr(plan)
        assert SECRET not in json.dumps([s.to_wire() for s in plan.servers])
        assert plan.switched_off == {}  # docs is enabled: wrapped, not switched off


async def test_the_channel_of_the_directory_decides(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.policies.set_policy(OTHER_CHANNEL, "echo", ServerPolicy.every_tool())
        plan = await w.policies.plan(w.grant())
        assert [s.name for s in plan.servers] == ["kimaki"]
        # A directory no project channel owns: kimaki's tools only, the person's servers off.
        stray = await w.policies.plan(w.grant(tmp_path / "elsewhere"))
        assert [s.name for s in stray.servers] == ["kimaki"]
        assert set(stray.switched_off) == {"docs"}
        assert await w.policies.proxy_plan(w.grant(tmp_path / "elsewhere"), "echo") is None


async def test_the_catalog_is_read_again_at_each_use(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.policies.set_policy(CHANNEL, "echo", ServerPolicy.every_tool())
        w.write_catalog({"search": {"url": "https://search.example/mcp"}})
        plan = await w.policies.plan(w.grant())
        assert [s.name for s in plan.servers] == ["kimaki"]  # echo left mcp.json
        assert await w.policies.proxy_plan(w.grant(), "echo") is None


async def test_a_broken_mcp_json_leaves_kimakis_tools_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with world(tmp_path) as w:
        await w.policies.set_policy(CHANNEL, "echo", ServerPolicy.every_tool())
        w.mcp_json.write_text("{ not json")
        plan = await w.policies.plan(w.grant())
        assert [s.name for s in plan.servers] == ["kimaki"]
        assert "MCP servers left out" in caplog.text
        with pytest.raises(McpConfigError):
            await w.policies.catalog()


# ---- the plan a proxy fetches


async def test_proxy_plan_carries_the_entry_and_the_allowed_tools(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        grant = w.grant()
        assert await w.policies.proxy_plan(grant, "echo") is None  # disabled
        assert await w.policies.proxy_plan(grant, "ghost") is None  # not in the catalog
        await w.policies.set_policy(CHANNEL, "echo", ServerPolicy.only(["echo", "add"]))
        plan = await w.policies.proxy_plan(grant, "echo")
        assert plan is not None
        assert plan.allowed == frozenset({"echo", "add"})
        assert plan.entry.name == "echo"
        assert dict(plan.entry.env) == {"ECHO_TOKEN": SECRET}
        await w.policies.set_policy(CHANNEL, "echo", ServerPolicy.every_tool())
        plan = await w.policies.proxy_plan(grant, "echo")
        assert plan is not None
        assert plan.allowed is None


@asynccontextmanager
async def lock_port(w: World) -> AsyncIterator[str]:
    """The daemon's control server with the MCP routes; yields its URL."""
    control = ControlServer(port=0, data_dir=w.store.path.parent, health=dict)
    install_mcp_routes(control, w.policies, w.grants)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(control.serve)
        yield control_url(port)
        nursery.cancel_scope.cancel()


async def test_the_plan_route_answers_only_a_live_grant_for_an_enabled_server(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w, lock_port(w) as url:
        grant = w.grant()
        await w.policies.set_policy(CHANNEL, "echo", ServerPolicy.only(["echo"]))
        async with httpx.AsyncClient(base_url=url) as client:

            async def post(token: str, body: Any) -> httpx.Response:
                headers = {"Authorization": f"Bearer {token}"}
                return await client.post("/mcp/plan", json=body, headers=headers)

            answer = await post(grant.token, {"server": "echo"})
            assert answer.status_code == 200
            plan = ProxyPlan.from_json(answer.json())
            assert plan.allowed == frozenset({"echo"})
            assert plan.entry.command == sys.executable

            for authorization in (None, "Bearer", "Bearer made-up", f"Basic {grant.token}"):
                headers = {} if authorization is None else {"Authorization": authorization}
                refused = await client.post("/mcp/plan", json={"server": "echo"}, headers=headers)
                assert refused.status_code == 401
                assert "error" in refused.json()
                assert SECRET not in refused.text

            refused = await post(grant.token, {"server": "search"})
            assert refused.status_code == 403
            assert refused.json() == {
                "error": 'MCP server "search" is not enabled for this channel'
            }
            assert (await post(grant.token, {"server": "ghost"})).status_code == 403

            assert (await post(grant.token, {"name": "echo"})).status_code == 400
            assert (await post(grant.token, ["echo"])).status_code == 400
            raw = await client.post(
                "/mcp/plan", content=b"{", headers={"Authorization": f"Bearer {grant.token}"}
            )
            assert raw.status_code == 400

            w.grants.revoke(grant)  # the session ended
            assert (await post(grant.token, {"server": "echo"})).status_code == 401


async def test_fetch_plan_round_trip(tmp_path: Path) -> None:
    """The proxy's own client against the daemon's route."""
    async with world(tmp_path) as w, lock_port(w) as url:
        grant = w.grant()
        await w.policies.set_policy(CHANNEL, "search", ServerPolicy.every_tool())
        plan = await fetch_plan(url, grant.token, "search")
        assert plan.entry.url == "https://search.example/mcp"
        assert dict(plan.entry.headers) == {"X-Key": SECRET}
        assert plan.allowed is None
        with pytest.raises(UpstreamError, match="not enabled for this channel"):
            await fetch_plan(url, grant.token, "echo")
        w.grants.revoke(grant)
        with pytest.raises(UpstreamError):
            await fetch_plan(url, grant.token, "search")


# ---- changes, scans, and the store


async def test_a_change_is_stored_then_announced_then_applied(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        seen: list[tuple[dict[str, ServerPolicy], list[int]]] = []

        async def announce() -> None:
            # What the announcement sees: the change stored, not yet applied.
            seen.append((await w.policies.policy(CHANNEL), list(w.changes)))

        changed = await w.policies.set_policy(
            CHANNEL, "echo", ServerPolicy.every_tool(), announce=announce
        )
        assert changed
        assert seen == [({"echo": ServerPolicy.every_tool()}, [])]
        assert w.changes == [CHANNEL]
        # The same policy again changes nothing, so nothing is restarted.
        assert not await w.policies.set_policy(CHANNEL, "echo", ServerPolicy("all"))
        assert w.changes == [CHANNEL]
        assert await w.policies.set_policy(CHANNEL, "echo", None)
        assert await w.policies.policy(CHANNEL) == {}
        assert w.changes == [CHANNEL, CHANNEL]
        assert not await w.policies.set_policy(CHANNEL, "echo", None)


async def test_kimaki_is_always_on_and_unknown_servers_cannot_be_enabled(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        with pytest.raises(McpPolicyError, match="always on"):
            await w.policies.set_policy(CHANNEL, "kimaki", None)
        with pytest.raises(UnknownServerError):
            await w.policies.set_policy(CHANNEL, "ghost", ServerPolicy.every_tool())
        assert w.changes == []


async def test_policies_and_scans_persist_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "kimaki.db"
    scan = ScanRecord("echo", (ScannedTool("echo", "Say it back"), ScannedTool("add")), 1234.5)
    async with await Store.open(path) as store:
        for channel_id in (CHANNEL, OTHER_CHANNEL):
            await store.places.put_channel(
                ChannelRecord(channel_id=channel_id, directory="/p", guild_id=1, app_id=2)
            )
        await store.mcp.set_policy(CHANNEL, "echo", ServerPolicy.only(["b", "a"]))
        await store.mcp.set_policy(CHANNEL, "search", ServerPolicy.every_tool())
        await store.mcp.set_policy(OTHER_CHANNEL, "search", ServerPolicy.every_tool())
        await store.mcp.put_scan(scan)
    async with await Store.open(path) as store:
        assert await store.mcp.policy(CHANNEL) == {
            "echo": ServerPolicy("some", frozenset({"a", "b"})),
            "search": ServerPolicy("all"),
        }
        assert await store.mcp.scan("echo") == scan
        assert await store.mcp.scan("search") is None
        # A project channel's policy goes with its record.
        await store.places.delete_channel(CHANNEL)
        assert await store.mcp.policy(CHANNEL) == {}
        assert await store.mcp.policy(OTHER_CHANNEL) == {"search": ServerPolicy("all")}
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT server, mode, tools FROM mcp_policies").fetchall()
    finally:
        conn.close()
    assert rows == [("search", "all", "[]")]


async def test_scan_lists_the_tools_and_keeps_them_with_the_time(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        first = await w.policies.scan("echo", refresh=False)
        assert [(t.name, t.description) for t in first.tools] == [
            (t.name, t.description) for t in TOOLS
        ]
        assert await w.store.mcp.scan("echo") == first
        # Cached until a refresh is asked for.
        assert await w.policies.scan("echo", refresh=False) == first
        again = await w.policies.scan("echo", refresh=True)
        assert again.scanned_at >= first.scanned_at
        with pytest.raises(UnknownServerError):
            await w.policies.scan("ghost", refresh=True)


async def test_scanning_an_unreachable_server_raises_upstream_error(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.write_catalog({"broken": {"command": str(tmp_path / "no-such-program")}})
        with pytest.raises(UpstreamError):
            await w.policies.scan("broken", refresh=True)
        assert await w.store.mcp.scan("broken") is None


@attrs.define
class _Engine:
    """An engine with agent servers in some directories (`ServerRetire`)."""

    running: list[Path]
    retired: list[Path] = attrs.Factory(list)

    def server_directories(self) -> list[Path]:
        return list(self.running)

    def retire_server(self, directory: Path) -> None:
        self.retired.append(directory)


async def test_a_policy_change_retires_only_that_channels_agent_servers(tmp_path: Path) -> None:
    project, worktree, other = tmp_path / "p", tmp_path / "w", tmp_path / "o"
    channels = Directories({project: CHANNEL, worktree: CHANNEL, other: CHANNEL + 1})
    opencode, acp = _Engine([project, other]), _Engine([worktree])
    cannot = object()  # an engine without retirement is left alone
    assert await retire_channel_servers(CHANNEL, [opencode, cannot, acp], channels) == 2
    assert opencode.retired == [project]
    assert acp.retired == [worktree]
