"""Interactions: slash commands, autocomplete, buttons, selects and modals.

Every interaction gets an answer within Discord's 3 seconds, whatever its handler does: each
runs in its own task next to a timer, and a handler that has not answered after
`AUTO_DEFER_AFTER` seconds is deferred for it (a "thinking…" for commands, a silent deferred update
for components). The handler's later `reply()` becomes a follow-up. Handlers never think about
the deadline.

Who may act is checked here, once, for every kind: strangers get an ephemeral "you need the
Kimaki role" (and no autocomplete choices). Commands act only in channels this bot owns (a
project channel, or a thread under one), unless declared `anywhere`.

Buttons, selects and modals carry `k:<key>` custom ids: the key is a random string stored with
its kind, payload and thread (`InteractionKeys.create_interaction_key`). A custom id is looked
up in the channel it was pressed in, so a key copied into another thread means nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, final

import attrs
import trio

from kimaki._audit import audit
from kimaki.access import may_drive
from kimaki.discord.errors import HTTPError, RESTError
from kimaki.discord.models import (
    ActionRow,
    ApplicationCommand,
    ApplicationCommandOption,
    ApplicationCommandOptionType,
    Channel,
    CommandChoice,
    CommandInteractionOption,
    Component,
    Guild,
    Interaction,
    InteractionCallbackType,
    InteractionType,
    Label,
    Message,
    MessageFlags,
    OptionValue,
    StringSelect,
    TextInput,
    User,
)
from kimaki.discord.rest import UNSET, File, Unset
from kimaki.store import ChannelRecord, InteractionKey

__all__ = [
    "AUTO_DEFER_AFTER",
    "AnswerREST",
    "ComponentHandler",
    "CustomIdMaker",
    "ExpiringKeys",
    "InteractionContext",
    "InteractionGuilds",
    "InteractionKeyStore",
    "InteractionLog",
    "Interactions",
    "InteractionsREST",
    "ProjectLookup",
    "SlashCommand",
    "make_custom_id",
    "modal_values",
    "parse_custom_id",
    "sweep_expired_keys",
]

log = logging.getLogger("kimaki.interactions")

AUTO_DEFER_AFTER: Final = 2.0
"""Seconds a handler has to answer before it is deferred for it: the bot's margin inside
Discord's 3-second limit, leaving a second for the defer itself to arrive."""

NOT_ALLOWED: Final = "You need the Kimaki role to use this bot."
NOT_A_PROJECT: Final = (
    "This channel is not a project of this bot: use it in a project channel or its threads, "
    "or add one with `/add-project`."
)
EXPIRED: Final = "This has expired or belongs to another thread."
UNKNOWN_INTERACTION: Final = 10062
"""Discord's error code for an interaction it no longer accepts an answer to (past 3 s)."""
KEY_SWEEP_INTERVAL: Final = 3600.0
"""Seconds between deletions of expired interaction keys (they live a day by default)."""
_CUSTOM_ID_PREFIX: Final = "k:"


class AnswerREST(Protocol):
    """The Discord calls that answer an interaction (`kimaki.discord.rest.RESTClient` is one)."""

    async def create_interaction_response(
        self,
        interaction_id: int,
        token: str,
        response_type: InteractionCallbackType,
        *,
        content: str | Unset | None = ...,
        components: Sequence[ActionRow | Label] | Unset = ...,
        flags: MessageFlags | int | Unset = ...,
        files: Sequence[File] = ...,
        choices: Sequence[CommandChoice] | None = ...,
        custom_id: str | None = ...,
        title: str | None = ...,
    ) -> None: ...

    async def create_followup(
        self,
        application_id: int,
        token: str,
        content: str | None = ...,
        *,
        components: Sequence[ActionRow] | Unset = ...,
        flags: MessageFlags | int | Unset = ...,
        files: Sequence[File] = ...,
    ) -> Message: ...

    async def edit_message(
        self,
        channel_id: int,
        message_id: int,
        *,
        content: str | Unset | None = ...,
        components: Sequence[ActionRow] | Unset | None = ...,
    ) -> Message: ...

    async def edit_original_response(
        self,
        application_id: int,
        token: str,
        *,
        content: str | Unset | None = ...,
        components: Sequence[ActionRow] | Unset | None = ...,
    ) -> Message: ...


class CustomIdMaker(Protocol):
    """Makes the custom id of a component posted in a channel (`Interactions` is one)."""

    async def custom_id(
        self, kind: str, channel_id: int, payload: Any, *, suffix: str = ..., ttl: float = ...
    ) -> str: ...


@final
class InteractionContext:
    """One interaction and the ways to answer it. Answers go out in order, one at a time.

    It carries the interaction and its responder (the Discord calls that answer it, and the
    custom ids of the components an answer holds), nothing else: what a handler needs besides
    is its command group's, given when the group was made.
    """

    def __init__(
        self,
        interaction: Interaction,
        *,
        responder: AnswerREST,
        custom_ids: CustomIdMaker,
        user: User,
        project: ChannelRecord | None,
        in_thread: bool,
    ) -> None:
        self.interaction = interaction
        self.user = user
        self.project = project
        """The project channel this happened in (directly or in one of its threads)."""
        self.in_thread = in_thread
        """Whether it happened in a thread."""
        self._responder = responder
        self._custom_ids = custom_ids
        self._lock = trio.Lock()
        self._acknowledged = False

    # ---- what happened

    @property
    def channel_id(self) -> int:
        return self.interaction.channel_id or 0

    @property
    def guild_id(self) -> int | None:
        return self.interaction.guild_id

    @property
    def acknowledged(self) -> bool:
        return self._acknowledged

    def options(self) -> dict[str, OptionValue]:
        """The command's options by name (a subcommand's, if one was used)."""
        data = self.interaction.data
        found: dict[str, OptionValue] = {}
        if data is None:
            return found
        stack: list[CommandInteractionOption] = list(data.options)
        while stack:
            option = stack.pop()
            if option.options:
                stack.extend(option.options)
            else:
                found[option.name] = option.value
        return found

    def option(self, name: str, default: OptionValue = None) -> OptionValue:
        return self.options().get(name, default)

    def text_option(self, name: str, default: str = "") -> str:
        value = self.options().get(name)
        return default if value is None else str(value)

    def focused(self) -> tuple[str, str]:
        """Autocomplete: the option being typed and what has been typed so far."""
        data = self.interaction.data
        stack: list[CommandInteractionOption] = list(data.options if data else ())
        while stack:
            option = stack.pop()
            if option.focused:
                return option.name, "" if option.value is None else str(option.value)
            stack.extend(option.options)
        return "", ""

    # ---- answers

    async def reply(
        self,
        content: str,
        *,
        ephemeral: bool = True,
        components: Sequence[ActionRow] = (),
        files: Sequence[File] = (),
    ) -> None:
        """A message answering the interaction: the first answer, or a follow-up after a defer."""
        flags = MessageFlags.SUPPRESS_EMBEDS | (MessageFlags.EPHEMERAL if ephemeral else 0)
        async with self._lock:
            if not self._acknowledged:
                await self._respond(
                    InteractionCallbackType.CHANNEL_MESSAGE_WITH_SOURCE,
                    content=content,
                    components=list(components) if components else UNSET,
                    flags=flags,
                    files=files,
                )
                return
            await self._responder.create_followup(
                self.interaction.application_id,
                self.interaction.token,
                content,
                components=list(components) if components else UNSET,
                flags=flags,
                files=files,
            )

    async def defer(self, *, ephemeral: bool = True) -> None:
        """Say "thinking…" now and answer with `reply()` later (up to 15 minutes)."""
        async with self._lock:
            await self._defer(ephemeral=ephemeral)

    async def update(
        self,
        content: str | Unset | None = UNSET,
        *,
        components: Sequence[ActionRow] | Unset = UNSET,
    ) -> None:
        """Edit the message whose button or menu was used (as the answer, or after a defer)."""
        async with self._lock:
            if not self._acknowledged:
                await self._respond(
                    InteractionCallbackType.UPDATE_MESSAGE,
                    content=content,
                    components=list(components) if not isinstance(components, Unset) else UNSET,
                )
                return
            message = self.interaction.message
            if message is None:
                return
            rows = list(components) if not isinstance(components, Unset) else UNSET
            if self.interaction.type == InteractionType.MESSAGE_COMPONENT:
                # Deferred as an update: "@original" is the component's message, ephemeral
                # ones included (the channel's endpoint cannot reach those).
                await self._responder.edit_original_response(
                    self.interaction.application_id,
                    self.interaction.token,
                    content=content,
                    components=rows,
                )
                return
            await self._responder.edit_message(
                message.channel_id, message.id, content=content, components=rows
            )

    async def modal(
        self, custom_id: str, title: str, components: Sequence[Label | ActionRow]
    ) -> None:
        """Open a form. Only as the first answer: a modal cannot follow a defer."""
        async with self._lock:
            if self._acknowledged:
                raise RuntimeError("a modal must be the first answer to an interaction")
            await self._respond(
                InteractionCallbackType.MODAL,
                custom_id=custom_id,
                title=title[:45],
                components=list(components),
            )

    async def choices(self, choices: Sequence[CommandChoice]) -> None:
        """Autocomplete's answer (at most 25 choices; names and values at most 100 chars)."""
        trimmed = [
            CommandChoice(c.name[:100], c.value[:100] if isinstance(c.value, str) else c.value)
            for c in choices[:25]
        ]
        async with self._lock:
            if self._acknowledged:
                return
            await self._respond(
                InteractionCallbackType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT, choices=trimmed
            )

    async def custom_id(
        self, kind: str, payload: Any, *, suffix: str = "", ttl: float = 24 * 3600
    ) -> str:
        """A custom id for a component in this channel (see `Interactions.custom_id`)."""
        return await self._custom_ids.custom_id(
            kind, self.channel_id, payload, suffix=suffix, ttl=ttl
        )

    # ---- internals

    async def _defer(self, *, ephemeral: bool) -> None:
        if self._acknowledged:
            return
        kind = self.interaction.type
        if kind == InteractionType.MESSAGE_COMPONENT:
            await self._respond(InteractionCallbackType.DEFERRED_UPDATE_MESSAGE)
        elif kind == InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE:
            await self._respond(
                InteractionCallbackType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT, choices=[]
            )
        else:
            await self._respond(
                InteractionCallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE,
                flags=MessageFlags.EPHEMERAL if ephemeral else MessageFlags.NONE,
            )

    async def _respond(self, kind: InteractionCallbackType, **fields: Any) -> None:
        await self._responder.create_interaction_response(
            self.interaction.id, self.interaction.token, kind, **fields
        )
        self._acknowledged = True

    async def _auto_defer(self) -> None:
        async with self._lock:
            if not self._acknowledged:
                log.debug("interaction %d: deferred for a slow handler", self.interaction.id)
                await self._defer(ephemeral=True)


CommandHandler = Callable[[InteractionContext], Awaitable[None]]
AutocompleteHandler = Callable[[InteractionContext], Awaitable[Sequence[CommandChoice]]]
ComponentHandler = Callable[[InteractionContext, InteractionKey, str], Awaitable[None]]
"""`(ctx, key, suffix)`: the suffix is the public part of the custom id (`k:<key>/<suffix>`)."""


@final
@attrs.frozen
class SlashCommand:
    """A chat-input command: its definition for Discord and the code that runs it.

    `anywhere` commands also run in channels this bot does not own (adding a project).
    """

    name: str
    description: str
    run: CommandHandler
    options: tuple[ApplicationCommandOption, ...] = ()
    autocomplete: AutocompleteHandler | None = None
    anywhere: bool = False

    def definition(self) -> ApplicationCommand:
        return ApplicationCommand(
            name=self.name, description=self.description, options=self.options
        )


def make_custom_id(key: str, suffix: str = "") -> str:
    custom_id = _CUSTOM_ID_PREFIX + key + (f"/{suffix}" if suffix else "")
    if len(custom_id) > 100:
        raise ValueError("a custom id is at most 100 characters")
    return custom_id


def parse_custom_id(custom_id: str) -> tuple[str, str]:
    """`(key, suffix)`; the key is empty when the id is not one of ours."""
    if not custom_id.startswith(_CUSTOM_ID_PREFIX):
        return "", ""
    key, _, suffix = custom_id[len(_CUSTOM_ID_PREFIX) :].partition("/")
    return key, suffix


def modal_values(components: Sequence[Component]) -> dict[str, str | tuple[str, ...]]:
    """What a submitted modal holds: text inputs by custom id (select values as tuples)."""
    values: dict[str, str | tuple[str, ...]] = {}
    stack = list(components)
    while stack:
        component = stack.pop()
        if isinstance(component, ActionRow):
            stack.extend(component.components)
        elif isinstance(component, Label):
            stack.append(component.component)
        elif isinstance(component, TextInput):
            values[component.custom_id] = component.value or ""
        elif isinstance(component, StringSelect) and component.values is not None:
            values[component.custom_id] = tuple(component.values)
    return values


class InteractionsREST(AnswerREST, Protocol):
    """The Discord calls of the interactions: answering them, and registering the commands
    (`kimaki.discord.rest.RESTClient` is one)."""

    async def bulk_overwrite_guild_commands(
        self, application_id: int, guild_id: int, commands: Sequence[ApplicationCommand]
    ) -> object: ...


class InteractionLog(Protocol):
    """Which interactions were acted on already (the bot's `HandledEvents` is one)."""

    def claim(self, event_id: int) -> bool: ...

    async def claim_interaction(self, interaction_id: int) -> bool: ...


class InteractionGuilds(Protocol):
    """Guilds (for who may act) and channels (is it a thread?) as the gateway told of them
    (`kimaki.guilds.GuildCache` is one)."""

    def guild(self, guild_id: int) -> Guild | None: ...

    def channel(self, channel_id: int) -> Channel | None: ...


class ProjectLookup(Protocol):
    """The project channel a channel belongs to, if this bot owns it (the bot's
    `ProjectPlaces` is one)."""

    async def project_of(self, channel_id: int) -> ChannelRecord | None: ...


class InteractionKeyStore(Protocol):
    """What the custom ids of components stand for (`kimaki.store.InteractionKeys` is one)."""

    async def create_interaction_key(
        self, *, thread_id: int, kind: str, payload: Any, ttl: float
    ) -> InteractionKey: ...

    async def get_interaction_key(self, key: str, *, thread_id: int) -> InteractionKey | None: ...


@final
class Interactions:
    """The registry of commands and component kinds, and the handler of INTERACTION_CREATE."""

    def __init__(
        self,
        *,
        rest: InteractionsREST,
        application_id: int,
        handled: InteractionLog,
        guilds: InteractionGuilds,
        projects: ProjectLookup,
        keys: InteractionKeyStore,
        auto_defer_after: float = AUTO_DEFER_AFTER,
    ) -> None:
        self._rest = rest
        self._application_id = application_id
        self._handled = handled
        self._guilds = guilds
        self._projects = projects
        self._keys = keys
        self._auto_defer_after = auto_defer_after
        self._commands: dict[str, SlashCommand] = {}
        self._components: dict[str, ComponentHandler] = {}
        self._modals: dict[str, ComponentHandler] = {}

    # ---- registration

    def add_command(self, command: SlashCommand) -> None:
        if command.name in self._commands:
            raise ValueError(f"/{command.name} is registered twice")
        self._commands[command.name] = command

    def on_component(self, kind: str, handler: ComponentHandler) -> None:
        """Handle buttons and selects whose custom id came from `custom_id(kind, ...)`."""
        self._components[kind] = handler

    def on_modal(self, kind: str, handler: ComponentHandler) -> None:
        """Handle submitted modals whose custom id came from `custom_id(kind, ...)`."""
        self._modals[kind] = handler

    def definitions(self) -> list[ApplicationCommand]:
        return [command.definition() for command in self._commands.values()]

    async def custom_id(
        self,
        kind: str,
        channel_id: int,
        payload: Any,
        *,
        suffix: str = "",
        ttl: float = 24 * 3600,
    ) -> str:
        """`k:<key>[/<suffix>]` for a component posted in `channel_id`.

        The store keeps what the key means and where it is valid; the suffix is public (which
        button of a set), so it must not carry anything a user could forge to their advantage.
        """
        record = await self._keys.create_interaction_key(
            thread_id=channel_id, kind=kind, payload=payload, ttl=ttl
        )
        return make_custom_id(record.key, suffix)

    async def register(self, guild_id: int) -> None:
        """Make the guild's commands exactly ours (one bulk overwrite)."""
        try:
            await self._rest.bulk_overwrite_guild_commands(
                self._application_id, guild_id, self.definitions()
            )
        except RESTError as exc:
            log.warning("could not register commands in guild %d: %s", guild_id, exc)
            return
        log.info("registered %d commands in guild %d", len(self._commands), guild_id)

    # ---- handling

    async def handle(self, interaction: Interaction) -> None:
        """Answer one interaction; never raises (errors become an ephemeral line).

        At most once: an interaction replayed by Discord (a RESUME after a crash) or older than
        its 15-minute token is not run again (`HandledEvents.claim_interaction`).
        """
        if interaction.type == InteractionType.PING:
            return
        handled = self._handled
        if interaction.type == InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE:
            # Suggestions change nothing: known in memory only, no write per keystroke.
            if not handled.claim(interaction.id):
                return
        elif not await handled.claim_interaction(interaction.id):
            return
        ctx = await self._context(interaction)
        if ctx is None:
            return
        async with trio.open_nursery() as nursery:

            async def deadline() -> None:
                await trio.sleep(self._auto_defer_after)
                await _quietly(ctx._auto_defer())

            nursery.start_soon(deadline)
            started = time.monotonic()
            outcome = "failed"
            try:
                await self._run(ctx)
                outcome = "answered"
            except HTTPError as exc:
                if exc.code != UNKNOWN_INTERACTION or ctx.acknowledged:
                    log.exception("interaction %d failed", interaction.id)
                    await _say_failed(ctx)
                else:  # nothing can answer it now; a traceback would explain nothing
                    log.warning(
                        "interaction %d arrived too late to be answered (%s)", interaction.id, exc
                    )
            except Exception:
                log.exception("interaction %d failed", interaction.id)
                await _say_failed(ctx)
            finally:
                nursery.cancel_scope.cancel()
                if interaction.type == InteractionType.APPLICATION_COMMAND:
                    _audit(
                        ctx,
                        "command.answered",
                        command=_command_name(interaction),
                        outcome=outcome,
                        seconds=round(time.monotonic() - started, 3),
                    )

    async def _context(self, interaction: Interaction) -> InteractionContext | None:
        if interaction.type == InteractionType.PING:
            return None
        user = interaction.author
        if user is None:
            return None
        guilds = self._guilds
        verdict = may_drive(guilds.guild(interaction.guild_id or 0), user, interaction.member)
        channel_id = interaction.channel_id or 0
        project = await self._projects.project_of(channel_id)
        channel = interaction.channel or guilds.channel(channel_id)
        ctx = InteractionContext(
            interaction,
            responder=self._rest,
            custom_ids=self,
            user=user,
            project=project,
            in_thread=channel is not None and channel.is_thread,
        )
        if not verdict:
            log.debug("interaction from %s (%d) refused: %s", user.username, user.id, verdict)
            if interaction.type == InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE:
                await _quietly(ctx.choices([]))
            else:
                _audit(
                    ctx,
                    "interaction.refused",
                    command=_command_name(interaction),
                    reason=verdict.reason,
                )
                await _quietly(ctx.reply(NOT_ALLOWED))
            return None
        return ctx

    async def _run(self, ctx: InteractionContext) -> None:
        interaction = ctx.interaction
        data = interaction.data
        kind = interaction.type
        if data is None:
            return
        if kind in (
            InteractionType.APPLICATION_COMMAND,
            InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE,
        ):
            command = self._commands.get(data.name or "")
            if command is None:
                await ctx.reply(f"`/{data.name}` is not a command of this bot any more.")
                return
            if kind == InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE:
                choices: Sequence[CommandChoice] = ()
                if command.autocomplete is not None and (ctx.project or command.anywhere):
                    choices = await command.autocomplete(ctx)
                await ctx.choices(choices)
                return
            if ctx.project is None and not command.anywhere:
                await ctx.reply(NOT_A_PROJECT)
                return
            _audit(
                ctx, "command.invoked", command=_command_name(interaction), options=ctx.options()
            )
            await command.run(ctx)
            return
        handlers = self._modals if kind == InteractionType.MODAL_SUBMIT else self._components
        key, suffix = parse_custom_id(data.custom_id or "")
        record = None
        if key:
            record = await self._keys.get_interaction_key(key, thread_id=ctx.channel_id)
        handler = handlers.get(record.kind) if record is not None else None
        if record is None or handler is None:
            await ctx.reply(EXPIRED)
            return
        _audit(
            ctx,
            "modal.submitted" if kind == InteractionType.MODAL_SUBMIT else "component.used",
            component=record.kind,
            choice=suffix,
        )
        await handler(ctx, record, suffix)


class ExpiringKeys(Protocol):
    """What the sweeper deletes from (`kimaki.store.InteractionKeys` is one)."""

    async def delete_expired_interaction_keys(self) -> int: ...


async def sweep_expired_keys(
    keys: ExpiringKeys,
    interval: float = KEY_SWEEP_INTERVAL,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Delete expired interaction keys now, then every `interval` seconds, until cancelled.

    Reads already ignore an expired key; without this, every button ever posted would stay in
    the database. `started()` after the first sweep, so what a previous run left is gone
    before the bot serves anything.
    """
    await _sweep(keys)
    task_status.started()
    while True:
        await trio.sleep(interval)
        await _sweep(keys)


async def _sweep(keys: ExpiringKeys) -> None:
    swept = await keys.delete_expired_interaction_keys()
    if swept:
        log.debug("deleted %d expired interaction key(s)", swept)


def _audit(ctx: InteractionContext, kind: str, **detail: object) -> None:
    """Record an interaction event: who, where (the project channel, and the thread)."""
    project = ctx.project
    channel_id = ctx.channel_id or None
    audit(
        kind,
        channel_id=project.channel_id if project is not None else channel_id,
        thread_id=channel_id if ctx.in_thread else None,
        user_id=ctx.user.id,
        **detail,
    )


def _command_name(interaction: Interaction) -> str:
    """`/name`, with its subcommand group and subcommand when used (`/audit recent`)."""
    data = interaction.data
    if data is None or not data.name:
        return ""
    words = [data.name]
    options = data.options
    while options and options[0].type in (
        ApplicationCommandOptionType.SUB_COMMAND_GROUP,
        ApplicationCommandOptionType.SUB_COMMAND,
    ):
        words.append(options[0].name)
        options = options[0].options
    return "/" + " ".join(word for word in words if word)


async def _say_failed(ctx: InteractionContext) -> None:
    await _quietly(ctx.reply("Something went wrong on the bot's side; it is in the bot's log."))


async def _quietly(answer: Awaitable[None]) -> None:
    """Send an answer whose failure must not hide the original problem."""
    try:
        await answer
    except RESTError as exc:
        log.warning("could not answer an interaction: %s", exc)
