from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import httpx
import trio


async def test_help_lists_the_port_option() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "kimaki.testing.discord", "--help"], capture_stdout=True
    )
    assert b"--port" in result.stdout


async def test_standalone_emulator_serves_what_it_prints() -> None:
    async with trio.open_nursery() as nursery:
        command = [sys.executable, "-m", "kimaki.testing.discord", "--json", "--channel", "app"]
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
        )
        assert process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            line += await process.stdout.receive_some(4096)
        info = json.loads(line)
        headers = {"Authorization": f"Bot {info['token']}"}
        async with httpx.AsyncClient(base_url=info["api_url"], headers=headers) as bot:
            gateway = await bot.get("/gateway/bot")
            channel = await bot.get(f"/channels/{info['channels']['app']}")
        assert gateway.json()["url"] == info["gateway_url"]
        assert channel.json()["name"] == "app"
        process.terminate()
