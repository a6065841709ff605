"""Humans for tests: an `Actor` is a guild member who writes, reacts and uses the bot's UI.

Actors act through the same state methods the REST side uses, so what they do is checked by the
same rules and reaches the bot as the gateway dispatches Discord would send. Interactions behave
like a Discord client: a slash command must be registered (its option types come from the
registration), a button must exist on the message and not be disabled, select values must be
among the options, and a modal can only be submitted after the bot showed it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, final

import attrs

from kimaki.testing.discord._errors import EmulatorError
from kimaki.testing.discord._state import DiscordState, File, InteractionRecord, InteractionType

__all__ = ["Actor", "iter_components"]

Json = dict[str, Any]

_OPTION_SUBCOMMAND: Final = 1
_OPTION_GROUP: Final = 2
_SELECT_TYPES: Final = frozenset({3, 5, 6, 7, 8})


def iter_components(components: Sequence[Json]) -> Iterator[Json]:
    """Every component in a tree of rows, containers, sections and labels, depth first."""
    for component in components:
        yield component
        yield from iter_components(component.get("components") or [])
        for key in ("accessory", "component"):
            child = component.get(key)
            if isinstance(child, dict):
                yield from iter_components([child])


def _python_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


@final
@attrs.define
class Actor:
    """A human user (`user` is the raw user object) acting in the emulator."""

    state: DiscordState
    user: Json

    @property
    def id(self) -> str:
        return str(self.user["id"])

    @property
    def name(self) -> str:
        return str(self.user["username"])

    # ---- messages -------------------------------------------------------------------------

    def send_message(
        self,
        channel_id: str,
        content: str = "",
        *,
        files: Sequence[File] = (),
        reply_to: Json | None = None,
        **fields: Any,
    ) -> Json:
        """Post a message (MESSAGE_CREATE); `files` become attachments served by the emulator."""
        payload: Json = {"content": content, **fields}
        if reply_to is not None:
            payload["message_reference"] = {
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
            }
        if files:
            payload["attachments"] = [
                {"id": str(index), "filename": file.filename} for index, file in enumerate(files)
            ]
        return copy.deepcopy(self.state.create_message(channel_id, self.id, payload, files))

    def send_voice_message(
        self,
        channel_id: str,
        audio: bytes,
        *,
        duration_secs: float,
        content: str = "",
        filename: str = "voice-message.ogg",
        waveform: str = "AAAAAAAAAAAA",
    ) -> Json:
        """Post a voice message as Discord's clients do (flag 8192, an `audio/ogg` attachment
        with `duration_secs` and `waveform`)."""
        file = File(filename, audio, "audio/ogg")
        return copy.deepcopy(
            self.state.create_voice_message(
                channel_id,
                self.id,
                file,
                duration_secs=duration_secs,
                waveform=waveform,
                content=content,
            )
        )

    def edit_message(self, message: Json, content: str) -> Json:
        edited = self.state.edit_message(
            message["channel_id"], message["id"], {"content": content}, editor_id=self.id
        )
        return copy.deepcopy(edited)

    def delete_message(self, message: Json) -> None:
        if message["author"]["id"] != self.id:
            raise EmulatorError(f"{self.name} cannot delete a message written by someone else")
        self.state.delete_message(message["channel_id"], message["id"])

    def react(self, message: Json, emoji: str) -> None:
        self.state.set_reaction(message["channel_id"], message["id"], emoji, self.id, True)

    def start_thread(self, channel_id: str, name: str, *, message: Json | None = None) -> Json:
        if message is not None:
            thread = self.state.start_thread_from_message(
                channel_id, message["id"], {"name": name}, self.id
            )
        else:
            thread = self.state.start_thread(channel_id, {"name": name, "type": 11}, self.id)
        return copy.deepcopy(thread)

    # ---- application commands -------------------------------------------------------------

    def run_command(
        self,
        channel_id: str,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        group: str | None = None,
    ) -> InteractionRecord:
        """Run `/name [group] [subcommand] options...` (INTERACTION_CREATE type 2)."""
        data = self._command_data(channel_id, name, options or {}, subcommand, group, None)
        return self.state.create_interaction(
            InteractionType.APPLICATION_COMMAND, self.id, channel_id, data
        )

    def autocomplete(
        self,
        channel_id: str,
        name: str,
        focused: str,
        partial: str,
        options: Mapping[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        group: str | None = None,
    ) -> InteractionRecord:
        """Type `partial` into option `focused` of `/name` (INTERACTION_CREATE type 4)."""
        values = {**(options or {}), focused: partial}
        data = self._command_data(channel_id, name, values, subcommand, group, focused)
        return self.state.create_interaction(
            InteractionType.AUTOCOMPLETE, self.id, channel_id, data
        )

    def _command_data(
        self,
        channel_id: str,
        name: str,
        values: Mapping[str, Any],
        subcommand: str | None,
        group: str | None,
        focused: str | None,
    ) -> Json:
        guild_id = self.state.channel(channel_id).get("guild_id")
        command = self.state.find_command(name, guild_id)
        if command is None:
            raise EmulatorError(f"/{name} is not registered (guild {guild_id} or global)")
        definitions: list[Json] = command["options"]
        path: list[tuple[str, int]] = []
        for part, kind in ((group, _OPTION_GROUP), (subcommand, _OPTION_SUBCOMMAND)):
            if part is None:
                continue
            found = next((o for o in definitions if o["name"] == part and o["type"] == kind), None)
            if found is None:
                raise EmulatorError(f"/{name} has no subcommand (group) {part!r}")
            definitions = found.get("options") or []
            path.append((part, kind))
        resolved: dict[str, dict[str, Json]] = {}
        options = [
            self._option(definitions, key, value, key == focused, guild_id, resolved)
            for key, value in values.items()
        ]
        if focused is None:
            missing = [
                o["name"]
                for o in definitions
                if o.get("required") and o["name"] not in values and o["type"] > 2
            ]
            if missing:
                raise EmulatorError(f"/{name}: required options missing: {', '.join(missing)}")
        for part, kind in reversed(path):
            options = [{"name": part, "type": kind, "options": options}]
        data: Json = {
            "id": command["id"],
            "name": name,
            "type": command["type"],
            "options": options,
        }
        if guild_id is not None:
            data["guild_id"] = guild_id
        if resolved:
            data["resolved"] = resolved
        return data

    def _option(
        self,
        definitions: Sequence[Json],
        key: str,
        value: Any,
        focused: bool,
        guild_id: str | None,
        resolved: dict[str, dict[str, Json]],
    ) -> Json:
        definition = next((o for o in definitions if o["name"] == key), None)
        if definitions and definition is None:
            raise EmulatorError(f"no option {key!r} among {[o['name'] for o in definitions]}")
        kind = definition["type"] if definition else _python_option_type(value)
        if not focused and definition and definition.get("choices"):
            allowed = [c["value"] for c in definition["choices"]]
            if value not in allowed:
                raise EmulatorError(f"option {key!r}: {value!r} is not among {allowed}")
        option: Json = {"name": key, "type": kind, "value": value}
        if focused:
            option["focused"] = True
        elif kind in (6, 9) and str(value) in self.state.users:
            resolved.setdefault("users", {})[str(value)] = self.state.users[str(value)]
            if guild_id is not None and str(value) in self.state.guilds[guild_id].members:
                member = self.state.guilds[guild_id].members[str(value)]
                resolved.setdefault("members", {})[str(value)] = {
                    k: v for k, v in member.items() if k != "user"
                }
        elif kind == 7:
            resolved.setdefault("channels", {})[str(value)] = self.state.channel(str(value))
        elif kind == 8 and guild_id is not None:
            resolved.setdefault("roles", {})[str(value)] = self.state.role(guild_id, str(value))
        return option

    # ---- components and modals ------------------------------------------------------------

    def _component(self, message: Json, custom_id: str) -> tuple[Json, Json]:
        current = self.state.message(message["channel_id"], message["id"])
        for component in iter_components(current.get("components") or []):
            if component.get("custom_id") == custom_id:
                if component.get("disabled"):
                    raise EmulatorError(f"component {custom_id!r} is disabled")
                return current, component
        raise EmulatorError(f"message {message['id']} has no component {custom_id!r}")

    def click_button(self, message: Json, custom_id: str) -> InteractionRecord:
        current, component = self._component(message, custom_id)
        if component.get("type") != 2:
            raise EmulatorError(f"component {custom_id!r} is not a button")
        data = {"custom_id": custom_id, "component_type": 2}
        return self.state.create_interaction(
            InteractionType.MESSAGE_COMPONENT, self.id, current["channel_id"], data, message=current
        )

    def select(self, message: Json, custom_id: str, values: Sequence[str]) -> InteractionRecord:
        current, component = self._component(message, custom_id)
        if component.get("type") not in _SELECT_TYPES:
            raise EmulatorError(f"component {custom_id!r} is not a select menu")
        if component["type"] == 3:
            allowed = [option["value"] for option in component.get("options") or []]
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise EmulatorError(f"select {custom_id!r}: {unknown} not among {allowed}")
        low, high = component.get("min_values", 1), component.get("max_values", 1)
        if not low <= len(values) <= high:
            raise EmulatorError(f"select {custom_id!r} takes {low}..{high} values")
        data = {"custom_id": custom_id, "component_type": component["type"], "values": list(values)}
        return self.state.create_interaction(
            InteractionType.MESSAGE_COMPONENT, self.id, current["channel_id"], data, message=current
        )

    def submit_modal(
        self, shown_by: InteractionRecord, values: Mapping[str, str | Sequence[str]]
    ) -> InteractionRecord:
        """Fill in and submit the modal the bot answered `shown_by` with (callback type 9)."""
        if shown_by.response_type != 9 or shown_by.response_data is None:
            raise EmulatorError(f"interaction {shown_by.id} was not answered with a modal")
        modal = shown_by.response_data
        unknown = set(values) - {
            c.get("custom_id") for c in iter_components(modal.get("components") or [])
        }
        if unknown:
            raise EmulatorError(f"modal {modal['custom_id']!r} has no inputs {sorted(unknown)}")
        components = [self._submitted(row, values) for row in modal.get("components") or []]
        data = {"custom_id": modal["custom_id"], "components": components}
        message = None
        if shown_by.message_id is not None:
            message = self.state.messages[shown_by.channel_id].get(shown_by.message_id)
        return self.state.create_interaction(
            InteractionType.MODAL_SUBMIT, self.id, shown_by.channel_id, data, message=message
        )

    def _submitted(self, component: Json, values: Mapping[str, str | Sequence[str]]) -> Json:
        kind = component.get("type")
        if kind == 1:
            return {
                "type": 1,
                "components": [self._submitted(c, values) for c in component["components"]],
            }
        if kind == 18:
            return {"type": 18, "component": self._submitted(component["component"], values)}
        custom_id = component.get("custom_id")
        if kind == 4:
            value = values.get(custom_id or "", component.get("value") or "")
            if not isinstance(value, str):
                raise EmulatorError(f"text input {custom_id!r} takes a string")
            if component.get("required", True) and not value:
                raise EmulatorError(f"text input {custom_id!r} is required")
            if len(value) > component.get("max_length", 4000):
                raise EmulatorError(f"text input {custom_id!r} is longer than allowed")
            return {"type": 4, "custom_id": custom_id, "value": value}
        if kind in _SELECT_TYPES:
            chosen = values.get(custom_id or "", [])
            return {
                "type": kind,
                "custom_id": custom_id,
                "values": [chosen] if isinstance(chosen, str) else list(chosen),
            }
        return {"type": kind}
