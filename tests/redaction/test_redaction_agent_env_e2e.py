"""A secret in an agent's environment, printed by a real tool call, is redacted in the thread
and in the log: the real daemon, the real `opencode serve`, the Discord emulator, and the
scripted model, which runs `env` through bash and then repeats its output word for word.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from kimaki.testing.daemon import map_project, running_daemon
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.model_server import ModelServer, Reply, opencode_config
from kimaki.testing.opencode import real_opencode_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A `*_API_KEY` variable: the agents' allowlist passes it, and no provider OpenCode knows uses it.
NAME = "E2E_SERVICE_API_KEY"
SECRET = "e2e-agent-secret-9d41c7b2a6"


async def test_an_agent_printing_its_environment_shows_no_secret(tmp_path: Path) -> None:
    binary = real_opencode_binary()
    model = ModelServer(
        [
            Reply.tool("bash", {"command": "env", "description": "Print the environment"}),
            Reply.echo("Here is what env printed:\n"),
        ]
    )
    project = tmp_path / "project"
    project.mkdir()
    data = tmp_path / "data"
    async with trio.open_nursery() as nursery, open_discord_emulator() as emulator:
        port = await nursery.start(model.serve)
        config_dir = tmp_path / ".config" / "opencode"
        config_dir.mkdir(parents=True)
        (config_dir / "opencode.json").write_text(json.dumps(opencode_config(port)))
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        alice = workspace.users["alice"]
        emulator.wait_timeout = 120
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={"KIMAKI_OPENCODE_PATH": binary, NAME: SECRET},
        ) as daemon:
            message = alice.send_message(channel_id, "show me your environment")
            thread = await emulator.wait_for_thread(channel_id, lambda t: t["id"] == message["id"])
            thread_id = thread["id"]
            # The echo, then the turn's footer (in the same message or after it).
            await emulator.wait_for_message(thread_id, lambda m: "-# project" in m["content"])
            assert await daemon.stop() == 0
            stderr = bytes(daemon.stderr).decode(errors="replace")
        requests = model.agent_requests
        nursery.cancel_scope.cancel()
    # The premise: the agent really had the secret, and bash really printed it.
    tool_results = [
        str(m.get("content")) for r in requests for m in r.body["messages"] if m["role"] == "tool"
    ]
    assert any(f"{NAME}={SECRET}" in result for result in tool_results), tool_results
    # What Discord got, and what the log kept.
    posted = "\n".join(m["content"] for m in emulator.state.messages[thread_id].values())
    assert SECRET not in posted
    assert f"{NAME}=[REDACTED:{NAME}]" in posted
    # The agent's other secrets: its server's password, the grant of kimaki's tool server.
    assert "OPENCODE_SERVER_PASSWORD=[REDACTED:OPENCODE_SERVER_PASSWORD]" in posted
    assert '"KIMAKI_GRANT": "[REDACTED]"' in posted
    log = (data / "kimaki.log").read_text()
    assert SECRET not in log
    assert SECRET not in stderr
