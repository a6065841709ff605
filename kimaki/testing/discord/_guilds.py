"""Guilds and what they hold: roles, members and their permissions, channels, DMs; the
GUILD_CREATE payload the gateway sends for each.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Final

from kimaki.discord.models import THREAD_TYPES, ChannelType
from kimaki.testing.discord._errors import DiscordAPIError, invalid_form_body
from kimaki.testing.discord._validation import require_name
from kimaki.testing.discord._world import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    GuildRecord,
    Json,
    World,
    iso,
)

__all__ = ["GuildState"]


# The channel types the emulator stores are Discord's numbers, the client's own enum: one
# definition of the same numbers keeps the two from drifting apart.
_MESSAGEABLE: Final = frozenset(
    {
        ChannelType.GUILD_TEXT,
        ChannelType.DM,
        ChannelType.GUILD_VOICE,
        ChannelType.GUILD_ANNOUNCEMENT,
        *THREAD_TYPES,
    }
)


class GuildState(World):
    """Guilds, roles, members, channels (threads included, once made) and DMs."""

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

    def _add_member(self, record: GuildRecord, user_id: str, roles: Iterable[str] = ()) -> Json:
        member: Json = {
            "user": self.user(user_id),
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": list(roles),
            "joined_at": iso(),
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
            channels=[c for c in channels if c["type"] not in THREAD_TYPES],
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

    def _channel_event(self, channel: Json, action: str) -> None:
        thread = channel["type"] in THREAD_TYPES
        self.dispatch(f"{'THREAD' if thread else 'CHANNEL'}_{action}", copy.deepcopy(channel))

    def create_channel(self, guild_id: str, payload: Mapping[str, Any]) -> Json:
        self.guild(guild_id)
        name = require_name(payload.get("name"), "name")
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
            require_name(payload["name"], "name")
        if channel["type"] in THREAD_TYPES:
            metadata = channel["thread_metadata"]
            for key in ("archived", "locked", "auto_archive_duration", "invitable"):
                if key in payload and payload[key] is not None:
                    metadata[key] = payload[key]
            if "archived" in payload:
                metadata["archive_timestamp"] = iso()
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
        if channel["type"] in THREAD_TYPES:
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
                if child["type"] in THREAD_TYPES:
                    self.delete_channel(child["id"])
                else:
                    child["parent_id"] = None
        return channel

    def guild_channels(self, guild_id: str) -> list[Json]:
        self.guild(guild_id)
        return [
            c
            for c in self.channels.values()
            if c.get("guild_id") == guild_id and c["type"] not in THREAD_TYPES
        ]

    def active_threads(self, guild_id: str) -> list[Json]:
        self.guild(guild_id)
        return [
            c
            for c in self.channels.values()
            if c.get("guild_id") == guild_id and self._is_active_thread(c)
        ]

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

    def _messageable(self, channel_id: str, author_id: str) -> Json:
        channel = self.channel(channel_id)
        if channel["type"] not in _MESSAGEABLE:
            raise DiscordAPIError(400, 50008, "Cannot send messages in a non-text channel")
        if channel["type"] in THREAD_TYPES:
            metadata = channel["thread_metadata"]
            if metadata["locked"] and author_id != self.bot_user["id"]:
                raise DiscordAPIError(400, 50083, "Thread is archived")
            if metadata["archived"]:
                self.edit_channel(channel_id, {"archived": False})
        return channel
