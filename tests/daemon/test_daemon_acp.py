"""The real daemon process running an ACP agent configured in settings: KIMAKI_AGENTS names the
agent (here the fake one, `python -m kimaki.testing.acp_agent`), KIMAKI_DEFAULT_ENGINE makes it
the engine of channels that did not choose one."""

from __future__ import annotations

import shlex
from pathlib import Path

from kimaki.testing.acp_agent import AgentScript, fake_agent_argv, read_record
from kimaki.testing.bot import said
from kimaki.testing.daemon import map_project, running_daemon
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.opencode import process_running
from kimaki.testing.script import Say, TurnScript


async def test_a_message_is_answered_by_the_configured_acp_agent(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    data = tmp_path / "data"
    script = AgentScript(turns=(TurnScript(Say("hello over ACP")),)).write(tmp_path / "script.json")
    record = tmp_path / "record.jsonl"
    agent = shlex.join(fake_agent_argv(script, record=record))
    async with open_discord_emulator() as emulator:
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={"KIMAKI_AGENTS": f"fake={agent}", "KIMAKI_DEFAULT_ENGINE": "acp:fake"},
        ) as daemon:
            log = await daemon.wait_for_log("engines (default acp:fake)")
            assert "acp:kiro (kiro-cli" in log  # every named agent is offered
            assert "cannot start" not in log  # the default engine's program is there
            message = workspace.users["alice"].send_message(channel_id, "say hello")
            thread = await emulator.wait_for_thread(channel_id, lambda t: t["id"] == message["id"])
            await emulator.wait_for_message(thread["id"], said("hello over ACP"))
            assert await daemon.stop() == 0
    started = [line for line in read_record(record) if line.get("event") == "started"]
    assert len(started) == 1
    # It ran in its own home under the data dir, and it did not outlive the daemon.
    assert started[0]["env"]["HOME"] == str(data / "agent-runtime" / "fake")
    assert not process_running(started[0]["pid"])
