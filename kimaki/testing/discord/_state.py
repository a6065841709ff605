"""What the fake Discord knows: users, guilds, roles, members, channels, threads, messages, files,
application commands and interactions, kept as the raw JSON dicts Discord would send.

Every change goes through one method here, whether a REST request or a test's actor made it, so
the bot and the humans see the same rules (the 2000-character limit, thread ids equal to their
starter message's id, the 3 s interaction deadline) and the same gateway dispatches. A change
calls `on_dispatch(event, data)` for what Discord would push over the gateway and wakes every
waiter (`wait_changed`), which is how tests wait for the bot without polling.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import itertools
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, final

import attrs
import trio

from kimaki.testing.discord._errors import DiscordAPIError, invalid_form_body

__all__ = [
    "ALL_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "ChannelType",
    "DiscordState",
    "File",
    "GuildRecord",
    "InteractionRecord",
    "InteractionType",
]

Json = dict[str, Any]
Dispatch = Callable[[str, Json], None]

DISCORD_EPOCH_MS: Final = 1_420_070_400_000
MAX_CONTENT: Final = 2000  # ours to enforce; the OpenAPI description allows 4000
ACK_DEADLINE: Final = 3.0
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
_SETTABLE_FLAGS: Final = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


class ChannelType:
    GUILD_TEXT: Final = 0
    DM: Final = 1
    GUILD_VOICE: Final = 2
    GUILD_CATEGORY: Final = 4
    GUILD_ANNOUNCEMENT: Final = 5
    ANNOUNCEMENT_THREAD: Final = 10
    PUBLIC_THREAD: Final = 11
    PRIVATE_THREAD: Final = 12
    GUILD_FORUM: Final = 15

    THREADS: Final = frozenset({10, 11, 12})
    MESSAGEABLE: Final = frozenset({0, 1, 2, 5, 10, 11, 12})


class InteractionType:
    PING: Final = 1
    APPLICATION_COMMAND: Final = 2
    MESSAGE_COMPONENT: Final = 3
    AUTOCOMPLETE: Final = 4
    MODAL_SUBMIT: Final = 5


# Which callback types Discord accepts for each interaction type.
_CALLBACKS_ALLOWED: Final[Mapping[int, frozenset[int]]] = {
    InteractionType.PING: frozenset({1}),
    InteractionType.APPLICATION_COMMAND: frozenset({4, 5, 9}),
    InteractionType.MESSAGE_COMPONENT: frozenset({4, 5, 6, 7, 9}),
    InteractionType.AUTOCOMPLETE: frozenset({8}),
    InteractionType.MODAL_SUBMIT: frozenset({4, 5, 6, 7}),
}


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


def _iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).isoformat()


def _require_name(value: Any, field: str, limit: int = 100) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise invalid_form_body(
            [field], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {limit} in length."
        )
    return value


@final
class DiscordState:
    """The emulator's world. Methods raise `DiscordAPIError` where Discord would refuse."""

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

    # ---- ids, notification ------------------------------------------------------------

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

    # ---- users, guilds, roles, members --------------------------------------------------

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

    def create_guild(self, name: str, *, owner_id: str) -> GuildRecord:
        """A guild owned by `owner_id` with an @everyone role; the bot joins it."""
        guild_id = self.next_id()
        data: Json = {
            "id": guild_id,
            "name": name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": owner_id,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }
        record = GuildRecord(data)
        self.guilds[guild_id] = record
        record.roles[guild_id] = self._role(guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS, 0)
        self._add_member(record, owner_id)
        self._add_member(record, self.bot_user["id"])
        self.dispatch("GUILD_CREATE", self.guild_create_payload(guild_id))
        return record

    def _role(self, role_id: str, name: str, permissions: int, position: int) -> Json:
        return {
            "id": role_id,
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def create_role(
        self, guild_id: str, name: str = "new role", *, permissions: int = 0, **fields: Any
    ) -> Json:
        record = self.guild(guild_id)
        role = self._role(self.next_id(), name, permissions, len(record.roles))
        role.update(fields)
        record.roles[role["id"]] = role
        self.dispatch("GUILD_ROLE_CREATE", {"guild_id": guild_id, "role": role})
        return role

    def role(self, guild_id: str, role_id: str) -> Json:
        try:
            return self.guild(guild_id).roles[role_id]
        except KeyError:
            raise DiscordAPIError(404, 10011, "Unknown Role") from None

    def _add_member(self, record: GuildRecord, user_id: str, roles: Iterable[str] = ()) -> Json:
        member: Json = {
            "user": self.user(user_id),
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": list(roles),
            "joined_at": _iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        record.members[user_id] = member
        self.changed()
        return member

    def add_member(self, guild_id: str, user_id: str, roles: Iterable[str] = ()) -> Json:
        record = self.guild(guild_id)
        for role_id in roles:
            self.role(guild_id, role_id)
        return self._add_member(record, user_id, roles)

    def member(self, guild_id: str, user_id: str) -> Json:
        try:
            return self.guild(guild_id).members[user_id]
        except KeyError:
            raise DiscordAPIError(404, 10007, "Unknown Member") from None

    def set_member_role(self, guild_id: str, user_id: str, role_id: str, present: bool) -> None:
        member = self.member(guild_id, user_id)
        self.role(guild_id, role_id)
        roles: list[str] = member["roles"]
        if present and role_id not in roles:
            roles.append(role_id)
        elif not present and role_id in roles:
            roles.remove(role_id)
        self.changed()

    def permissions(self, guild_id: str, user_id: str) -> int:
        """Guild-level permissions (owner and ADMINISTRATOR get everything)."""
        record = self.guild(guild_id)
        if record.data["owner_id"] == user_id:
            return ALL_PERMISSIONS
        member = self.member(guild_id, user_id)
        value = int(record.roles[guild_id]["permissions"])
        for role_id in member["roles"]:
            value |= int(record.roles[role_id]["permissions"])
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def guild_create_payload(self, guild_id: str) -> Json:
        """GUILD_CREATE as the gateway sends it: guild plus channels, threads, members, roles."""
        record = self.guild(guild_id)
        channels = [c for c in self.channels.values() if c.get("guild_id") == guild_id]
        payload = copy.deepcopy(record.data)
        payload.update(
            roles=list(record.roles.values()),
            channels=[c for c in channels if c["type"] not in ChannelType.THREADS],
            threads=[c for c in channels if self._is_active_thread(c)],
            members=list(record.members.values()),
            member_count=len(record.members),
            joined_at=record.members[self.bot_user["id"]]["joined_at"],
            large=False,
            unavailable=False,
            voice_states=[],
            presences=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
        )
        return copy.deepcopy(payload)

    def guild_create_payloads(self) -> list[Json]:
        bot_id = self.bot_user["id"]
        return [
            self.guild_create_payload(guild_id)
            for guild_id, record in self.guilds.items()
            if bot_id in record.members
        ]

    # ---- channels and threads -----------------------------------------------------------

    def channel(self, channel_id: str) -> Json:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise DiscordAPIError(404, 10003, "Unknown Channel") from None

    def _channel_event(self, channel: Json, action: str) -> None:
        thread = channel["type"] in ChannelType.THREADS
        self.dispatch(f"{'THREAD' if thread else 'CHANNEL'}_{action}", copy.deepcopy(channel))

    def create_channel(self, guild_id: str, payload: Mapping[str, Any]) -> Json:
        self.guild(guild_id)
        name = _require_name(payload.get("name"), "name")
        kind = payload.get("type") or ChannelType.GUILD_TEXT
        if kind not in (0, 2, 4, 5, 15):
            raise invalid_form_body(
                ["type"], "BASE_TYPE_CHOICES", "Value must be one of {0, 2, 4}."
            )
        parent_id = payload.get("parent_id")
        if parent_id is not None:
            parent = self.channel(str(parent_id))
            if parent["type"] != ChannelType.GUILD_CATEGORY or kind == ChannelType.GUILD_CATEGORY:
                raise invalid_form_body(
                    ["parent_id"], "CHANNEL_PARENT_INVALID_TYPE", "Not a category"
                )
        siblings = [c for c in self.channels.values() if c.get("guild_id") == guild_id]
        channel: Json = {
            "id": self.next_id(),
            "type": kind,
            "guild_id": guild_id,
            "name": name if kind != 0 else name.lower().replace(" ", "-"),
            "position": payload.get("position", len(siblings)),
            "permission_overwrites": list(payload.get("permission_overwrites") or []),
            "parent_id": None if parent_id is None else str(parent_id),
            "nsfw": bool(payload.get("nsfw", False)),
            "flags": 0,
        }
        if kind in (0, 5, 15):
            channel.update(
                topic=payload.get("topic"),
                last_message_id=None,
                rate_limit_per_user=payload.get("rate_limit_per_user", 0),
                # Discord's default is a day; it never sends null here.
                default_auto_archive_duration=payload.get("default_auto_archive_duration") or 1440,
            )
        if kind == ChannelType.GUILD_VOICE:
            channel.update(
                bitrate=payload.get("bitrate", 64000),
                user_limit=payload.get("user_limit", 0),
                rtc_region=None,
                last_message_id=None,
                rate_limit_per_user=0,
            )
        self.channels[channel["id"]] = channel
        self.messages[channel["id"]] = {}
        self._channel_event(channel, "CREATE")
        return channel

    def edit_channel(self, channel_id: str, payload: Mapping[str, Any]) -> Json:
        channel = self.channel(channel_id)
        if "name" in payload:
            _require_name(payload["name"], "name")
        if channel["type"] in ChannelType.THREADS:
            metadata = channel["thread_metadata"]
            for key in ("archived", "locked", "auto_archive_duration", "invitable"):
                if key in payload and payload[key] is not None:
                    metadata[key] = payload[key]
            if "archived" in payload:
                metadata["archive_timestamp"] = _iso()
            for key in ("name", "rate_limit_per_user", "flags", "applied_tags"):
                if key in payload:
                    channel[key] = payload[key]
        else:
            for key in (
                "name",
                "topic",
                "position",
                "nsfw",
                "rate_limit_per_user",
                "permission_overwrites",
                "bitrate",
                "user_limit",
                "default_auto_archive_duration",
            ):
                if key in payload:
                    channel[key] = payload[key]
            if "parent_id" in payload:
                parent_id = payload["parent_id"]
                if parent_id is not None:
                    self.channel(str(parent_id))
                channel["parent_id"] = None if parent_id is None else str(parent_id)
        self._channel_event(channel, "UPDATE")
        return channel

    def delete_channel(self, channel_id: str) -> Json:
        channel = self.channel(channel_id)
        del self.channels[channel_id]
        self.messages.pop(channel_id, None)
        if channel["type"] in ChannelType.THREADS:
            self.dispatch(
                "THREAD_DELETE",
                {
                    "id": channel_id,
                    "guild_id": channel.get("guild_id"),
                    "parent_id": channel.get("parent_id"),
                    "type": channel["type"],
                },
            )
        else:
            self._channel_event(channel, "DELETE")
            for child in [c for c in self.channels.values() if c.get("parent_id") == channel_id]:
                if child["type"] in ChannelType.THREADS:
                    self.delete_channel(child["id"])
                else:
                    child["parent_id"] = None
        return channel

    def guild_channels(self, guild_id: str) -> list[Json]:
        self.guild(guild_id)
        return [
            c
            for c in self.channels.values()
            if c.get("guild_id") == guild_id and c["type"] not in ChannelType.THREADS
        ]

    def _is_active_thread(self, channel: Json) -> bool:
        return channel["type"] in ChannelType.THREADS and not channel["thread_metadata"]["archived"]

    def active_threads(self, guild_id: str) -> list[Json]:
        self.guild(guild_id)
        return [
            c
            for c in self.channels.values()
            if c.get("guild_id") == guild_id and self._is_active_thread(c)
        ]

    def _new_thread(
        self, parent: Json, thread_id: str, payload: Mapping[str, Any], owner_id: str, kind: int
    ) -> Json:
        name = _require_name(payload.get("name"), "name")
        if parent["type"] not in (ChannelType.GUILD_TEXT, ChannelType.GUILD_ANNOUNCEMENT):
            raise DiscordAPIError(400, 50024, "Cannot execute action on this channel type")
        duration = payload.get("auto_archive_duration") or parent.get(
            "default_auto_archive_duration"
        )
        thread: Json = {
            "id": thread_id,
            "type": kind,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": owner_id,
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "rate_limit_per_user": payload.get("rate_limit_per_user") or 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": duration or 4320,
                "archive_timestamp": _iso(),
                "locked": False,
                "create_timestamp": _iso(),
                **({"invitable": payload.get("invitable", True)} if kind == 12 else {}),
            },
        }
        self.channels[thread_id] = thread
        self.messages[thread_id] = {}
        self.thread_members[thread_id] = {owner_id: _iso()}
        self.dispatch("THREAD_CREATE", {**copy.deepcopy(thread), "newly_created": True})
        return thread

    def start_thread_from_message(
        self, channel_id: str, message_id: str, payload: Mapping[str, Any], owner_id: str
    ) -> Json:
        """Like Discord, the thread's id is the starter message's id."""
        parent = self.channel(channel_id)
        message = self.message(channel_id, message_id)
        if message_id in self.channels:
            raise DiscordAPIError(400, 160004, "A thread has already been created for this message")
        kind = (
            ChannelType.ANNOUNCEMENT_THREAD
            if parent["type"] == ChannelType.GUILD_ANNOUNCEMENT
            else ChannelType.PUBLIC_THREAD
        )
        thread = self._new_thread(parent, message_id, payload, owner_id, kind)
        message["thread"] = copy.deepcopy(thread)
        return thread

    def start_thread(self, channel_id: str, payload: Mapping[str, Any], owner_id: str) -> Json:
        """A thread without a starter message (private unless `type` says 11)."""
        parent = self.channel(channel_id)
        kind = payload.get("type") or ChannelType.PRIVATE_THREAD
        if kind not in ChannelType.THREADS:
            raise invalid_form_body(["type"], "BASE_TYPE_CHOICES", "Value must be a thread type.")
        thread = self._new_thread(parent, self.next_id(), payload, owner_id, kind)
        if kind == ChannelType.PUBLIC_THREAD:
            # Discord announces a thread made without a message with a system message.
            self._store_message(
                parent,
                self._build_message(
                    parent,
                    self.user(owner_id),
                    {"content": thread["name"]},
                    message_type=18,
                    extra={
                        "message_reference": {
                            "channel_id": thread["id"],
                            "guild_id": parent["guild_id"],
                        }
                    },
                ),
            )
        return thread

    def add_thread_member(self, thread_id: str, user_id: str) -> None:
        thread = self.channel(thread_id)
        if thread["type"] not in ChannelType.THREADS:
            raise DiscordAPIError(400, 50024, "Cannot execute action on this channel type")
        self.user(user_id)
        members = self.thread_members.setdefault(thread_id, {})
        if user_id in members:
            return
        members[user_id] = _iso()
        thread["member_count"] = len(members)
        self.dispatch(
            "THREAD_MEMBERS_UPDATE",
            {
                "id": thread_id,
                "guild_id": thread["guild_id"],
                "member_count": len(members),
                "added_members": [
                    {"id": thread_id, "user_id": user_id, "join_timestamp": members[user_id]}
                ],
            },
        )

    def open_dm(self, user_id: str) -> Json:
        self.user(user_id)
        for channel in self.channels.values():
            if channel["type"] == ChannelType.DM and channel["recipients"][0]["id"] == user_id:
                return channel
        channel = {
            "id": self.next_id(),
            "type": ChannelType.DM,
            "last_message_id": None,
            "recipients": [self.users[user_id]],
            "flags": 0,
        }
        self.channels[channel["id"]] = channel
        self.messages[channel["id"]] = {}
        self.changed()
        return channel

    # ---- messages -----------------------------------------------------------------------

    def message(self, channel_id: str, message_id: str) -> Json:
        self.channel(channel_id)
        try:
            return self.messages[channel_id][message_id]
        except KeyError:
            raise DiscordAPIError(404, 10008, "Unknown Message") from None

    def list_messages(
        self,
        channel_id: str,
        *,
        limit: int = 50,
        before: str | None = None,
        after: str | None = None,
        around: str | None = None,
    ) -> list[Json]:
        """Newest first, like Discord (except `after`, which Discord also returns newest first)."""
        self.channel(channel_id)
        if not 1 <= limit <= 100:
            raise invalid_form_body(["limit"], "NUMBER_TYPE_MAX", "Must be between 1 and 100.")
        ordered = sorted(self.messages[channel_id].values(), key=lambda m: int(m["id"]))
        if around is not None:
            older = [m for m in ordered if int(m["id"]) <= int(around)][-(limit - limit // 2) :]
            newer = [m for m in ordered if int(m["id"]) > int(around)][: limit // 2]
            return list(reversed(older + newer))
        if before is not None:
            ordered = [m for m in ordered if int(m["id"]) < int(before)]
        if after is not None:
            ordered = [m for m in ordered if int(m["id"]) > int(after)][:limit]
        return list(reversed(ordered[-limit:]))

    def message_event(self, message: Json) -> Json:
        """A message as MESSAGE_CREATE/UPDATE carries it: with guild_id and the author's member."""
        event = copy.deepcopy(message)
        channel = self.channels.get(message["channel_id"])
        guild_id = channel.get("guild_id") if channel else None
        if guild_id is not None:
            event["guild_id"] = guild_id
            member = self.guilds[guild_id].members.get(message["author"]["id"])
            if member is not None and message.get("webhook_id") is None:
                event["member"] = {k: v for k, v in member.items() if k != "user"}
        return event

    def _validate_message_payload(
        self, payload: Mapping[str, Any], files: Sequence[File], *, editing: bool = False
    ) -> None:
        content = payload.get("content")
        if content is not None and not isinstance(content, str):
            raise invalid_form_body(["content"], "BASE_TYPE_STRING", "Must be a string.")
        if content is not None and len(content) > MAX_CONTENT:
            raise invalid_form_body(
                ["content"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
            )
        embeds = payload.get("embeds") or []
        if len(embeds) > 10:
            raise invalid_form_body(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer.")
        components = payload.get("components") or []
        flags = payload.get("flags") or 0
        if not flags & FLAG_COMPONENTS_V2:
            if len(components) > 5:
                raise invalid_form_body(
                    ["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."
                )
            for row_index, row in enumerate(components):
                children = row.get("components") or []
                if row.get("type") != 1 or not 1 <= len(children) <= 5:
                    raise invalid_form_body(
                        ["components", row_index],
                        "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                        "An action row must hold between 1 and 5 components.",
                    )
        if len(files) > 10:
            raise invalid_form_body(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer.")
        if not editing and not (
            content
            or embeds
            or components
            or files
            or payload.get("sticker_ids")
            or payload.get("poll")
        ):
            raise DiscordAPIError(400, 50006, "Cannot send an empty message")

    def _attachments(
        self, channel_id: str, payload: Mapping[str, Any], files: Sequence[File]
    ) -> list[Json]:
        described = {str(a.get("id")): a for a in payload.get("attachments") or []}
        result = []
        for index, file in enumerate(files):
            meta = described.get(str(index), {})
            attachment_id = self.next_id()
            filename = meta.get("filename") or file.filename
            self.files[attachment_id] = File(filename, file.data, file.content_type)
            url = f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{filename}"
            attachment: Json = {
                "id": attachment_id,
                "filename": filename,
                "size": len(file.data),
                "url": url,
                "proxy_url": url,
                "content_type": file.content_type,
            }
            description = meta.get("description") or file.description
            if description is not None:
                attachment["description"] = description
            result.append(attachment)
        return result

    def _mentions(self, content: str, guild_id: str | None) -> tuple[list[Json], list[str]]:
        users = [
            self.users[user_id]
            for user_id in dict.fromkeys(_USER_MENTION.findall(content))
            if user_id in self.users
        ]
        roles: list[str] = []
        if guild_id is not None:
            roles = [
                role_id
                for role_id in dict.fromkeys(_ROLE_MENTION.findall(content))
                if role_id in self.guilds[guild_id].roles
            ]
        return users, roles

    def _build_message(
        self,
        channel: Json,
        author: Json,
        payload: Mapping[str, Any],
        *,
        files: Sequence[File] = (),
        message_type: int = 0,
        flags_allowed: int = _SETTABLE_FLAGS,
        extra: Mapping[str, Any] | None = None,
    ) -> Json:
        message_id = self.next_id()
        content = payload.get("content") or ""
        users, roles = self._mentions(content, channel.get("guild_id"))
        message: Json = {
            "id": message_id,
            "channel_id": channel["id"],
            "author": author,
            "content": content,
            "timestamp": _iso(snowflake_time(message_id)),
            "edited_timestamp": None,
            "tts": bool(payload.get("tts", False)),
            "mention_everyone": "@everyone" in content,
            "mentions": users,
            "mention_roles": roles,
            "attachments": self._attachments(channel["id"], payload, files),
            "embeds": list(payload.get("embeds") or []),
            "reactions": [],
            "pinned": False,
            "type": message_type,
            "flags": (payload.get("flags") or 0) & flags_allowed,
            "components": list(payload.get("components") or []),
        }
        self.notified[message_id] = _notified(content, users, roles, payload)
        if payload.get("nonce") is not None:
            message["nonce"] = payload["nonce"]
        if payload.get("sticker_ids"):
            message["sticker_items"] = []
        reference = payload.get("message_reference")
        if reference:
            referenced_id = str(reference.get("message_id"))
            referenced_channel = str(reference.get("channel_id") or channel["id"])
            try:
                referenced = self.message(referenced_channel, referenced_id)
            except DiscordAPIError:
                if reference.get("fail_if_not_exists", True):
                    raise invalid_form_body(
                        ["message_reference"],
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                        "Unknown message",
                    ) from None
            else:
                message["type"] = 19
                message["message_reference"] = {
                    "type": 0,
                    "message_id": referenced_id,
                    "channel_id": referenced_channel,
                    "guild_id": channel.get("guild_id"),
                }
                message["referenced_message"] = copy.deepcopy(referenced)
        if extra:
            message.update(extra)
        return message

    def _store_message(self, channel: Json, message: Json, *, announce: bool = True) -> Json:
        self.messages[channel["id"]][message["id"]] = message
        channel["last_message_id"] = message["id"]
        if channel["type"] in ChannelType.THREADS:
            channel["message_count"] = channel.get("message_count", 0) + 1
            channel["total_message_sent"] = channel.get("total_message_sent", 0) + 1
        if announce and not message["flags"] & FLAG_EPHEMERAL:
            self.dispatch("MESSAGE_CREATE", self.message_event(message))
        else:
            self.changed()
        return message

    def _messageable(self, channel_id: str, author_id: str) -> Json:
        channel = self.channel(channel_id)
        if channel["type"] not in ChannelType.MESSAGEABLE:
            raise DiscordAPIError(400, 50008, "Cannot send messages in a non-text channel")
        if channel["type"] in ChannelType.THREADS:
            metadata = channel["thread_metadata"]
            if metadata["locked"] and author_id != self.bot_user["id"]:
                raise DiscordAPIError(400, 50083, "Thread is archived")
            if metadata["archived"]:
                self.edit_channel(channel_id, {"archived": False})
        return channel

    def create_message(
        self,
        channel_id: str,
        author_id: str,
        payload: Mapping[str, Any],
        files: Sequence[File] = (),
    ) -> Json:
        channel = self._messageable(channel_id, author_id)
        self._validate_message_payload(payload, files)
        nonce = payload.get("nonce")
        if payload.get("enforce_nonce") and nonce is not None:
            # A retried send with the same nonce gets the message already made, not a copy.
            earlier = self.messages[channel_id].get(
                self._nonces.get((channel_id, author_id, str(nonce)), "")
            )
            if earlier is not None:
                return earlier
        message = self._build_message(channel, self.user(author_id), payload, files=files)
        if nonce is not None:
            self._nonces[(channel_id, author_id, str(nonce))] = message["id"]
        return self._store_message(channel, message)

    def edit_message(
        self,
        channel_id: str,
        message_id: str,
        payload: Mapping[str, Any],
        files: Sequence[File] = (),
        *,
        editor_id: str,
        any_author: bool = False,
    ) -> Json:
        message = self.message(channel_id, message_id)
        if not any_author and message["author"]["id"] != editor_id:
            raise DiscordAPIError(403, 50005, "Cannot edit a message authored by another user")
        self._validate_message_payload(payload, files, editing=True)
        if "content" in payload:
            content = payload["content"] or ""
            message["content"] = content
            guild_id = self.channels[channel_id].get("guild_id")
            message["mentions"], message["mention_roles"] = self._mentions(content, guild_id)
        for key in ("embeds", "components"):
            if key in payload:
                message[key] = list(payload[key] or [])
        if payload.get("flags") is not None:
            keep = message["flags"] & (FLAG_EPHEMERAL | FLAG_COMPONENTS_V2)
            message["flags"] = keep | (payload["flags"] & _SETTABLE_FLAGS)
        message["flags"] &= ~FLAG_LOADING
        if "attachments" in payload or files:
            kept_ids = {str(a.get("id")) for a in payload.get("attachments") or []}
            kept = [a for a in message["attachments"] if a["id"] in kept_ids]
            if "attachments" not in payload:
                kept = message["attachments"]
            message["attachments"] = kept + self._attachments(channel_id, payload, files)
        message["edited_timestamp"] = _iso()
        if message["flags"] & FLAG_EPHEMERAL:
            self.changed()
        else:
            self.dispatch("MESSAGE_UPDATE", self.message_event(message))
        return message

    def delete_message(self, channel_id: str, message_id: str) -> None:
        message = self.message(channel_id, message_id)
        del self.messages[channel_id][message_id]
        channel = self.channels[channel_id]
        if message["flags"] & FLAG_EPHEMERAL:
            self.changed()
            return
        data: Json = {"id": message_id, "channel_id": channel_id}
        if channel.get("guild_id") is not None:
            data["guild_id"] = channel["guild_id"]
        self.dispatch("MESSAGE_DELETE", data)

    def record_typing(self, channel_id: str, user_id: str) -> None:
        self.channel(channel_id)
        self.typing.append((channel_id, user_id, trio.current_time()))
        self.changed()

    # ---- reactions ----------------------------------------------------------------------

    def set_reaction(
        self, channel_id: str, message_id: str, emoji: str, user_id: str, present: bool
    ) -> None:
        message = self.message(channel_id, message_id)
        self.user(user_id)
        by_emoji = self.reactions.setdefault((channel_id, message_id), {})
        users = by_emoji.setdefault(emoji, [])
        if present and user_id not in users:
            users.append(user_id)
        elif not present and user_id in users:
            users.remove(user_id)
        if not users:
            del by_emoji[emoji]
        message["reactions"] = [
            {
                "count": len(reacted),
                "count_details": {"burst": 0, "normal": len(reacted)},
                "me": self.bot_user["id"] in reacted,
                "me_burst": False,
                "burst_colors": [],
                "emoji": _parse_emoji(key),
            }
            for key, reacted in by_emoji.items()
        ]
        self.changed()

    def reaction_users(self, channel_id: str, message_id: str, emoji: str) -> list[Json]:
        self.message(channel_id, message_id)
        users = self.reactions.get((channel_id, message_id), {}).get(emoji, [])
        return [self.users[u] for u in users]

    def clear_reactions(self, channel_id: str, message_id: str) -> None:
        self.message(channel_id, message_id)["reactions"] = []
        self.reactions.pop((channel_id, message_id), None)
        self.changed()

    # ---- application commands -----------------------------------------------------------

    def _command(
        self, guild_id: str | None, payload: Mapping[str, Any], existing: Json | None
    ) -> Json:
        name = payload.get("name")
        if (
            not isinstance(name, str)
            or not re.fullmatch(r"[-_\w]{1,32}", name)
            or name != name.lower()
        ):
            raise invalid_form_body(["name"], "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
        kind = payload.get("type") or 1
        if kind == 1 and not 1 <= len(payload.get("description") or "") <= 100:
            raise invalid_form_body(
                ["description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        command: Json = {
            "id": existing["id"] if existing else self.next_id(),
            "application_id": self.application_id,
            "version": self.next_id(),
            "default_member_permissions": None,
            "type": kind,
            "nsfw": False,
            "name": name,
            "description": payload.get("description") or "",
            "options": list(payload.get("options") or []),
            "contexts": payload.get("contexts"),
            "integration_types": payload.get("integration_types") or [0],
        }
        for key in (
            "default_member_permissions",
            "name_localizations",
            "description_localizations",
        ):
            if key in payload:
                command[key] = payload[key]
        if guild_id is not None:
            command["guild_id"] = guild_id
        return command

    def overwrite_commands(
        self, guild_id: str | None, payloads: Sequence[Mapping[str, Any]]
    ) -> list[Json]:
        if guild_id is not None:
            self.guild(guild_id)
        old = {(c["name"], c["type"]): c for c in self.commands.get(guild_id, [])}
        commands = []
        for index, payload in enumerate(payloads):
            try:
                key = (payload.get("name"), payload.get("type") or 1)
                commands.append(self._command(guild_id, payload, old.get(key)))
            except DiscordAPIError as exc:
                raise DiscordAPIError(
                    400, 50035, "Invalid Form Body", {str(index): exc.errors}
                ) from None
        self.commands[guild_id] = commands
        self.changed()
        return commands

    def upsert_command(self, guild_id: str | None, payload: Mapping[str, Any]) -> tuple[Json, bool]:
        existing = next(
            (c for c in self.commands.get(guild_id, []) if c["name"] == payload.get("name")), None
        )
        command = self._command(guild_id, payload, existing)
        commands = [c for c in self.commands.get(guild_id, []) if c is not existing]
        self.commands[guild_id] = [*commands, command]
        self.changed()
        return command, existing is None

    def find_command(self, name: str, guild_id: str | None) -> Json | None:
        for scope in (guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name:
                    return command
        return None

    def delete_command(self, guild_id: str | None, command_id: str) -> None:
        commands = self.commands.get(guild_id, [])
        if not any(c["id"] == command_id for c in commands):
            raise DiscordAPIError(404, 10063, "Unknown application command")
        self.commands[guild_id] = [c for c in commands if c["id"] != command_id]
        self.changed()

    # ---- interactions -------------------------------------------------------------------

    def create_interaction(
        self,
        kind: int,
        user_id: str,
        channel_id: str,
        data: Json,
        *,
        message: Json | None = None,
    ) -> InteractionRecord:
        """Record an interaction and dispatch INTERACTION_CREATE with a fresh id and token."""
        channel = self.channel(channel_id)
        interaction_id = self.next_id()
        token = f"aW50ZXJhY3Rpb246{interaction_id}:{self.next_id()}"
        payload: Json = {
            "id": interaction_id,
            "application_id": self.application_id,
            "type": kind,
            "data": data,
            "channel_id": channel_id,
            "channel": copy.deepcopy(channel),
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        guild_id = channel.get("guild_id")
        if guild_id is not None:
            member = copy.deepcopy(self.member(guild_id, user_id))
            member["permissions"] = str(self.permissions(guild_id, user_id))
            payload.update(
                guild_id=guild_id,
                guild={"id": guild_id, "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member,
                app_permissions=str(self.permissions(guild_id, self.bot_user["id"])),
                authorizing_integration_owners={"0": guild_id},
                context=0,
            )
        else:
            payload.update(
                user=self.user(user_id),
                app_permissions=str(DEFAULT_EVERYONE_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        record = InteractionRecord(
            id=interaction_id,
            token=token,
            type=kind,
            payload=payload,
            created_at=trio.current_time(),
            channel_id=channel_id,
            message_id=None if message is None else message["id"],
        )
        self.interactions[interaction_id] = record
        self.dispatch("INTERACTION_CREATE", payload)
        return record

    def _interaction_user(self, record: InteractionRecord) -> Json:
        member = record.payload.get("member")
        user: Json = member["user"] if member else record.payload["user"]
        return user

    def _interaction_message(
        self, record: InteractionRecord, payload: Mapping[str, Any], files: Sequence[File]
    ) -> Json:
        channel = self.channel(record.channel_id)
        self._validate_message_payload(payload, files)
        user = self._interaction_user(record)
        metadata: Json = {
            "id": record.id,
            "type": record.type,
            "user": user,
            "authorizing_integration_owners": record.payload["authorizing_integration_owners"],
        }
        return self._build_message(
            channel,
            self.bot_user,
            payload,
            files=files,
            message_type=20 if record.type == InteractionType.APPLICATION_COMMAND else 0,
            flags_allowed=_SETTABLE_FLAGS | FLAG_EPHEMERAL,
            extra={
                "webhook_id": self.application_id,
                "application_id": self.application_id,
                "interaction_metadata": metadata,
            },
        )

    def interaction_callback(
        self,
        interaction_id: str,
        token: str,
        body: Mapping[str, Any],
        files: Sequence[File] = (),
    ) -> Json:
        """Apply an interaction response; returns the `with_response` callback object."""
        now = trio.current_time()
        record = self.interactions.get(interaction_id)
        if record is None or record.token != token:
            raise DiscordAPIError(404, 10062, "Unknown interaction")
        if record.acknowledged:
            record.duplicate_callbacks += 1
            self.changed()
            raise DiscordAPIError(400, 40060, "Interaction has already been acknowledged.")
        if now - record.created_at > ACK_DEADLINE:
            record.late_callbacks += 1
            self.changed()
            raise DiscordAPIError(404, 10062, "Unknown interaction")
        kind = body.get("type")
        if not isinstance(kind, int) or kind not in _CALLBACKS_ALLOWED[record.type]:
            raise invalid_form_body(
                ["type"],
                "INTERACTION_RESPONSE_TYPE_INVALID",
                "This response type is not valid for this interaction.",
            )
        data: Json = dict(body.get("data") or {})
        message: Json | None = None
        if kind == 4:
            message = self._interaction_message(record, data, files)
            self._store_message(self.channels[record.channel_id], message)
        elif kind == 5:
            flags = FLAG_LOADING | ((data.get("flags") or 0) & FLAG_EPHEMERAL)
            message = self._build_message(
                self.channels[record.channel_id],
                self.bot_user,
                {},
                message_type=20 if record.type == InteractionType.APPLICATION_COMMAND else 0,
                flags_allowed=0,
                extra={
                    "flags": flags,
                    "webhook_id": self.application_id,
                    "application_id": self.application_id,
                    "interaction_metadata": {
                        "id": record.id,
                        "type": record.type,
                        "user": self._interaction_user(record),
                    },
                },
            )
            self._store_message(self.channels[record.channel_id], message)
        elif kind in (6, 7):
            if record.message_id is None:
                raise invalid_form_body(
                    ["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "No message to update."
                )
            if kind == 7:
                self._validate_message_payload(data, files, editing=True)
            message = self.messages[record.channel_id].get(record.message_id)
            if message is None:
                raise DiscordAPIError(404, 10008, "Unknown Message")
        elif kind == 8:
            choices = data.get("choices") or []
            if len(choices) > 25:
                raise invalid_form_body(
                    ["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
        elif kind == 9:
            _require_name(data.get("custom_id"), "custom_id")
            _require_name(data.get("title"), "title", 45)
            if not 1 <= len(data.get("components") or []) <= 5:
                raise invalid_form_body(
                    ["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5."
                )
        record.response_type = kind
        record.response_data = data
        record.responded_at = now
        if message is not None:
            record.original_message_id = message["id"]
        if kind == 7 and message is not None:
            self.edit_message(
                record.channel_id, message["id"], data, files, editor_id="", any_author=True
            )
        self.changed()
        callback: Json = {
            "interaction": {
                "id": record.id,
                "type": record.type,
                "response_message_id": record.original_message_id,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message["flags"] & FLAG_EPHEMERAL),
            },
        }
        if message is not None:
            callback["resource"] = {"type": kind, "message": message}
        return callback

    def _webhook_interaction(self, application_id: str, token: str) -> InteractionRecord:
        record = next((r for r in self.interactions.values() if r.token == token), None)
        if record is None or application_id != self.application_id:
            raise DiscordAPIError(404, 10015, "Unknown Webhook")
        if trio.current_time() - record.created_at > TOKEN_LIFETIME:
            raise DiscordAPIError(401, 50027, "Invalid Webhook Token")
        if not record.acknowledged:
            raise DiscordAPIError(404, 10015, "Unknown Webhook")
        return record

    def webhook_message(self, application_id: str, token: str, message_id: str) -> Json:
        record = self._webhook_interaction(application_id, token)
        if message_id == "@original":
            if record.original_message_id is None:
                raise DiscordAPIError(404, 10008, "Unknown Message")
            message_id = record.original_message_id
        elif message_id not in record.followup_ids and message_id != record.original_message_id:
            raise DiscordAPIError(404, 10008, "Unknown Message")
        return self.message(record.channel_id, message_id)

    def webhook_edit(
        self,
        application_id: str,
        token: str,
        message_id: str,
        payload: Mapping[str, Any],
        files: Sequence[File] = (),
    ) -> Json:
        message = self.webhook_message(application_id, token, message_id)
        return self.edit_message(
            message["channel_id"], message["id"], payload, files, editor_id="", any_author=True
        )

    def webhook_delete(self, application_id: str, token: str, message_id: str) -> None:
        message = self.webhook_message(application_id, token, message_id)
        self.delete_message(message["channel_id"], message["id"])

    def followup(
        self,
        application_id: str,
        token: str,
        payload: Mapping[str, Any],
        files: Sequence[File] = (),
    ) -> Json:
        """A follow-up; the first one after a deferred response fills the loading message."""
        record = self._webhook_interaction(application_id, token)
        original = (
            self.messages[record.channel_id].get(record.original_message_id)
            if record.original_message_id is not None
            else None
        )
        if record.response_type == 5 and original is not None and original["flags"] & FLAG_LOADING:
            self._validate_message_payload(payload, files)
            return self.edit_message(
                record.channel_id, original["id"], payload, files, editor_id="", any_author=True
            )
        message = self._interaction_message(record, payload, files)
        record.followup_ids.append(message["id"])
        return self._store_message(self.channels[record.channel_id], message)


def _parse_emoji(emoji: str) -> Json:
    name, _, emoji_id = emoji.partition(":")
    return {"id": emoji_id or None, "name": name}


def _notified(content: str, users: Sequence[Json], roles: Sequence[str], payload: Any) -> Json:
    """Who a new message pings: its mentions, narrowed by `allowed_mentions` as Discord does
    (no `allowed_mentions` at all pings everything the content mentions)."""
    everyone = "@everyone" in content or "@here" in content
    user_ids = [str(user["id"]) for user in users]
    role_ids = list(roles)
    allowed = payload.get("allowed_mentions")
    if isinstance(allowed, dict):
        parse = set(allowed.get("parse") or ())
        listed_users = {str(u) for u in allowed.get("users") or ()}
        listed_roles = {str(r) for r in allowed.get("roles") or ()}
        everyone = everyone and "everyone" in parse
        user_ids = [u for u in user_ids if "users" in parse or u in listed_users]
        role_ids = [r for r in role_ids if "roles" in parse or r in listed_roles]
    return {"everyone": everyone, "users": user_ids, "roles": role_ids}
