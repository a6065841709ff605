"""REST endpoints, retries and error translation, against a scripted `httpx.MockTransport`.

Every JSON body the client sends here is also validated against the request schema of its
route in Discord's OpenAPI description (`../shared/reference/discord-openapi.json`).
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import json
import re
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from kimaki import _log
from kimaki.discord.errors import (
    BadRequest,
    ContentTooLong,
    Forbidden,
    HTTPError,
    NetworkError,
    NotFound,
    ServerError,
)
from kimaki.discord.models import (
    ActionRow,
    AllowedMentions,
    ApplicationCommand,
    ApplicationCommandOption,
    ApplicationCommandOptionType,
    Button,
    ButtonStyle,
    ChannelType,
    CommandChoice,
    InteractionCallbackType,
    Label,
    MessageFlags,
    MessageReference,
    OverwriteType,
    PermissionOverwrite,
    Permissions,
    SelectOption,
    StringSelect,
    TextInput,
    TextInputStyle,
)
from kimaki.discord.rest import File, RESTClient

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GAbCdE.fake-token-for-tests-only-yyyyyyyyyyyy"
SPEC = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "discord-openapi.json"

USER = {"id": "10", "username": "kimaki", "discriminator": "0", "global_name": None, "bot": True}
MESSAGE: dict[str, Any] = {
    "id": "500",
    "channel_id": "100",
    "author": USER,
    "content": "hi",
    "timestamp": "2026-01-01T00:00:00+00:00",
    "edited_timestamp": None,
    "type": 0,
    "flags": 0,
    "attachments": [],
    "embeds": [],
    "components": [],
    "mentions": [],
    "mention_roles": [],
    "pinned": False,
    "mention_everyone": False,
    "tts": False,
}
THREAD = {
    "id": "600",
    "type": 11,
    "guild_id": "1",
    "parent_id": "100",
    "owner_id": "10",
    "name": "t",
    "flags": 0,
    "thread_metadata": {
        "archived": False,
        "auto_archive_duration": 1440,
        "archive_timestamp": None,
        "locked": False,
    },
    "message_count": 0,
    "member_count": 1,
    "total_message_sent": 0,
}
COMMAND = {
    "id": "9",
    "application_id": "77",
    "guild_id": "1",
    "version": "1",
    "type": 1,
    "name": "model",
    "description": "Choose the model for this channel",
    "default_member_permissions": "32",
    "options": [
        {
            "type": 3,
            "name": "name",
            "description": "Model name",
            "required": True,
            "autocomplete": True,
        }
    ],
}
GATEWAY_BOT = {
    "url": "wss://gateway.discord.gg",
    "shards": 1,
    "session_start_limit": {
        "total": 1000,
        "remaining": 999,
        "reset_after": 0,
        "max_concurrency": 1,
    },
}


@attrs.define
class Recorder:
    """Answers from a script (responses or exceptions to raise), then 200 with `default`."""

    script: list[httpx.Response | Exception] = attrs.field(factory=list)
    default: Any = attrs.field(factory=lambda: MESSAGE)
    requests: list[httpx.Request] = attrs.field(factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return httpx.Response(200, json=self.default)

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def client_for(recorder: Recorder, **kwargs: Any) -> RESTClient:
    return RESTClient(
        TOKEN,
        base_url="https://discord.test/api/v10",
        transport=httpx.MockTransport(recorder.handle),
        **kwargs,
    )


# --------------------------------------------------------------------------- schema check


@functools.cache
def _spec() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip(f"Discord OpenAPI description not found at {SPEC} (../shared/reference/)")
    data: dict[str, Any] = json.loads(SPEC.read_text())
    return data


def _request_schema(method: str, path: str) -> dict[str, Any]:
    spec = _spec()
    for template, operations in spec["paths"].items():
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            body = operations[method.lower()].get("requestBody")
            assert body is not None, f"{method} {template} takes no body"
            schema: dict[str, Any] = body["content"]["application/json"]["schema"]
            return schema
    raise AssertionError(f"no route in the OpenAPI description for {method} {path}")


def assert_valid(request: httpx.Request, body: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    path = request.url.path.removeprefix("/api/v10")
    schema = {**_request_schema(request.method, path), "components": _spec()["components"]}
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


# --------------------------------------------------------------------------- basics


async def test_headers_and_token_never_logged() -> None:
    recorder = Recorder(default=USER)
    async with client_for(recorder) as client:
        user = await client.get_current_user()
    request = recorder.requests[0]
    assert user.id == 10
    assert request.url == "https://discord.test/api/v10/users/@me"
    assert request.headers["Authorization"] == f"Bot {TOKEN}"
    assert request.headers["User-Agent"].startswith("DiscordBot (https://github.com/kimaki-bot")
    assert TOKEN not in _log.redact(f"token is {TOKEN}")


async def test_content_over_2000_characters_is_refused_before_sending() -> None:
    recorder = Recorder()
    async with client_for(recorder) as client:
        with pytest.raises(ContentTooLong, match="2001 characters"):
            await client.create_message(100, "x" * 2001)
        await client.create_message(100, "x" * 2000)
    assert len(recorder.requests) == 1


async def test_create_message_payload() -> None:
    recorder = Recorder()
    row = ActionRow(
        (
            Button(style=ButtonStyle.SUCCESS, label="Accept", custom_id="p:1:a"),
            Button(style=ButtonStyle.DANGER, label="Deny", custom_id="p:1:d"),
        )
    )
    async with client_for(recorder) as client:
        message = await client.create_message(
            100,
            "hello",
            components=[row],
            flags=MessageFlags.SUPPRESS_EMBEDS,
            reply_to=MessageReference(message_id=499, fail_if_not_exists=False),
        )
    body = recorder.json()
    assert message.id == 500
    assert body["content"] == "hello"
    assert body["flags"] == 4
    assert body["allowed_mentions"] == {"parse": ["users"]}  # the client's safe default
    assert body["message_reference"] == {"message_id": "499", "fail_if_not_exists": False}
    assert body["components"][0]["type"] == 1
    assert body["components"][0]["components"][0] == {
        "type": 2,
        "style": 3,
        "label": "Accept",
        "custom_id": "p:1:a",
    }
    assert body["enforce_nonce"] is True
    assert len(body["nonce"]) <= 25
    assert_valid(recorder.requests[-1], body)


async def test_multipart_upload_shape() -> None:
    recorder = Recorder()
    async with client_for(recorder) as client:
        await client.create_message(
            100,
            "see attached",
            files=[
                File("diff.patch", b"--- a\n+++ b\n", description="the diff"),
                File("b.txt", b"x"),
            ],
        )
    request = recorder.requests[0]
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    raw = (
        b"Content-Type: " + request.headers["Content-Type"].encode() + b"\r\n\r\n" + request.content
    )
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts = {
        part.get_param("name", header="content-disposition"): part for part in message.iter_parts()
    }
    assert set(parts) == {"payload_json", "files[0]", "files[1]"}
    payload = json.loads(parts["payload_json"].get_content())
    assert payload["content"] == "see attached"
    assert payload["attachments"] == [
        {"id": "0", "filename": "diff.patch", "description": "the diff"},
        {"id": "1", "filename": "b.txt"},
    ]
    assert parts["files[0]"].get_filename() == "diff.patch"
    assert parts["files[0]"].get_content() == b"--- a\n+++ b\n"
    assert_valid(request, payload)


# --------------------------------------------------------------------------- retries, errors


async def test_server_errors_are_retried_then_succeed(autojump_clock: Any) -> None:
    recorder = Recorder(script=[httpx.Response(502, text="Bad Gateway"), httpx.Response(503)])
    async with client_for(recorder) as client:
        message = await client.get_message(100, 500)
        stats = client.statistics()
    assert message.content == "hi"
    assert len(recorder.requests) == 3
    assert stats.retries == 2
    assert stats.server_errors == 2


async def test_server_errors_exhausted_raise_server_error(autojump_clock: Any) -> None:
    answer = httpx.Response(500, json={"code": 0, "message": "500: Internal Server Error"})
    recorder = Recorder(script=[answer] * 10)
    async with client_for(recorder, max_retries=3) as client:
        with pytest.raises(ServerError) as info:
            await client.get_message(100, 500)
    assert info.value.status == 500
    assert info.value.message == "500: Internal Server Error"
    assert len(recorder.requests) == 4


async def test_network_errors_are_retried(autojump_clock: Any) -> None:
    recorder = Recorder(script=[httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
    async with client_for(recorder) as client:
        await client.get_message(100, 500)
        stats = client.statistics()
    assert len(recorder.requests) == 3
    assert stats.network_errors == 2


async def test_network_errors_exhausted_raise_network_error(autojump_clock: Any) -> None:
    recorder = Recorder(script=[httpx.ConnectError("refused")] * 10)
    async with client_for(recorder, max_retries=2) as client:
        with pytest.raises(NetworkError, match="ConnectError"):
            await client.get_message(100, 500)
    assert len(recorder.requests) == 3


async def test_a_read_timeout_does_not_repeat_a_non_idempotent_post(autojump_clock: Any) -> None:
    # The thread may already exist: creating it twice would leave a duplicate thread.
    recorder = Recorder(script=[httpx.ReadTimeout("slow")], default=THREAD)
    async with client_for(recorder) as client:
        with pytest.raises(NetworkError):
            await client.start_thread_from_message(100, 500, "title")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("status", "cls"), [(400, BadRequest), (403, Forbidden), (404, NotFound), (409, HTTPError)]
)
async def test_error_json_is_carried(status: int, cls: type[HTTPError]) -> None:
    body = {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "..."}]}},
    }
    recorder = Recorder(script=[httpx.Response(status, json=body)])
    async with client_for(recorder) as client:
        with pytest.raises(cls) as info:
            await client.edit_message(100, 500, content="x")
    error = info.value
    assert type(error) is cls
    assert (error.status, error.code, error.message) == (status, 50035, "Invalid Form Body")
    assert error.errors["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
    assert "PATCH /channels/100/messages/500" in str(error)


async def test_interaction_tokens_stay_out_of_error_messages() -> None:
    recorder = Recorder(
        script=[httpx.Response(404, json={"code": 10062, "message": "Unknown interaction"})]
    )
    async with client_for(recorder) as client:
        with pytest.raises(NotFound) as info:
            await client.create_interaction_response(
                9, "secret-interaction-token", InteractionCallbackType.DEFERRED_UPDATE_MESSAGE
            )
    assert info.value.code == 10062
    assert "secret-interaction-token" not in str(info.value)


# --------------------------------------------------------------------------- endpoints


async def test_thread_and_channel_endpoints_send_valid_payloads() -> None:
    recorder = Recorder(default=THREAD)
    async with client_for(recorder) as client:
        thread = await client.start_thread_from_message(
            100, 500, "a" * 150, auto_archive_duration=1440
        )
        await client.start_thread(
            100, "no message", type=ChannelType.PRIVATE_THREAD, invitable=False
        )
        await client.edit_channel(600, name="renamed", archived=True, locked=True)
        await client.create_channel(
            1,
            "project",
            parent_id=50,
            topic="kimaki project",
            permission_overwrites=[
                PermissionOverwrite(id=1, type=OverwriteType.ROLE, deny=Permissions.VIEW_CHANNEL),
                PermissionOverwrite(
                    id=10, type=OverwriteType.MEMBER, allow=Permissions.VIEW_CHANNEL
                ),
            ],
        )
        await client.create_channel(1, "Kimaki", type=ChannelType.GUILD_CATEGORY)
        await client.create_channel(1, "voice", type=ChannelType.GUILD_VOICE)
    assert thread.is_thread
    assert thread.parent_id == 100
    paths = [(r.method, r.url.path.removeprefix("/api/v10")) for r in recorder.requests]
    assert paths == [
        ("POST", "/channels/100/messages/500/threads"),
        ("POST", "/channels/100/threads"),
        ("PATCH", "/channels/600"),
        ("POST", "/guilds/1/channels"),
        ("POST", "/guilds/1/channels"),
        ("POST", "/guilds/1/channels"),
    ]
    assert recorder.json(0)["name"] == "a" * 100
    assert recorder.json(1) == {"name": "no message", "type": 12, "invitable": False}
    assert recorder.json(2) == {"name": "renamed", "archived": True, "locked": True}
    assert recorder.json(3)["parent_id"] == "50"
    assert recorder.json(3)["permission_overwrites"][0] == {"id": "1", "type": 0, "deny": 1024}
    assert recorder.json(4)["type"] == 4
    for index, request in enumerate(recorder.requests):
        assert_valid(request, recorder.json(index))


async def test_interaction_responses_of_every_kind() -> None:
    recorder = Recorder(script=[httpx.Response(204)] * 5)
    modal_rows = [
        ActionRow((TextInput("answer", style=TextInputStyle.PARAGRAPH, label="Your answer"),))
    ]
    async with client_for(recorder) as client:
        await client.create_interaction_response(
            1,
            "tok",
            InteractionCallbackType.CHANNEL_MESSAGE_WITH_SOURCE,
            content="only you see this",
            flags=MessageFlags.EPHEMERAL,
        )
        await client.create_interaction_response(
            1, "tok", InteractionCallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        )
        await client.create_interaction_response(
            1,
            "tok",
            InteractionCallbackType.UPDATE_MESSAGE,
            content="Accepted by alice",
            components=[],
        )
        await client.create_interaction_response(
            1,
            "tok",
            InteractionCallbackType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT,
            choices=[CommandChoice("main", "main"), CommandChoice("dev", "dev")],
        )
        await client.create_interaction_response(
            1,
            "tok",
            InteractionCallbackType.MODAL,
            custom_id="q:7",
            title="Other…",
            components=modal_rows,
        )
    bodies = [recorder.json(i) for i in range(5)]
    assert bodies[0] == {
        "type": 4,
        "data": {
            "content": "only you see this",
            "allowed_mentions": {"parse": ["users"]},
            "flags": 64,
        },
    }
    assert bodies[1]["type"] == 5
    assert bodies[2]["data"]["components"] == []
    assert bodies[3] == {
        "type": 8,
        "data": {"choices": [{"name": "main", "value": "main"}, {"name": "dev", "value": "dev"}]},
    }
    assert bodies[4]["data"]["components"][0]["components"][0]["custom_id"] == "answer"
    for index, request in enumerate(recorder.requests):
        assert request.url.path == "/api/v10/interactions/1/tok/callback"
        assert_valid(request, bodies[index])


async def test_modal_with_labels_is_valid() -> None:
    recorder = Recorder(script=[httpx.Response(204)])
    select = StringSelect("pick", (SelectOption("A", "a"), SelectOption("B", "b")))
    async with client_for(recorder) as client:
        await client.create_interaction_response(
            1,
            "tok",
            InteractionCallbackType.MODAL,
            custom_id="m",
            title="Pick",
            components=[
                Label("Choice", component=select),
                Label("Why", component=TextInput("why")),
            ],
        )
    assert_valid(recorder.requests[0], recorder.json())


async def test_followups_and_original_response() -> None:
    recorder = Recorder()
    async with client_for(recorder) as client:
        await client.create_followup(77, "tok", "more", flags=MessageFlags.EPHEMERAL)
        await client.edit_original_response(77, "tok", content="edited")
        await client.edit_followup(77, "tok", 500, content="edited again")
        recorder.script.append(httpx.Response(204))
        await client.delete_original_response(77, "tok")
    assert [
        (r.method, r.url.path.removeprefix("/api/v10"), r.url.query) for r in recorder.requests
    ] == [
        ("POST", "/webhooks/77/tok", b"wait=true"),
        ("PATCH", "/webhooks/77/tok/messages/@original", b""),
        ("PATCH", "/webhooks/77/tok/messages/500", b""),
        ("DELETE", "/webhooks/77/tok/messages/@original", b""),
    ]
    for index in range(3):
        assert_valid(recorder.requests[index], recorder.json(index))


async def test_commands_reactions_typing_and_reads() -> None:
    command = ApplicationCommand(
        "model",
        "Choose the model for this channel",
        options=(
            ApplicationCommandOption(
                ApplicationCommandOptionType.STRING,
                "name",
                "Model name",
                required=True,
                autocomplete=True,
            ),
        ),
        default_member_permissions=Permissions.MANAGE_GUILD,
    )
    recorder = Recorder()
    async with client_for(recorder) as client:
        recorder.script.append(httpx.Response(200, json=[COMMAND]))
        saved = await client.bulk_overwrite_guild_commands(77, 1, [command])
        recorder.script.extend([httpx.Response(204)] * 3)
        await client.add_reaction(100, 500, "👍")
        await client.remove_own_reaction(100, 500, "name:123")
        await client.trigger_typing(100)
        recorder.script.append(httpx.Response(200, json=[MESSAGE, MESSAGE]))
        messages = await client.list_messages(100, limit=500, before=900)
        recorder.script.append(httpx.Response(200, json=GATEWAY_BOT))
        gateway = await client.get_gateway_bot()
    assert saved[0].id == 9
    assert saved[0].default_member_permissions == Permissions.MANAGE_GUILD
    item_schema = _request_schema("PUT", "/applications/77/guilds/1/commands")
    assert item_schema["type"] == ["array", "null"]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(recorder.json(0), {**item_schema, "components": _spec()["components"]})
    paths = [r.url.raw_path.decode() for r in recorder.requests]
    assert paths[1] == "/api/v10/channels/100/messages/500/reactions/%F0%9F%91%8D/@me"
    assert paths[2] == "/api/v10/channels/100/messages/500/reactions/name%3A123/@me"
    assert paths[3] == "/api/v10/channels/100/typing"
    assert paths[4] == "/api/v10/channels/100/messages?limit=100&before=900"
    assert len(messages) == 2
    assert gateway["session_start_limit"]["max_concurrency"] == 1


async def test_allowed_mentions_can_be_narrowed_per_call() -> None:
    recorder = Recorder()
    async with client_for(recorder) as client:
        await client.create_message(
            100, "<@42> done", allowed_mentions=AllowedMentions(users=(42,))
        )
    assert recorder.json()["allowed_mentions"] == {"parse": [], "users": ["42"]}
    assert_valid(recorder.requests[0], recorder.json())
