"""`/transcription-key` and `/transcription`: which service turns voice messages into prompts.

The key is stored in the state database like the bot token, registered with the redactor at
once, and never shown again: not in the answer, not in `/transcription`, not in the log. Only
the guild owner and people with Manage Server (or Administrator) may set it: it is the bot's
key, paid for by whoever runs it.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol, final

import attrs

from kimaki._audit import audit
from kimaki._redact import register_secret
from kimaki.access import is_owner_or_has
from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import CommandRegistry, option
from kimaki.discord.models import Guild, Permissions
from kimaki.settings import TRANSCRIPTION_PROVIDERS
from kimaki.voice import KEY_SECRET_NAME, NOT_CONFIGURED, TranscriptionConfig

__all__ = ["TranscriptionDoor", "TranscriptionKeyStore", "VoiceCommands"]

log = logging.getLogger("kimaki.commands")

_KEY_LENGTH: Final = range(8, 513)
_CLEAR: Final = "clear"


class TranscriptionDoor(Protocol):
    """Which service is in use now (`kimaki.voice.Transcriber` is one)."""

    async def config(self) -> TranscriptionConfig | None: ...


class TranscriptionKeyStore(Protocol):
    """Where `/transcription-key` keeps the key (`kimaki.store.Credentials` is one)."""

    async def set_transcription_key(self, provider: str, key: str) -> None: ...

    async def clear_transcription_key(self) -> bool: ...


class GuildLookup(Protocol):
    def guild(self, guild_id: int) -> Guild | None: ...


@final
@attrs.frozen(kw_only=True)
class VoiceCommands:
    """`/transcription-key` and `/transcription`, with what they use."""

    _transcriber: TranscriptionDoor
    _keys: TranscriptionKeyStore
    _guilds: GuildLookup

    def install(self, registry: CommandRegistry) -> None:
        registry.add_command(
            SlashCommand(
                "transcription-key",
                "Set the key of the service that transcribes voice messages (owner or managers)",
                self._set_key,
                options=(
                    option(
                        "provider",
                        "The transcription service",
                        required=True,
                        choices=[(name, name) for name in TRANSCRIPTION_PROVIDERS],
                    ),
                    option(
                        "key",
                        f"Its API key (never shown again; `{_CLEAR}` removes the stored one)",
                        required=True,
                        max_length=_KEY_LENGTH.stop - 1,
                    ),
                ),
            )
        )
        registry.add_command(
            SlashCommand(
                "transcription",
                "Show which service and model transcribe voice messages",
                self._show,
            )
        )

    def _may_manage(self, ctx: InteractionContext) -> bool:
        guild = self._guilds.guild(ctx.guild_id or 0)
        return is_owner_or_has(guild, ctx.user.id, ctx.interaction.member, Permissions.MANAGE_GUILD)

    async def _set_key(self, ctx: InteractionContext) -> None:
        key = ctx.text_option("key").strip()
        register_secret(key, KEY_SECRET_NAME)  # before anything could print it
        if not self._may_manage(ctx):
            await ctx.reply(
                "Only the server owner or someone with Manage Server can set the transcription key."
            )
            return
        provider = ctx.text_option("provider").strip().lower()
        if provider not in TRANSCRIPTION_PROVIDERS:
            await ctx.reply(
                f"`{provider}` is not a transcription service I know: choose one of "
                + ", ".join(f"`{name}`" for name in TRANSCRIPTION_PROVIDERS)
                + "."
            )
            return
        if key.lower() == _CLEAR:
            removed = await self._keys.clear_transcription_key()
            audit("transcription.key_cleared", channel_id=ctx.channel_id, user_id=ctx.user.id)
            await ctx.reply(
                "The stored transcription key is removed."
                if removed
                else "There was no stored transcription key."
            )
            return
        if len(key) not in _KEY_LENGTH or any(c.isspace() for c in key):
            await ctx.reply(
                "That does not look like an API key (one word, 8 to 512 characters); "
                "nothing was stored."
            )
            return
        await self._keys.set_transcription_key(provider, key)
        log.info("transcription key for %s set by user %d", provider, ctx.user.id)
        audit(
            "transcription.key_set",
            channel_id=ctx.channel_id,
            user_id=ctx.user.id,
            provider=provider,
        )
        await ctx.reply(
            f"🔑 Stored the `{provider}` key: voice messages are transcribed with it from now "
            "on. It is never shown again; `/transcription` says what is in use."
        )

    async def _show(self, ctx: InteractionContext) -> None:
        config = await self._transcriber.config()
        if config is None:
            await ctx.reply(f"🎤 Voice messages are not transcribed: {NOT_CONFIGURED}.")
            return
        key = (
            "no key (a server of your own)"
            if config.key_source == "none"
            else f"the key from {config.key_source}"
        )
        await ctx.reply(
            f"🎤 Voice messages are transcribed by `{config.provider}` with the model "
            f"`{config.model}` at <{config.base_url}>, using {key}."
        )
