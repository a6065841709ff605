"""What the fake Discord knows: users, guilds, roles, members, channels, threads, messages, files,
application commands and interactions, kept as the raw JSON dicts Discord would send.

Every change goes through one method here, whether a REST request or a test's actor made it, so
the bot and the humans see the same rules (the 2000-character limit, thread ids equal to their
starter message's id, the 3 s interaction deadline) and the same gateway dispatches. A change
calls `on_dispatch(event, data)` for what Discord would push over the gateway and wakes every
waiter (`wait_changed`), which is how tests wait for the bot without polling.

`DiscordState` is one object (the REST server, the gateway and the actors share it), built one
job a module, each on the one before, so each job reads alone:

- `_world`: the records, Discord's limits and flags, ids, change notification, lookups;
- `_validation`: the form checks (names, message payloads);
- `_guilds`: guilds, roles, members and permissions, channels, DMs;
- `_messages`: messages, typing, reactions;
- `_threads`: threads started from messages or in a channel, their members;
- `_interactions`: application commands, interactions, their webhooks.
"""

from __future__ import annotations

from typing import final

from kimaki.testing.discord._interactions import InteractionState
from kimaki.testing.discord._world import (
    ALL_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    File,
    GuildRecord,
    InteractionRecord,
    InteractionType,
)

__all__ = [
    "ALL_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "DiscordState",
    "File",
    "GuildRecord",
    "InteractionRecord",
    "InteractionType",
]


@final
class DiscordState(InteractionState):
    """The emulator's world. Methods raise `DiscordAPIError` where Discord would refuse."""
