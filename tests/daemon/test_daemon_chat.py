"""The real daemon process chatting: emulator → daemon → agent server process → thread.

The agent server here is the fake `opencode serve` run as a process (`python -m
kimaki.testing.opencode`), started by the daemon itself through KIMAKI_OPENCODE_PATH; the
same flow against the real binary is in tests/e2e/test_daemon_e2e.py.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kimaki.testing.bot import bot_paragraphs, paragraphs
from kimaki.testing.daemon import map_project, running_daemon
from kimaki.testing.discord import open_discord_emulator


def fake_opencode_command(directory: Path, *flags: str) -> Path:
    """An executable standing in for `opencode`, running the fake server as a process."""
    script = directory / "opencode"
    args = " ".join(flags)
    script.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m kimaki.testing.opencode {args} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def ends_with_footer(message: Mapping[str, Any]) -> bool:
    """A `wait_for_message` predicate: the message's last paragraph is a turn's footer."""
    blocks = paragraphs(message)
    return bool(blocks) and blocks[-1].startswith("-# project · ")


async def test_a_message_is_answered_by_an_agent_server_process(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    data = tmp_path / "data"
    opencode = fake_opencode_command(tmp_path, "--reply", "'hello from the agent'")
    async with open_discord_emulator() as emulator:
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={"KIMAKI_OPENCODE_PATH": str(opencode), "PYTHONPATH": os.getcwd()},
        ) as daemon:
            message = workspace.users["alice"].send_message(channel_id, "say hello")
            thread = await emulator.wait_for_thread(channel_id, lambda t: t["id"] == message["id"])
            # The reply and its footer share a message only when the turn's end was already
            # read with the reply's last text; across a process boundary that is timing, so
            # what is asserted is the order the person reads: the reply, then the footer.
            await emulator.wait_for_message(thread["id"], ends_with_footer)
            assert bot_paragraphs(emulator, thread["id"])[-2:-1] == ["hello from the agent"]
            assert await daemon.stop() == 0
        assert emulator.token not in daemon.log_text()
