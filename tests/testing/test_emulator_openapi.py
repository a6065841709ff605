from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kimaki.testing.discord import (
    DiscordEmulator,
    InvalidRequestError,
    RequestValidator,
    WaitTimeout,
    default_openapi_path,
    open_discord_emulator,
)

SPEC: Path = default_openapi_path()
pytestmark = pytest.mark.discord_openapi


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator.from_path(SPEC)


def test_good_payloads_pass(validator: RequestValidator) -> None:
    message = {
        "content": "hello",
        "components": [
            {"type": 1, "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "go"}]}
        ],
        "allowed_mentions": {"parse": []},
        "message_reference": {"message_id": "123"},
        "flags": 4096,
    }
    assert validator.validate("POST", "/channels/1/messages", "application/json", message) == []
    modal = {
        "type": 9,
        "data": {
            "custom_id": "m",
            "title": "Why",
            "components": [
                {"type": 1, "components": [{"type": 4, "custom_id": "a", "style": 1, "label": "A"}]}
            ],
        },
    }
    callback = "/interactions/1/tok/callback"
    assert validator.validate("POST", callback, "application/json", modal) == []
    assert validator.template("GET", "/users/@me") == "/users/@me"
    assert validator.template("GET", "/users/42") == "/users/{user_id}"


def test_bad_payloads_name_the_field(validator: RequestValidator) -> None:
    long_label = {
        "components": [
            {
                "type": 1,
                "components": [{"type": 2, "style": 1, "label": "x" * 81, "custom_id": "a"}],
            }
        ]
    }
    (problem,) = validator.validate("POST", "/channels/1/messages", "application/json", long_label)
    assert "components/0/components/0/label" in problem
    assert "too long" in problem
    # Snowflakes are strings in Discord's description.
    problems = validator.validate(
        "POST", "/channels/1/messages", "application/json", {"message_reference": {"message_id": 5}}
    )
    assert "message_reference" in problems[0]
    assert validator.validate(
        "POST", "/interactions/1/t/callback", "application/json", {"type": 99}
    )
    assert validator.validate("GET", "/no/such/route", "application/json", None)


@pytest.fixture
async def discord() -> AsyncIterator[DiscordEmulator]:
    async with open_discord_emulator(validate_requests=True) as emulator:
        yield emulator


async def test_valid_requests_leave_no_errors(discord: DiscordEmulator) -> None:
    space = discord.create_workspace()
    channel_id = space.channels["general"]["id"]
    headers = {"Authorization": f"Bot {discord.token}"}
    async with httpx.AsyncClient(base_url=discord.api_url, headers=headers) as bot:
        ok = await bot.post(f"/channels/{channel_id}/messages", json={"content": "hi"})
        upload = await bot.post(
            f"/channels/{channel_id}/messages",
            data={"payload_json": json.dumps({"attachments": [{"id": "0", "filename": "a.txt"}]})},
            files={"files[0]": ("a.txt", b"abc", "text/plain")},
        )
    assert ok.is_success
    assert upload.is_success
    assert discord.rest.validation_errors == []
    await discord.wait_for_message(channel_id)


async def test_an_invalid_request_fails_the_waiter_and_the_block() -> None:
    async def send_a_bad_message() -> None:
        async with open_discord_emulator(validate_requests=True) as discord:
            space = discord.create_workspace()
            channel_id = space.channels["general"]["id"]
            headers = {"Authorization": f"Bot {discord.token}"}
            async with httpx.AsyncClient(base_url=discord.api_url, headers=headers) as bot:
                await bot.post(f"/channels/{channel_id}/messages", json={"content": 12345})
            assert discord.statistics().invalid_requests == 1
            with pytest.raises(InvalidRequestError, match="content"):
                await discord.wait_for_message(channel_id)

    with pytest.raises(InvalidRequestError, match="content: 12345 is not of type"):
        await send_a_bad_message()


async def test_every_emulator_validates_by_default_when_the_description_is_here() -> None:
    """Tests, benchmarks and manual runs open emulators without asking: all are checked."""
    async with open_discord_emulator() as discord:
        channel_id = discord.create_workspace().channels["general"]["id"]
        headers = {"Authorization": f"Bot {discord.token}"}
        async with httpx.AsyncClient(base_url=discord.api_url, headers=headers) as bot:
            await bot.post(f"/channels/{channel_id}/messages", json={"content": 12345})
        assert discord.statistics().invalid_requests == 1
        discord.rest.validation_errors.clear()  # seen; the block would fail on it
    async with open_discord_emulator(validate_requests=False) as unchecked:
        channel_id = unchecked.create_workspace().channels["general"]["id"]
        headers = {"Authorization": f"Bot {unchecked.token}"}
        async with httpx.AsyncClient(base_url=unchecked.api_url, headers=headers) as bot:
            await bot.post(f"/channels/{channel_id}/messages", json={"content": 12345})
        assert unchecked.statistics().invalid_requests == 0


async def test_an_exception_in_the_block_comes_out_unwrapped() -> None:
    async def wait_in_vain() -> None:
        async with open_discord_emulator() as discord:
            discord.wait_timeout = 0
            await discord.wait_for_message(discord.create_workspace().channels["general"]["id"])

    with pytest.raises(WaitTimeout, match="no messages"):
        await wait_in_vain()
