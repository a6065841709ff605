"""End to end: the real daemon process (`python -m kimaki`), the Discord emulator, the fake
transcription server and the fake `opencode serve` as a process. The key comes from the
environment, and reaches neither the log, nor Discord, nor the agent server's environment."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import trio

from kimaki.testing.bot import said
from kimaki.testing.daemon import map_project, running_daemon
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.transcription import TranscriptionServer, ogg_opus

KEY = "sk-daemon-voice-0123456789abcdef"


def fake_opencode(directory: Path, env_file: Path) -> Path:
    script = directory / "opencode"
    script.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m kimaki.testing.opencode '
        f"--reply 'on it' --record-env '{env_file}' \"$@\"\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def test_a_voice_message_becomes_a_prompt_in_the_daemon(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "Makefile").write_text("all:\n")
    data = tmp_path / "data"
    env_file = tmp_path / "agent-env.json"
    server = TranscriptionServer(["Make the build reproducible"])
    async with trio.open_nursery() as nursery, open_discord_emulator() as emulator:
        await nursery.start(server.serve)
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={
                "KIMAKI_OPENCODE_PATH": str(fake_opencode(tmp_path, env_file)),
                "PYTHONPATH": os.getcwd(),
                "KIMAKI_TRANSCRIPTION_BASE_URL": server.openai_url,
                "KIMAKI_TRANSCRIPTION_API_KEY": KEY,
                "KIMAKI_TRANSCRIPTION_MODEL": "whisper-1",
            },
        ) as daemon:
            audio = ogg_opus(3.0)
            message = workspace.users["alice"].send_voice_message(
                channel_id, audio, duration_secs=3.0
            )
            thread = await emulator.wait_for_thread(channel_id, lambda t: t["id"] == message["id"])
            await emulator.wait_for_message(thread["id"], said("📝 Make the build reproducible"))
            await emulator.wait_for_message(thread["id"], said("on it"))
            assert emulator.state.channels[thread["id"]]["name"] == "Make the build reproducible"
            [request] = server.requests
            assert request.audio == audio
            assert request.key == KEY
            assert request.fields["model"] == "whisper-1"
            assert "Makefile" in request.prompt
            assert await daemon.stop() == 0
        nursery.cancel_scope.cancel()
    assert KEY not in daemon.log_text()
    agent_env = json.loads(env_file.read_text())
    assert KEY not in json.dumps(agent_env)
    for messages in emulator.state.messages.values():
        assert all(KEY not in m["content"] for m in messages.values())
