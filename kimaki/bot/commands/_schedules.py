"""Scheduling from Discord: `/schedule`, `/remind`, `/tasks`.

Everything goes through the scheduling door (`kimaki.schedules.Schedules`): WHEN is checked
there, with the command line's and the agent tools' rules, and a `ScheduleError` (what to fix)
is shown as it is. Times are shown as Discord timestamps (`<t:…>`), which every reader sees in
their own timezone; a select menu cannot render those, so its descriptions are in UTC.

`/tasks` is one ephemeral message that walks list → task → action (Run now, Pause/Resume,
Delete with a confirmation). Each step re-reads the task, so a view left open while the runner
(or someone else) changed or deleted it acts on what is there now, not on what it showed.
"""

from __future__ import annotations

import functools
import logging
import time
import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol, final

import attrs
import trio

from kimaki.bot._interactions import (
    InteractionContext,
    SlashCommand,
    make_custom_id,
    parse_custom_id,
)
from kimaki.bot.commands._common import (
    CommandRegistry,
    SpentKeys,
    format_age,
    matching,
    option,
    person_name,
)
from kimaki.discord.models import (
    ActionRow,
    ApplicationCommandOptionType,
    Button,
    ButtonStyle,
    CommandChoice,
    Guild,
    SelectOption,
    StringSelect,
)
from kimaki.schedules import NewTask, ScheduleError
from kimaki.store import ChannelRecord, InteractionKey, ScheduledTask, TaskKind, TaskRun

__all__ = ["ScheduleCommands", "ScheduleDoor"]

log = logging.getLogger("kimaki.commands")

_PICK: Final = "tasks-pick"
_ACT: Final = "tasks-act"
_MENU_LIMIT: Final = 25
_LIST_LIMIT: Final = 1800
"""Characters of a task list before the rest is summed up (a message holds 2000)."""
_RUNS_SHOWN: Final = 5
_WHEN_HELP: Final = (
    "In 10m, 2h30m or 1d; at an ISO time with offset (…T09:00+02:00); cron: 0 9 * * 1-5"
)
_KIND_ICONS: Final = {"prompt": "⏰", "remind": "🔔", "wake": "💤"}


class ScheduleDoor(Protocol):
    """The scheduling door as the commands use it (`kimaki.schedules.Schedules` is one)."""

    async def add(self, task: NewTask) -> ScheduledTask: ...

    async def tasks(self, *, channel_id: int | None = ...) -> list[ScheduledTask]: ...

    async def task(self, task_id: int) -> ScheduledTask | None: ...

    async def runs(self, task_id: int, *, limit: int = ...) -> list[TaskRun]: ...

    async def pause(self, task_id: int) -> ScheduledTask: ...

    async def resume(self, task_id: int) -> ScheduledTask: ...

    async def delete(self, task_id: int) -> bool: ...

    async def run_now(self, task_id: int) -> None: ...


class ProjectChannels(Protocol):
    """Project channels' records, for which guild a task's channel is in (`kimaki.store.Places`
    is one)."""

    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...


class GuildOwners(Protocol):
    """Guilds as the gateway told of them, for who owns one (`kimaki.guilds.GuildCache`)."""

    def guild(self, guild_id: int) -> Guild | None: ...


@final
@attrs.frozen(kw_only=True)
class ScheduleCommands:
    """`/schedule`, `/remind` and `/tasks`, with what they use: the door, the project channels
    (`/tasks everywhere`), the guilds (who owns one) and spent keys."""

    _schedules: ScheduleDoor
    _channels: ProjectChannels
    _guilds: GuildOwners
    _keys: SpentKeys

    def install(self, registry: CommandRegistry) -> None:
        add = registry.add_command
        add(
            SlashCommand(
                "schedule",
                "Have the agent run a prompt later, or repeatedly (cron)",
                self._schedule,
                options=(
                    option("prompt", "What to ask the agent", required=True, max_length=4000),
                    option("when", _WHEN_HELP, required=True, max_length=100),
                    option(
                        "name", "A short name (default: the prompt's first line)", max_length=80
                    ),
                    option(
                        "timezone",
                        "Area/City for a cron schedule (default: the bot machine's)",
                        autocomplete=True,
                        max_length=64,
                    ),
                    option(
                        "reuse-thread",
                        "In a channel: every run in one thread (default: a new thread each)",
                        kind=ApplicationCommandOptionType.BOOLEAN,
                    ),
                ),
                autocomplete=_timezones,
            )
        )
        add(
            SlashCommand(
                "remind",
                "Post a reminder here later (no agent involved)",
                self._remind,
                options=(
                    option("when", _WHEN_HELP, required=True, max_length=100),
                    option("text", "What to be reminded of", required=True, max_length=1800),
                    option(
                        "user",
                        "Who is pinged (default: you)",
                        kind=ApplicationCommandOptionType.USER,
                    ),
                    option(
                        "timezone",
                        "Area/City for a cron schedule (default: the bot machine's)",
                        autocomplete=True,
                        max_length=64,
                    ),
                ),
                autocomplete=_timezones,
            )
        )
        add(
            SlashCommand(
                "tasks",
                "This channel's scheduled tasks: run one now, pause, resume or delete it",
                self._tasks,
                options=(
                    option(
                        "everywhere",
                        "Every channel's tasks in this server (the server owner only)",
                        kind=ApplicationCommandOptionType.BOOLEAN,
                    ),
                ),
            )
        )
        registry.on_component(_PICK, self._picked)
        registry.on_component(_ACT, self._act)

    # ---- /schedule and /remind

    async def _schedule(self, ctx: InteractionContext) -> None:
        task = await self._add(
            ctx,
            prompt=ctx.text_option("prompt").strip(),
            name=ctx.text_option("name").strip(),
            kind="prompt",
            reuse_thread=bool(ctx.option("reuse-thread")),
        )
        if task is None:
            return
        where = (
            "this thread"
            if task.thread_id is not None
            else (
                f'one thread, "⏰ {_plain(_name(task))}"'
                if task.reuse_thread
                else f'a new thread "⏰ {_plain(_name(task))}" each run'
            )
        )
        # Public: the channel's people should know an agent will run here.
        await ctx.reply(
            f"⏰ Scheduled **{_plain(_name(task))}** (task #{task.task_id}, by "
            f"{_plain(task.created_by_name)}): {_timing(task)}; it runs in {where}.",
            ephemeral=False,
        )

    async def _remind(self, ctx: InteractionContext) -> None:
        raw_user = ctx.option("user")
        mention = int(raw_user) if raw_user is not None else ctx.user.id
        task = await self._add(
            ctx,
            prompt=ctx.text_option("text").strip(),
            name="",
            kind="remind",
            mention_user_id=mention,
        )
        if task is None:
            return
        await ctx.reply(
            f"🔔 Reminder #{task.task_id} for <@{mention}>: {_timing(task)}, here.\n"
            f"> {_plain(_clip(task.prompt, 300))}"
        )

    async def _add(
        self,
        ctx: InteractionContext,
        *,
        prompt: str,
        name: str,
        kind: TaskKind,
        reuse_thread: bool = False,
        mention_user_id: int | None = None,
    ) -> ScheduledTask | None:
        """Store the task through the door; None (with what to fix shown) if it was refused."""
        project = ctx.project
        assert project is not None  # not an `anywhere` command: refused outside projects
        if not prompt:
            await ctx.reply(
                "Say what to " + ("ask the agent." if kind == "prompt" else "remind of.")
            )
            return None
        new = NewTask(
            channel_id=project.channel_id,
            prompt=prompt,
            when=ctx.text_option("when").strip(),
            created_by=ctx.user.id,
            created_by_name=person_name(ctx),
            name=name,
            thread_id=ctx.channel_id if ctx.in_thread else None,
            tz=ctx.text_option("timezone").strip() or None,
            kind=kind,
            reuse_thread=reuse_thread and not ctx.in_thread,
            mention_user_id=mention_user_id,
        )
        try:
            return await self._schedules.add(new)
        except ScheduleError as exc:
            await ctx.reply(f"⚠️ {exc}\nNothing was scheduled.")
            return None

    # ---- /tasks: the list

    async def _tasks(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        scope: int | None = project.channel_id
        if ctx.option("everywhere"):
            guild = self._guilds.guild(ctx.guild_id or 0)
            if guild is None or guild.owner_id != ctx.user.id:
                await ctx.reply("Only the server owner can list every channel's tasks.")
                return
            scope = None
        text, components = await self._listing(ctx, scope)
        await ctx.reply(text, components=components)

    async def _listing(
        self, ctx: InteractionContext, scope: int | None, *, note: str = ""
    ) -> tuple[str, tuple[ActionRow, ...]]:
        """The list of tasks in `scope` (a project channel, or None: this guild's channels) and
        the menu to pick one."""
        tasks = await self._in_scope(ctx, scope)
        where = f"<#{scope}>" if scope is not None else "this server"
        prefix = f"{note}\n" if note else ""
        if not tasks:
            return (
                f"{prefix}No scheduled tasks in {where}. Make one with `/schedule` or `/remind`.",
                (),
            )
        now = time.time()
        lines = [f"Scheduled tasks in {where} ({len(tasks)}), next first:"]
        size = len(prefix) + len(lines[0])
        for shown, task in enumerate(tasks):
            line = _list_line(task, now, everywhere=scope is None)
            if size + len(line) + 1 > _LIST_LIMIT:
                lines.append(f"… and {len(tasks) - shown} more")
                break
            lines.append(line)
            size += len(line) + 1
        in_menu = tasks[:_MENU_LIMIT]
        if len(tasks) > len(in_menu):
            lines.append(f"(The menu lists the first {len(in_menu)}.)")
        pick = await ctx.custom_id(_PICK, {"scope": scope})
        options = tuple(
            SelectOption(
                label=_clip(f"#{task.task_id} {_name(task)}", 100),
                value=str(task.task_id),
                description=_clip(_menu_line(task), 100),
            )
            for task in in_menu
        )
        menu = StringSelect(pick, options, placeholder="Pick a task to run, pause or delete")
        return prefix + "\n".join(lines), (ActionRow((menu,)),)

    async def _in_scope(self, ctx: InteractionContext, scope: int | None) -> list[ScheduledTask]:
        if scope is not None:
            return await self._schedules.tasks(channel_id=scope)
        guild_id = ctx.guild_id
        here: dict[int, bool] = {}
        found = []
        for task in await self._schedules.tasks():
            if task.channel_id not in here:
                record = await self._channels.get_channel(task.channel_id)
                here[task.channel_id] = record is not None and record.guild_id == guild_id
            if here[task.channel_id]:
                found.append(task)
        return found

    async def _picked(self, ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        data = ctx.interaction.data
        values = data.values if data is not None else ()
        scope = _scope(key.payload)
        if not values or not values[0].isdigit():
            await ctx.update("Nothing was picked.", components=())
            return
        await self._keys.delete_interaction_key(key.key)
        await self._show_task(ctx, int(values[0]), scope)

    # ---- one task, and what can be done with it

    async def _show_task(
        self, ctx: InteractionContext, task_id: int, scope: int | None, *, note: str = ""
    ) -> None:
        task = await self._schedules.task(task_id)
        prefix = f"{note}\n" if note else ""
        if task is None or not _in(task, scope):
            await ctx.update(
                f"{prefix}Task #{task_id} no longer exists.",
                components=await _back_only(ctx, task_id, scope),
            )
            return
        runs = await self._schedules.runs(task_id, limit=_RUNS_SHOWN)
        await ctx.update(
            prefix + _details(task, runs),
            components=await _task_buttons(ctx, task, scope),
        )

    async def _act(self, ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        task_id = int(key.payload["task_id"])
        scope = _scope(key.payload)
        await self._keys.delete_interaction_key(key.key)  # every answer has new components
        if suffix == "back":
            text, components = await self._listing(ctx, scope)
            await ctx.update(text, components=components)
            return
        task = await self._schedules.task(task_id)
        if task is None or not _in(task, scope):
            await ctx.update(
                f"Task #{task_id} no longer exists.",
                components=await _back_only(ctx, task_id, scope),
            )
            return
        who = person_name(ctx)
        name = _plain(_name(task))
        if suffix == "delete":
            await ctx.update(
                f"Delete **{name}** (task #{task_id})? Its run history goes with it.",
                components=await _confirm_buttons(ctx, task_id, scope),
            )
            return
        try:
            if suffix == "run":
                await self._schedules.run_now(task_id)
                note = f"▶️ **{name}** runs now."
            elif suffix == "pause":
                await self._schedules.pause(task_id)
                note = f"⏸️ **{name}** is paused: it will not run until resumed."
            elif suffix == "resume":
                await self._schedules.resume(task_id)
                note = f"▶️ **{name}** is resumed."
            elif suffix == "delete-yes":
                deleted = await self._schedules.delete(task_id)
                text, components = await self._listing(
                    ctx,
                    scope,
                    note=f"🗑️ Deleted **{name}** (task #{task_id})."
                    if deleted
                    else f"Task #{task_id} was already gone.",
                )
                await ctx.update(text, components=components)
                if deleted:
                    log.info("task %d (%s) deleted by %s", task_id, task.name, who)
                return
            elif suffix == "keep":
                note = ""
            else:
                await ctx.update("That choice is not available.", components=())
                return
        except ScheduleError as exc:
            note = f"⚠️ {exc}"
        else:
            if suffix != "keep":
                log.info("task %d (%s): %s by %s", task_id, task.name, suffix, who)
        await self._show_task(ctx, task_id, scope, note=note)


# ---- components


async def _task_buttons(
    ctx: InteractionContext, task: ScheduledTask, scope: int | None
) -> tuple[ActionRow, ...]:
    """Run now / Pause or Resume / Delete / Back: one key, the action as the suffix."""
    assert task.task_id is not None
    first = await ctx.custom_id(_ACT, _payload(task.task_id, scope), suffix="run")
    key, _ = parse_custom_id(first)
    pause = (
        Button(ButtonStyle.SUCCESS, "Resume", make_custom_id(key, "resume"))
        if task.paused
        else Button(ButtonStyle.SECONDARY, "Pause", make_custom_id(key, "pause"))
    )
    return (
        ActionRow(
            (
                Button(ButtonStyle.PRIMARY, "Run now", first),
                pause,
                Button(ButtonStyle.DANGER, "Delete", make_custom_id(key, "delete")),
                Button(ButtonStyle.SECONDARY, "◀ Back", make_custom_id(key, "back")),
            )
        ),
    )


async def _confirm_buttons(
    ctx: InteractionContext, task_id: int, scope: int | None
) -> tuple[ActionRow, ...]:
    first = await ctx.custom_id(_ACT, _payload(task_id, scope), suffix="delete-yes")
    key, _ = parse_custom_id(first)
    return (
        ActionRow(
            (
                Button(ButtonStyle.DANGER, "Yes, delete", first),
                Button(ButtonStyle.SECONDARY, "Keep it", make_custom_id(key, "keep")),
            )
        ),
    )


async def _back_only(
    ctx: InteractionContext, task_id: int, scope: int | None
) -> tuple[ActionRow, ...]:
    back = await ctx.custom_id(_ACT, _payload(task_id, scope), suffix="back")
    return (ActionRow((Button(ButtonStyle.SECONDARY, "◀ Back", back),)),)


def _payload(task_id: int, scope: int | None) -> dict[str, Any]:
    return {"task_id": task_id, "scope": scope}


def _scope(payload: Any) -> int | None:
    scope = payload.get("scope") if isinstance(payload, dict) else None
    return int(scope) if scope is not None else None


def _in(task: ScheduledTask, scope: int | None) -> bool:
    """Whether a view of `scope` may act on `task` (a key names its task; the view's scope
    was checked when it was made)."""
    return scope is None or task.channel_id == scope


# ---- text


async def _timezones(ctx: InteractionContext) -> Sequence[CommandChoice]:
    _, typed = ctx.focused()
    names = await _zone_names()
    return matching([CommandChoice(name, name) for name in names], typed)


async def _zone_names() -> tuple[str, ...]:
    """The IANA zone names (read from disk once: off the event loop)."""
    return await trio.to_thread.run_sync(_read_zone_names)


@functools.cache
def _read_zone_names() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def _name(task: ScheduledTask) -> str:
    return task.name or _first_line(task.prompt) or f"task {task.task_id}"


def _timing(task: ScheduledTask) -> str:
    """When a task runs, as its answer says it: "next run <t:…:F> (<t:…:R>), then every …"."""
    at = int(task.next_run_at)
    if task.schedule is None:
        return f"at <t:{at}:F> (<t:{at}:R>)"
    return f"next at <t:{at}:F> (<t:{at}:R>), repeating `{task.schedule}` ({_zone(task)})"


def _zone(task: ScheduledTask) -> str:
    return task.tz or "the bot machine's timezone"


def _state(task: ScheduledTask, now: float) -> str:
    if task.paused:
        return "⏸️ paused"
    if not task.enabled:
        return "done"
    at = int(task.next_run_at)
    return f"next <t:{at}:R>" if task.next_run_at >= now else f"due since <t:{at}:R>"


def _last(task: ScheduledTask) -> str:
    if task.last_run_at is None:
        return "not run yet"
    return f"last: {task.last_status or 'ran'} {format_age(task.last_run_at)}"


def _list_line(task: ScheduledTask, now: float, *, everywhere: bool) -> str:
    icon = _KIND_ICONS.get(task.kind, "⏰")
    repeat = f" · `{task.schedule}`" if task.schedule else ""
    where = f" · in <#{task.thread_id or task.channel_id}>" if everywhere else ""
    return (
        f"{icon} #{task.task_id} **{_plain(_clip(_name(task), 60))}** · {_state(task, now)}"
        f"{repeat} · {_last(task)} · by {_plain(task.created_by_name or 'someone')}{where}"
    )


def _menu_line(task: ScheduledTask) -> str:
    """A menu option's description: plain text (no markdown, no `<t:…>`), so times in UTC."""
    state = "paused" if task.paused else "next " + _utc(task.next_run_at)
    return f"{state} · {_last(task)} · by {task.created_by_name or 'someone'}"


def _details(task: ScheduledTask, runs: Sequence[TaskRun]) -> str:
    icon = _KIND_ICONS.get(task.kind, "⏰")
    kind = {
        "prompt": "a prompt to the agent",
        "remind": f"a reminder for <@{task.mention_user_id}>"
        if task.mention_user_id
        else "a reminder",
        "wake": "the end of an agent's sleep",
    }.get(task.kind, task.kind)
    if task.thread_id is not None:
        where = f"in <#{task.thread_id}>"
    elif task.kind == "prompt":
        thread = f'"⏰ {_plain(_name(task))}"'
        where = (
            f"in <#{task.channel_id}>, one thread {thread} for every run"
            if task.reuse_thread
            else f"in <#{task.channel_id}>, a new thread {thread} each run"
        )
    else:
        where = f"in <#{task.channel_id}>"
    lines = [
        f"{icon} **{_plain(_name(task))}** (task #{task.task_id}): {kind}, {where}.",
        f"Made by {_plain(task.created_by_name or 'someone')}.",
    ]
    if task.paused:
        lines.append(
            "⏸️ Paused" + (f"; repeats `{task.schedule}` ({_zone(task)})." if task.schedule else ".")
        )
    elif not task.enabled:
        lines.append("Done: it ran and will not run again.")
    else:
        lines.append("Runs " + _timing(task) + ".")
    if task.kind != "wake":
        lines.append("> " + _plain(_clip(task.prompt, 300)).replace("\n", "\n> "))
    if runs:
        lines.append("Last runs:")
        lines += [_run_line(run) for run in runs]
    else:
        lines.append("It has not run yet.")
    return "\n".join(lines)


def _run_line(run: TaskRun) -> str:
    line = f"• <t:{int(run.started_at)}:f>: {run.status}"
    if run.late_by >= 60:
        line += f" ({int(run.late_by // 60)} min late)"
    if run.thread_id is not None:
        line += f" in <#{run.thread_id}>"
    if run.error:
        line += f": {_plain(_clip(_first_line(run.error), 200))}"
    return line


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str) -> str:
    """Text someone typed, shown by the bot: it pings nobody (`@everyone`, `<@id>`)."""
    return text.replace("@", "@\u200b")
