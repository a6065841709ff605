"""What every part of the emulator's world stands on: the records (kept as the raw JSON dicts
Discord would send), Discord's limits and flags, fresh snowflakes, and `World`, the storage
with the change notification (`on_dispatch` for the gateway, `wait_changed` for waiters) and
the lookups the other parts share.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import itertools
import time
from collections.abc import Callable
from typing import Any, Final, final

import attrs
import trio

from kimaki.discord.models import THREAD_TYPES
from kimaki.testing.discord._errors import DiscordAPIError

__all__ = [
    "ADMINISTRATOR",
    "ALL_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "DISCORD_EPOCH_MS",
    "FLAG_COMPONENTS_V2",
    "FLAG_EPHEMERAL",
    "FLAG_LOADING",
    "FLAG_SUPPRESS_EMBEDS",
    "FLAG_SUPPRESS_NOTIFICATIONS",
    "INITIAL_RESPONSE_LIMIT",
    "MAX_CONTENT",
    "SETTABLE_FLAGS",
    "TOKEN_LIFETIME",
    "Dispatch",
    "File",
    "GuildRecord",
    "InteractionRecord",
    "InteractionType",
    "Json",
    "World",
    "iso",
    "snowflake_time",
]


Json = dict[str, Any]
Dispatch = Callable[[str, Json], None]

DISCORD_EPOCH_MS: Final = 1_420_070_400_000
MAX_CONTENT: Final = 2000  # ours to enforce; the OpenAPI description allows 4000
# Discord's own limit: an interaction not answered within 3 s is gone (10062 Unknown interaction).
INITIAL_RESPONSE_LIMIT: Final = 3.0
TOKEN_LIFETIME: Final = 15 * 60.0

ALL_PERMISSIONS: Final = (1 << 53) - 1
ADMINISTRATOR: Final = 1 << 3
# VIEW_CHANNEL, SEND_MESSAGES, READ_MESSAGE_HISTORY, ADD_REACTIONS, USE_APPLICATION_COMMANDS,
# SEND_MESSAGES_IN_THREADS, CREATE_PUBLIC_THREADS, ATTACH_FILES, EMBED_LINKS, CONNECT, SPEAK
DEFAULT_EVERYONE_PERMISSIONS: Final = (
    ((1 << 10) | (1 << 11) | (1 << 16) | (1 << 6) | (1 << 31) | (1 << 38) | (1 << 35))
    | (1 << 15)
    | (1 << 14)
    | (1 << 20)
    | (1 << 21)
)

FLAG_SUPPRESS_EMBEDS: Final = 1 << 2
FLAG_EPHEMERAL: Final = 1 << 6
FLAG_LOADING: Final = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS: Final = 1 << 12
FLAG_COMPONENTS_V2: Final = 1 << 15
SETTABLE_FLAGS: Final = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2


class InteractionType:
    PING: Final = 1
    APPLICATION_COMMAND: Final = 2
    MESSAGE_COMPONENT: Final = 3
    AUTOCOMPLETE: Final = 4
    MODAL_SUBMIT: Final = 5


@final
@attrs.frozen
class File:
    """A file as uploaded: by the bot (multipart `files[n]`) or by an actor."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"
    description: str | None = None


@final
@attrs.define
class GuildRecord:
    data: Json
    roles: dict[str, Json] = attrs.Factory(dict)
    # user id -> member object including "user"
    members: dict[str, Json] = attrs.Factory(dict)


@final
@attrs.define
class InteractionRecord:
    """One interaction an actor started, and what the bot did with it (times on trio's clock)."""

    id: str
    token: str
    type: int
    payload: Json
    created_at: float
    channel_id: str
    message_id: str | None = None  # the message a component sits on
    response_type: int | None = None
    response_data: Json | None = None
    responded_at: float | None = None
    original_message_id: str | None = None
    followup_ids: list[str] = attrs.Factory(list)
    late_callbacks: int = 0
    duplicate_callbacks: int = 0

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def ack_latency(self) -> float | None:
        """Seconds between INTERACTION_CREATE and the callback; Discord's limit is 3."""
        return None if self.responded_at is None else self.responded_at - self.created_at


def snowflake_time(snowflake: str) -> dt.datetime:
    ms = (int(snowflake) >> 22) + DISCORD_EPOCH_MS
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).isoformat()


class World:
    """The emulator's storage, its ids and change notifications, and the lookups every job uses
    (each raises the `DiscordAPIError` Discord answers for an unknown id)."""

    def __init__(
        self,
        *,
        bot_username: str = "Kimaki",
        application_id: str | None = None,
        on_dispatch: Dispatch | None = None,
    ) -> None:
        self._last_id = 0
        self._increment = itertools.count()
        self.on_dispatch: Dispatch = on_dispatch or (lambda event, data: None)
        self.base_url = "http://127.0.0.1"
        self.users: dict[str, Json] = {}
        self.guilds: dict[str, GuildRecord] = {}
        self.channels: dict[str, Json] = {}
        self.messages: dict[str, dict[str, Json]] = {}
        self.files: dict[str, File] = {}
        self.thread_members: dict[str, dict[str, str]] = {}
        self.commands: dict[str | None, list[Json]] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.typing: list[tuple[str, str, float]] = []
        # Who each message notified, after `allowed_mentions`: {"everyone": bool, "users":
        # [ids], "roles": [ids]} by message id.
        self.notified: dict[str, Json] = {}
        # (channel id, message id) -> emoji ("name" or "name:id") -> user ids, in order
        self.reactions: dict[tuple[str, str], dict[str, list[str]]] = {}
        self._nonces: dict[tuple[str, str, str], str] = {}
        # The most recent dispatches, for tests to inspect (bounded: benchmarks run for long).
        self.dispatched: collections.deque[tuple[str, Json]] = collections.deque(maxlen=10_000)
        self._changed = trio.Event()
        self.bot_user = self.add_user(bot_username, bot=True, user_id=application_id)
        # Discord sends these for the current user (READY, /users/@me); clients rely on them.
        self.bot_user.update(mfa_enabled=False, verified=True)
        self.application_id: str = self.bot_user["id"]

    def next_id(self) -> str:
        """A fresh snowflake: real timestamp bits, strictly increasing."""
        now_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        candidate = (now_ms << 22) | (1 << 17) | (next(self._increment) & 0xFFF)
        self._last_id = max(candidate, self._last_id + 1)
        return str(self._last_id)

    def changed(self) -> None:
        """Wake every waiter; they re-check their condition against the state."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def dispatch(self, event: str, data: Json) -> None:
        self.dispatched.append((event, data))
        self.on_dispatch(event, copy.deepcopy(data))
        self.changed()

    def add_user(
        self,
        username: str,
        *,
        bot: bool = False,
        global_name: str | None = None,
        user_id: str | None = None,
    ) -> Json:
        user: Json = {
            "id": user_id or self.next_id(),
            "username": username,
            "discriminator": "0",
            "global_name": global_name,
            "avatar": None,
            "bot": bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
        }
        self.users[user["id"]] = user
        self.changed()
        return user

    def user(self, user_id: str) -> Json:
        try:
            return self.users[user_id]
        except KeyError:
            raise DiscordAPIError(404, 10013, "Unknown User") from None

    def guild(self, guild_id: str) -> GuildRecord:
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise DiscordAPIError(404, 10004, "Unknown Guild") from None

    def role(self, guild_id: str, role_id: str) -> Json:
        try:
            return self.guild(guild_id).roles[role_id]
        except KeyError:
            raise DiscordAPIError(404, 10011, "Unknown Role") from None

    def member(self, guild_id: str, user_id: str) -> Json:
        try:
            return self.guild(guild_id).members[user_id]
        except KeyError:
            raise DiscordAPIError(404, 10007, "Unknown Member") from None

    def channel(self, channel_id: str) -> Json:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise DiscordAPIError(404, 10003, "Unknown Channel") from None

    def message(self, channel_id: str, message_id: str) -> Json:
        self.channel(channel_id)
        try:
            return self.messages[channel_id][message_id]
        except KeyError:
            raise DiscordAPIError(404, 10008, "Unknown Message") from None

    def _is_active_thread(self, channel: Json) -> bool:
        return channel["type"] in THREAD_TYPES and not channel["thread_metadata"]["archived"]
