"""Messages in channels and threads: sending (attachments, mentions and who they notify,
replies, nonces), editing, deleting, typing, reactions.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from kimaki.discord.models import THREAD_TYPES
from kimaki.testing.discord._errors import DiscordAPIError, invalid_form_body
from kimaki.testing.discord._guilds import GuildState
from kimaki.testing.discord._validation import validate_message_payload
from kimaki.testing.discord._world import (
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    SETTABLE_FLAGS,
    File,
    Json,
    iso,
    snowflake_time,
)

__all__ = ["MessageState"]

FLAG_IS_VOICE_MESSAGE = 1 << 13


_USER_MENTION = re.compile(r"<@!?(\d+)>")


_ROLE_MENTION = re.compile(r"<@&(\d+)>")


class MessageState(GuildState):
    """Messages, typing and reactions, over the guilds and channels they live in."""

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
        flags_allowed: int = SETTABLE_FLAGS,
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
            "timestamp": iso(snowflake_time(message_id)),
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
        if channel["type"] in THREAD_TYPES:
            channel["message_count"] = channel.get("message_count", 0) + 1
            channel["total_message_sent"] = channel.get("total_message_sent", 0) + 1
        if announce and not message["flags"] & FLAG_EPHEMERAL:
            self.dispatch("MESSAGE_CREATE", self.message_event(message))
        else:
            self.changed()
        return message

    def create_message(
        self,
        channel_id: str,
        author_id: str,
        payload: Mapping[str, Any],
        files: Sequence[File] = (),
    ) -> Json:
        channel = self._messageable(channel_id, author_id)
        validate_message_payload(payload, files)
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

    def create_voice_message(
        self,
        channel_id: str,
        author_id: str,
        audio: File,
        *,
        duration_secs: float,
        waveform: str,
        content: str = "",
    ) -> Json:
        """A voice message as Discord's clients send one: flag IS_VOICE_MESSAGE (8192), one
        audio attachment with its `duration_secs` and `waveform` (base64 of up to 256 bytes)."""
        channel = self._messageable(channel_id, author_id)
        payload = {
            "content": content,
            "flags": FLAG_IS_VOICE_MESSAGE,
            "attachments": [{"id": "0", "filename": audio.filename}],
        }
        message = self._build_message(
            channel,
            self.user(author_id),
            payload,
            files=[audio],
            flags_allowed=SETTABLE_FLAGS | FLAG_IS_VOICE_MESSAGE,
        )
        message["attachments"][0].update(duration_secs=duration_secs, waveform=waveform)
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
        validate_message_payload(payload, files, editing=True)
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
            message["flags"] = keep | (payload["flags"] & SETTABLE_FLAGS)
        message["flags"] &= ~FLAG_LOADING
        if "attachments" in payload or files:
            kept_ids = {str(a.get("id")) for a in payload.get("attachments") or []}
            kept = [a for a in message["attachments"] if a["id"] in kept_ids]
            if "attachments" not in payload:
                kept = message["attachments"]
            message["attachments"] = kept + self._attachments(channel_id, payload, files)
        message["edited_timestamp"] = iso()
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
