from __future__ import annotations

import json
from typing import Any

import httpx
import trio_websocket

from kimaki.testing.discord import open_discord_emulator

# GUILDS, GUILD_MESSAGES, GUILD_VOICE_STATES, DIRECT_MESSAGES, MESSAGE_CONTENT
INTENTS = (1 << 0) | (1 << 9) | (1 << 7) | (1 << 12) | (1 << 15)


async def receive(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(await ws.get_message())
    return payload


async def test_identified_client_sees_state_and_what_actors_do() -> None:
    async with open_discord_emulator() as discord:
        space = discord.create_workspace(channels=["project"])
        channel_id = space.channels["project"]["id"]
        headers = {"Authorization": f"Bot {discord.token}"}
        async with httpx.AsyncClient(base_url=discord.api_url, headers=headers) as bot:
            url = (await bot.get("/gateway/bot")).json()["url"]
        async with trio_websocket.open_websocket_url(f"{url}/?v=10&encoding=json") as ws:
            hello = await receive(ws)
            assert hello["op"] == 10
            await ws.send_message(
                json.dumps(
                    {
                        "op": 2,
                        "d": {
                            "token": discord.token,
                            "intents": INTENTS,
                            "properties": {"os": "linux", "browser": "kimaki", "device": "kimaki"},
                        },
                    }
                )
            )
            ready = await receive(ws)
            assert (ready["t"], ready["d"]["user"]["id"]) == ("READY", discord.bot_user["id"])
            guild = await receive(ws)
            assert guild["t"] == "GUILD_CREATE"
            assert channel_id in {c["id"] for c in guild["d"]["channels"]}
            assert {r["name"] for r in guild["d"]["roles"]} >= {"@everyone", "Kimaki"}
            assert space.users["alice"].id in {m["user"]["id"] for m in guild["d"]["members"]}

            posted = space.users["alice"].send_message(channel_id, "hello bot")
            event = await receive(ws)
            assert event["t"] == "MESSAGE_CREATE"
            assert event["d"]["id"] == posted["id"]
            assert event["d"]["content"] == "hello bot"
            assert event["d"]["guild_id"] == space.guild["id"]
            assert event["d"]["member"]["roles"] == [space.kimaki_role["id"]]
            assert event["s"] == ready["s"] + 2
