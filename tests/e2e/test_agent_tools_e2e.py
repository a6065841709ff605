"""Agent tools and MCP policy end to end: the real daemon, the real `opencode serve`, the
Discord emulator, the scripted model server and a small MCP server of the tests' own.

The model calls `kimaki_send_message` (kimaki's tool server, started by OpenCode with the
server's grant) and the message appears in the thread; it calls a tool the channel's policy
allows on the test server (through `kimaki mcp-proxy`) and gets its answer; it calls one the
policy does not allow and gets an error back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki.store import ServerPolicy, Store
from kimaki.testing.bot import said
from kimaki.testing.daemon import map_project, running_daemon
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.model_server import ModelServer, Reply, opencode_config
from kimaki.testing.opencode import real_opencode_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _tool_results(body: Any) -> list[str]:
    """The tool results a model request carries (OpenAI chat format)."""
    return [
        str(message.get("content"))
        for message in body.get("messages", [])
        if message.get("role") == "tool"
    ]


async def test_the_agent_posts_through_kimakis_tools_and_the_policy_filters_mcp(
    tmp_path: Path,
) -> None:
    binary = real_opencode_binary()
    model = ModelServer(
        [
            Reply.tool("kimaki_send_message", {"content": "Deploy started (from a tool)."}),
            Reply.tool("testmcp_echo", {"text": "echoed through the proxy"}),
            Reply.tool("testmcp_add", {"a": 1, "b": 2}),
            Reply.text("All done."),
        ]
    )
    project = tmp_path / "project"
    project.mkdir()
    data = tmp_path / "data"
    calls = tmp_path / "mcp-calls.txt"
    async with trio.open_nursery() as nursery, open_discord_emulator() as emulator:
        port = await nursery.start(model.serve)
        config_dir = tmp_path / ".config" / "opencode"
        config_dir.mkdir(parents=True)
        (config_dir / "opencode.json").write_text(json.dumps(opencode_config(port)))
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        server = {
            "command": sys.executable,
            "args": ["-m", "kimaki.testing.mcp_server", "--calls", str(calls)],
        }
        (data / "mcp.json").write_text(json.dumps({"mcpServers": {"testmcp": server}}))
        async with await Store.open(data / "discord-sessions.db") as store:
            policy = ServerPolicy("some", frozenset({"echo"}))
            await store.mcp.set_policy(int(channel_id), "testmcp", policy)
        alice = workspace.users["alice"]
        emulator.wait_timeout = 120
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={"KIMAKI_OPENCODE_PATH": binary},
        ) as daemon:
            message = alice.send_message(channel_id, "deploy it")
            thread = await emulator.wait_for_thread(channel_id, lambda t: t["id"] == message["id"])
            thread_id = thread["id"]
            await emulator.wait_for_message(thread_id, said("Deploy started (from a tool)."))
            await emulator.wait_for_message(thread_id, said("All done."))
            assert await daemon.stop() == 0
        requests = model.agent_requests
        nursery.cancel_scope.cancel()
    offered = {tool["function"]["name"] for tool in requests[0].body.get("tools", [])}
    assert {"kimaki_send_message", "kimaki_ask", "testmcp_echo"} <= offered
    assert "testmcp_add" not in offered  # the policy's allowlist, applied by the proxy
    final = _tool_results(requests[-1].body)
    assert any("sent" in result for result in final), final  # kimaki_send_message answered
    assert any("echoed through the proxy" in result for result in final), final
    blocked = [result for result in final if "testmcp_add" in result or "blocked" in result]
    assert blocked, final  # the model was told it cannot use testmcp_add
    assert "echoed" not in "".join(blocked)
    seen = calls.read_text().split() if calls.exists() else []
    assert seen == ["echo"]  # the blocked call never reached the server
