"""A Discord-compatible emulator for tests, benchmarks and offline runs.

```python
async with open_discord_emulator(validate_requests=True) as discord:
    space = discord.create_workspace(channels=["project"])
    alice = space.users["alice"]
    # point the daemon at discord.api_url with discord.token, then:
    question = alice.send_message(space.channels["project"]["id"], "fix the bug")
    thread = await discord.wait_for_thread(space.channels["project"]["id"])
    reply = await discord.wait_for_message(thread["id"])
```

Run it standalone with `python -m kimaki.testing.discord --port N`.
"""

from __future__ import annotations

from kimaki.testing.discord._actors import Actor, iter_components
from kimaki.testing.discord._emulator import (
    DiscordEmulator,
    Workspace,
    make_bot_token,
    open_discord_emulator,
)
from kimaki.testing.discord._errors import (
    DiscordAPIError,
    EmulatorError,
    InvalidRequestError,
    WaitTimeout,
)
from kimaki.testing.discord._gateway import GatewayServer, GatewayServerStatistics
from kimaki.testing.discord._openapi import RequestValidator, default_openapi_path
from kimaki.testing.discord._rest import RestServer, RestStatistics
from kimaki.testing.discord._state import (
    DiscordState,
    File,
    InteractionRecord,
    InteractionType,
)

__all__ = [
    "Actor",
    "DiscordAPIError",
    "DiscordEmulator",
    "DiscordState",
    "EmulatorError",
    "File",
    "GatewayServer",
    "GatewayServerStatistics",
    "InteractionRecord",
    "InteractionType",
    "InvalidRequestError",
    "RequestValidator",
    "RestServer",
    "RestStatistics",
    "WaitTimeout",
    "Workspace",
    "default_openapi_path",
    "iter_components",
    "make_bot_token",
    "open_discord_emulator",
]
