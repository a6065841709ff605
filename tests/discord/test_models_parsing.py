"""Models: real-shaped Discord payloads in, typed objects out; malformed input → ModelError."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimaki.discord.models import (
    ActionRow,
    ApplicationCommandOptionType,
    Button,
    ButtonStyle,
    Channel,
    ChannelType,
    ComponentType,
    Guild,
    Interaction,
    InteractionType,
    Label,
    Message,
    MessageFlags,
    ModelError,
    Permissions,
    SelectOption,
    StringSelect,
    TextInput,
    UnknownComponent,
    structure,
    unstructure,
)

AUTHOR = {
    "id": "80351110224678912",
    "username": "nelly",
    "discriminator": "0",
    "global_name": "Nelly",
    "avatar": "8342729096ea3675442027381ff50dfe",
    "public_flags": 64,
    "flags": 64,
    "primary_guild": None,
    "avatar_decoration_data": None,
    "collectibles": None,
}

MESSAGE_CREATE: dict[str, Any] = {
    "type": 19,
    "tts": False,
    "timestamp": "2026-11-21T18:00:00.123000+00:00",
    "referenced_message": {
        "type": 0,
        "content": "earlier",
        "id": "1100000000000000000",
        "channel_id": "1200000000000000002",
        "author": AUTHOR,
        "timestamp": "2026-11-21T17:00:00+00:00",
        "edited_timestamp": None,
        "flags": 0,
        "attachments": [],
        "embeds": [],
        "mentions": [],
        "mention_roles": [],
        "components": [],
        "pinned": False,
        "mention_everyone": False,
        "tts": False,
    },
    "pinned": False,
    "nonce": "1311111111111111111",
    "message_reference": {
        "type": 0,
        "channel_id": "1200000000000000002",
        "message_id": "1100000000000000000",
        "guild_id": "1300000000000000003",
    },
    "mentions": [AUTHOR],
    "mention_roles": ["1500000000000000005"],
    "mention_everyone": False,
    "member": {
        "roles": ["1500000000000000005"],
        "premium_since": None,
        "pending": False,
        "nick": None,
        "mute": False,
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "flags": 0,
        "deaf": False,
        "communication_disabled_until": None,
        "banner": None,
        "avatar": None,
    },
    "id": "1100000000000000001",
    "flags": 4,
    "embeds": [{"type": "rich", "title": "t", "description": "d"}],
    "edited_timestamp": None,
    "content": "please fix the failing test",
    "components": [
        {
            "type": 1,
            "id": 1,
            "components": [
                {"type": 2, "id": 2, "style": 1, "custom_id": "p:abc:a", "label": "Accept"},
                {"type": 2, "id": 3, "style": 5, "url": "https://example.com", "label": "Docs"},
            ],
        },
        {"type": 17, "id": 4, "components": [{"type": 10, "content": "v2"}]},
    ],
    "channel_id": "1200000000000000002",
    "author": AUTHOR,
    "attachments": [
        {
            "id": "1600000000000000006",
            "filename": "trace.log",
            "size": 2048,
            "url": "https://cdn.discordapp.com/attachments/1/2/trace.log",
            "proxy_url": "https://media.discordapp.net/attachments/1/2/trace.log",
            "content_type": "text/plain; charset=utf-8",
            "placeholder": "x",
            "content_scan_version": 1,
        }
    ],
    "guild_id": "1300000000000000003",
    "some_future_field": {"nested": [1, 2, 3]},
}


def test_message_create_parses_to_typed_fields() -> None:
    message = structure(MESSAGE_CREATE, Message)
    assert message.id == 1100000000000000001
    assert message.channel_id == 1200000000000000002
    assert message.guild_id == 1300000000000000003
    assert message.author.id == 80351110224678912
    assert message.author.display_name == "Nelly"
    assert message.member is not None
    assert message.member.roles == (1500000000000000005,)
    assert message.flags == MessageFlags.SUPPRESS_EMBEDS
    assert message.type == 19
    assert message.content == "please fix the failing test"
    assert message.attachments[0].filename == "trace.log"
    assert message.attachments[0].size == 2048
    assert message.message_reference is not None
    assert message.message_reference.message_id == 1100000000000000000
    assert message.referenced_message is not None
    assert message.referenced_message.content == "earlier"
    assert message.mention_roles == (1500000000000000005,)
    assert message.embeds[0]["title"] == "t"
    row = message.components[0]
    assert isinstance(row, ActionRow)
    assert row.components[0] == Button(
        style=ButtonStyle.PRIMARY, label="Accept", custom_id="p:abc:a", id=2
    )
    unknown = message.components[1]
    assert isinstance(unknown, UnknownComponent)
    assert unknown.type == ComponentType.CONTAINER


def test_missing_optional_fields_default() -> None:
    minimal = {"id": "1", "channel_id": "2", "author": {"id": "3"}}
    message = structure(minimal, Message)
    assert message.content == ""
    assert message.member is None
    assert message.attachments == ()
    assert message.flags == MessageFlags.NONE


def test_unknown_enum_values_do_not_break_parsing() -> None:
    channel = structure({"id": "9", "type": 99, "name": "new kind"}, Channel)
    assert channel.type == 99
    assert channel.type.name == "UNKNOWN_99"
    assert not channel.is_thread


SLASH_COMMAND: dict[str, Any] = {
    "type": 2,
    "token": "A_UNIQUE_TOKEN",
    "member": {
        "user": AUTHOR,
        "roles": ["1500000000000000005"],
        "permissions": "2147483647",
        "pending": False,
        "nick": None,
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
    },
    "id": "786008729715212338",
    "guild_id": "1300000000000000003",
    "app_permissions": "442368",
    "guild_locale": "en-US",
    "locale": "en-US",
    "channel_id": "1200000000000000002",
    "channel": {"id": "1200000000000000002", "type": 0, "name": "project", "permissions": "1024"},
    "application_id": "775799577604522054",
    "version": 1,
    "entitlements": [],
    "authorizing_integration_owners": {"0": "1300000000000000003"},
    "context": 0,
    "data": {
        "id": "771825006014889984",
        "name": "session",
        "type": 1,
        "options": [
            {
                "name": "resume",
                "type": 1,
                "options": [
                    {"name": "id", "type": 3, "value": "ses_123", "focused": True},
                    {"name": "fork", "type": 5, "value": True},
                    {"name": "who", "type": 6, "value": "80351110224678912"},
                ],
            }
        ],
        "resolved": {
            "users": {"80351110224678912": AUTHOR},
            "members": {"80351110224678912": {"roles": [], "permissions": "1024"}},
        },
    },
}


def test_slash_command_interaction() -> None:
    interaction = structure(SLASH_COMMAND, Interaction)
    assert interaction.type == InteractionType.APPLICATION_COMMAND
    assert interaction.token == "A_UNIQUE_TOKEN"
    assert "A_UNIQUE_TOKEN" not in repr(interaction)
    assert interaction.author is not None
    assert interaction.author.username == "nelly"
    assert interaction.member is not None
    assert interaction.member.permissions == Permissions(2147483647)
    assert interaction.app_permissions == Permissions(442368)
    assert interaction.channel is not None
    assert interaction.channel.permissions == Permissions.VIEW_CHANNEL
    data = interaction.data
    assert data is not None
    assert data.name == "session"
    sub = data.options[0]
    assert sub.type == ApplicationCommandOptionType.SUB_COMMAND
    assert [(o.name, o.value) for o in sub.options] == [
        ("id", "ses_123"),
        ("fork", True),
        ("who", "80351110224678912"),
    ]
    assert sub.options[0].focused
    assert data.resolved is not None
    assert data.resolved.users[80351110224678912].username == "nelly"
    assert data.resolved.members[80351110224678912].user is None


def test_component_interactions_button_and_select() -> None:
    button = copy.deepcopy(SLASH_COMMAND)
    button["type"] = 3
    button["message"] = MESSAGE_CREATE
    button["data"] = {"custom_id": "p:abc:a", "component_type": 2, "id": 2}
    interaction = structure(button, Interaction)
    assert interaction.data is not None
    assert interaction.data.custom_id == "p:abc:a"
    assert interaction.data.component_type == ComponentType.BUTTON
    assert interaction.message is not None
    assert interaction.message.id == 1100000000000000001

    select = copy.deepcopy(button)
    select["data"] = {"custom_id": "q:1", "component_type": 3, "values": ["a", "other"]}
    select.pop("member")
    select["user"] = AUTHOR  # a DM: user instead of member
    interaction = structure(select, Interaction)
    assert interaction.data is not None
    assert interaction.data.values == ("a", "other")
    assert interaction.author is not None
    assert interaction.author.id == 80351110224678912


def test_modal_submit_with_rows_and_labels() -> None:
    modal = copy.deepcopy(SLASH_COMMAND)
    modal["type"] = 5
    modal["data"] = {
        "custom_id": "q:7",
        "components": [
            {
                "type": 1,
                "id": 1,
                "components": [{"type": 4, "id": 2, "custom_id": "a", "value": "x"}],
            },
            {
                "type": 18,
                "id": 3,
                "component": {"type": 4, "id": 4, "custom_id": "b", "value": "y"},
            },
            {
                "type": 18,
                "id": 5,
                "component": {"type": 3, "id": 6, "custom_id": "c", "values": ["v"]},
            },
        ],
    }
    data = structure(modal, Interaction).data
    assert data is not None
    row, label, select_label = data.components
    assert isinstance(row, ActionRow)
    assert isinstance(row.components[0], TextInput)
    assert row.components[0].value == "x"
    assert isinstance(label, Label)
    assert isinstance(label.component, TextInput)
    assert label.component.value == "y"
    assert isinstance(select_label, Label)
    assert isinstance(select_label.component, StringSelect)
    assert select_label.component.values == ("v",)


def test_guild_create_with_roles_channels_threads() -> None:
    guild = structure(
        {
            "id": "1",
            "name": "team",
            "owner_id": "2",
            "unavailable": False,
            "member_count": 3,
            "roles": [
                {"id": "1", "name": "@everyone", "permissions": "1071698660929", "position": 0},
                {"id": "5", "name": "dev", "permissions": "8", "position": 1, "color": 0},
            ],
            "channels": [
                {
                    "id": "10",
                    "type": 4,
                    "name": "Kimaki",
                    "position": 0,
                    "permission_overwrites": [],
                },
                {
                    "id": "11",
                    "type": 0,
                    "name": "project",
                    "parent_id": "10",
                    "permission_overwrites": [
                        {"id": "1", "type": 0, "allow": "0", "deny": "1024"},
                        {"id": "7", "type": 1, "allow": "1024", "deny": "0"},
                    ],
                },
            ],
            "threads": [
                {
                    "id": "12",
                    "type": 11,
                    "parent_id": "11",
                    "owner_id": "7",
                    "name": "fix tests",
                    "thread_metadata": {
                        "archived": False,
                        "auto_archive_duration": 1440,
                        "archive_timestamp": "2026-11-21T18:00:00+00:00",
                        "locked": False,
                    },
                }
            ],
            "members": [{"user": AUTHOR, "roles": ["5"]}],
            "voice_states": [],
            "presences": [],
        },
        Guild,
    )
    assert guild.roles[1].permissions == Permissions.ADMINISTRATOR
    assert guild.channels[1].permission_overwrites[0].deny == Permissions.VIEW_CHANNEL
    thread = guild.threads[0]
    assert thread.is_thread
    assert thread.parent_id == 11
    assert thread.owner_id == 7
    assert thread.thread_metadata is not None
    assert not thread.thread_metadata.archived
    assert guild.channels[0].type == ChannelType.GUILD_CATEGORY


def test_components_round_trip_through_unstructure() -> None:
    row = ActionRow(
        (
            StringSelect(
                "q:1",
                (SelectOption("Yes", "yes", description="go"), SelectOption("No", "no")),
                max_values=2,
            ),
        )
    )
    data = unstructure(row)
    assert data == {
        "type": 1,
        "components": [
            {
                "type": 3,
                "custom_id": "q:1",
                "options": [
                    {"label": "Yes", "value": "yes", "description": "go"},
                    {"label": "No", "value": "no"},
                ],
                "max_values": 2,
            }
        ],
    }
    assert structure(data, ActionRow) == row


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "not a number", "channel_id": "2", "author": {"id": "3"}},
        {"id": "1", "channel_id": "2"},
        {"id": "1", "channel_id": "2", "author": {"id": "3"}, "attachments": "nope"},
        {"id": "1", "channel_id": "2", "author": {"id": "3"}, "components": [{"no": "type"}]},
        ["not", "an", "object"],
        None,
    ],
)
def test_malformed_payloads_raise_model_error(payload: Any) -> None:
    with pytest.raises(ModelError):
        structure(payload, Message)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([MESSAGE_CREATE, SLASH_COMMAND]),
    key=st.sampled_from(
        ["id", "author", "member", "components", "attachments", "data", "flags", "type"]
    ),
    value=_json,
)
def test_any_corruption_is_parsed_or_model_error(
    base: dict[str, Any], key: str, value: Any
) -> None:
    payload = {**base, key: value}
    cls = Message if base is MESSAGE_CREATE else Interaction
    with contextlib.suppress(ModelError):
        structure(payload, cls)
