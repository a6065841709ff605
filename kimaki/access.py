"""Who may drive the bot.

Allowed: the guild owner, members with ADMINISTRATOR or MANAGE_GUILD, and members with a role
named "Kimaki" (any case). A role named "no-kimaki" (any case) blocks its members, the owner
included. Other bots are ignored unless they have the Kimaki role. Outside a guild (DMs) nobody
drives the bot: projects live in guild channels.
"""

from __future__ import annotations

from typing import Final, final

import attrs

from kimaki.discord.models import Guild, Member, Permissions, User, compute_permissions

__all__ = [
    "ALLOW_ROLE",
    "BLOCK_ROLE",
    "Verdict",
    "guild_permissions",
    "is_owner_or_has",
    "may_drive",
]

ALLOW_ROLE: Final = "kimaki"
BLOCK_ROLE: Final = "no-kimaki"
_MANAGERS: Final = Permissions.ADMINISTRATOR | Permissions.MANAGE_GUILD


@final
@attrs.frozen
class Verdict:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def may_drive(
    guild: Guild | None,
    user: User,
    member: Member | None,
) -> Verdict:
    """Whether `user` (as `member` of `guild`) may talk to the bot, and why.

    `member.permissions`, present on interactions, is used when given; otherwise the guild
    permissions are computed from the member's roles.
    """
    if guild is None or member is None:
        return Verdict(False, "not in a guild")
    roles = {role.id: role for role in guild.roles}
    names = {roles[role_id].name.casefold() for role_id in member.roles if role_id in roles}
    if BLOCK_ROLE in names:
        return Verdict(False, f"has the {BLOCK_ROLE} role")
    if user.bot:
        if ALLOW_ROLE in names:
            return Verdict(True, "a bot with the Kimaki role")
        return Verdict(False, "a bot without the Kimaki role")
    if user.id == guild.owner_id:
        return Verdict(True, "the guild owner")
    if guild_permissions(guild, user.id, member) & _MANAGERS:
        return Verdict(True, "an administrator or server manager")
    if ALLOW_ROLE in names:
        return Verdict(True, "has the Kimaki role")
    return Verdict(False, "no Kimaki role")


def guild_permissions(guild: Guild, user_id: int, member: Member) -> Permissions:
    """The member's permissions in the guild: as Discord sent them (on interactions), else
    computed from the member's roles."""
    if member.permissions is not None:
        return member.permissions
    return compute_permissions(
        guild_id=guild.id,
        owner_id=guild.owner_id,
        user_id=user_id,
        member_role_ids=member.roles,
        role_permissions={role.id: role.permissions for role in guild.roles},
    )


def is_owner_or_has(
    guild: Guild | None, user_id: int, member: Member | None, wanted: Permissions
) -> bool:
    """Whether the user owns the guild or, as `member`, has Administrator or `wanted` there:
    who may change what the whole server shares (a budget, a transcription key, the audit
    trail). `Permissions(0)` asks for the owner or an Administrator only."""
    if guild is None:
        return False
    if user_id == guild.owner_id:
        return True
    if member is None:
        return False
    return bool(guild_permissions(guild, user_id, member) & (Permissions.ADMINISTRATOR | wanted))
