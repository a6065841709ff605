from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from kimaki.testing.discord import (
    DiscordEmulator,
    File,
    Workspace,
    open_discord_emulator,
)

Json = dict[str, Any]


@pytest.fixture
async def discord() -> AsyncIterator[DiscordEmulator]:
    async with open_discord_emulator() as emulator:
        yield emulator


@pytest.fixture
def space(discord: DiscordEmulator) -> Workspace:
    return discord.create_workspace(channels=["project", "other"], users=["alice", "bob"])


@pytest.fixture
async def bot(discord: DiscordEmulator) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bot {discord.token}"}
    async with httpx.AsyncClient(base_url=discord.api_url, headers=headers) as client:
        yield client


def drain(events: trio.MemoryReceiveChannel[tuple[str, Json]]) -> list[tuple[str, Json]]:
    seen = []
    while True:
        try:
            seen.append(events.receive_nowait())
        except trio.WouldBlock:
            return seen


async def test_message_crud_dispatches_what_discord_would(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    with discord.subscribe() as events:
        created = await bot.post(
            f"/channels/{channel_id}/messages",
            json={
                "content": "hello <@" + space.users["alice"].id + ">",
                "components": [
                    {
                        "type": 1,
                        "components": [
                            {"type": 2, "style": 4, "label": "Stop", "custom_id": "stop"}
                        ],
                    }
                ],
                "allowed_mentions": {"parse": []},
                "flags": 4096,
            },
        )
        assert created.status_code == 200
        message = created.json()
        assert message["author"]["id"] == discord.bot_user["id"]
        assert message["mentions"][0]["id"] == space.users["alice"].id
        assert message["flags"] == 4096

        edited = await bot.patch(
            f"/channels/{channel_id}/messages/{message['id']}", json={"content": "bye"}
        )
        assert edited.json()["content"] == "bye"
        assert edited.json()["edited_timestamp"] is not None
        fetched = await bot.get(f"/channels/{channel_id}/messages/{message['id']}")
        assert fetched.json()["content"] == "bye"
        listed = await bot.get(f"/channels/{channel_id}/messages", params={"limit": 10})
        assert [m["id"] for m in listed.json()] == [message["id"]]

        deleted = await bot.delete(f"/channels/{channel_id}/messages/{message['id']}")
        assert deleted.status_code == 204
        gone = await bot.get(f"/channels/{channel_id}/messages/{message['id']}")
        assert gone.status_code == 404
        assert gone.json() == {"message": "Unknown Message", "code": 10008}

        seen = drain(events)
    assert [name for name, _ in seen] == ["MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"]
    create = seen[0][1]
    assert create["guild_id"] == space.guild["id"]
    assert create["member"]["roles"] == []
    assert seen[2][1] == {
        "id": message["id"],
        "channel_id": channel_id,
        "guild_id": space.guild["id"],
    }


async def test_a_user_cannot_be_edited_and_errors_have_discord_shape(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    theirs = space.users["alice"].send_message(channel_id, "mine")
    refused = await bot.patch(
        f"/channels/{channel_id}/messages/{theirs['id']}", json={"content": "x"}
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == 50005
    unknown = await bot.post("/channels/123/messages", json={"content": "x"})
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"code": 10003, "message": "Unknown Channel"},
    )
    empty = await bot.post(f"/channels/{channel_id}/messages", json={})
    assert empty.json()["code"] == 50006
    no_route = await bot.get("/nowhere")
    assert no_route.status_code == 404
    # Discord's description has no such route either; when it is here, the validator says so
    # (and would fail the block): this test is about the emulator's own answer, so forget it.
    assert all("GET /nowhere" in problem for problem in discord.rest.validation_errors)
    discord.rest.validation_errors.clear()


async def test_content_over_2000_characters_is_rejected(
    space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    at_limit = await bot.post(f"/channels/{channel_id}/messages", json={"content": "x" * 2000})
    assert at_limit.status_code == 200
    over = await bot.post(f"/channels/{channel_id}/messages", json={"content": "x" * 2001})
    assert over.status_code == 400
    assert over.json() == {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {
            "content": {
                "_errors": [
                    {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                ]
            }
        },
    }


async def test_bad_token_gets_401(discord: DiscordEmulator, space: Workspace) -> None:
    async with httpx.AsyncClient(base_url=discord.api_url) as client:
        missing = await client.get("/users/@me")
        wrong = await client.get("/users/@me", headers={"Authorization": "Bot nope"})
        bare = await client.get("/users/@me", headers={"Authorization": discord.token})
    for response in (missing, wrong, bare):
        assert response.status_code == 401
        assert response.json() == {"message": "401: Unauthorized", "code": 0}
    assert discord.statistics().unauthorized == 3


async def test_thread_from_message_takes_the_message_id(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    alice = space.users["alice"]
    question = alice.send_message(channel_id, "please fix the tests")
    with discord.subscribe() as events:
        response = await bot.post(
            f"/channels/{channel_id}/messages/{question['id']}/threads",
            json={"name": "fix the tests", "auto_archive_duration": 1440},
        )
        assert response.status_code == 201
        thread = response.json()
        assert thread["id"] == question["id"]
        assert (thread["type"], thread["parent_id"]) == (11, channel_id)
        assert thread["owner_id"] == discord.bot_user["id"]
        again = await bot.post(
            f"/channels/{channel_id}/messages/{question['id']}/threads", json={"name": "again"}
        )
        assert again.json()["code"] == 160004

        renamed = await bot.patch(f"/channels/{thread['id']}", json={"name": "done: fix"})
        assert renamed.json()["name"] == "done: fix"
        added = await bot.put(f"/channels/{thread['id']}/thread-members/{alice.id}")
        assert added.status_code == 204
        active = await bot.get(f"/guilds/{space.guild['id']}/threads/active")
        assert [t["id"] for t in active.json()["threads"]] == [thread["id"]]
        archived = await bot.patch(f"/channels/{thread['id']}", json={"archived": True})
        assert archived.json()["thread_metadata"]["archived"] is True
        active = await bot.get(f"/guilds/{space.guild['id']}/threads/active")
        assert active.json()["threads"] == []
        # A message in an archived (unlocked) thread unarchives it, as on Discord.
        alice.send_message(thread["id"], "one more thing")
        assert discord.state.channels[thread["id"]]["thread_metadata"]["archived"] is False
        names = [name for name, _ in drain(events)]
    assert names[:3] == ["THREAD_CREATE", "THREAD_UPDATE", "THREAD_MEMBERS_UPDATE"]
    assert names[-2:] == ["THREAD_UPDATE", "MESSAGE_CREATE"]
    starter = discord.state.messages[channel_id][question["id"]]
    assert starter["thread"]["id"] == thread["id"]
    assert "fix the tests" in discord.transcript(channel_id)


async def test_thread_without_message_and_channels_in_a_category(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    guild_id = space.guild["id"]
    category = await bot.post(f"/guilds/{guild_id}/channels", json={"name": "Projects", "type": 4})
    assert category.status_code == 201
    channel = await bot.post(
        f"/guilds/{guild_id}/channels",
        json={"name": "my-app", "type": 0, "parent_id": category.json()["id"], "topic": "t"},
    )
    assert channel.json()["parent_id"] == category.json()["id"]
    voice = await bot.post(f"/guilds/{guild_id}/channels", json={"name": "talk", "type": 2})
    assert voice.json()["type"] == 2
    listed = await bot.get(f"/guilds/{guild_id}/channels")
    assert channel.json()["id"] in {c["id"] for c in listed.json()}

    thread = await bot.post(
        f"/channels/{channel.json()['id']}/threads", json={"name": "session", "type": 11}
    )
    assert thread.status_code == 201
    assert thread.json()["id"] != channel.json()["id"]
    # Discord announces a public thread started without a message in the parent channel.
    announcement = await discord.wait_for_message(channel.json()["id"])
    assert announcement["type"] == 18

    edited = await bot.patch(f"/channels/{channel.json()['id']}", json={"topic": "new"})
    assert edited.json()["topic"] == "new"
    with discord.subscribe() as events:
        removed = await bot.delete(f"/channels/{channel.json()['id']}")
        assert removed.status_code == 200
        names = [name for name, _ in drain(events)]
    assert names == ["CHANNEL_DELETE", "THREAD_DELETE"]
    assert (await bot.get(f"/channels/{channel.json()['id']}")).json()["code"] == 10003


async def test_multipart_upload_is_stored_and_served_back(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    data = bytes(range(256)) * 4 + b"\r\n--tricky\r\n"
    response = await bot.post(
        f"/channels/{channel_id}/messages",
        data={
            "payload_json": json.dumps(
                {
                    "content": "the diff",
                    "attachments": [{"id": "0", "filename": "change.diff", "description": "d"}],
                }
            )
        },
        files={"files[0]": ("change.diff", data, "text/x-diff")},
    )
    assert response.status_code == 200
    (attachment,) = response.json()["attachments"]
    assert attachment["filename"] == "change.diff"
    assert attachment["size"] == len(data)
    assert attachment["content_type"] == "text/x-diff"
    async with httpx.AsyncClient() as anonymous:
        served = await anonymous.get(attachment["url"])
    assert served.content == data
    assert served.headers["content-type"] == "text/x-diff"

    # Actors upload too; the bot downloads what the human attached.
    shot = space.users["alice"].send_message(
        channel_id, "see", files=[File("shot.png", b"\x89PNG...", "image/png")]
    )
    async with httpx.AsyncClient() as anonymous:
        served = await anonymous.get(shot["attachments"][0]["url"])
    assert served.content == b"\x89PNG..."


async def test_rate_limit_headers_per_route_and_major_parameter(
    space: Workspace, bot: httpx.AsyncClient
) -> None:
    project, other = space.channels["project"]["id"], space.channels["other"]["id"]
    first = await bot.post(f"/channels/{project}/messages", json={"content": "1"})
    second = await bot.post(f"/channels/{project}/messages", json={"content": "2"})
    elsewhere = await bot.post(f"/channels/{other}/messages", json={"content": "3"})
    me = await bot.get("/users/@me")
    assert first.headers["x-ratelimit-limit"] == "5"
    assert first.headers["x-ratelimit-remaining"] == "4"
    assert second.headers["x-ratelimit-remaining"] == "3"
    assert elsewhere.headers["x-ratelimit-remaining"] == "4"  # another major parameter
    assert first.headers["x-ratelimit-bucket"] == elsewhere.headers["x-ratelimit-bucket"]
    assert me.headers["x-ratelimit-bucket"] != first.headers["x-ratelimit-bucket"]
    assert 0 < float(first.headers["x-ratelimit-reset-after"]) <= 5
    assert float(first.headers["x-ratelimit-reset"]) > 1_600_000_000


async def test_exhausting_a_bucket_earns_a_429(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    for n in range(5):
        assert (
            await bot.post(f"/channels/{channel_id}/messages", json={"content": str(n)})
        ).is_success
    limited = await bot.post(f"/channels/{channel_id}/messages", json={"content": "too many"})
    assert limited.status_code == 429
    body = limited.json()
    assert body["global"] is False
    assert 0 < body["retry_after"] <= 5
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["x-ratelimit-scope"] == "user"
    assert discord.statistics().rate_limited == 1
    assert len(discord.state.messages[channel_id]) == 5


async def test_scripted_429s_bucket_global_and_cloudflare(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    route = "POST /channels/{channel_id}/messages"
    discord.rest.script_rate_limit(route, retry_after=2.5)
    limited = await bot.post(f"/channels/{channel_id}/messages", json={"content": "x"})
    assert limited.status_code == 429
    assert limited.json() == {
        "message": "You are being rate limited.",
        "retry_after": 2.5,
        "global": False,
    }
    assert limited.headers["retry-after"] == "3"
    # Retrying early hits the same wall; other routes are unaffected.
    early = await bot.post(f"/channels/{channel_id}/messages", json={"content": "x"})
    assert early.status_code == 429
    assert (await bot.get("/users/@me")).status_code == 200

    discord.rest.script_rate_limit(retry_after=1.0, is_global=True)
    blocked = await bot.get("/users/@me")
    assert blocked.json()["global"] is True
    assert blocked.headers["x-ratelimit-global"] == "true"
    assert blocked.headers["x-ratelimit-scope"] == "global"

    stats = discord.statistics()
    assert stats.scripted_faults == 2
    assert stats.requests_while_limited == 1
    assert stats.rate_limited == 3


async def test_cloudflare_429_is_html_with_retry_after(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    discord.rest.script_rate_limit(cloudflare=True, retry_after=30)
    response = await bot.get("/users/@me")
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["retry-after"] == "30"
    assert "x-ratelimit-bucket" not in response.headers
    assert "1015" in response.text


async def test_scripted_server_errors(discord: DiscordEmulator, bot: httpx.AsyncClient) -> None:
    discord.rest.script_error("GET /users/@me", status=502, count=2)
    assert [(await bot.get("/users/@me")).status_code for _ in range(3)] == [502, 502, 200]


async def test_reactions_typing_commands_and_lookups(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id, guild_id = space.channels["project"]["id"], space.guild["id"]
    alice = space.users["alice"]
    message = alice.send_message(channel_id, "hi")
    assert (
        await bot.put(f"/channels/{channel_id}/messages/{message['id']}/reactions/%F0%9F%91%80/@me")
    ).status_code == 204
    stored = discord.state.messages[channel_id][message["id"]]
    assert stored["reactions"][0]["emoji"]["name"] == "👀"
    assert stored["reactions"][0]["me"] is True
    await bot.delete(f"/channels/{channel_id}/messages/{message['id']}/reactions/%F0%9F%91%80/@me")
    assert discord.state.messages[channel_id][message["id"]]["reactions"] == []

    assert (await bot.post(f"/channels/{channel_id}/typing")).status_code == 204
    assert discord.state.typing[-1][:2] == (channel_id, discord.bot_user["id"])

    app = discord.application_id
    commands = await bot.put(
        f"/applications/{app}/guilds/{guild_id}/commands",
        json=[{"name": "queue", "description": "Queue a prompt", "options": []}],
    )
    assert commands.status_code == 200
    (queue,) = commands.json()
    again = await bot.put(
        f"/applications/{app}/guilds/{guild_id}/commands",
        json=[{"name": "queue", "description": "Queue it", "options": []}],
    )
    assert again.json()[0]["id"] == queue["id"]  # overwrite keeps ids of same-named commands
    bad = await bot.put(
        f"/applications/{app}/guilds/{guild_id}/commands",
        json=[{"name": "Bad Name", "description": "x"}],
    )
    assert bad.json()["code"] == 50035

    member = await bot.get(f"/guilds/{guild_id}/members/{alice.id}")
    assert member.json()["roles"] == [space.kimaki_role["id"]]
    members = await bot.get(f"/guilds/{guild_id}/members", params={"limit": 100})
    assert len(members.json()) == 4  # owner, bot, alice, bob
    roles = await bot.get(f"/guilds/{guild_id}/roles")
    assert {r["name"] for r in roles.json()} == {"@everyone", "Kimaki"}
    role = await bot.post(f"/guilds/{guild_id}/roles", json={"name": "Kimaki Admin"})
    assert (
        await bot.put(f"/guilds/{guild_id}/members/{alice.id}/roles/{role.json()['id']}")
    ).status_code == 204
    assert role.json()["id"] in discord.state.member(guild_id, alice.id)["roles"]
    guild = await bot.get(f"/guilds/{guild_id}")
    assert guild.json()["owner_id"] == space.owner.id
    me = await bot.get("/users/@me")
    assert me.json()["bot"] is True
    application = await bot.get("/applications/@me")
    assert application.json()["id"] == discord.application_id
    oauth = await bot.get("/oauth2/applications/@me")
    assert oauth.json()["id"] == discord.application_id
    gateway = await bot.get("/gateway/bot")
    assert gateway.json()["url"] == discord.gateway_url
    assert gateway.json()["shards"] == 1
    assert gateway.json()["session_start_limit"]["max_concurrency"] == 1
    stats = discord.statistics()
    assert stats.requests_by_route["GET /gateway/bot"] == 1
    assert stats.responses_by_status[200] >= 10


async def test_transcript_and_wait_timeout(discord: DiscordEmulator, space: Workspace) -> None:
    channel_id = space.channels["project"]["id"]
    space.users["alice"].send_message(channel_id, "is anyone there?")
    discord.wait_timeout = 0.05
    with pytest.raises(Exception, match="is anyone there") as caught:
        await discord.wait_for_message(channel_id)
    assert type(caught.value).__name__ == "WaitTimeout"
    assert "alice: is anyone there?" in discord.transcript(channel_id)


async def test_a_retried_send_with_enforce_nonce_is_not_duplicated(
    discord: DiscordEmulator, space: Workspace, bot: httpx.AsyncClient
) -> None:
    channel_id = space.channels["project"]["id"]
    payload = {"content": "once", "nonce": "abc123", "enforce_nonce": True}
    first = await bot.post(f"/channels/{channel_id}/messages", json=payload)
    retry = await bot.post(f"/channels/{channel_id}/messages", json=payload)
    assert first.json()["id"] == retry.json()["id"]
    assert len(discord.state.messages[channel_id]) == 1
