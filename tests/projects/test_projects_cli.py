"""`kimaki project add|list|remove` as a person runs them: real `python -m kimaki` processes,
with no daemon (straight to Discord and the store) and with one (through the lock port)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from kimaki._control import ControlServer, control_url
from kimaki.projects import CONTROL_TOKEN_FILE, install_project_routes
from kimaki.store import Store
from kimaki.testing.bot import running_bot
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.engine import open_fake_engine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def kimaki(
    emulator: DiscordEmulator, data_dir: Path, lock_port: int, *args: str
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMAKI_")}
    env.update(
        HOME=str(data_dir.parent),
        KIMAKI_DISCORD_API_URL=emulator.api_url,
        KIMAKI_BOT_TOKEN=emulator.token,
    )
    return await trio.run_process(
        [
            sys.executable,
            "-m",
            "kimaki",
            "project",
            *args[:1],
            "--data-dir",
            str(data_dir),
            "--lock-port",
            str(lock_port),
            *args[1:],
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )


async def test_without_a_daemon(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    folder = tmp_path / "My App"
    folder.mkdir()
    port = free_port()
    async with open_discord_emulator() as emulator:
        space = emulator.create_workspace(channels=[])
        guild = space.guild["id"]

        result = await kimaki(
            emulator, data_dir, port, "add", str(tmp_path / "nope"), "--guild", guild
        )
        assert result.returncode == 64
        assert result.stderr.decode().strip().endswith("does not exist")

        # The bot is in two servers and none is known from a project yet: name one.
        second = emulator.create_guild("Second", owner=space.owner)
        result = await kimaki(emulator, data_dir, port, "add", str(folder))
        assert result.returncode == 64
        assert b"several servers; name one with --guild" in result.stderr
        assert second["id"].encode() in result.stderr
        assert b"Traceback" not in result.stderr

        result = await kimaki(emulator, data_dir, port, "add", str(folder), "--guild", guild)
        assert result.returncode == 0, result.stderr
        assert b"added" in result.stdout
        texts = [c for c in emulator.state.channels.values() if c.get("name") == "my-app"]
        assert sorted(c["type"] for c in texts) == [0, 2]

        result = await kimaki(emulator, data_dir, port, "list", "--json")
        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)
        assert {item["channel_type"] for item in listed} == {"text", "voice"}
        assert {item["directory"] for item in listed} == {str(folder.resolve())}
        assert {item["guild_id"] for item in listed} == {guild}
        text_id = next(item["channel_id"] for item in listed if item["channel_type"] == "text")

        result = await kimaki(emulator, data_dir, port, "list")
        assert text_id.encode() in result.stdout

        result = await kimaki(emulator, data_dir, port, "remove", text_id)
        assert result.returncode == 0, result.stderr
        assert text_id in emulator.state.channels  # kept: not asked to delete
        assert folder.is_dir()
        async with await Store.open(data_dir / "discord-sessions.db") as store:
            assert await store.places.list_channels() == []

        result = await kimaki(emulator, data_dir, port, "remove", text_id)
        assert result.returncode == 64
        assert b"not a project" in result.stderr


async def test_through_the_running_daemon(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    folder = tmp_path / "service"
    folder.mkdir()
    async with (
        open_discord_emulator() as emulator,
        open_fake_engine() as engine,
        running_bot(emulator, engine, data_dir) as harness,
        trio.open_nursery() as nursery,
    ):
        control = ControlServer(
            port=0,
            data_dir=data_dir,
            health=lambda: {"pid": os.getpid(), "data_dir": str(data_dir)},
        )
        # The daemon's wiring: the routes use the bot's own project operations.
        await install_project_routes(control, harness.bot.projects)
        port = await nursery.start(control.serve)
        token_file = data_dir / CONTROL_TOKEN_FILE
        assert token_file.stat().st_mode & 0o777 == 0o600

        # Without the token another local user gets nothing.
        async with httpx.AsyncClient(base_url=control_url(port)) as client:
            refused = await client.post("/projects", json={"directory": str(folder)})
            assert refused.status_code == 401
            assert (await client.get("/projects")).status_code == 401

        # The daemon does the work: the bot's own store has the mapping at once.
        result = await kimaki(emulator, data_dir, port, "add", str(folder))
        assert result.returncode == 0, result.stderr
        records = [
            r for r in await harness.store.places.list_channels() if r.directory == folder.resolve()
        ]
        assert {r.channel_type for r in records} == {"text", "voice"}
        text = next(r for r in records if r.channel_type == "text")

        result = await kimaki(emulator, data_dir, port, "list", "--json")
        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)
        assert str(text.channel_id) in {item["channel_id"] for item in listed}
        assert str(harness.project.channel_id) in {item["channel_id"] for item in listed}

        result = await kimaki(
            emulator, data_dir, port, "remove", str(text.channel_id), "--delete-channel"
        )
        assert result.returncode == 0, result.stderr
        assert str(text.channel_id) not in emulator.state.channels
        assert await harness.store.places.get_channel(text.channel_id) is None
        assert folder.is_dir()

        # Errors come back as the one line the daemon wrote.
        result = await kimaki(emulator, data_dir, port, "add", str(tmp_path / "missing"))
        assert result.returncode == 64
        assert "does not exist" in result.stderr.decode()
        nursery.cancel_scope.cancel()


async def test_the_only_server_needs_no_guild_flag(tmp_path: Path) -> None:
    folder = tmp_path / "solo"
    folder.mkdir()
    async with open_discord_emulator() as emulator:
        space = emulator.create_workspace(channels=[])
        result = await kimaki(emulator, tmp_path / "data", free_port(), "add", str(folder))
        assert result.returncode == 0, result.stderr
        [channel] = [c for c in emulator.state.channels.values() if c.get("name") == "solo"][:1]
        assert channel["guild_id"] == space.guild["id"]
