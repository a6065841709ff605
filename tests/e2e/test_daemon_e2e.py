"""The whole product end to end: the real daemon process, the real `opencode serve`, the
Discord emulator and the scripted model server. A person writes, an agent answers in a thread,
asks before running a command, and is interrupted by a new message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki.testing.bot import bot_paragraphs, said
from kimaki.testing.daemon import map_project, running_daemon
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.discord._actors import iter_components
from kimaki.testing.model_server import ModelServer, Reply, opencode_config
from kimaki.testing.opencode import real_opencode_binary
from kimaki.threads import INTERRUPTED

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    return {
        str(c.get("label")): c["custom_id"]
        for c in iter_components(message["components"])
        if c.get("type") == 2
    }


async def test_chat_permission_and_interrupt_through_the_real_daemon(tmp_path: Path) -> None:
    binary = real_opencode_binary()
    command = {"command": "echo e2e > proof.txt", "description": "Write proof"}
    never = trio.Event()
    model = ModelServer(
        [
            Reply.text("Hello from the real agent."),
            Reply.tool("bash", command),
            Reply.text("Proof written."),
            Reply(chunks=("thinking ",), hold=never),
            Reply.text("Bye."),
        ]
    )
    project = tmp_path / "project"
    project.mkdir()
    data = tmp_path / "data"
    async with trio.open_nursery() as nursery, open_discord_emulator() as emulator:
        port = await nursery.start(model.serve)
        config_dir = tmp_path / ".config" / "opencode"
        config_dir.mkdir(parents=True)
        config = opencode_config(port, permission={"bash": "ask"})
        (config_dir / "opencode.json").write_text(json.dumps(config))
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        alice = workspace.users["alice"]
        emulator.wait_timeout = 90
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={"KIMAKI_OPENCODE_PATH": binary},
        ) as daemon:
            message = alice.send_message(channel_id, "say hello")
            thread = await emulator.wait_for_thread(channel_id, lambda t: t["id"] == message["id"])
            thread_id = thread["id"]
            await emulator.wait_for_message(thread_id, said("Hello from the real agent."))

            alice.send_message(thread_id, "write the proof")
            asked = await emulator.wait_for_message(
                thread_id, lambda m: m["content"].startswith("🔐")
            )
            assert "echo e2e > proof.txt" in asked["content"]
            alice.click_button(asked, _buttons(asked)["Accept"])
            await emulator.wait_for_message(thread_id, said("Proof written."))
            assert (project / "proof.txt").read_text().strip() == "e2e"

            # A turn that never ends (the model holds), interrupted by a new message.
            alice.send_message(thread_id, "think for a long time")
            await model.wait_for_agent_requests(4)
            alice.send_message(thread_id, "stop, say bye")
            await emulator.wait_for_message(thread_id, said("Bye."))
            assert await daemon.stop() == 0
        lines = bot_paragraphs(emulator, thread_id)
        assert lines.index("Proof written.") < lines.index(INTERRUPTED) < lines.index("Bye.")
        nursery.cancel_scope.cancel()
