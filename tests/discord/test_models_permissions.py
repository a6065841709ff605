"""A member's permissions in a channel, following Discord's documented algorithm."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimaki.discord.models import (
    ALL_PERMISSIONS,
    Channel,
    ChannelType,
    Guild,
    Member,
    OverwriteType,
    PermissionOverwrite,
    Permissions,
    Role,
    User,
    compute_permissions,
    permissions_for,
)

P = Permissions
GUILD_ID = 1
OWNER = 2
ALICE = 3
DEV = 10
OPS = 11
BASE = P.VIEW_CHANNEL | P.SEND_MESSAGES | P.READ_MESSAGE_HISTORY

GUILD = Guild(
    id=GUILD_ID,
    owner_id=OWNER,
    roles=(
        Role(id=GUILD_ID, name="@everyone", permissions=BASE),
        Role(id=DEV, name="dev", permissions=P.ATTACH_FILES),
        Role(id=OPS, name="ops", permissions=P.MANAGE_MESSAGES),
    ),
)
ALICE_DEV = Member(user=User(id=ALICE, username="alice"), roles=(DEV,))


def role(role_id: int, allow: P = P.NONE, deny: P = P.NONE) -> PermissionOverwrite:
    return PermissionOverwrite(id=role_id, type=OverwriteType.ROLE, allow=allow, deny=deny)


def member(user_id: int, allow: P = P.NONE, deny: P = P.NONE) -> PermissionOverwrite:
    return PermissionOverwrite(id=user_id, type=OverwriteType.MEMBER, allow=allow, deny=deny)


def channel(*overwrites: PermissionOverwrite, channel_id: int = 100) -> Channel:
    return Channel(id=channel_id, guild_id=GUILD_ID, permission_overwrites=overwrites)


def test_base_permissions_are_everyone_plus_member_roles() -> None:
    assert permissions_for(GUILD, ALICE_DEV) == BASE | P.ATTACH_FILES


def test_owner_has_everything_even_when_denied() -> None:
    owner = Member(user=User(id=OWNER), roles=())
    denied = channel(member(OWNER, deny=P.VIEW_CHANNEL))
    assert permissions_for(GUILD, owner, denied) == ALL_PERMISSIONS


def test_administrator_role_has_everything_regardless_of_overwrites() -> None:
    guild = Guild(
        id=GUILD_ID,
        owner_id=OWNER,
        roles=(Role(id=GUILD_ID, permissions=BASE), Role(id=DEV, permissions=P.ADMINISTRATOR)),
    )
    denied = channel(role(GUILD_ID, deny=P.VIEW_CHANNEL), member(ALICE, deny=ALL_PERMISSIONS))
    assert permissions_for(guild, ALICE_DEV, denied) == ALL_PERMISSIONS


def test_everyone_overwrite_then_roles_then_member() -> None:
    # @everyone cannot see the channel, the dev role can, and alice may not send.
    project = channel(
        role(GUILD_ID, deny=P.VIEW_CHANNEL),
        role(DEV, allow=P.VIEW_CHANNEL),
        member(ALICE, deny=P.SEND_MESSAGES),
    )
    perms = permissions_for(GUILD, ALICE_DEV, project)
    assert perms & P.VIEW_CHANNEL
    assert not perms & P.SEND_MESSAGES
    assert perms & P.ATTACH_FILES
    outsider = Member(user=User(id=99), roles=())
    assert permissions_for(GUILD, outsider, project) == P.NONE


def test_role_overwrites_are_aggregated_allow_wins_over_deny() -> None:
    # One role denies, another allows: Discord applies all denies, then all allows.
    both = Member(user=User(id=ALICE), roles=(DEV, OPS))
    project = channel(role(DEV, deny=P.SEND_MESSAGES), role(OPS, allow=P.SEND_MESSAGES))
    assert permissions_for(GUILD, both, project) & P.SEND_MESSAGES


def test_member_overwrite_beats_role_overwrite() -> None:
    project = channel(role(DEV, deny=P.ATTACH_FILES), member(ALICE, allow=P.ATTACH_FILES))
    assert permissions_for(GUILD, ALICE_DEV, project) & P.ATTACH_FILES


def test_overwrites_of_roles_the_member_lacks_do_not_apply() -> None:
    project = channel(role(OPS, deny=P.SEND_MESSAGES))
    assert permissions_for(GUILD, ALICE_DEV, project) & P.SEND_MESSAGES


def test_threads_use_their_parent_channel_overwrites() -> None:
    parent = channel(role(GUILD_ID, deny=P.SEND_MESSAGES))
    thread = Channel(id=200, type=ChannelType.PUBLIC_THREAD, guild_id=GUILD_ID, parent_id=parent.id)
    assert not permissions_for(GUILD, ALICE_DEV, thread, parent=parent) & P.SEND_MESSAGES
    with pytest.raises(ValueError, match="parent"):
        permissions_for(GUILD, ALICE_DEV, thread)


def test_partial_member_needs_user_id() -> None:
    partial = Member(roles=(DEV,))
    with pytest.raises(ValueError, match="user_id"):
        permissions_for(GUILD, partial)
    assert permissions_for(GUILD, partial, user_id=ALICE) == BASE | P.ATTACH_FILES


_perm = st.integers(min_value=0, max_value=int(ALL_PERMISSIONS)).map(
    lambda v: P(v) & ~P.ADMINISTRATOR
)
_ids = st.sampled_from([GUILD_ID, DEV, OPS, 12, ALICE, 99])
_overwrites = st.lists(
    st.builds(
        PermissionOverwrite,
        id=_ids,
        type=st.sampled_from(list(OverwriteType)),
        allow=_perm,
        deny=_perm,
    ),
    max_size=6,
    unique_by=lambda o: (o.id, o.type),
)


def _compute(overwrites: list[PermissionOverwrite], roles: tuple[int, ...], everyone: P) -> P:
    return compute_permissions(
        guild_id=GUILD_ID,
        owner_id=OWNER,
        user_id=ALICE,
        member_role_ids=roles,
        role_permissions={GUILD_ID: everyone, DEV: P.ATTACH_FILES, OPS: P.EMBED_LINKS},
        overwrites=overwrites,
    )


@settings(max_examples=300)
@given(
    overwrites=_overwrites,
    roles=st.lists(st.sampled_from([DEV, OPS, 12]), unique=True).map(tuple),
    everyone=_perm,
    data=st.data(),
)
def test_overwrite_order_in_the_list_does_not_matter(
    overwrites: list[PermissionOverwrite], roles: tuple[int, ...], everyone: P, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(overwrites))
    assert _compute(overwrites, roles, everyone) == _compute(shuffled, roles, everyone)


@settings(max_examples=300)
@given(
    overwrites=_overwrites,
    roles=st.lists(st.sampled_from([DEV, OPS, 12]), unique=True).map(tuple),
    everyone=_perm,
    allow=_perm,
    deny=_perm,
)
def test_the_member_overwrite_has_the_last_word(
    overwrites: list[PermissionOverwrite], roles: tuple[int, ...], everyone: P, allow: P, deny: P
) -> None:
    deny &= ~allow
    own = member(ALICE, allow=allow | P.VIEW_CHANNEL, deny=deny & ~P.VIEW_CHANNEL)
    others = [o for o in overwrites if not (o.type == OverwriteType.MEMBER and o.id == ALICE)]
    perms = _compute([*others, own], roles, everyone)
    assert perms & own.allow == own.allow
    assert not perms & own.deny
    # Administrator on any held role overrides everything.
    admin = compute_permissions(
        guild_id=GUILD_ID,
        owner_id=OWNER,
        user_id=ALICE,
        member_role_ids=(*roles, 50),
        role_permissions={GUILD_ID: everyone, 50: P.ADMINISTRATOR},
        overwrites=[*others, own],
    )
    assert admin == ALL_PERMISSIONS
