"""Starting threads (from a message, whose id the thread takes, or announced by a system
message) and their members.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kimaki.discord.models import THREAD_TYPES, ChannelType
from kimaki.testing.discord._errors import DiscordAPIError, invalid_form_body
from kimaki.testing.discord._messages import MessageState
from kimaki.testing.discord._validation import require_name
from kimaki.testing.discord._world import Json, iso

__all__ = ["ThreadState"]


class ThreadState(MessageState):
    """Threads made from messages or in a channel, and who is in them."""

    def _new_thread(
        self, parent: Json, thread_id: str, payload: Mapping[str, Any], owner_id: str, kind: int
    ) -> Json:
        name = require_name(payload.get("name"), "name")
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
                "archive_timestamp": iso(),
                "locked": False,
                "create_timestamp": iso(),
                **({"invitable": payload.get("invitable", True)} if kind == 12 else {}),
            },
        }
        self.channels[thread_id] = thread
        self.messages[thread_id] = {}
        self.thread_members[thread_id] = {owner_id: iso()}
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
        if kind not in THREAD_TYPES:
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
        if thread["type"] not in THREAD_TYPES:
            raise DiscordAPIError(400, 50024, "Cannot execute action on this channel type")
        self.user(user_id)
        members = self.thread_members.setdefault(thread_id, {})
        if user_id in members:
            return
        members[user_id] = iso()
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
