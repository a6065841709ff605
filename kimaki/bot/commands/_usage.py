"""`/usage` and `/budget`: what the agents used and cost, and a channel's spending limit.

Everything is read from the usage rows through the door (`kimaki.usage.UsageLedger`), so a
report is the sum of the rows `kimaki usage --json` prints. Answers are ephemeral: costs are
the asker's business. Who may do what:

- `/usage summary` and `/usage history`: anyone who may drive the bot, for this channel;
  `everywhere:` for an owner (the server's owner or an Administrator).
- `/budget show`: anyone; `/budget set` and `/budget clear`: an owner or a member with
  Manage Server (the people who pay).

`GuildOwners` is the ledger's `Owners`: who may spend past a budget.
"""

from __future__ import annotations

import logging
import math
from typing import Final, Protocol, final

import attrs

from kimaki.access import is_owner_or_has
from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import CommandRegistry, option
from kimaki.discord.errors import RESTError
from kimaki.discord.models import (
    ApplicationCommandOption,
    ApplicationCommandOptionType,
    Channel,
    Guild,
    Member,
    Permissions,
)
from kimaki.store import BudgetPeriod
from kimaki.usage import BUDGET_PERIODS, HISTORY_PERIODS, BudgetState, UsageLedger, format_cost

__all__ = ["GuildOwners", "UsageCommands", "UsageDoor"]

log = logging.getLogger("kimaki.commands")

_SUBCOMMAND: Final = ApplicationCommandOptionType.SUB_COMMAND
_MIN_BUDGET: Final = 0.01
_MAX_BUDGET: Final = 1_000_000.0


class UsageDoor(Protocol):
    """What the commands ask of the ledger (`kimaki.usage.UsageLedger` is one)."""

    async def report(self, channel_id: int | None, person: _PersonName) -> str: ...

    async def history(self, period: str, channel_id: int | None) -> str: ...

    async def budget_state(self, channel_id: int) -> BudgetState | None: ...

    async def set_budget(
        self, channel_id: int, amount: float, period: BudgetPeriod, *, by: int
    ) -> BudgetState: ...

    async def clear_budget(self, channel_id: int) -> bool: ...


class _PersonName(Protocol):
    def __call__(self, person_id: int, /) -> str: ...


class GuildLookup(Protocol):
    """The guilds and channels the gateway told of (`kimaki.guilds.GuildCache` is one)."""

    def guild(self, guild_id: int) -> Guild | None: ...

    def channel(self, channel_id: int) -> Channel | None: ...


class MemberLookup(Protocol):
    """A member's roles (`kimaki.discord.rest.RESTClient` is one)."""

    async def get_member(self, guild_id: int, user_id: int) -> Member: ...


def _person(person_id: int) -> str:
    return "the command line" if person_id == 0 else f"<@{person_id}>"


@final
@attrs.frozen(kw_only=True)
class UsageCommands:
    """`/usage` and `/budget`, over the ledger."""

    _usage: UsageDoor
    _guilds: GuildLookup

    def install(self, registry: CommandRegistry) -> None:
        everywhere = option(
            "everywhere",
            "Every channel, not only this one (owners only)",
            kind=ApplicationCommandOptionType.BOOLEAN,
        )
        period = option(
            "period",
            "Which days",
            required=True,
            choices=[(name, name) for name in HISTORY_PERIODS],
        )
        registry.add_command(
            SlashCommand(
                "usage",
                "What the agents used and cost: turns, tokens, cost",
                self._usage_command,
                options=(
                    _subcommand(
                        "summary",
                        "Today, this week, this month; by model and by person",
                        everywhere,
                    ),
                    _subcommand("history", "One line per day", period, everywhere),
                ),
            )
        )
        amount = ApplicationCommandOption(
            type=ApplicationCommandOptionType.NUMBER,
            name="amount",
            description="Dollars per period, as the engines report cost",
            required=True,
            min_value=_MIN_BUDGET,
            max_value=_MAX_BUDGET,
        )
        budget_period = option(
            "period",
            "The period the amount is for",
            required=True,
            choices=[(name, name) for name in BUDGET_PERIODS],
        )
        registry.add_command(
            SlashCommand(
                "budget",
                "This channel's spending limit: new turns stop when it is used up",
                self._budget_command,
                options=(
                    _subcommand("show", "The budget and what is spent of it"),
                    _subcommand(
                        "set", "Set the budget (owners and Manage Server)", amount, budget_period
                    ),
                    _subcommand("clear", "Remove the budget (owners and Manage Server)"),
                ),
            )
        )

    # ---- /usage

    async def _usage_command(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None  # not an `anywhere` command
        scope: int | None = project.channel_id
        if ctx.option("everywhere"):
            if not self._is_owner(ctx):
                await ctx.reply(
                    "Only the server's owner or an Administrator can see every channel's usage."
                )
                return
            scope = None
        if _subcommand_name(ctx) == "history":
            period = ctx.text_option("period")
            if period not in HISTORY_PERIODS:
                await ctx.reply(f"Choose a period: {', '.join(HISTORY_PERIODS)}.")
                return
            await ctx.reply(await self._usage.history(period, scope))
            return
        await ctx.reply(await self._usage.report(scope, _person))

    # ---- /budget

    async def _budget_command(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        channel_id = project.channel_id
        action = _subcommand_name(ctx)
        if action == "show":
            state = await self._usage.budget_state(channel_id)
            if state is None:
                await ctx.reply(
                    f"<#{channel_id}> has no budget. `/budget set` sets one "
                    "(owners and Manage Server)."
                )
                return
            await ctx.reply(f"Budget of <#{channel_id}>: {state.describe()}.")
            return
        if not self._may(ctx, Permissions.MANAGE_GUILD):
            await ctx.reply(
                "Only the server's owner, an Administrator or a member with Manage Server can "
                "change a budget."
            )
            return
        if action == "clear":
            cleared = await self._usage.clear_budget(channel_id)
            await ctx.reply(
                f"Removed the budget of <#{channel_id}>."
                if cleared
                else f"<#{channel_id}> had no budget."
            )
            return
        amount = ctx.option("amount")
        period = ctx.text_option("period")
        if (
            not isinstance(amount, int | float)
            or isinstance(amount, bool)
            or not math.isfinite(amount)
            or not _MIN_BUDGET <= amount <= _MAX_BUDGET
        ):
            await ctx.reply(
                f"The amount is dollars per period, from {format_cost(_MIN_BUDGET)} to "
                f"{format_cost(_MAX_BUDGET)} (e.g. `5` or `2.50`)."
            )
            return
        if period not in BUDGET_PERIODS:
            await ctx.reply(f"Choose a period: {', '.join(BUDGET_PERIODS)}.")
            return
        state = await self._usage.set_budget(
            channel_id, float(amount), _budget_period(period), by=ctx.user.id
        )
        over = (
            " It is used up already: new prompts are refused until the period ends."
            if state.spent >= state.budget.amount
            else ""
        )
        await ctx.reply(f"Budget of <#{channel_id}> set: {state.describe()}.{over}")

    def _may(self, ctx: InteractionContext, wanted: Permissions) -> bool:
        """The server's owner, or a member with Administrator or `wanted`."""
        guild = self._guilds.guild(ctx.guild_id or 0)
        return is_owner_or_has(guild, ctx.user.id, ctx.interaction.member, wanted)

    def _is_owner(self, ctx: InteractionContext) -> bool:
        return self._may(ctx, Permissions(0))


def _subcommand(
    name: str, description: str, *options: ApplicationCommandOption
) -> ApplicationCommandOption:
    return ApplicationCommandOption(
        type=_SUBCOMMAND, name=name, description=description, options=options
    )


def _subcommand_name(ctx: InteractionContext) -> str:
    data = ctx.interaction.data
    if data is None or not data.options:
        return ""
    return data.options[0].name


def _budget_period(text: str) -> BudgetPeriod:
    for period in BUDGET_PERIODS:
        if period == text:
            return period
    raise ValueError(text)


@final
@attrs.frozen(kw_only=True)
class GuildOwners:
    """Who may run a turn past a budget: the owner of the channel's server, or a member with
    Administrator there (their roles asked of Discord, only when a budget is used up)."""

    _guilds: GuildLookup
    _members: MemberLookup

    async def is_owner(self, channel_id: int | None, user_id: int) -> bool:
        channel = self._guilds.channel(channel_id) if channel_id is not None else None
        guild = self._guilds.guild(channel.guild_id) if channel and channel.guild_id else None
        if guild is None:
            return False
        if guild.owner_id == user_id:
            return True
        try:
            member = await self._members.get_member(guild.id, user_id)
        except RESTError as exc:
            log.warning("could not look up member %d of guild %d: %s", user_id, guild.id, exc)
            return False
        # The member as REST returns it carries no permissions: they come from its roles.
        return is_owner_or_has(guild, user_id, member, Permissions(0))


def _ledger_is_a_door(ledger: UsageLedger) -> UsageDoor:
    return ledger  # mypy checks that the ledger answers what the commands ask
