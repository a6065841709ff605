from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from kimaki.testing.discord import (
    DiscordEmulator,
    EmulatorError,
    InteractionRecord,
    Workspace,
    open_discord_emulator,
)

Json = dict[str, Any]

COMMANDS: list[Json] = [
    {
        "name": "model",
        "description": "Pick the model",
        "options": [
            {
                "type": 3,
                "name": "name",
                "description": "model",
                "required": True,
                "autocomplete": True,
            },
            {"type": 4, "name": "budget", "description": "tokens"},
        ],
    },
    {"name": "abort", "description": "Stop the running turn"},
    {
        "name": "project",
        "description": "Projects",
        "options": [
            {
                "type": 1,
                "name": "add",
                "description": "Add a project",
                "options": [{"type": 3, "name": "path", "description": "dir", "required": True}],
            }
        ],
    },
]


@pytest.fixture
async def discord() -> AsyncIterator[DiscordEmulator]:
    async with open_discord_emulator() as emulator:
        yield emulator


@pytest.fixture
def space(discord: DiscordEmulator) -> Workspace:
    space = discord.create_workspace(channels=["project"])
    discord.state.overwrite_commands(space.guild["id"], COMMANDS)
    return space


@pytest.fixture
async def http(discord: DiscordEmulator) -> AsyncIterator[httpx.AsyncClient]:
    # Interaction endpoints need no Authorization header, like Discord's.
    async with httpx.AsyncClient(base_url=discord.api_url) as client:
        yield client


async def callback(
    http: httpx.AsyncClient, interaction: InteractionRecord, body: Json
) -> httpx.Response:
    return await http.post(
        f"/interactions/{interaction.id}/{interaction.token}/callback", json=body
    )


async def test_slash_command_dispatches_and_reply_is_recorded(
    discord: DiscordEmulator, space: Workspace, http: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    alice = space.users["alice"]
    with discord.subscribe() as events:
        interaction = alice.run_command(channel_id, "model", {"name": "gpt", "budget": 5})
        name, payload = events.receive_nowait()
    assert name == "INTERACTION_CREATE"
    assert payload["id"] == interaction.id
    assert payload["token"] == interaction.token
    assert payload["member"]["user"]["id"] == alice.id
    assert payload["data"]["options"] == [
        {"name": "name", "type": 3, "value": "gpt"},
        {"name": "budget", "type": 4, "value": 5},
    ]
    response = await callback(http, interaction, {"type": 4, "data": {"content": "using gpt"}})
    assert response.status_code == 204
    answered = await discord.wait_for_interaction_response(interaction)
    assert answered.response_type == 4
    reply = await discord.wait_for_message(channel_id)
    assert reply["content"] == "using gpt"
    assert reply["interaction_metadata"]["user"]["id"] == alice.id

    sub = alice.run_command(channel_id, "project", {"path": "/srv/app"}, subcommand="add")
    assert sub.payload["data"]["options"] == [
        {"name": "add", "type": 1, "options": [{"name": "path", "type": 3, "value": "/srv/app"}]}
    ]
    with pytest.raises(EmulatorError, match="not registered"):
        alice.run_command(channel_id, "nope")
    with pytest.raises(EmulatorError, match="required"):
        alice.run_command(channel_id, "model", {"budget": 1})


async def test_ack_deadline_is_three_seconds_on_the_trio_clock(
    discord: DiscordEmulator,
    space: Workspace,
    http: httpx.AsyncClient,
    autojump_clock: trio.abc.Clock,
) -> None:
    channel_id = space.channels["project"]["id"]
    alice = space.users["alice"]
    prompt = alice.run_command(channel_id, "abort")
    await trio.sleep(2.9)
    assert (await callback(http, prompt, {"type": 5})).status_code == 204
    assert prompt.ack_latency is not None
    assert prompt.ack_latency == pytest.approx(2.9, abs=0.05)

    late = alice.run_command(channel_id, "abort")
    await trio.sleep(3.1)
    response = await callback(http, late, {"type": 4, "data": {"content": "too late"}})
    assert response.status_code == 404
    assert response.json() == {"message": "Unknown interaction", "code": 10062}
    assert late.late_callbacks == 1
    assert not late.acknowledged

    twice = await callback(http, prompt, {"type": 4, "data": {"content": "again"}})
    assert twice.status_code == 400
    assert twice.json()["code"] == 40060
    assert prompt.duplicate_callbacks == 1


async def test_deferred_reply_then_edit_original_and_followups(
    discord: DiscordEmulator, space: Workspace, http: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    interaction = space.users["alice"].run_command(channel_id, "abort")
    webhook = f"/webhooks/{discord.application_id}/{interaction.token}"
    early = await http.patch(f"{webhook}/messages/@original", json={"content": "x"})
    assert early.json()["code"] == 10015

    assert (await callback(http, interaction, {"type": 5})).status_code == 204
    thinking = await discord.wait_for_message(channel_id)
    assert thinking["flags"] & 128
    edited = await http.patch(f"{webhook}/messages/@original", json={"content": "aborted"})
    assert edited.status_code == 200
    assert edited.json()["id"] == thinking["id"]
    assert not edited.json()["flags"] & 128
    original = await http.get(f"{webhook}/messages/@original")
    assert original.json()["content"] == "aborted"

    followup = await http.post(webhook, json={"content": "details", "flags": 64})
    assert followup.status_code == 200
    assert followup.json()["flags"] & 64
    assert followup.json()["id"] in interaction.followup_ids
    changed = await http.patch(
        f"{webhook}/messages/{followup.json()['id']}", json={"content": "more"}
    )
    assert changed.json()["content"] == "more"
    assert (await http.delete(f"{webhook}/messages/{followup.json()['id']}")).status_code == 204
    assert (await http.delete(f"{webhook}/messages/@original")).status_code == 204
    assert discord.state.messages[channel_id] == {}


async def test_first_followup_after_defer_fills_the_thinking_message(
    discord: DiscordEmulator, space: Workspace, http: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    interaction = space.users["alice"].run_command(channel_id, "abort")
    await callback(http, interaction, {"type": 5, "data": {"flags": 64}})
    webhook = f"/webhooks/{discord.application_id}/{interaction.token}"
    first = await http.post(webhook, json={"content": "done"})
    assert first.json()["id"] == interaction.original_message_id
    assert first.json()["flags"] & 64  # keeps the ephemeral choice made when deferring
    second = await http.post(webhook, json={"content": "and another"})
    assert second.json()["id"] != first.json()["id"]


async def test_buttons_selects_and_update_message(
    discord: DiscordEmulator, space: Workspace, http: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    alice = space.users["alice"]
    bot = discord.bot_user["id"]
    message = discord.state.create_message(
        channel_id,
        bot,
        {
            "content": "Allow `rm -rf build`?",
            "components": [
                {
                    "type": 1,
                    "components": [
                        {"type": 2, "style": 3, "label": "Allow", "custom_id": "perm:yes"},
                        {
                            "type": 2,
                            "style": 4,
                            "label": "Deny",
                            "custom_id": "perm:no",
                            "disabled": True,
                        },
                    ],
                },
                {
                    "type": 1,
                    "components": [
                        {
                            "type": 3,
                            "custom_id": "pick",
                            "options": [{"label": "A", "value": "a"}, {"label": "B", "value": "b"}],
                        }
                    ],
                },
            ],
        },
    )
    assert "[button 'Allow' perm:yes]" in discord.transcript(channel_id)
    with pytest.raises(EmulatorError, match="disabled"):
        alice.click_button(message, "perm:no")
    click = alice.click_button(message, "perm:yes")
    assert click.payload["data"] == {"custom_id": "perm:yes", "component_type": 2}
    assert click.payload["message"]["id"] == message["id"]
    response = await callback(
        http, click, {"type": 7, "data": {"content": "Allowed", "components": []}}
    )
    assert response.status_code == 204
    updated = discord.state.messages[channel_id][message["id"]]
    assert (updated["content"], updated["components"]) == ("Allowed", [])

    with pytest.raises(EmulatorError, match="no component"):
        alice.click_button(updated, "perm:yes")


async def test_select_menu_values_are_checked(discord: DiscordEmulator, space: Workspace) -> None:
    channel_id = space.channels["project"]["id"]
    message = discord.state.create_message(
        channel_id,
        discord.bot_user["id"],
        {
            "components": [
                {
                    "type": 1,
                    "components": [
                        {"type": 3, "custom_id": "pick", "options": [{"label": "A", "value": "a"}]}
                    ],
                }
            ]
        },
    )
    chosen = space.users["alice"].select(message, "pick", ["a"])
    assert chosen.payload["data"] == {"custom_id": "pick", "component_type": 3, "values": ["a"]}
    with pytest.raises(EmulatorError, match="not among"):
        space.users["alice"].select(message, "pick", ["z"])


async def test_modal_round_trip_and_autocomplete(
    discord: DiscordEmulator, space: Workspace, http: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    alice = space.users["alice"]
    command = alice.run_command(channel_id, "abort")
    with pytest.raises(EmulatorError, match="not answered with a modal"):
        alice.submit_modal(command, {"reason": "x"})
    modal = {
        "custom_id": "why",
        "title": "Why abort?",
        "components": [
            {
                "type": 1,
                "components": [{"type": 4, "custom_id": "reason", "style": 2, "label": "Reason"}],
            },
            {
                "type": 18,
                "label": "Note",
                "component": {"type": 4, "custom_id": "note", "style": 1, "required": False},
            },
        ],
    }
    assert (await callback(http, command, {"type": 9, "data": modal})).status_code == 204
    submitted = alice.submit_modal(command, {"reason": "wrong branch"})
    assert submitted.payload["data"] == {
        "custom_id": "why",
        "components": [
            {
                "type": 1,
                "components": [{"type": 4, "custom_id": "reason", "value": "wrong branch"}],
            },
            {"type": 18, "component": {"type": 4, "custom_id": "note", "value": ""}},
        ],
    }
    # A modal submit cannot be answered with another modal.
    refused = await callback(http, submitted, {"type": 9, "data": modal})
    assert refused.json()["code"] == 50035
    assert (
        await callback(http, submitted, {"type": 4, "data": {"content": "ok"}})
    ).status_code == 204

    typing = alice.autocomplete(channel_id, "model", "name", "gp")
    assert typing.payload["type"] == 4
    assert typing.payload["data"]["options"] == [
        {"name": "name", "type": 3, "value": "gp", "focused": True}
    ]
    choices = {"choices": [{"name": "gpt-5", "value": "gpt-5"}]}
    wrong = await callback(http, typing, {"type": 4, "data": {"content": "no"}})
    assert wrong.status_code == 400
    ok = await http.post(
        f"/interactions/{typing.id}/{typing.token}/callback",
        params={"with_response": "true"},
        json={"type": 8, "data": choices},
    )
    assert ok.status_code == 200
    assert ok.json()["interaction"]["id"] == typing.id
    assert typing.response_data == choices
