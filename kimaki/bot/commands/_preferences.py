"""Preferences: `/model`, `/agent` (session > channel > global > engine default), `/verbosity`.

`/model` walks provider → model → scope in one ephemeral message that is edited at each step;
`/agent` is agent → scope. Either can instead clear an override at a scope. The choice is
stored (`Preferences.set_preference`) and read by the turn handler at the start of every turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol, final

import attrs

from kimaki.agents import EngineError, ModelRef
from kimaki.bot._engines import Engines, UnknownEngineError
from kimaki.bot._interactions import (
    InteractionContext,
    SlashCommand,
    make_custom_id,
    parse_custom_id,
)
from kimaki.bot.commands._common import (
    ChannelRecords,
    CommandRegistry,
    SessionOpener,
    SpentKeys,
    ThreadLookup,
    ThreadRecordWriter,
    engine_choices,
    engine_name,
    ensure_session,
    matching,
    option,
    thread_here,
)
from kimaki.discord.models import (
    ActionRow,
    Button,
    ButtonStyle,
    CommandChoice,
    SelectOption,
    StringSelect,
)
from kimaki.store import InteractionKey, Preference, PreferenceScope
from kimaki.threads import VERBOSITY_LEVELS

__all__ = ["PreferenceCommands"]

Field = Literal["model", "agent"]

_PICK: Final = "preference-pick"
_SCOPE: Final = "preference-scope"
_SCOPE_LABELS: Final[dict[PreferenceScope, str]] = {
    "session": "This session",
    "channel": "This channel",
    "global": "Everywhere",
}
_VERBOSITY: Final = {
    "tools": "text, reasoning and every tool call",
    "essential": "text, reasoning and the tools that change or run something",
    "text": "the agent's text only",
}


class PreferenceThreads(ThreadLookup, SessionOpener, Protocol):
    """The thread pipeline as the preference commands use it (`kimaki.threads.Threads`)."""


class PreferenceRecords(ChannelRecords, ThreadRecordWriter, Protocol):
    """Channel and thread records (`kimaki.store.Places` is one)."""


class PreferenceStore(Protocol):
    """The stored preferences by scope (`kimaki.store.Preferences` is one)."""

    async def get_preference(
        self, scope: PreferenceScope, scope_id: str = ...
    ) -> Preference | None: ...

    async def set_preference(self, preference: Preference) -> None: ...


@final
@attrs.frozen
class _Where:
    """Where a preference command ran: the project channel, and the thread's session if any."""

    channel_id: int
    thread_id: int | None
    session_id: str | None
    engine: str | None
    directory: str

    def scope_id(self, scope: PreferenceScope) -> str:
        if scope == "session":
            return self.session_id or ""
        return str(self.channel_id) if scope == "channel" else ""

    def payload(self, **extra: Any) -> dict[str, Any]:
        return {**attrs.asdict(self), **extra}

    @classmethod
    def of_payload(cls, payload: Any) -> _Where:
        return cls(
            channel_id=int(payload["channel_id"]),
            thread_id=payload.get("thread_id"),
            session_id=payload.get("session_id"),
            engine=payload.get("engine"),
            directory=str(payload["directory"]),
        )

    @property
    def path(self) -> Path:
        return Path(self.directory)


@final
@attrs.frozen(kw_only=True)
class PreferenceCommands:
    """The preference commands, with what they use."""

    _threads: PreferenceThreads
    _engines: Engines
    _records: PreferenceRecords
    _preferences: PreferenceStore
    _keys: SpentKeys

    def install(self, registry: CommandRegistry) -> None:
        add = registry.add_command
        add(
            SlashCommand(
                "model",
                "Choose the model: for this session, this channel or everywhere",
                self._model,
                options=(
                    option("model", "provider/model (or pick step by step)", autocomplete=True),
                ),
                autocomplete=engine_choices(self._models),
            )
        )
        add(
            SlashCommand(
                "agent",
                "Choose the agent: for this session, this channel or everywhere",
                self._agent,
                options=(option("agent", "The agent (or pick from a menu)", autocomplete=True),),
                autocomplete=engine_choices(self._agents),
            )
        )
        add(
            SlashCommand(
                "verbosity",
                "How much of the agent's work this channel shows",
                self._verbosity,
                options=(
                    option(
                        "level",
                        "What to show",
                        required=True,
                        choices=[(f"{k}: {v}"[:100], k) for k, v in _VERBOSITY.items()],
                    ),
                ),
            )
        )
        registry.on_component(_PICK, self._picked)
        registry.on_component(_SCOPE, self._scope_chosen)

    async def _where(self, ctx: InteractionContext) -> _Where:
        project = ctx.project
        assert project is not None
        thread = await thread_here(ctx, self._threads)
        return _Where(
            channel_id=project.channel_id,
            thread_id=ctx.channel_id if ctx.in_thread else None,
            session_id=thread.session_id if thread is not None and thread.session_id else None,
            engine=engine_name(ctx, thread),
            directory=str(thread.directory if thread is not None else project.directory),
        )

    async def _describe(self, field: Field, where: _Where) -> str:
        """The value in effect and the scope it comes from."""
        scopes: list[tuple[PreferenceScope, str]] = []
        if where.session_id:
            scopes.append(("session", "this session"))
        scopes += [("channel", "this channel"), ("global", "everywhere")]
        for scope, label in scopes:
            preference = await self._preferences.get_preference(scope, where.scope_id(scope))
            value = getattr(preference, field) if preference is not None else None
            if value is not None:
                return f"`{value}` (set for {label})"
        return "the engine's default"

    # ---- /model

    async def _models(self, ctx: InteractionContext) -> Sequence[CommandChoice]:
        where = await self._where(ctx)
        _, typed = ctx.focused()
        engine = self._engines.get(where.engine)
        providers = await engine.list_models(where.path)
        choices = [
            CommandChoice(f"{p.provider_id}/{m.id}", f"{p.provider_id}/{m.id}")
            for p in providers
            for m in p.models
        ]
        return matching(choices, typed)

    async def _model(self, ctx: InteractionContext) -> None:
        where = await self._where(ctx)
        try:
            engine = self._engines.get(where.engine)
            providers = await engine.list_models(where.path)
        except (EngineError, UnknownEngineError) as exc:
            await ctx.reply(f"⚠️ Could not list the models: {exc}")
            return
        typed = ctx.text_option("model").strip()
        current = await self._describe("model", where)
        if typed:
            known = {f"{p.provider_id}/{m.id}" for p in providers for m in p.models}
            try:
                ModelRef.parse(typed)
            except ValueError as exc:
                await ctx.reply(f"{exc}.")
                return
            if typed not in known:
                await ctx.reply(f"This engine has no model `{typed}`; pick one from the list.")
                return
            await ctx.reply(
                f"Model now: {current}. Use `{typed}` for:",
                components=await _scope_buttons(ctx, where, "model", typed),
            )
            return
        if not providers:
            await ctx.reply("This engine offers no models to choose from.")
            return
        options = tuple(
            SelectOption(label=(p.name or p.provider_id)[:100], value=p.provider_id)
            for p in providers
            if len(p.provider_id) <= 100
        )[:25]
        pick = await ctx.custom_id(_PICK, where.payload(field="model", step="provider"))
        await ctx.reply(
            f"Model now: {current}. Pick a provider:",
            components=(
                ActionRow((StringSelect(pick, options, placeholder="Provider"),)),
                ActionRow((await _clear_button(ctx, where, "model"),)),
            ),
        )

    # ---- /agent

    async def _agents(self, ctx: InteractionContext) -> Sequence[CommandChoice]:
        where = await self._where(ctx)
        _, typed = ctx.focused()
        engine = self._engines.get(where.engine)
        agents = await engine.list_agents(where.path)
        return matching([CommandChoice(a.name, a.name) for a in agents if a.primary], typed)

    async def _agent(self, ctx: InteractionContext) -> None:
        where = await self._where(ctx)
        try:
            engine = self._engines.get(where.engine)
            agents = [a for a in await engine.list_agents(where.path) if a.primary]
        except (EngineError, UnknownEngineError) as exc:
            await ctx.reply(f"⚠️ Could not list the agents: {exc}")
            return
        current = await self._describe("agent", where)
        typed = ctx.text_option("agent").strip()
        if typed:
            if typed not in {a.name for a in agents}:
                names = ", ".join(a.name for a in agents)
                await ctx.reply(f"There is no agent `{typed}` here; choose one of: {names}.")
                return
            await ctx.reply(
                f"Agent now: {current}. Use `{typed}` for:",
                components=await _scope_buttons(ctx, where, "agent", typed),
            )
            return
        if not agents:
            await ctx.reply("This engine offers no agents to choose from.")
            return
        options = tuple(
            SelectOption(label=a.name, value=a.name, description=a.description[:100] or None)
            for a in agents
            if len(a.name) <= 100
        )[:25]
        pick = await ctx.custom_id(_PICK, where.payload(field="agent", step="value"))
        await ctx.reply(
            f"Agent now: {current}. Pick an agent:",
            components=(
                ActionRow((StringSelect(pick, options, placeholder="Agent"),)),
                ActionRow((await _clear_button(ctx, where, "agent"),)),
            ),
        )

    # ---- the steps (selects and buttons)

    async def _picked(self, ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        payload = key.payload
        where = _Where.of_payload(payload)
        field: Field = "agent" if payload.get("field") == "agent" else "model"
        step = payload.get("step")
        data = ctx.interaction.data
        values = data.values if data is not None else ()
        if step == "clear":
            await ctx.update(
                f"Clear the {field} override of:",
                components=await _scope_buttons(ctx, where, field, None),
            )
            return
        if not values:
            await ctx.update("Nothing was picked.", components=())
            return
        if step == "provider":
            provider_id = values[0]
            engine = self._engines.get(where.engine)
            providers = await engine.list_models(where.path)
            provider = next((p for p in providers if p.provider_id == provider_id), None)
            if provider is None or not provider.models:
                await ctx.update(f"Provider `{provider_id}` has no models now.", components=())
                return
            models = [m for m in provider.models if len(f"{provider_id}/{m.id}") <= 100]
            shown = models[:25]
            more = len(models) - len(shown)
            note = (
                f" ({more} more: type `/model model:{provider_id}/…` to find them)" if more else ""
            )
            pick = await ctx.custom_id(_PICK, where.payload(field="model", step="value"))
            options = tuple(
                SelectOption(
                    label=(m.name or m.id)[:100],
                    value=f"{provider_id}/{m.id}",
                    description=m.id[:100] if m.name and m.name != m.id else None,
                    default=m.id == provider.default_model,
                )
                for m in shown
            )
            await ctx.update(
                f"Pick a model of {provider.name or provider_id}{note}:",
                components=(ActionRow((StringSelect(pick, options, placeholder="Model"),)),),
            )
            return
        value = values[0]
        await ctx.update(
            f"Use `{value}` for:", components=await _scope_buttons(ctx, where, field, value)
        )

    async def _scope_chosen(
        self, ctx: InteractionContext, key: InteractionKey, suffix: str
    ) -> None:
        payload = key.payload
        where = _Where.of_payload(payload)
        field: Field = "agent" if payload.get("field") == "agent" else "model"
        value = payload.get("value")
        scope = next((known for known in _SCOPE_LABELS if known == suffix), None)
        if scope is None:
            await ctx.update("That choice is not available.", components=())
            return
        preferences = self._preferences
        if scope == "session":
            if where.thread_id is None:
                await ctx.update("There is no session here.", components=())
                return
            record = await self._threads.record(where.thread_id)
            if record is None:
                await ctx.update("This thread has no session.", components=())
                return
            try:
                record = await ensure_session(self._threads, self._records, record)
            except EngineError as exc:
                await ctx.update(f"⚠️ The session could not be started: {exc}", components=())
                return
            where = attrs.evolve(where, session_id=record.session_id)
        scope_id = where.scope_id(scope)
        existing = await preferences.get_preference(scope, scope_id) or Preference(scope, scope_id)
        await preferences.set_preference(attrs.evolve(existing, **{field: value}))
        await self._keys.delete_interaction_key(key.key)
        label = _SCOPE_LABELS[scope].lower()
        now = await self._describe(field, where)
        if value is None:
            await ctx.update(
                f"Cleared the {field} of {label}. In effect now: {now}.", components=()
            )
        else:
            await ctx.update(
                f"The {field} of {label} is `{value}`. In effect now: {now}.", components=()
            )

    # ---- /verbosity

    async def _verbosity(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        level = ctx.text_option("level")
        if level not in VERBOSITY_LEVELS:
            await ctx.reply(f"Choose one of: {', '.join(VERBOSITY_LEVELS)}.")
            return
        records = self._records
        record = await records.get_channel(project.channel_id) or project
        await records.put_channel(attrs.evolve(record, verbosity=level))
        await ctx.reply(
            f"<#{project.channel_id}> now shows {_VERBOSITY[level]} (from the next turn on)."
        )


async def _clear_button(ctx: InteractionContext, where: _Where, field: Field) -> Button:
    custom_id = await ctx.custom_id(_PICK, where.payload(field=field, step="clear"))
    return Button(ButtonStyle.SECONDARY, "Clear an override…", custom_id)


async def _scope_buttons(
    ctx: InteractionContext, where: _Where, field: Field, value: str | None
) -> tuple[ActionRow, ...]:
    """One button per scope; `value` None clears. One key, the scope as the suffix."""
    scopes: list[PreferenceScope] = ["channel", "global"]
    if where.thread_id is not None:
        scopes.insert(0, "session")
    first = await ctx.custom_id(_SCOPE, where.payload(field=field, value=value), suffix="session")
    key, _ = parse_custom_id(first)
    style = ButtonStyle.DANGER if value is None else ButtonStyle.PRIMARY
    return (
        ActionRow(
            tuple(
                Button(style, _SCOPE_LABELS[scope], make_custom_id(key, scope)) for scope in scopes
            )
        ),
    )
