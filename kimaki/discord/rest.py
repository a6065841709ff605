"""The Discord REST client: typed endpoints over one httpx.AsyncClient, rate limited.

```
RESTClient.create_message(...)              typed endpoint: builds the payload, parses the model
└─ RESTClient._request(route, ...)          one loop for every call
     ├─ RateLimiter.acquire(route)          bucket (hash + major parameter), global 50/s, pauses
     ├─ httpx request                       `Authorization: Bot <token>`, DiscordBot User-Agent
     ├─ Slot.record(response)               learn bucket headers; classify a 429
     └─ decide: return / retry 429 (after the wait) / retry 5xx & network (jittered backoff,
        bounded) / raise one `kimaki.discord.errors` exception
```

Why each retry is safe: 429s were never processed; 5xx and connect failures are retried for
every route, other network failures (the request may have arrived) only for idempotent routes.
Message creation is made idempotent with an enforced nonce: Discord returns the first message
instead of posting a second one.

The base URL is a setting (Discord or the emulator); tests pass an `httpx.MockTransport`.

Redaction, the last line (`kimaki._redact`): everything this client sends that a person can
read (content, embeds, component labels, uploaded text files and their names, thread and
channel names and topics, modal titles, autocomplete choices, audit-log reasons) is redacted
here, whoever built it. Callers that split text (the thread writer) redact before splitting,
so a secret cut in two by a split cannot slip past this line in halves.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import secrets
import urllib.parse
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, TypeVar, final

import attrs
import httpx
import trio

import kimaki
from kimaki import _log
from kimaki._backoff import Backoff
from kimaki._redact import redact, redact_data
from kimaki.discord._ratelimit import RateLimiter
from kimaki.discord._routes import CompiledRoute, Route
from kimaki.discord.errors import (
    ContentTooLong,
    DownloadTooLarge,
    NetworkError,
    error_from_response,
)
from kimaki.discord.models import (
    ActionRow,
    AllowedMentions,
    Application,
    ApplicationCommand,
    Channel,
    ChannelType,
    CommandChoice,
    Guild,
    InteractionCallbackType,
    Label,
    Member,
    Message,
    MessageFlags,
    MessageReference,
    PermissionOverwrite,
    Role,
    User,
    structure,
    unstructure,
)

__all__ = [
    "DEFAULT_API_URL",
    "MAX_CONTENT_LENGTH",
    "UNSET",
    "File",
    "RESTClient",
    "RESTStatistics",
    "Unset",
]

log = logging.getLogger("kimaki.rest")

# 5xx and network errors: 1 s, 2 s, 4 s ... at most 10 s, jittered.
_RETRY_BACKOFF: Final = Backoff(initial=1.0, cap=10.0)

T = TypeVar("T")

DEFAULT_API_URL: Final = "https://discord.com/api/v10"
MAX_CONTENT_LENGTH: Final = 2000
USER_AGENT: Final = f"DiscordBot (https://github.com/kimaki-bot/kimaki, {kimaki.__version__})"


class Unset(enum.Enum):
    """Marks an argument that was not given (as opposed to `None`, which clears a field)."""

    UNSET = enum.auto()


UNSET: Final = Unset.UNSET


@final
@attrs.frozen
class File:
    """A file to upload with a message (sent as `files[n]` in a multipart body)."""

    filename: str
    data: bytes = attrs.field(repr=False)
    description: str | None = None
    content_type: str = "application/octet-stream"


@final
@attrs.frozen
class RESTStatistics:
    requests: int
    """HTTP requests sent, retries included."""
    retries: int
    rate_limited: int
    """429 responses received."""
    server_errors: int
    network_errors: int
    buckets: int
    invalid_requests_10min: int
    """401/403/429 responses in the last ten minutes (Discord bans the IP at 10,000)."""
    paused_for: float
    """Seconds left of a global or Cloudflare pause."""


class _R:
    """Every route the client calls; paths checked against Discord's OpenAPI description."""

    gateway_bot = Route("GET", "/gateway/bot")
    current_user = Route("GET", "/users/@me")
    current_user_guilds = Route("GET", "/users/@me/guilds")
    current_application = Route("GET", "/applications/@me")
    messages = Route("GET", "/channels/{channel_id}/messages")
    create_message = Route("POST", "/channels/{channel_id}/messages", idempotent=True)
    message = Route("GET", "/channels/{channel_id}/messages/{message_id}")
    edit_message = Route("PATCH", "/channels/{channel_id}/messages/{message_id}")
    delete_message = Route("DELETE", "/channels/{channel_id}/messages/{message_id}")
    own_reaction = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
    add_reaction = Route("PUT", own_reaction)
    remove_reaction = Route("DELETE", own_reaction)
    typing = Route("POST", "/channels/{channel_id}/typing", idempotent=True)
    thread_from_message = Route("POST", "/channels/{channel_id}/messages/{message_id}/threads")
    thread = Route("POST", "/channels/{channel_id}/threads")
    thread_member = Route("PUT", "/channels/{channel_id}/thread-members/{user_id}")
    active_threads = Route("GET", "/guilds/{guild_id}/threads/active")
    channel = Route("GET", "/channels/{channel_id}")
    edit_channel = Route("PATCH", "/channels/{channel_id}")
    delete_channel = Route("DELETE", "/channels/{channel_id}")
    guild_channels = Route("GET", "/guilds/{guild_id}/channels")
    create_channel = Route("POST", "/guilds/{guild_id}/channels")
    guild = Route("GET", "/guilds/{guild_id}")
    member = Route("GET", "/guilds/{guild_id}/members/{user_id}")
    members = Route("GET", "/guilds/{guild_id}/members")
    roles = Route("GET", "/guilds/{guild_id}/roles")
    guild_commands = Route("GET", "/applications/{application_id}/guilds/{guild_id}/commands")
    put_guild_commands = Route("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")
    global_commands = Route("GET", "/applications/{application_id}/commands")
    put_global_commands = Route("PUT", "/applications/{application_id}/commands")
    callback = Route(
        "POST", "/interactions/{interaction_id}/{interaction_token}/callback", idempotent=True
    )
    followup = Route("POST", "/webhooks/{application_id}/{interaction_token}")
    webhook_message = "/webhooks/{application_id}/{interaction_token}/messages/{message_id}"
    get_webhook_message = Route("GET", webhook_message)
    edit_webhook_message = Route("PATCH", webhook_message)
    delete_webhook_message = Route("DELETE", webhook_message)


def _check_content(content: str | Unset | None) -> None:
    if isinstance(content, str) and len(content) > MAX_CONTENT_LENGTH:
        raise ContentTooLong(len(content), MAX_CONTENT_LENGTH)


def _put(payload: dict[str, Any], key: str, value: Any) -> None:
    if value is not UNSET:
        payload[key] = value


def _redact_file(data: bytes) -> bytes:
    """A text file's secrets redacted as message content is (a `/diff` may show an .env)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    redacted = redact(text)
    return data if redacted == text else redacted.encode("utf-8")


def _redacted_content(content: str) -> str:
    """`content` redacted; cut back to the limit if a replacement made it longer (what was
    within the limit before is not refused for what the redactor did)."""
    redacted = redact(content)
    if len(redacted) > MAX_CONTENT_LENGTH:
        redacted = redacted[: MAX_CONTENT_LENGTH - 1] + "…"
    return redacted


def _redacted_name(name: str) -> str:
    """A channel or thread name: redacted first, then cut to Discord's 100 characters (cut
    first, a secret's first half could pass)."""
    return redact(name)[:100]


def _message_payload(
    *,
    content: str | Unset | None = UNSET,
    embeds: Sequence[Mapping[str, Any]] | Unset | None = UNSET,
    components: Sequence[ActionRow | Label] | Unset | None = UNSET,
    allowed_mentions: AllowedMentions | Unset | None = UNSET,
    flags: MessageFlags | int | Unset | None = UNSET,
    message_reference: MessageReference | Unset | None = UNSET,
    files: Sequence[File] = (),
    keep_attachments: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The JSON for any message-shaped request (create, edit, interaction, follow-up)."""
    _check_content(content)
    if isinstance(content, str):
        # Agent output can quote anything it read (an .env, a log): no secret of ours, and
        # nothing shaped like a bot token, reaches Discord.
        content = _redacted_content(content)
    payload: dict[str, Any] = {}
    _put(payload, "content", content)
    if embeds is not UNSET:
        payload["embeds"] = (
            None if embeds is None else [redact_data(dict(embed)) for embed in embeds]
        )
    if components is not UNSET:
        payload["components"] = (
            None if components is None else redact_data(unstructure(list(components)))
        )
    if allowed_mentions is not UNSET:
        payload["allowed_mentions"] = (
            None if allowed_mentions is None else unstructure(allowed_mentions)
        )
    if flags is not UNSET:
        payload["flags"] = None if flags is None else int(flags)
    if message_reference is not UNSET:
        payload["message_reference"] = (
            None if message_reference is None else unstructure(message_reference)
        )
    if files or keep_attachments is not None:
        attachments: list[dict[str, Any]] = [{"id": str(i)} for i in keep_attachments or ()]
        for index, file in enumerate(files):
            entry: dict[str, Any] = {"id": str(index), "filename": redact(file.filename)}
            if file.description is not None:
                entry["description"] = redact(file.description)
            attachments.append(entry)
        payload["attachments"] = attachments
    return payload


@final
class RESTClient:
    """Discord's REST API for one bot token. Use as an async context manager or `aclose()`.

    `allowed_mentions` is the default for every message this client sends when a call does
    not give its own: users only, so agent output never pings @everyone or a role.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_API_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        max_rate_limit_retries: int = 5,
        max_rate_limit_wait: float = 120.0,
        global_limit: int = 50,
        allowed_mentions: AllowedMentions | None = None,
    ) -> None:
        _log.register_secret(token)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Authorization": f"Bot {token}", "User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        self._limiter = RateLimiter(global_limit=global_limit)
        self._max_retries = max_retries
        self._max_rate_limit_retries = max_rate_limit_retries
        self._max_rate_limit_wait = max_rate_limit_wait
        self._allowed_mentions = allowed_mentions or AllowedMentions.users_only()
        self._requests = 0
        self._retries = 0
        self._rate_limited = 0
        self._server_errors = 0
        self._network_errors = 0

    async def __aenter__(self) -> RESTClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def statistics(self) -> RESTStatistics:
        return RESTStatistics(
            requests=self._requests,
            retries=self._retries,
            rate_limited=self._rate_limited,
            server_errors=self._server_errors,
            network_errors=self._network_errors,
            buckets=self._limiter.bucket_count,
            invalid_requests_10min=self._limiter.invalid_requests.count(trio.current_time()),
            paused_for=self._limiter.paused_for(),
        )

    async def download(self, url: str, *, limit: int) -> bytes:
        """An attachment's bytes from Discord's CDN, without the bot token (never sent there).

        Raises `NetworkError`, `HTTPError` for a failed status, or `DownloadTooLarge` when the
        body exceeds `limit` bytes.
        """
        request = self._client.build_request("GET", url)
        del request.headers["Authorization"]
        path = httpx.URL(url).path
        try:
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise error_from_response(response.status_code, body, method="GET", path=path)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise DownloadTooLarge(f"{path} is over {limit} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise NetworkError("GET", path, exc) from None

    # ------------------------------------------------------------------ the request loop

    def _backoff(self, attempt: int) -> float:
        return _RETRY_BACKOFF.delay(attempt, random.random())

    async def _request(
        self,
        compiled: CompiledRoute,
        *,
        json_body: Any = UNSET,
        files: Sequence[File] = (),
        query: Mapping[str, str | int] | None = None,
        reason: str | None = None,
    ) -> Any:
        """Send one call, rate limited and retried; the decoded JSON, or None for no body."""
        method = compiled.route.method
        shown = compiled.loggable_path
        headers: dict[str, str] = {}
        if reason:
            headers["X-Audit-Log-Reason"] = urllib.parse.quote(redact(reason)[:512], safe=" ")
        attempts = 0
        rate_limit_retries = 0
        while True:
            kwargs: dict[str, Any] = {"headers": headers}
            if query:
                kwargs["params"] = {k: str(v) for k, v in query.items()}
            if files:
                payload = {} if json_body is UNSET else json_body
                kwargs["data"] = {"payload_json": json.dumps(payload, separators=(",", ":"))}
                kwargs["files"] = [
                    (f"files[{i}]", (redact(f.filename), _redact_file(f.data), f.content_type))
                    for i, f in enumerate(files)
                ]
            elif json_body is not UNSET:
                kwargs["content"] = json.dumps(json_body, separators=(",", ":")).encode()
                kwargs["headers"] = {**headers, "Content-Type": "application/json"}

            async with self._limiter.acquire(compiled) as slot:
                self._requests += 1
                try:
                    response = await self._client.request(method, compiled.path, **kwargs)
                except httpx.TransportError as exc:
                    failure: httpx.TransportError | None = exc
                else:
                    failure = None
                    hit = slot.record(response.status_code, response.headers, response.content)

            if failure is not None:
                self._network_errors += 1
                never_sent = isinstance(failure, httpx.ConnectError | httpx.ConnectTimeout)
                if attempts < self._max_retries and (never_sent or compiled.route.idempotent):
                    delay = self._backoff(attempts)
                    attempts += 1
                    self._retries += 1
                    log.warning(
                        "%s %s: %s; retry %d in %.1fs",
                        method,
                        shown,
                        type(failure).__name__,
                        attempts,
                        delay,
                    )
                    await trio.sleep(delay)
                    continue
                raise NetworkError(method, shown, failure) from failure

            status = response.status_code
            log.debug("%s %s -> %d", method, shown, status)
            if status < 300:
                if status == 204 or not response.content:
                    return None
                return response.json()

            if status == 429 and hit is not None:
                self._rate_limited += 1
                if (
                    hit.scope != "cloudflare"
                    and rate_limit_retries < self._max_rate_limit_retries
                    and hit.retry_after <= self._max_rate_limit_wait
                ):
                    rate_limit_retries += 1
                    self._retries += 1
                    continue  # the limiter makes the next attempt wait
                raise error_from_response(
                    status, response.content, method=method, path=shown, retry_after=hit.retry_after
                )

            if status >= 500:
                self._server_errors += 1
                if attempts < self._max_retries:
                    delay = self._backoff(attempts)
                    attempts += 1
                    self._retries += 1
                    log.warning(
                        "%s %s: %d; retry %d in %.1fs", method, shown, status, attempts, delay
                    )
                    await trio.sleep(delay)
                    continue

            raise error_from_response(status, response.content, method=method, path=shown)

    async def _get(self, cls: type[T], route: Route, **params: int | str) -> T:
        return structure(await self._request(route.compile(**params)), cls)

    async def _get_list(self, cls: type[T], route: Route, **params: int | str) -> list[T]:
        return structure(await self._request(route.compile(**params)), list[cls])  # type: ignore[valid-type]

    def _mentions(self, value: AllowedMentions | Unset | None) -> AllowedMentions | None:
        return self._allowed_mentions if value is UNSET else value

    # ------------------------------------------------------------------ gateway, identity

    async def get_gateway_bot(self) -> dict[str, Any]:
        """`{url, shards, session_start_limit}`, raw, for the gateway's `fetch_gateway`."""
        data: dict[str, Any] = await self._request(_R.gateway_bot.compile())
        return data

    async def get_current_user(self) -> User:
        return await self._get(User, _R.current_user)

    async def get_current_user_guilds(self) -> list[Guild]:
        """The guilds the bot is in (partial: id and name), up to 200."""
        data = await self._request(_R.current_user_guilds.compile(), query={"limit": 200})
        return structure(data, list[Guild])

    async def get_current_application(self) -> Application:
        """The bot's application (its id is the one commands and follow-ups are keyed by)."""
        return await self._get(Application, _R.current_application)

    # ------------------------------------------------------------------ messages

    async def create_message(
        self,
        channel_id: int,
        content: str | None = None,
        *,
        embeds: Sequence[Mapping[str, Any]] | Unset = UNSET,
        components: Sequence[ActionRow] | Unset = UNSET,
        allowed_mentions: AllowedMentions | Unset | None = UNSET,
        flags: MessageFlags | int | Unset = UNSET,
        reply_to: MessageReference | None = None,
        files: Sequence[File] = (),
        tts: bool = False,
    ) -> Message:
        """Post a message. Over 2000 characters raises `ContentTooLong` before sending."""
        payload = _message_payload(
            content=UNSET if content is None else content,
            embeds=embeds,
            components=components,
            allowed_mentions=self._mentions(allowed_mentions),
            flags=flags,
            message_reference=UNSET if reply_to is None else reply_to,
            files=files,
        )
        payload["nonce"] = secrets.token_hex(12)
        payload["enforce_nonce"] = True
        if tts:
            payload["tts"] = True
        data = await self._request(
            _R.create_message.compile(channel_id=channel_id), json_body=payload, files=files
        )
        return structure(data, Message)

    async def edit_message(
        self,
        channel_id: int,
        message_id: int,
        *,
        content: str | Unset | None = UNSET,
        embeds: Sequence[Mapping[str, Any]] | Unset | None = UNSET,
        components: Sequence[ActionRow] | Unset | None = UNSET,
        allowed_mentions: AllowedMentions | Unset | None = UNSET,
        flags: MessageFlags | int | Unset | None = UNSET,
        files: Sequence[File] = (),
        keep_attachments: Sequence[int] | None = None,
    ) -> Message:
        """Change what is given; `None` clears a field; `UNSET` (default) leaves it alone.

        With `files` or `keep_attachments`, the message's attachments become the kept ones
        plus the new files.
        """
        payload = _message_payload(
            content=content,
            embeds=embeds,
            components=components,
            allowed_mentions=self._mentions(allowed_mentions),
            flags=flags,
            files=files,
            keep_attachments=keep_attachments,
        )
        data = await self._request(
            _R.edit_message.compile(channel_id=channel_id, message_id=message_id),
            json_body=payload,
            files=files,
        )
        return structure(data, Message)

    async def delete_message(
        self, channel_id: int, message_id: int, *, reason: str | None = None
    ) -> None:
        await self._request(
            _R.delete_message.compile(channel_id=channel_id, message_id=message_id),
            reason=reason,
        )

    async def get_message(self, channel_id: int, message_id: int) -> Message:
        return await self._get(Message, _R.message, channel_id=channel_id, message_id=message_id)

    async def list_messages(
        self,
        channel_id: int,
        *,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> list[Message]:
        """Recent messages, newest first (at most 100 per call, Discord's cap)."""
        query: dict[str, str | int] = {"limit": max(1, min(limit, 100))}
        for key, value in (("before", before), ("after", after), ("around", around)):
            if value is not None:
                query[key] = value
        data = await self._request(_R.messages.compile(channel_id=channel_id), query=query)
        return structure(data, list[Message])

    async def trigger_typing(self, channel_id: int) -> None:
        await self._request(_R.typing.compile(channel_id=channel_id))

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        """`emoji`: a unicode emoji, or `name:id` for a custom one."""
        await self._request(
            _R.add_reaction.compile(channel_id=channel_id, message_id=message_id, emoji=emoji)
        )

    async def remove_own_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        await self._request(
            _R.remove_reaction.compile(channel_id=channel_id, message_id=message_id, emoji=emoji)
        )

    # ------------------------------------------------------------------ threads

    async def start_thread_from_message(
        self,
        channel_id: int,
        message_id: int,
        name: str,
        *,
        auto_archive_duration: int | None = None,
        rate_limit_per_user: int | None = None,
    ) -> Channel:
        payload: dict[str, Any] = {"name": _redacted_name(name)}
        if auto_archive_duration is not None:
            payload["auto_archive_duration"] = auto_archive_duration
        if rate_limit_per_user is not None:
            payload["rate_limit_per_user"] = rate_limit_per_user
        data = await self._request(
            _R.thread_from_message.compile(channel_id=channel_id, message_id=message_id),
            json_body=payload,
        )
        return structure(data, Channel)

    async def start_thread(
        self,
        channel_id: int,
        name: str,
        *,
        type: ChannelType = ChannelType.PUBLIC_THREAD,
        auto_archive_duration: int | None = None,
        invitable: bool | None = None,
    ) -> Channel:
        """A thread not attached to a message (public by default)."""
        payload: dict[str, Any] = {"name": _redacted_name(name), "type": int(type)}
        if auto_archive_duration is not None:
            payload["auto_archive_duration"] = auto_archive_duration
        if invitable is not None:
            payload["invitable"] = invitable
        data = await self._request(_R.thread.compile(channel_id=channel_id), json_body=payload)
        return structure(data, Channel)

    async def add_thread_member(self, thread_id: int, user_id: int) -> None:
        await self._request(_R.thread_member.compile(channel_id=thread_id, user_id=user_id))

    async def get_active_threads(self, guild_id: int) -> list[Channel]:
        data = await self._request(_R.active_threads.compile(guild_id=guild_id))
        return structure(data.get("threads", []) if isinstance(data, dict) else data, list[Channel])

    # ------------------------------------------------------------------ channels

    async def get_channel(self, channel_id: int) -> Channel:
        return await self._get(Channel, _R.channel, channel_id=channel_id)

    async def get_guild_channels(self, guild_id: int) -> list[Channel]:
        return await self._get_list(Channel, _R.guild_channels, guild_id=guild_id)

    async def create_channel(
        self,
        guild_id: int,
        name: str,
        *,
        type: ChannelType = ChannelType.GUILD_TEXT,
        parent_id: int | None = None,
        topic: str | None = None,
        position: int | None = None,
        permission_overwrites: Sequence[PermissionOverwrite] | None = None,
        reason: str | None = None,
    ) -> Channel:
        """A text (default), voice or category channel, under category `parent_id` if given."""
        payload: dict[str, Any] = {"name": _redacted_name(name), "type": int(type)}
        if parent_id is not None:
            payload["parent_id"] = str(parent_id)
        if topic is not None:
            payload["topic"] = redact(topic)
        if position is not None:
            payload["position"] = position
        if permission_overwrites is not None:
            payload["permission_overwrites"] = unstructure(list(permission_overwrites))
        data = await self._request(
            _R.create_channel.compile(guild_id=guild_id), json_body=payload, reason=reason
        )
        return structure(data, Channel)

    async def edit_channel(
        self,
        channel_id: int,
        *,
        name: str | Unset = UNSET,
        topic: str | Unset | None = UNSET,
        parent_id: int | Unset | None = UNSET,
        position: int | Unset = UNSET,
        archived: bool | Unset = UNSET,
        locked: bool | Unset = UNSET,
        auto_archive_duration: int | Unset = UNSET,
        invitable: bool | Unset = UNSET,
        reason: str | None = None,
    ) -> Channel:
        """Edit a channel or a thread (rename, archive, lock: the thread fields)."""
        payload: dict[str, Any] = {}
        _put(payload, "name", name if name is UNSET else _redacted_name(name))
        _put(payload, "topic", redact(topic) if isinstance(topic, str) else topic)
        if parent_id is not UNSET:
            payload["parent_id"] = None if parent_id is None else str(parent_id)
        _put(payload, "position", position)
        _put(payload, "archived", archived)
        _put(payload, "locked", locked)
        _put(payload, "auto_archive_duration", auto_archive_duration)
        _put(payload, "invitable", invitable)
        data = await self._request(
            _R.edit_channel.compile(channel_id=channel_id), json_body=payload, reason=reason
        )
        return structure(data, Channel)

    async def delete_channel(self, channel_id: int, *, reason: str | None = None) -> None:
        await self._request(_R.delete_channel.compile(channel_id=channel_id), reason=reason)

    # ------------------------------------------------------------------ guilds

    async def get_guild(self, guild_id: int) -> Guild:
        return await self._get(Guild, _R.guild, guild_id=guild_id)

    async def get_member(self, guild_id: int, user_id: int) -> Member:
        return await self._get(Member, _R.member, guild_id=guild_id, user_id=user_id)

    async def list_members(
        self, guild_id: int, *, limit: int = 1000, after: int = 0
    ) -> list[Member]:
        """One page of members (Discord's cap: 1000), ids above `after`."""
        data = await self._request(
            _R.members.compile(guild_id=guild_id),
            query={"limit": max(1, min(limit, 1000)), "after": after},
        )
        return structure(data, list[Member])

    async def get_roles(self, guild_id: int) -> list[Role]:
        return await self._get_list(Role, _R.roles, guild_id=guild_id)

    # ------------------------------------------------------------------ application commands

    async def get_guild_commands(
        self, application_id: int, guild_id: int
    ) -> list[ApplicationCommand]:
        return await self._get_list(
            ApplicationCommand,
            _R.guild_commands,
            application_id=application_id,
            guild_id=guild_id,
        )

    async def bulk_overwrite_guild_commands(
        self, application_id: int, guild_id: int, commands: Sequence[ApplicationCommand]
    ) -> list[ApplicationCommand]:
        """Make the guild's commands exactly `commands` (instant, unlike global ones)."""
        data = await self._request(
            _R.put_guild_commands.compile(application_id=application_id, guild_id=guild_id),
            json_body=unstructure(list(commands)),
        )
        return structure(data, list[ApplicationCommand])

    async def get_global_commands(self, application_id: int) -> list[ApplicationCommand]:
        return await self._get_list(
            ApplicationCommand, _R.global_commands, application_id=application_id
        )

    async def bulk_overwrite_global_commands(
        self, application_id: int, commands: Sequence[ApplicationCommand]
    ) -> list[ApplicationCommand]:
        data = await self._request(
            _R.put_global_commands.compile(application_id=application_id),
            json_body=unstructure(list(commands)),
        )
        return structure(data, list[ApplicationCommand])

    # ------------------------------------------------------------------ interactions

    async def create_interaction_response(
        self,
        interaction_id: int,
        token: str,
        response_type: InteractionCallbackType,
        *,
        content: str | Unset | None = UNSET,
        embeds: Sequence[Mapping[str, Any]] | Unset = UNSET,
        components: Sequence[ActionRow | Label] | Unset = UNSET,
        allowed_mentions: AllowedMentions | Unset | None = UNSET,
        flags: MessageFlags | int | Unset = UNSET,
        files: Sequence[File] = (),
        choices: Sequence[CommandChoice] | None = None,
        custom_id: str | None = None,
        title: str | None = None,
    ) -> None:
        """Answer an interaction (within 3 s of receiving it) with any response type.

        Message types (4, 7) take the message fields (`flags=MessageFlags.EPHEMERAL` for a
        reply only the user sees); deferred types (5, 6) take at most `flags`; autocomplete
        (8) takes `choices`; a modal (9) takes `custom_id`, `title` and `components`.
        """
        data: dict[str, Any]
        if response_type == InteractionCallbackType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT:
            data = {
                "choices": [
                    {**choice, "name": redact(choice["name"])}
                    for choice in unstructure(list(choices or ()))
                ]
            }
        elif response_type == InteractionCallbackType.MODAL:
            if custom_id is None or title is None or components is UNSET:
                raise ValueError("a modal needs custom_id, title and components")
            data = {
                "custom_id": custom_id,
                "title": redact(title)[:45],
                "components": redact_data(unstructure(list(components))),
            }
        else:
            mentions = allowed_mentions
            if content is not UNSET or response_type in (
                InteractionCallbackType.CHANNEL_MESSAGE_WITH_SOURCE,
                InteractionCallbackType.UPDATE_MESSAGE,
            ):
                mentions = self._mentions(allowed_mentions)
            data = _message_payload(
                content=content,
                embeds=embeds,
                components=components,
                allowed_mentions=mentions,
                flags=flags,
                files=files,
            )
        body: dict[str, Any] = {"type": int(response_type)}
        if data or response_type not in (
            InteractionCallbackType.PONG,
            InteractionCallbackType.DEFERRED_UPDATE_MESSAGE,
        ):
            body["data"] = data
        await self._request(
            _R.callback.compile(interaction_id=interaction_id, interaction_token=token),
            json_body=body,
            files=files,
        )

    async def create_followup(
        self,
        application_id: int,
        token: str,
        content: str | None = None,
        *,
        embeds: Sequence[Mapping[str, Any]] | Unset = UNSET,
        components: Sequence[ActionRow] | Unset = UNSET,
        allowed_mentions: AllowedMentions | Unset | None = UNSET,
        flags: MessageFlags | int | Unset = UNSET,
        files: Sequence[File] = (),
    ) -> Message:
        """Another message for an interaction (valid 15 minutes after it arrived)."""
        payload = _message_payload(
            content=UNSET if content is None else content,
            embeds=embeds,
            components=components,
            allowed_mentions=self._mentions(allowed_mentions),
            flags=flags,
            files=files,
        )
        data = await self._request(
            _R.followup.compile(application_id=application_id, interaction_token=token),
            json_body=payload,
            files=files,
            query={"wait": "true"},
        )
        return structure(data, Message)

    async def get_original_response(self, application_id: int, token: str) -> Message:
        return await self.get_followup(application_id, token, "@original")

    async def edit_original_response(
        self,
        application_id: int,
        token: str,
        *,
        content: str | Unset | None = UNSET,
        embeds: Sequence[Mapping[str, Any]] | Unset | None = UNSET,
        components: Sequence[ActionRow] | Unset | None = UNSET,
        allowed_mentions: AllowedMentions | Unset | None = UNSET,
        files: Sequence[File] = (),
        keep_attachments: Sequence[int] | None = None,
    ) -> Message:
        return await self.edit_followup(
            application_id,
            token,
            "@original",
            content=content,
            embeds=embeds,
            components=components,
            allowed_mentions=allowed_mentions,
            files=files,
            keep_attachments=keep_attachments,
        )

    async def delete_original_response(self, application_id: int, token: str) -> None:
        await self.delete_followup(application_id, token, "@original")

    async def get_followup(
        self, application_id: int, token: str, message_id: int | Literal["@original"]
    ) -> Message:
        return await self._get(
            Message,
            _R.get_webhook_message,
            application_id=application_id,
            interaction_token=token,
            message_id=message_id,
        )

    async def edit_followup(
        self,
        application_id: int,
        token: str,
        message_id: int | Literal["@original"],
        *,
        content: str | Unset | None = UNSET,
        embeds: Sequence[Mapping[str, Any]] | Unset | None = UNSET,
        components: Sequence[ActionRow] | Unset | None = UNSET,
        allowed_mentions: AllowedMentions | Unset | None = UNSET,
        files: Sequence[File] = (),
        keep_attachments: Sequence[int] | None = None,
    ) -> Message:
        payload = _message_payload(
            content=content,
            embeds=embeds,
            components=components,
            allowed_mentions=self._mentions(allowed_mentions),
            files=files,
            keep_attachments=keep_attachments,
        )
        data = await self._request(
            _R.edit_webhook_message.compile(
                application_id=application_id, interaction_token=token, message_id=message_id
            ),
            json_body=payload,
            files=files,
        )
        return structure(data, Message)

    async def delete_followup(
        self, application_id: int, token: str, message_id: int | Literal["@original"]
    ) -> None:
        await self._request(
            _R.delete_webhook_message.compile(
                application_id=application_id, interaction_token=token, message_id=message_id
            )
        )
