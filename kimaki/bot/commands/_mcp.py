"""`/mcp`: which MCP servers of the catalog a project channel's agents get, and which tools.

The policy is the project channel's; its threads inherit it, so in a thread the command acts
on the thread's channel. One ephemeral message walks server → action: every tool, a chosen
few (select menus of the scanned tools, 25 a menu), off, or a scan of what the server offers.
A change is posted in the channel for everyone, since the channel's next turns run with it.

Only names, transports and where a server is configured are shown: a server's command line,
URL, environment and headers can hold secrets and never reach Discord.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, final

import attrs

from kimaki.bot._interactions import (
    InteractionContext,
    SlashCommand,
    make_custom_id,
    parse_custom_id,
)
from kimaki.bot.commands._common import (
    CommandRegistry,
    QuietPoster,
    SpentKeys,
    format_age,
    person_name,
    post_quietly,
)
from kimaki.discord.models import ActionRow, Button, ButtonStyle, SelectOption, StringSelect
from kimaki.errors import KimakiError
from kimaki.mcp._catalog import CatalogEntry
from kimaki.store import InteractionKey, ScanRecord, ServerPolicy

__all__ = ["McpCommands", "McpPolicyDoor"]

log = logging.getLogger("kimaki.commands")

_SERVER: Final = "mcp-server"
_ACTION: Final = "mcp-action"
_CHOOSE: Final = "mcp-choose"
_MENUS_PER_PAGE: Final = 4
"""Select menus per page of tools: the fifth row holds Save and the page buttons."""
_PER_MENU: Final = 25
_PER_PAGE: Final = _MENUS_PER_PAGE * _PER_MENU
_LIST_LIMIT: Final = 1800
"""Characters of a tool list before the rest is summed up (a message holds 2000)."""
_BUILTIN: Final = "kimaki"


class McpPolicyDoor(Protocol):
    """The MCP policy as `/mcp` uses it (`kimaki.mcp.McpPolicies` is one)."""

    async def catalog(self) -> dict[str, CatalogEntry]: ...

    async def policy(self, channel_id: int) -> dict[str, ServerPolicy]: ...

    async def set_policy(
        self,
        channel_id: int,
        server: str,
        policy: ServerPolicy | None,
        *,
        announce: Callable[[], Awaitable[None]] | None = ...,
        user_id: int | None = ...,
    ) -> bool: ...

    async def scan(self, server: str, *, refresh: bool) -> ScanRecord: ...


@final
@attrs.frozen(kw_only=True)
class McpCommands:
    """`/mcp`, with what it uses: the policy, posting in the channel, and spent keys."""

    _policies: McpPolicyDoor
    _rest: QuietPoster
    _keys: SpentKeys

    def install(self, registry: CommandRegistry) -> None:
        registry.add_command(
            SlashCommand(
                "mcp",
                "Choose the MCP servers and tools this channel's agents get",
                self._mcp,
            )
        )
        registry.on_component(_SERVER, self._server_picked)
        registry.on_component(_ACTION, self._action)
        registry.on_component(_CHOOSE, self._choosing)

    # ---- /mcp: the servers and their state here

    async def _mcp(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None  # not an `anywhere` command: refused outside projects
        channel_id = project.channel_id
        catalog = await self._catalog(ctx)
        if catalog is None:
            return
        policy = await self._policies.policy(channel_id)
        lines = [
            f"MCP servers for <#{channel_id}> and its threads:",
            f"• `{_BUILTIN}`: always on (kimaki's own tools: messages, buttons, questions)",
        ]
        lines += [
            f"• `{name}` ({_origin(entry)}): {_state(policy.get(name))}"
            for name, entry in catalog.items()
        ]
        if not catalog:
            lines.append(
                "No other MCP server is configured on this machine: add them to `mcp.json` in "
                "kimaki's data directory (or to your OpenCode configuration)."
            )
            await ctx.reply("\n".join(lines))
            return
        names = [name for name in catalog if len(name) <= 100]
        shown = names[:25]
        if len(names) > len(shown):
            lines.append(f"(The menu lists the first {len(shown)}.)")
        pick = await ctx.custom_id(_SERVER, {"channel_id": channel_id})
        options = tuple(
            SelectOption(label=name, value=name, description=_state(policy.get(name)))
            for name in shown
        )
        await ctx.reply(
            "\n".join(lines) + "\nPick a server to change:",
            components=(ActionRow((StringSelect(pick, options, placeholder="MCP server"),)),),
        )

    # ---- a server: its state, and what can be done with it

    async def _server_picked(
        self, ctx: InteractionContext, key: InteractionKey, suffix: str
    ) -> None:
        data = ctx.interaction.data
        values = data.values if data is not None else ()
        if not values:
            await ctx.update("Nothing was picked.", components=())
            return
        await self._show_server(ctx, int(key.payload["channel_id"]), values[0])
        await self._keys.delete_interaction_key(key.key)

    async def _show_server(
        self, ctx: InteractionContext, channel_id: int, server: str, *, note: str = ""
    ) -> None:
        catalog = await self._catalog(ctx)
        if catalog is None:
            return
        entry = catalog.get(server)
        if entry is None:
            await ctx.update(f"There is no MCP server `{server}` any more.", components=())
            return
        policy = (await self._policies.policy(channel_id)).get(server)
        text = f"`{server}` ({_origin(entry)}) in <#{channel_id}>: {_state(policy)}."
        if policy is not None and policy.mode == "some":
            text += "\nAllowed: " + _names(sorted(policy.tools))
        await ctx.update(
            f"{text}{note}", components=await _server_buttons(ctx, channel_id, server, policy)
        )

    async def _action(self, ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        channel_id = int(key.payload["channel_id"])
        server = str(key.payload["server"])
        if suffix == "all":
            await self._change(ctx, key, channel_id, server, ServerPolicy.every_tool())
        elif suffix == "disable":
            await self._change(ctx, key, channel_id, server, None)
        elif suffix == "scan":
            await self._scan(ctx, channel_id, server)
            await self._keys.delete_interaction_key(key.key)  # the answer has new buttons
        elif suffix == "choose":
            await self._start_choosing(ctx, key, channel_id, server)
        else:
            await ctx.update("That choice is not available.", components=())

    async def _scan(self, ctx: InteractionContext, channel_id: int, server: str) -> None:
        scan = await self._scanned(ctx, channel_id, server, refresh=True)
        if scan is None:
            return
        await self._show_server(ctx, channel_id, server, note="\n" + _tool_list(scan))

    async def _scanned(
        self, ctx: InteractionContext, channel_id: int, server: str, *, refresh: bool
    ) -> ScanRecord | None:
        """The server's tools (scanned now if `refresh` or never before); None, with the
        reason shown, when the server could not be reached."""
        try:
            return await self._policies.scan(server, refresh=refresh)
        except KimakiError as exc:
            log.info("scanning MCP server %s failed: %s", server, exc)
            policy = (await self._policies.policy(channel_id)).get(server)
            await ctx.update(
                f"⚠️ Could not scan `{server}`: {exc}",
                components=await _server_buttons(ctx, channel_id, server, policy),
            )
            return None

    # ---- choosing tools: pages of select menus, and Save

    async def _start_choosing(
        self, ctx: InteractionContext, key: InteractionKey, channel_id: int, server: str
    ) -> None:
        scan = await self._scanned(ctx, channel_id, server, refresh=False)
        if scan is None:
            return
        if not scan.tools:
            await self._show_server(
                ctx, channel_id, server, note=f"\n`{server}` offers no tools to choose from."
            )
            return
        offered = [tool.name for tool in scan.tools]
        policy = (await self._policies.policy(channel_id)).get(server)
        if policy is None:
            staged: frozenset[str] = frozenset()
        elif policy.mode == "all":
            staged = frozenset(offered)
        else:
            staged = policy.tools & set(offered)
        await self._keys.delete_interaction_key(key.key)
        await self._show_chooser(ctx, _Choice(channel_id, server, 0, sorted(staged)), scan)

    async def _show_chooser(
        self, ctx: InteractionContext, choice: _Choice, scan: ScanRecord, *, note: str = ""
    ) -> None:
        offered = scan.tools
        pages = max(1, -(-len(offered) // _PER_PAGE))
        page = min(choice.page, pages - 1)
        on_page = offered[page * _PER_PAGE : (page + 1) * _PER_PAGE]
        menus = [
            [tool.name for tool in on_page[start : start + _PER_MENU]]
            for start in range(0, len(on_page), _PER_MENU)
        ]
        choice = attrs.evolve(choice, page=page)
        first = await ctx.custom_id(_CHOOSE, choice.payload(menus), suffix="save")
        key, _ = parse_custom_id(first)
        staged = set(choice.staged)
        rows = []
        for number, names in enumerate(menus):
            tools = on_page[number * _PER_MENU : (number + 1) * _PER_MENU]
            options = tuple(
                SelectOption(
                    label=tool.name[:100],
                    value=str(index),
                    description=_first_line(tool.description)[:100] or None,
                    default=tool.name in staged,
                )
                for index, tool in enumerate(tools)
            )
            first_index = page * _PER_PAGE + number * _PER_MENU
            rows.append(
                ActionRow(
                    (
                        StringSelect(
                            make_custom_id(key, f"m{number}"),
                            options,
                            placeholder=f"Tools {first_index + 1}–{first_index + len(names)}",
                            min_values=0,
                            max_values=len(options),
                        ),
                    )
                )
            )
        buttons = [
            Button(
                ButtonStyle.PRIMARY,
                f"Save ({len(staged)} tool{'' if len(staged) == 1 else 's'})",
                make_custom_id(key, "save"),
            )
        ]
        if page > 0:
            buttons.append(Button(ButtonStyle.SECONDARY, "◀ Previous", make_custom_id(key, "prev")))
        if page < pages - 1:
            buttons.append(Button(ButtonStyle.SECONDARY, "Next ▶", make_custom_id(key, "next")))
        rows.append(ActionRow(tuple(buttons)))
        where = f" (page {page + 1} of {pages})" if pages > 1 else ""
        await ctx.update(
            f"Choose the tools of `{choice.server}` for <#{choice.channel_id}>{where}: "
            f"{len(offered)} offered, scanned {format_age(scan.scanned_at)}; "
            f"{len(staged)} chosen. Save when done.{note}",
            components=tuple(rows),
        )

    async def _choosing(self, ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        choice = _Choice.of_payload(key.payload)
        menus: list[list[str]] = [list(m) for m in key.payload.get("menus") or []]
        if suffix == "save":
            if not choice.staged:
                scan = await self._scanned(ctx, choice.channel_id, choice.server, refresh=False)
                if scan is not None:
                    await self._keys.delete_interaction_key(key.key)
                    note = "\nChoose at least one tool (or use Disable to switch the server off)."
                    await self._show_chooser(ctx, choice, scan, note=note)
                return
            policy = ServerPolicy.only(choice.staged)
            await self._change(ctx, key, choice.channel_id, choice.server, policy)
            return
        if suffix.startswith("m") and suffix[1:].isdigit() and int(suffix[1:]) < len(menus):
            names = menus[int(suffix[1:])]
            data = ctx.interaction.data
            picked = {
                names[int(value)]
                for value in (data.values if data is not None else ())
                if value.isdigit() and int(value) < len(names)
            }
            staged = (set(choice.staged) - set(names)) | picked
            choice = attrs.evolve(choice, staged=sorted(staged))
        elif suffix in ("prev", "next"):
            choice = attrs.evolve(
                choice, page=max(0, choice.page + (1 if suffix == "next" else -1))
            )
        else:
            await ctx.update("That choice is not available.", components=())
            return
        scan = await self._scanned(ctx, choice.channel_id, choice.server, refresh=False)
        if scan is None:
            return
        await self._keys.delete_interaction_key(key.key)
        await self._show_chooser(ctx, choice, scan)

    # ---- a change

    async def _change(
        self,
        ctx: InteractionContext,
        key: InteractionKey,
        channel_id: int,
        server: str,
        policy: ServerPolicy | None,
    ) -> None:
        """Store the change, say it in the channel, then let the daemon apply it."""
        who = person_name(ctx)

        async def announce() -> None:
            await post_quietly(self._rest, channel_id, _announcement(server, policy, who))

        try:
            changed = await self._policies.set_policy(
                channel_id, server, policy, announce=announce, user_id=ctx.user.id
            )
        except KimakiError as exc:
            await ctx.update(f"⚠️ {exc}", components=())
            return
        await self._keys.delete_interaction_key(key.key)
        state = _state(policy)
        if not changed:
            await ctx.update(f"`{server}` in <#{channel_id}> was already: {state}.", components=())
            return
        await ctx.update(
            f"✅ `{server}` in <#{channel_id}>: {state}, from the next turn on.", components=()
        )

    async def _catalog(self, ctx: InteractionContext) -> dict[str, CatalogEntry] | None:
        """The catalog; None (with the reason shown) when mcp.json cannot be read."""
        try:
            return await self._policies.catalog()
        except KimakiError as exc:
            text = f"⚠️ The MCP servers cannot be read: {exc}"
            if ctx.interaction.message is not None:
                await ctx.update(text, components=())
            else:
                await ctx.reply(text)
            return None


@final
@attrs.frozen
class _Choice:
    """The tools chosen so far on a chooser (kept in its key, so the menus can be used in any
    order and across pages before Save)."""

    channel_id: int
    server: str
    page: int
    staged: list[str]

    def payload(self, menus: Sequence[Sequence[str]]) -> dict[str, Any]:
        return {**attrs.asdict(self), "menus": [list(m) for m in menus]}

    @classmethod
    def of_payload(cls, payload: Any) -> _Choice:
        return cls(
            channel_id=int(payload["channel_id"]),
            server=str(payload["server"]),
            page=int(payload.get("page") or 0),
            staged=[str(name) for name in payload.get("staged") or []],
        )


async def _server_buttons(
    ctx: InteractionContext, channel_id: int, server: str, policy: ServerPolicy | None
) -> tuple[ActionRow, ...]:
    """All tools / Choose tools / Disable / Scan: one key, the action as the suffix."""
    first = await ctx.custom_id(_ACTION, {"channel_id": channel_id, "server": server}, suffix="all")
    key, _ = parse_custom_id(first)
    every = policy is not None and policy.mode == "all"
    return (
        ActionRow(
            (
                Button(ButtonStyle.SUCCESS, "All tools", first, disabled=every),
                Button(ButtonStyle.PRIMARY, "Choose tools", make_custom_id(key, "choose")),
                Button(
                    ButtonStyle.DANGER,
                    "Disable",
                    make_custom_id(key, "disable"),
                    disabled=policy is None,
                ),
                Button(ButtonStyle.SECONDARY, "Scan", make_custom_id(key, "scan")),
            )
        ),
    )


def _origin(entry: CatalogEntry) -> str:
    """How and where a server is configured: never its command, URL or secrets."""
    where = "your OpenCode configuration" if entry.source == "opencode" else "mcp.json"
    return f"{entry.transport}, from {where}"


def _state(policy: ServerPolicy | None) -> str:
    if policy is None:
        return "disabled"
    if policy.mode == "all":
        return "all tools"
    count = len(policy.tools)
    return f"{count} tool{'' if count == 1 else 's'}"


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _announcement(server: str, policy: ServerPolicy | None, who: str) -> str:
    if policy is None:
        return (
            f"🔌 MCP server `{server}` is now off for this channel and its threads "
            f"(changed by {who}); the next turn runs without it."
        )
    if policy.mode == "all":
        what = "all its tools"
    else:
        tools = sorted(policy.tools)
        shown = _names(tools[:20]) + (f" and {len(tools) - 20} more" if len(tools) > 20 else "")
        what = f"{len(tools)} tool{'' if len(tools) == 1 else 's'}: {shown}"
    return (
        f"🔌 MCP server `{server}` is now on for this channel and its threads, with {what} "
        f"(changed by {who}); the next turn uses it."
    )


def _tool_list(scan: ScanRecord) -> str:
    """The scanned tools, one a line, cut short to fit a message."""
    count = len(scan.tools)
    head = f"Scanned {format_age(scan.scanned_at)}: {count} tool{'' if count == 1 else 's'}" + (
        ":" if count else "."
    )
    lines = [head]
    size = len(head)
    for shown, tool in enumerate(scan.tools):
        description = _first_line(tool.description)[:80]
        line = f"• `{tool.name}`" + (f": {description}" if description else "")
        if size + len(line) + 1 > _LIST_LIMIT:
            lines.append(f"… and {count - shown} more")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""
