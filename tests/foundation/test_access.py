from __future__ import annotations

import pytest
import trio

from kimaki.access import may_drive
from kimaki.discord.gateway import GatewayEvent
from kimaki.discord.models import Guild, Member, Permissions, Role, User
from kimaki.dispatch import Dispatcher
from kimaki.guilds import GuildCache

GUILD_ID = 100
OWNER = User(id=1, username="owner")
EVERYONE = Role(id=GUILD_ID, name="@everyone", permissions=Permissions.SEND_MESSAGES)
KIMAKI = Role(id=201, name="KiMaKi")
BLOCKED = Role(id=202, name="No-Kimaki")
ADMIN = Role(id=203, name="admins", permissions=Permissions.ADMINISTRATOR)
MANAGER = Role(id=204, name="mods", permissions=Permissions.MANAGE_GUILD)
PLAIN = Role(id=205, name="friends")
GUILD = Guild(
    id=GUILD_ID,
    name="g",
    owner_id=OWNER.id,
    roles=(EVERYONE, KIMAKI, BLOCKED, ADMIN, MANAGER, PLAIN),
)


def member(*roles: Role, permissions: Permissions | None = None) -> Member:
    return Member(roles=tuple(r.id for r in roles), permissions=permissions)


@pytest.mark.parametrize(
    ("user", "roles", "allowed"),
    [
        (OWNER, (), True),
        (OWNER, (BLOCKED,), False),  # no-kimaki blocks even the owner
        (User(id=2), (KIMAKI,), True),
        (User(id=2), (KIMAKI, BLOCKED), False),
        (User(id=2), (ADMIN,), True),
        (User(id=2), (MANAGER,), True),
        (User(id=2), (PLAIN,), False),
        (User(id=2), (), False),
        (User(id=3, bot=True), (ADMIN,), False),  # other bots need the Kimaki role
        (User(id=3, bot=True), (KIMAKI,), True),
    ],
)
def test_who_may_drive(user: User, roles: tuple[Role, ...], allowed: bool) -> None:
    assert bool(may_drive(GUILD, user, member(*roles))) is allowed


def test_interaction_permissions_are_used_when_given() -> None:
    stranger = User(id=9)
    assert may_drive(GUILD, stranger, member(permissions=Permissions.ADMINISTRATOR)).allowed
    assert not may_drive(GUILD, stranger, member(permissions=Permissions.SEND_MESSAGES)).allowed


def test_outside_a_guild_nobody_drives() -> None:
    assert not may_drive(None, OWNER, None).allowed
    assert may_drive(None, OWNER, None).reason == "not in a guild"


async def test_cache_follows_guild_role_and_channel_events() -> None:
    cache = GuildCache()
    dispatcher = Dispatcher()
    cache.subscribe(dispatcher)
    send, receive = trio.open_memory_channel[GatewayEvent](100)
    guild = {
        "id": str(GUILD_ID),
        "name": "g",
        "owner_id": "1",
        "roles": [{"id": str(GUILD_ID), "name": "@everyone", "permissions": "0"}],
        "channels": [{"id": "300", "type": 0, "name": "app"}],
        "threads": [{"id": "301", "type": 11, "parent_id": "300", "name": "t"}],
    }
    events = [
        ("GUILD_CREATE", guild),
        (
            "GUILD_ROLE_CREATE",
            {
                "guild_id": str(GUILD_ID),
                "role": {"id": "201", "name": "Kimaki", "permissions": "0"},
            },
        ),
        ("CHANNEL_CREATE", {"id": "302", "type": 0, "guild_id": str(GUILD_ID), "name": "web"}),
        ("THREAD_DELETE", {"id": "301", "guild_id": str(GUILD_ID), "parent_id": "300", "type": 11}),
        (
            "GUILD_ROLE_UPDATE",
            {
                "guild_id": str(GUILD_ID),
                "role": {"id": "201", "name": "kimaki-renamed", "permissions": "8"},
            },
        ),
        ("CHANNEL_CREATE", {"id": "bad"}),  # malformed: skipped, the rest still applies
        ("GUILD_ROLE_DELETE", {"guild_id": str(GUILD_ID), "role_id": str(GUILD_ID)}),
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher.run, receive)
        async with send:
            for n, (name, data) in enumerate(events, start=1):
                await send.send(GatewayEvent(name, n, data))
    cached = cache.guild(GUILD_ID)
    assert cached is not None
    assert [(r.id, r.name, r.permissions) for r in cached.roles] == [
        (201, "kimaki-renamed", Permissions.ADMINISTRATOR)
    ]
    assert cache.channel(300) is not None
    assert cache.channel(301) is None
    web = cache.channel(302)
    assert web is not None
    assert web.name == "web"
    assert dispatcher.statistics().malformed == 1

    send, receive = trio.open_memory_channel[GatewayEvent](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher.run, receive)
        async with send:
            await send.send(GatewayEvent("GUILD_DELETE", 99, {"id": str(GUILD_ID)}))
    assert cache.guild(GUILD_ID) is None
    assert cache.channel(300) is None
