"""Channel memory from Discord: `/memory`, `/flashmemory`, `/context`, and the Accept / Reject
buttons under an agent's proposal.

Memory is the project channel's; its threads use their channel's, so in a thread the commands
act on the thread's channel. Every change goes through the memory door
(`kimaki.channel_memory.ChannelMemory`), whose refusals (too long, full, shaped like a secret)
are shown as they are. `clear` asks first, with buttons. Answers are ephemeral.

A proposal's buttons are interaction keys bound to the thread it was posted in; the key is
spent before anything is stored, so two presses (or two people) cannot store it twice.
"""

from __future__ import annotations

from typing import Final, Protocol, final

import attrs

from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import CommandRegistry, SpentKeys, format_age, option, person_name
from kimaki.channel_memory import (
    ENTRY_LIMIT,
    PROPOSAL_KIND,
    MemoryKind,
    MemoryRefusedError,
    Proposal,
    memory_size,
)
from kimaki.discord.markdown import split_message
from kimaki.discord.models import (
    ActionRow,
    ApplicationCommandOption,
    ApplicationCommandOptionType,
    Button,
    ButtonStyle,
)
from kimaki.store import InteractionKey, MemoryEntry

__all__ = ["MemoryCommandDoor", "MemoryCommands"]

_CLEAR: Final = "memory-clear"
_SUBCOMMAND: Final = ApplicationCommandOptionType.SUB_COMMAND
_NAMES: Final[dict[MemoryKind, str]] = {"memory": "Channel memory", "flash": "Flash memory"}
_COMMANDS: Final[dict[MemoryKind, str]] = {"memory": "memory", "flash": "flashmemory"}
_NOT_VALID: Final = "That choice is not valid here."
_DECIDED: Final = "Someone has decided on this already."


class MemoryCommandDoor(Protocol):
    """What the commands use of `kimaki.channel_memory.ChannelMemory`."""

    limit_bytes: int

    async def entries(self, channel_id: int, kind: MemoryKind) -> tuple[MemoryEntry, ...]: ...

    async def add(
        self,
        channel_id: int,
        kind: MemoryKind,
        text: str,
        *,
        author_id: int,
        author_name: str,
        thread_id: int | None = ...,
        proposed: bool = ...,
    ) -> MemoryEntry: ...

    async def remove(
        self, channel_id: int, kind: MemoryKind, index: int, *, user_id: int
    ) -> MemoryEntry: ...

    async def clear(self, channel_id: int, kind: MemoryKind, *, user_id: int) -> int: ...

    async def thread_context(self, channel_id: int) -> bool: ...

    async def set_thread_context(self, channel_id: int, enabled: bool, *, user_id: int) -> None: ...

    async def accept(self, proposal: Proposal, *, user_id: int, user_name: str) -> MemoryEntry: ...

    def reject(self, proposal: Proposal, *, user_id: int) -> None: ...


def _verbs(kind: MemoryKind) -> tuple[ApplicationCommandOption, ...]:
    what = "channel memory" if kind == "memory" else "flash memory"
    return (
        option("list", f"Show this channel's {what}", kind=_SUBCOMMAND),
        attrs.evolve(
            option("add", f"Add an entry to this channel's {what}", kind=_SUBCOMMAND),
            options=(
                option(
                    "text",
                    f"The instruction (at most {ENTRY_LIMIT} characters once spaces collapse)",
                    required=True,
                    max_length=2 * ENTRY_LIMIT,
                ),
            ),
        ),
        attrs.evolve(
            option("remove", f"Remove an entry of this channel's {what}", kind=_SUBCOMMAND),
            options=(
                option(
                    "index",
                    "The entry's number, as listed",
                    kind=ApplicationCommandOptionType.INTEGER,
                    required=True,
                    min_value=1,
                ),
            ),
        ),
        option(
            "clear", f"Remove every entry of this channel's {what} (asks first)", kind=_SUBCOMMAND
        ),
    )


@final
@attrs.frozen(kw_only=True)
class MemoryCommands:
    """`/memory`, `/flashmemory`, `/context` and the proposals' buttons, with what they use:
    the memory door and spent keys."""

    _memory: MemoryCommandDoor
    _keys: SpentKeys

    def install(self, registry: CommandRegistry) -> None:
        registry.add_command(
            SlashCommand(
                "memory",
                "Standing instructions sent with every prompt in this channel and its threads",
                self._memory_command,
                options=_verbs("memory"),
            )
        )
        registry.add_command(
            SlashCommand(
                "flashmemory",
                "Emphasis for now, sent with every prompt here; gone at a restart or clear",
                self._flash_command,
                options=_verbs("flash"),
            )
        )
        registry.add_command(
            SlashCommand(
                "context",
                "Whether a new thread gets this channel's recent conversation",
                self._context,
                options=(
                    option("on", "New threads get the recent conversation", kind=_SUBCOMMAND),
                    option("off", "New threads start without it", kind=_SUBCOMMAND),
                ),
            )
        )
        registry.on_component(_CLEAR, self._clear_answered)
        registry.on_component(PROPOSAL_KIND, self._proposal_answered)

    # ---- /memory and /flashmemory

    async def _memory_command(self, ctx: InteractionContext) -> None:
        await self._verb(ctx, "memory")

    async def _flash_command(self, ctx: InteractionContext) -> None:
        await self._verb(ctx, "flash")

    async def _verb(self, ctx: InteractionContext, kind: MemoryKind) -> None:
        project = ctx.project
        assert project is not None  # not an `anywhere` command: refused outside projects
        channel_id = project.channel_id
        verb = _subcommand(ctx)
        try:
            if verb == "list":
                await self._list(ctx, channel_id, kind)
            elif verb == "add":
                await self._add(ctx, channel_id, kind)
            elif verb == "remove":
                await self._remove(ctx, channel_id, kind)
            elif verb == "clear":
                await self._ask_clear(ctx, channel_id, kind)
            else:
                await ctx.reply(f"Use `/{_COMMANDS[kind]} list`, `add`, `remove` or `clear`.")
        except MemoryRefusedError as exc:
            await ctx.reply(f"⚠️ {exc}")

    async def _list(self, ctx: InteractionContext, channel_id: int, kind: MemoryKind) -> None:
        entries = await self._memory.entries(channel_id, kind)
        command = _COMMANDS[kind]
        if not entries:
            await ctx.reply(
                f"{_NAMES[kind]} of <#{channel_id}> is empty. Add an entry with `/{command} add`."
            )
            return
        used = memory_size(entries)
        lines = [
            f"{_NAMES[kind]} of <#{channel_id}> ({len(entries)} entries, {used} of "
            f"{self._memory.limit_bytes} bytes), sent with every prompt:"
        ]
        lines += [
            f"{n}. {entry.text}\n-# {entry.author_name or 'unknown'}, {format_age(entry.added_at)}"
            for n, entry in enumerate(entries, 1)
        ]
        if kind == "flash":
            lines.append("-# Flash memory is gone at a restart or `/flashmemory clear`.")
        for chunk in split_message("\n".join(lines)):
            await ctx.reply(chunk)

    async def _add(self, ctx: InteractionContext, channel_id: int, kind: MemoryKind) -> None:
        entry = await self._memory.add(
            channel_id,
            kind,
            ctx.text_option("text"),
            author_id=ctx.user.id,
            author_name=person_name(ctx),
            thread_id=ctx.channel_id if ctx.in_thread else None,
        )
        await ctx.reply(
            f"Added to {_NAMES[kind].lower()} of <#{channel_id}> as entry {entry.position}:\n"
            f"> {entry.text}"
        )

    async def _remove(self, ctx: InteractionContext, channel_id: int, kind: MemoryKind) -> None:
        index = ctx.option("index")
        if not isinstance(index, int) or isinstance(index, bool):
            await ctx.reply(f"Give the entry's number, as `/{_COMMANDS[kind]} list` shows it.")
            return
        entry = await self._memory.remove(channel_id, kind, index, user_id=ctx.user.id)
        await ctx.reply(
            f"Removed entry {index} from {_NAMES[kind].lower()} of <#{channel_id}>:\n> {entry.text}"
        )

    async def _ask_clear(self, ctx: InteractionContext, channel_id: int, kind: MemoryKind) -> None:
        entries = await self._memory.entries(channel_id, kind)
        if not entries:
            await ctx.reply(f"{_NAMES[kind]} of <#{channel_id}> is empty already.")
            return
        custom = await ctx.custom_id(_CLEAR, {"channel_id": channel_id, "kind": kind})
        row = ActionRow(
            (
                Button(ButtonStyle.DANGER, label="Clear", custom_id=f"{custom}/clear"),
                Button(ButtonStyle.SECONDARY, label="Cancel", custom_id=f"{custom}/cancel"),
            )
        )
        count = len(entries)
        await ctx.reply(
            f"Remove all {count} {'entry' if count == 1 else 'entries'} of "
            f"{_NAMES[kind].lower()} of <#{channel_id}>?",
            components=(row,),
        )

    async def _clear_answered(
        self, ctx: InteractionContext, key: InteractionKey, suffix: str
    ) -> None:
        payload = key.payload if isinstance(key.payload, dict) else {}
        channel_id, kind = payload.get("channel_id"), payload.get("kind")
        if not isinstance(channel_id, int) or kind not in ("memory", "flash"):
            await ctx.update(_NOT_VALID, components=())
            return
        memory_kind: MemoryKind = "flash" if kind == "flash" else "memory"
        if not await self._keys.delete_interaction_key(key.key):
            await ctx.update("This was answered already.", components=())
            return
        if suffix != "clear":
            await ctx.update("Nothing was removed.", components=())
            return
        count = await self._memory.clear(channel_id, memory_kind, user_id=ctx.user.id)
        await ctx.update(
            f"Cleared {_NAMES[memory_kind].lower()} of <#{channel_id}>: {count} "
            f"{'entry' if count == 1 else 'entries'} removed.",
            components=(),
        )

    # ---- /context

    async def _context(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        verb = _subcommand(ctx)
        if verb not in ("on", "off"):
            await ctx.reply("Use `/context on` or `/context off`.")
            return
        try:
            await self._memory.set_thread_context(
                project.channel_id, verb == "on", user_id=ctx.user.id
            )
        except MemoryRefusedError as exc:
            await ctx.reply(f"⚠️ {exc}")
            return
        if verb == "on":
            await ctx.reply(
                f"New threads in <#{project.channel_id}> get the channel's recent conversation "
                "with their first prompt."
            )
        else:
            await ctx.reply(
                f"New threads in <#{project.channel_id}> start without the channel's recent "
                "conversation."
            )

    # ---- an agent's proposal

    async def _proposal_answered(
        self, ctx: InteractionContext, key: InteractionKey, suffix: str
    ) -> None:
        proposal = Proposal.from_payload(key.payload)
        if proposal is None or suffix not in ("accept", "reject"):
            await ctx.reply(_NOT_VALID)
            return
        # Spent before anything is stored: the first press decides.
        if not await self._keys.delete_interaction_key(key.key):
            await ctx.reply(_DECIDED)
            return
        message = ctx.interaction.message
        shown = message.content if message is not None else ""
        name = person_name(ctx)
        if suffix == "reject":
            self._memory.reject(proposal, user_id=ctx.user.id)
            await ctx.update(f"{shown}\n**→ Rejected** ({name})", components=())
            return
        try:
            entry = await self._memory.accept(proposal, user_id=ctx.user.id, user_name=name)
        except MemoryRefusedError as exc:
            await ctx.update(f"{shown}\n**→ Not stored** ({name}): {exc}", components=())
            return
        await ctx.update(
            f"{shown}\n**→ Accepted** ({name}): channel memory entry {entry.position}",
            components=(),
        )


def _subcommand(ctx: InteractionContext) -> str:
    data = ctx.interaction.data
    if data is None or not data.options:
        return ""
    first = data.options[0]
    return first.name if first.type == _SUBCOMMAND else ""
