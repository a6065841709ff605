"""Application commands, and interactions: what an actor's click or command sends, the bot's
callback within Discord's 3 s, and the webhook (follow-ups, edits of the original) for the
token's 15 minutes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import trio

from kimaki.testing.discord._errors import DiscordAPIError, invalid_form_body
from kimaki.testing.discord._threads import ThreadState
from kimaki.testing.discord._validation import require_name, validate_message_payload
from kimaki.testing.discord._world import (
    DEFAULT_EVERYONE_PERMISSIONS,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INITIAL_RESPONSE_LIMIT,
    SETTABLE_FLAGS,
    TOKEN_LIFETIME,
    File,
    InteractionRecord,
    InteractionType,
    Json,
)

__all__ = ["InteractionState"]


# Which callback types Discord accepts for each interaction type.
_CALLBACKS_ALLOWED: Final[Mapping[int, frozenset[int]]] = {
    InteractionType.PING: frozenset({1}),
    InteractionType.APPLICATION_COMMAND: frozenset({4, 5, 9}),
    InteractionType.MESSAGE_COMPONENT: frozenset({4, 5, 6, 7, 9}),
    InteractionType.AUTOCOMPLETE: frozenset({8}),
    InteractionType.MODAL_SUBMIT: frozenset({4, 5, 6, 7}),
}


class InteractionState(ThreadState):
    """Application commands and interactions, with their responses and follow-ups."""

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
        validate_message_payload(payload, files)
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
            flags_allowed=SETTABLE_FLAGS | FLAG_EPHEMERAL,
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
        if now - record.created_at > INITIAL_RESPONSE_LIMIT:
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
                validate_message_payload(data, files, editing=True)
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
            require_name(data.get("custom_id"), "custom_id")
            require_name(data.get("title"), "title", 45)
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
            validate_message_payload(payload, files)
            return self.edit_message(
                record.channel_id, original["id"], payload, files, editor_id="", any_author=True
            )
        message = self._interaction_message(record, payload, files)
        record.followup_ids.append(message["id"])
        return self._store_message(self.channels[record.channel_id], message)
