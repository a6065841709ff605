"""`/audit`: the audit trail of this channel, for the people who run the server.

`/audit recent` lists the channel's last events (a thread's own, in a thread), filtered by
person, kind (a prefix: `turn` is every `turn.*`), text and since; `/audit ask` hands a
question to the audit agent (`AuditAsker`, a short-lived private session whose only tool reads
the trail) and shows its answer. Both answer ephemerally, and only to the server's owner and to
members with Administrator or Manage Server: the trail holds what everybody wrote, so the
Kimaki role, which lets a person drive the bot, is not enough to read it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final, Protocol, final

import attrs

from kimaki._redact import redact
from kimaki.access import is_owner_or_has
from kimaki.audit import AuditReader, AuditRow, SinceError, parse_since
from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import CommandRegistry, option
from kimaki.discord.markdown import split_message
from kimaki.discord.models import (
    ApplicationCommandOption,
    ApplicationCommandOptionType,
    Guild,
    Member,
    Permissions,
    User,
)
from kimaki.errors import KimakiError

__all__ = ["AuditAsker", "AuditCommands", "AuditReader", "may_read_audit"]

log = logging.getLogger("kimaki.commands")

DEFAULT_COUNT: Final = 15
MAX_COUNT: Final = 50
_REPLY_LIMIT: Final = 1900
_SUMMARY_LIMIT: Final = 140

NOT_A_MANAGER: Final = (
    "Only the server owner and members with Administrator or Manage Server can read the "
    "audit trail."
)
NO_TRAIL: Final = "The audit trail is not kept by this bot."
NO_ASKER: Final = "Asking the audit trail is not set up on this bot; `/audit recent` still works."


class AuditAsker(Protocol):
    """Answers a question about the audit trail (the private audit agent, `/audit ask`).

    `channel_id` is where it was asked (the trail it may read is that channel's unless the
    asker decides otherwise), `user_id` who asked. The answer is shown as it is returned
    (redacted again). A `KimakiError` is shown as the reason it could not answer.
    """

    async def ask(self, question: str, *, channel_id: int, user_id: int) -> str: ...


class AuditGuilds(Protocol):
    """The guilds as the gateway told of them (`kimaki.guilds.GuildCache` is one)."""

    def guild(self, guild_id: int) -> Guild | None: ...


def may_read_audit(guild: Guild | None, user: User, member: Member | None) -> bool:
    """The guild's owner, or a member with Administrator or Manage Server: the trail holds
    what everybody wrote, so the Kimaki role alone is not enough."""
    return is_owner_or_has(guild, user.id, member, Permissions.MANAGE_GUILD)


@final
@attrs.frozen
class AuditCommands:
    """`/audit recent` and `/audit ask`. `reader` None: the trail is not kept (says so);
    `asker` None: `/audit ask` says it is not set up."""

    _reader: AuditReader | None
    _guilds: AuditGuilds
    _asker: AuditAsker | None = None

    def install(self, registry: CommandRegistry) -> None:
        registry.add_command(
            SlashCommand(
                "audit",
                "The audit trail of this channel (server managers only)",
                self._audit,
                options=(
                    _subcommand(
                        "recent",
                        "The last events of this channel, or of this thread",
                        (
                            option(
                                "person",
                                "Only what this person did",
                                kind=ApplicationCommandOptionType.USER,
                            ),
                            option(
                                "kind",
                                "Only events of this kind (a prefix: turn, message.deleted...)",
                                max_length=100,
                            ),
                            option("text", "Only events mentioning this", max_length=200),
                            option(
                                "since",
                                "Only events since then: 30m, 2h, 7d, or a date (2026-12-01)",
                                max_length=40,
                            ),
                            option(
                                "count",
                                f"How many events (default {DEFAULT_COUNT}, at most {MAX_COUNT})",
                                kind=ApplicationCommandOptionType.INTEGER,
                                min_value=1,
                            ),
                        ),
                    ),
                    _subcommand(
                        "ask",
                        "Ask a question about this channel's audit trail",
                        (
                            option(
                                "question",
                                "What you want to know",
                                required=True,
                                max_length=1000,
                            ),
                        ),
                    ),
                ),
            )
        )

    async def _audit(self, ctx: InteractionContext) -> None:
        guild = self._guilds.guild(ctx.guild_id or 0)
        if not may_read_audit(guild, ctx.user, ctx.interaction.member):
            await ctx.reply(NOT_A_MANAGER)
            return
        if _subcommand_of(ctx) == "ask":
            await self._ask(ctx)
        else:
            await self._recent(ctx)

    async def _recent(self, ctx: InteractionContext) -> None:
        if self._reader is None:
            await ctx.reply(NO_TRAIL)
            return
        since_text = ctx.text_option("since").strip()
        since = None
        if since_text:
            try:
                since = parse_since(since_text, now=time.time())
            except SinceError as exc:
                await ctx.reply(str(exc))
                return
        count = ctx.option("count")
        limit = DEFAULT_COUNT
        if isinstance(count, int) and not isinstance(count, bool):
            limit = max(1, min(count, MAX_COUNT))
        person = ctx.option("person")
        user_id = int(person) if isinstance(person, int | str) and str(person).isdigit() else None
        kind = ctx.text_option("kind").strip()
        text = ctx.text_option("text").strip()
        rows = await self._reader.query(
            channel_id=ctx.channel_id,
            kinds=(kind,) if kind else (),
            user_id=user_id,
            text=text or None,
            since=since,
            limit=limit,
        )
        await ctx.reply(format_rows(rows, filtered=bool(kind or text or user_id or since)))

    async def _ask(self, ctx: InteractionContext) -> None:
        if self._asker is None:
            await ctx.reply(NO_ASKER)
            return
        question = ctx.text_option("question").strip()
        if not question:
            await ctx.reply("Ask a question: `/audit ask question: who deleted messages today?`")
            return
        await ctx.defer()
        try:
            answer = await self._asker.ask(question, channel_id=ctx.channel_id, user_id=ctx.user.id)
        except KimakiError as exc:
            await ctx.reply(f"The audit trail could not be asked: {redact(str(exc))}")
            return
        answer = redact(answer).strip() or "(no answer)"
        for chunk in split_message(answer)[:5]:
            await ctx.reply(chunk)


def format_rows(rows: Sequence[AuditRow], *, filtered: bool = False) -> str:
    """The events as one ephemeral message (newest first), cut to fit."""
    if not rows:
        return (
            "No event matches those filters here." if filtered else "No events recorded here yet."
        )
    lines: list[str] = []
    size = 0
    for row in rows:
        line = _line(row)
        if size + len(line) + 1 > _REPLY_LIMIT:
            lines.append(f"… and {len(rows) - len(lines)} more (narrow it with filters)")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def _line(row: AuditRow) -> str:
    stamp = f"<t:{int(row.at)}:d> <t:{int(row.at)}:T>"
    who = f" <@{row.user_id}>" if row.user_id else ""
    summary = _summary(row)
    return f"{stamp} `{row.kind}`{who}{': ' + summary if summary else ''}"


def _summary(row: AuditRow) -> str:
    detail = row.detail
    preferred = ("command", "content", "tool", "stop_reason", "name", "answer", "count")
    parts: list[str] = []
    for key in preferred:
        if key in detail and detail[key] not in (None, ""):
            parts.append(f"{key}={_short(detail[key])}")
    if not parts:
        parts = [f"{key}={_short(value)}" for key, value in list(detail.items())[:3]]
    text = " ".join(parts).replace("`", "'").replace("\n", " ")
    text = redact(text)
    return text if len(text) <= _SUMMARY_LIMIT else text[: _SUMMARY_LIMIT - 1] + "…"


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _subcommand(
    name: str, description: str, options: tuple[ApplicationCommandOption, ...]
) -> ApplicationCommandOption:
    return ApplicationCommandOption(
        type=ApplicationCommandOptionType.SUB_COMMAND,
        name=name,
        description=description,
        options=options,
    )


def _subcommand_of(ctx: InteractionContext) -> str:
    data = ctx.interaction.data
    if data is None:
        return ""
    for item in data.options:
        if item.type == ApplicationCommandOptionType.SUB_COMMAND:
            return item.name
    return ""
