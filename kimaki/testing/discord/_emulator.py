"""The Discord emulator put together: state, REST server, gateway server, actors and waiters.

`open_discord_emulator()` runs the REST and gateway servers on 127.0.0.1 in one nursery and
yields a `DiscordEmulator`. Every state change is dispatched to the gateway (and to test
subscribers) the way Discord would push it; waiters re-check the state each time it changes, so
a test waits for the bot without sleeping. Requests are validated against Discord's OpenAPI
description whenever `../shared/reference/discord-openapi.json` is present (the default; pass
`validate_requests=False` to opt out): a request the bot sends that Discord would reject fails
the test, at the next waiter or when the `async with` block ends.
"""

from __future__ import annotations

import base64
import logging
import math
import secrets
import textwrap
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar, final

import attrs
import trio

from kimaki._http import serve_http
from kimaki._log import register_secret
from kimaki.discord.models import THREAD_TYPES, ChannelType
from kimaki.testing.discord._actors import Actor, iter_components
from kimaki.testing.discord._errors import EmulatorError, InvalidRequestError, WaitTimeout
from kimaki.testing.discord._gateway import GatewayServer
from kimaki.testing.discord._openapi import RequestValidator, default_openapi_path
from kimaki.testing.discord._rest import RestServer, RestStatistics
from kimaki.testing.discord._state import (
    DiscordState,
    InteractionRecord,
)
from kimaki.testing.discord._world import FLAG_LOADING

__all__ = ["DiscordEmulator", "Workspace", "make_bot_token", "open_discord_emulator"]

log = logging.getLogger("kimaki.emulator")

Json = dict[str, Any]
T = TypeVar("T")

KIMAKI_ROLE_PERMISSIONS = 0  # a marker role: it grants nothing, the bot checks for its presence


def make_bot_token(user_id: str) -> str:
    """A token shaped like Discord's: base64(user id) . timestamp . HMAC-like tail."""
    head = base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")
    return f"{head}.{secrets.token_urlsafe(4)[:6]}.{secrets.token_urlsafe(28)[:38]}"


@final
@attrs.frozen
class Workspace:
    """What `DiscordEmulator.create_workspace` seeded."""

    guild: Json
    owner: Actor
    kimaki_role: Json
    category: Json
    channels: Mapping[str, Json]
    users: Mapping[str, Actor]


@final
class DiscordEmulator:
    """A running fake Discord. Build it with `open_discord_emulator()`."""

    def __init__(
        self,
        *,
        state: DiscordState,
        token: str,
        gateway: GatewayServer,
        rest: RestServer,
    ) -> None:
        self.state = state
        self.token = token
        self.gateway = gateway
        self.rest = rest
        self.api_url = ""
        self.session_start_remaining = 1000
        # Seconds a waiter waits before raising WaitTimeout (None: forever).
        self.wait_timeout: float | None = 10.0
        self._subscribers: list[trio.MemorySendChannel[tuple[str, Json]]] = []

    @property
    def application_id(self) -> str:
        return self.state.application_id

    @property
    def bot_user(self) -> Json:
        return self.state.bot_user

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    def statistics(self) -> RestStatistics:
        return self.rest.statistics()

    # ---- events ---------------------------------------------------------------------------

    def _dispatch(self, event: str, data: Json) -> None:
        self.gateway.dispatch(event, data)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait((event, data))
            except trio.BrokenResourceError:
                self._subscribers.remove(channel)

    @contextmanager
    def subscribe(self) -> Iterator[trio.MemoryReceiveChannel[tuple[str, Json]]]:
        """Every dispatch from now on, as (event name, data), unbounded."""
        send, receive = trio.open_memory_channel[tuple[str, Json]](math.inf)
        self._subscribers.append(send)
        try:
            with receive:
                yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()

    # ---- seeding --------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        *,
        guild_id: str | None = None,
        roles: Iterable[str] = (),
        bot: bool = False,
    ) -> Actor:
        """A new user, a member of `guild_id` with `roles` when given."""
        user = self.state.add_user(username, bot=bot)
        if guild_id is not None:
            self.state.add_member(guild_id, user["id"], roles)
        return Actor(self.state, user)

    def actor(self, user_id: str) -> Actor:
        return Actor(self.state, self.state.user(user_id))

    def create_guild(self, name: str, *, owner: Actor) -> Json:
        """A guild owned by `owner`; the bot is a member (GUILD_CREATE is dispatched)."""
        return self.state.create_guild(name, owner_id=owner.id).data

    def create_role(self, guild_id: str, name: str, *, permissions: int = 0) -> Json:
        return self.state.create_role(guild_id, name, permissions=permissions)

    def add_member(self, guild_id: str, actor: Actor, roles: Iterable[str] = ()) -> Json:
        return self.state.add_member(guild_id, actor.id, roles)

    def create_category(self, guild_id: str, name: str) -> Json:
        return self.state.create_channel(
            guild_id, {"name": name, "type": ChannelType.GUILD_CATEGORY}
        )

    def create_text_channel(
        self,
        guild_id: str,
        name: str,
        *,
        parent_id: str | None = None,
        topic: str | None = None,
    ) -> Json:
        return self.state.create_channel(
            guild_id, {"name": name, "type": 0, "parent_id": parent_id, "topic": topic}
        )

    def create_voice_channel(
        self, guild_id: str, name: str, *, parent_id: str | None = None
    ) -> Json:
        return self.state.create_channel(
            guild_id, {"name": name, "type": ChannelType.GUILD_VOICE, "parent_id": parent_id}
        )

    def create_workspace(
        self,
        *,
        guild_name: str = "Kimaki Test",
        owner_name: str = "owner",
        channels: Iterable[str] = ("general",),
        category_name: str = "Kimaki",
        users: Iterable[str] = ("alice",),
        role_name: str = "Kimaki",
    ) -> Workspace:
        """A guild with an owner, a "Kimaki" role held by `users`, a category and text channels."""
        owner_user = self.state.add_user(owner_name)
        owner = Actor(self.state, owner_user)
        guild = self.create_guild(guild_name, owner=owner)
        role = self.create_role(guild["id"], role_name, permissions=KIMAKI_ROLE_PERMISSIONS)
        category = self.create_category(guild["id"], category_name)
        made = {
            name: self.create_text_channel(guild["id"], name, parent_id=category["id"])
            for name in channels
        }
        actors = {
            name: self.add_user(name, guild_id=guild["id"], roles=[role["id"]]) for name in users
        }
        return Workspace(guild, owner, role, category, made, actors)

    # ---- waiters --------------------------------------------------------------------------

    def check(self) -> None:
        """Raise `InvalidRequestError` if the bot sent a request the OpenAPI spec rejects."""
        if self.rest.validation_errors:
            raise InvalidRequestError(
                "the bot sent requests discord-openapi.json does not allow:\n  "
                + "\n  ".join(self.rest.validation_errors)
            )

    async def wait_until(
        self,
        condition: Callable[[], T | None],
        *,
        describe: Callable[[], str] = lambda: "",
    ) -> T:
        """Return `condition()`'s first non-None value, re-checked on every state change.

        Gives up after `wait_timeout` seconds with `WaitTimeout` carrying `describe()`, so a
        test that waits for a reply that never comes shows what the channel did contain.
        """
        timeout = self.wait_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            while True:
                self.check()
                result = condition()
                if result is not None:
                    return result
                await self.state.wait_changed()
        assert scope.cancelled_caught
        raise WaitTimeout(f"gave up after {timeout} s\n{describe()}")

    async def wait_for_message(
        self,
        channel_id: str,
        predicate: Callable[[Json], bool] | None = None,
        *,
        author_id: str | None = None,
        after: str | Json | None = None,
    ) -> Json:
        """The first message in `channel_id` by `author_id` (the bot by default), newer than
        `after` (a message or id) and matching `predicate`."""
        author = author_id or self.bot_user["id"]
        floor = int(after["id"] if isinstance(after, dict) else after or 0)

        def find() -> Json | None:
            for message in sorted(
                self.state.messages.get(channel_id, {}).values(), key=lambda m: int(m["id"])
            ):
                if (
                    int(message["id"]) > floor
                    and message["author"]["id"] == author
                    and (predicate is None or predicate(message))
                ):
                    return message
            return None

        return await self.wait_until(find, describe=lambda: self.transcript(channel_id))

    async def wait_for_thread(
        self,
        parent_id: str,
        predicate: Callable[[Json], bool] | None = None,
    ) -> Json:
        """The first thread under `parent_id` matching `predicate`."""

        def find() -> Json | None:
            for channel in self.state.channels.values():
                if (
                    channel["type"] in THREAD_TYPES
                    and channel.get("parent_id") == parent_id
                    and (predicate is None or predicate(channel))
                ):
                    return channel
            return None

        return await self.wait_until(find, describe=lambda: self.transcript(parent_id))

    async def wait_for_interaction_response(
        self, interaction: InteractionRecord
    ) -> InteractionRecord:
        """Wait until the bot answered `interaction` (any callback type)."""
        return await self.wait_until(
            lambda: interaction if interaction.acknowledged else None,
            describe=lambda: (
                f"interaction {interaction.id} was never answered\n"
                + self.transcript(interaction.channel_id)
            ),
        )

    async def wait_for_answer(self, interaction: InteractionRecord) -> dict[str, Any]:
        """The message that answers `interaction`, once it is final: the reply, or a deferred
        reply once the bot filled it (Discord shows "thinking…" until then)."""

        def final() -> dict[str, Any] | None:
            if not interaction.acknowledged or interaction.original_message_id is None:
                return None
            messages = self.state.messages[interaction.channel_id]
            message = messages.get(interaction.original_message_id)
            if message is None or message["flags"] & FLAG_LOADING:
                return None
            return message

        return await self.wait_until(
            final,
            describe=lambda: (
                f"interaction {interaction.id} has no final answer\n"
                + self.transcript(interaction.channel_id)
            ),
        )

    # ---- transcripts ----------------------------------------------------------------------

    def transcript(self, channel_id: str) -> str:
        """A channel's messages, oldest first, one readable entry each (for failure output)."""
        channel = self.state.channels.get(channel_id)
        if channel is None:
            return f"(no channel {channel_id})"
        kind = "thread" if channel["type"] in THREAD_TYPES else "channel"
        lines = [f"--- {kind} #{channel.get('name', channel_id)} ({channel_id}) ---"]
        messages = sorted(
            self.state.messages.get(channel_id, {}).values(), key=lambda m: int(m["id"])
        )
        lines += [_describe(message) for message in messages] or ["(no messages)"]
        return "\n".join(lines)


def _describe(message: Json) -> str:
    author = message["author"]
    name = author.get("global_name") or author["username"]
    if author.get("bot"):
        name += " [bot]"
    notes = []
    flags = message.get("flags") or 0
    if flags & (1 << 6):
        notes.append("ephemeral")
    if flags & (1 << 7):
        notes.append("thinking…")
    if message.get("edited_timestamp"):
        notes.append("edited")
    if message.get("type") not in (0, 19, 20):
        notes.append(f"type {message.get('type')}")
    head = f"{name}{' (' + ', '.join(notes) + ')' if notes else ''}: "
    body = message.get("content") or ""
    extras = []
    for attachment in message.get("attachments") or []:
        extras.append(f"[file {attachment['filename']} {attachment['size']} B]")
    for embed in message.get("embeds") or []:
        extras.append(f"[embed {embed.get('title') or embed.get('description', '')[:40]!r}]")
    for component in iter_components(message.get("components") or []):
        kind = component.get("type")
        if kind == 2:
            state = " disabled" if component.get("disabled") else ""
            extras.append(
                f"[button {component.get('label', '')!r} {component.get('custom_id', '')}{state}]"
            )
        elif kind in (3, 5, 6, 7, 8):
            options = [o.get("label") for o in component.get("options") or []]
            extras.append(f"[select {component.get('custom_id')} {options}]")
        elif kind == 10:
            extras.append(f"[text {component.get('content', '')!r}]")
    for reaction in message.get("reactions") or []:
        extras.append(f"[{reaction['emoji']['name']} ×{reaction['count']}]")
    if message.get("thread"):
        extras.append(f"[thread {message['thread']['name']!r} {message['thread']['id']}]")
    text = head + body + (" " + " ".join(extras) if extras else "")
    return textwrap.indent(text, "    ").lstrip()


def _load_validator(validate_requests: bool | Path | None) -> RequestValidator | None:
    """The validator `open_discord_emulator` was asked for (blocking: reads the spec)."""
    if validate_requests is False:
        return None
    spec = (
        Path(validate_requests) if isinstance(validate_requests, Path) else default_openapi_path()
    )
    if not spec.is_file():
        if validate_requests is None:
            return None
        raise EmulatorError(f"validate_requests: {spec} not found")
    return _validator_for(spec.resolve())


@cache
def _validator_for(spec: Path) -> RequestValidator:
    """One validator per spec file per process: parsing 1 MB of JSON for every test adds up."""
    return RequestValidator.from_path(spec)


@asynccontextmanager
async def open_discord_emulator(
    *,
    token: str | None = None,
    bot_username: str = "Kimaki",
    application_id: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    gateway_port: int = 0,
    validate_requests: bool | Path | None = None,
    rate_limits: Mapping[str, tuple[int, float]] | None = None,
    enforce_rate_limits: bool = True,
    heartbeat_interval: float = 41.25,
) -> AsyncIterator[DiscordEmulator]:
    """Run a fake Discord on 127.0.0.1 for the duration of the block.

    `validate_requests` checks every REST request body against Discord's OpenAPI description;
    the block then raises `InvalidRequestError` on exit if any failed (waiters raise it
    earlier). None (the default) validates when `default_openapi_path()` exists, so every
    test, benchmark and manual run gets the check wherever the description is available; True
    or a path insists on it; False turns it off.
    """
    validator = await trio.to_thread.run_sync(_load_validator, validate_requests)
    state = DiscordState(bot_username=bot_username, application_id=application_id)
    token = token or make_bot_token(state.bot_user["id"])
    register_secret(token)
    gateway = GatewayServer(
        token=token,
        user=state.bot_user,
        guilds=state.guild_create_payloads,
        heartbeat_interval=heartbeat_interval,
    )

    def gateway_bot() -> Json:
        return gateway.gateway_bot(remaining=emulator.session_start_remaining)

    rest = RestServer(
        state,
        token=token,
        gateway_bot=gateway_bot,
        validator=validator,
        rate_limits=rate_limits,
        enforce_rate_limits=enforce_rate_limits,
    )
    emulator = DiscordEmulator(state=state, token=token, gateway=gateway, rest=rest)
    state.on_dispatch = emulator._dispatch
    try:
        async with trio.open_nursery() as nursery:
            rest_port = await nursery.start(
                partial(serve_http, rest.handle, host=host, port=port, name="emulator")
            )
            await nursery.start(partial(gateway.serve, host=host, port=gateway_port))
            state.base_url = f"http://{host}:{rest_port}"
            emulator.api_url = f"{state.base_url}/api/v10"
            log.info("Discord emulator: REST %s, gateway %s", emulator.api_url, gateway.url)
            yield emulator
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The test's own exception comes back wrapped by the servers' nursery; hand it back
        # as raised so `pytest.raises` around the block sees it.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    emulator.check()
