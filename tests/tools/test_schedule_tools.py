"""The agent's scheduling tools: through the MCP SDK's client and the relay, as an agent calls
them, and through the `ToolBox` against a recording thread for what the model reads back.

The door here is `FakeDoor`, an in-memory stand-in for `kimaki.schedules.Schedules` with the
same contract (WHEN read by `parse_when`, `ScheduleError` naming what to fix).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from mcp import types

from kimaki._control import ControlServer, control_url
from kimaki.schedules import NewTask, Schedules, StartedRun, parse_when
from kimaki.schedules._tools import ScheduleDoor, schedule_tools
from kimaki.store import ChannelRecord, ScheduledTask, Store
from kimaki.testing.tools import FakeToolPlaces, RecordingToolContext, relay_session
from kimaki.tools import BUILTIN_TOOLS, ToolBox, install_tool_routes

UTC = dt.UTC
NOW = dt.datetime(2030, 1, 7, 8, 0, tzinfo=UTC).timestamp()  # a Monday, 08:00 UTC
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
CHANNEL = 1_200_000_000_000_000_001
THREAD = 1_200_000_000_000_000_002
OTHER_CHANNEL = 1_200_000_000_000_000_011
OTHER_THREAD = 1_200_000_000_000_000_012


@attrs.define
class FakeDoor:
    """`Schedules` as the tools use it, in memory, on a fixed clock (the machine's timezone is
    UTC), reading WHEN with the door's own `parse_when`."""

    now: float = NOW
    tasks_by_id: dict[int, ScheduledTask] = attrs.Factory(dict)
    added: list[NewTask] = attrs.Factory(list)
    slept: list[dict[str, Any]] = attrs.Factory(list)
    message_meanwhile: bool = False  # a person writes while a sleep is being stored

    def _store(self, task: ScheduledTask) -> ScheduledTask:
        task = attrs.evolve(task, task_id=len(self.tasks_by_id) + 1)
        self.tasks_by_id[len(self.tasks_by_id) + 1] = task
        return task

    async def add(self, task: NewTask) -> ScheduledTask:
        when = parse_when(task.when, now=self.now, tz=task.tz, local_tz=UTC)
        self.added.append(task)
        name = task.name or task.prompt.splitlines()[0][:40]
        return self._store(
            ScheduledTask(
                channel_id=task.channel_id,
                prompt=task.prompt,
                next_run_at=when.first,
                created_by=task.created_by,
                thread_id=task.thread_id,
                schedule=when.cron,
                name=name,
                kind=task.kind,
                tz=when.tz,
                created_by_name=task.created_by_name,
            )
        )

    async def tasks(self, *, channel_id: int | None = None) -> list[ScheduledTask]:
        found = [
            task
            for task in self.tasks_by_id.values()
            if task.enabled and channel_id in (None, task.channel_id)
        ]
        return sorted(found, key=lambda task: task.next_run_at)

    async def task(self, task_id: int) -> ScheduledTask | None:
        return self.tasks_by_id.get(task_id)

    async def delete(self, task_id: int) -> bool:
        return self.tasks_by_id.pop(task_id, None) is not None

    async def sleep(
        self, *, thread_id: int, channel_id: int, until: str, reason: str, created_by_name: str
    ) -> ScheduledTask:
        at = parse_when(until, now=self.now, local_tz=UTC, repeat=False).first
        self.slept.append({"thread_id": thread_id, "channel_id": channel_id, "reason": reason})
        return self._store(
            ScheduledTask(
                channel_id=channel_id,
                prompt=reason,
                next_run_at=at,
                created_by=0,
                thread_id=thread_id,
                name="sleep",
                kind="wake",
                created_by_name=created_by_name,
                enabled=not self.message_meanwhile,
            )
        )


def _conforms(door: FakeDoor) -> ScheduleDoor:
    return door  # mypy checks the fake against the tools' protocol


@pytest.fixture
def door() -> FakeDoor:
    return FakeDoor()


@pytest.fixture
def box(door: FakeDoor) -> ToolBox:
    return ToolBox(schedule_tools(_conforms(door), now=lambda: door.now, local_tz=UTC))


def _ctx(tmp_path: Path, name: str, *, thread_id: int, channel_id: int) -> RecordingToolContext:
    directory = tmp_path / name
    directory.mkdir()
    return RecordingToolContext(
        directory=directory, data_dir=tmp_path / "data", thread_id=thread_id, channel_id=channel_id
    )


@pytest.fixture
def ctx(tmp_path: Path) -> RecordingToolContext:
    return _ctx(tmp_path, "project", thread_id=THREAD, channel_id=CHANNEL)


async def call(box: ToolBox, ctx: RecordingToolContext, tool: str, **arguments: Any) -> str:
    result = await box.call(ctx, tool, arguments)
    assert not result.is_error, result.text
    return result.text


async def refused(box: ToolBox, ctx: RecordingToolContext, tool: str, **arguments: Any) -> str:
    result = await box.call(ctx, tool, arguments)
    assert result.is_error, result.text
    return result.text


# Through the SDK's client, as an agent calls them


TOKEN = "grant-of-thread-a"
OTHER = "grant-of-thread-b"


@attrs.frozen
class Daemon:
    url: str
    door: FakeDoor
    a: RecordingToolContext
    b: RecordingToolContext


@pytest.fixture
async def daemon(nursery: trio.Nursery, tmp_path: Path, door: FakeDoor) -> Daemon:
    a = _ctx(tmp_path, "a", thread_id=THREAD, channel_id=CHANNEL)
    b = _ctx(tmp_path, "b", thread_id=OTHER_THREAD, channel_id=OTHER_CHANNEL)
    control = ControlServer(port=0, data_dir=tmp_path, health=dict)
    tools = schedule_tools(door, now=lambda: door.now, local_tz=UTC)
    install_tool_routes(
        control, ToolBox((*BUILTIN_TOOLS, *tools)), FakeToolPlaces({TOKEN: a, OTHER: b})
    )
    port: int = await nursery.start(control.serve)
    return Daemon(control_url(port), door, a, b)


def _text(result: types.CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, types.TextContent)
    return content.text


async def test_the_tools_are_served_beside_the_builtins(daemon: Daemon) -> None:
    async with relay_session(daemon.url, TOKEN) as session:
        listed = await session.list_tools()
    names = [tool.name for tool in listed.tools]
    assert names == [
        *(spec.name for spec in BUILTIN_TOOLS),
        "schedule",
        "list_schedules",
        "cancel_schedule",
        "sleep",
    ]
    by_name = {tool.name: tool for tool in listed.tools}
    assert by_name["schedule"].inputSchema["required"] == ["prompt", "when"]
    assert by_name["cancel_schedule"].inputSchema["required"] == ["id"]
    assert by_name["sleep"].inputSchema["required"] == ["reason"]
    for spec in schedule_tools(daemon.door):
        assert by_name[spec.name].description == spec.description
        assert len(spec.description) > 80


async def test_an_agent_schedules_lists_and_cancels_in_its_own_thread(daemon: Daemon) -> None:
    async with relay_session(daemon.url, TOKEN) as session:
        # Ids the model makes up are ignored: the grant says which thread this is.
        scheduled = await session.call_tool(
            "schedule",
            {
                "prompt": "Check whether CI on main is green.",
                "when": "2h30m",
                "name": "CI check",
                "thread_id": OTHER_THREAD,
                "channel_id": OTHER_CHANNEL,
            },
        )
        listed = await session.call_tool("list_schedules", {})
        cancelled = await session.call_tool("cancel_schedule", {"id": 1})
        after = await session.call_tool("list_schedules", {})
    [task] = daemon.door.added
    assert (task.channel_id, task.thread_id) == (CHANNEL, THREAD)
    assert (task.prompt, task.when, task.name, task.kind) == (
        "Check whether CI on main is green.",
        "2h30m",
        "CI check",
        "prompt",
    )
    assert (task.created_by, task.created_by_name) == (0, f"agent in thread {THREAD}")
    assert not scheduled.isError
    assert _text(scheduled) == (
        'Scheduled task 1 "CI check".\n'
        "Runs once, at 2030-01-07T10:30:00+00:00 (in 2h 30m).\n"
        "It arrives in this thread.\n"
        "To cancel: cancel_schedule with id 1."
    )
    assert _text(listed) == (
        "1 scheduled task in this project channel, soonest first:\n"
        '- 1: "CI check", next 2030-01-07T10:30:00+00:00 (in 2h 30m), once, in this thread, '
        f"by agent in thread {THREAD}\n"
        "  Check whether CI on main is green."
    )
    assert (cancelled.isError, _text(cancelled)) == (False, 'Cancelled task 1 "CI check".')
    assert _text(after) == "No scheduled tasks in this project channel."
    assert daemon.door.tasks_by_id == {}
    # Nothing is posted by the tools themselves: runs reach the thread through the runner.
    assert daemon.a.posts == daemon.b.posts == []


async def test_an_agent_cannot_see_or_cancel_another_channels_tasks(daemon: Daemon) -> None:
    async with relay_session(daemon.url, TOKEN) as session:
        await session.call_tool("schedule", {"prompt": "Deploy staging.", "when": "1d"})
    async with relay_session(daemon.url, OTHER) as session:
        listed = await session.call_tool("list_schedules", {})
        cancel = await session.call_tool("cancel_schedule", {"id": 1})
    assert _text(listed) == "No scheduled tasks in this project channel."
    assert (cancel.isError, _text(cancel)) == (
        True,
        "no task 1 in this project channel; list_schedules shows them",
    )
    assert list(daemon.door.tasks_by_id) == [1]


async def test_sleep_through_the_sdk(daemon: Daemon) -> None:
    async with relay_session(daemon.url, TOKEN) as session:
        slept = await session.call_tool(
            "sleep", {"duration": "45m", "reason": "wait for the deploy to finish"}
        )
        wrong = await session.call_tool("sleep", {"reason": "no time given"})
    assert daemon.door.slept == [
        {"thread_id": THREAD, "channel_id": CHANNEL, "reason": "wait for the deploy to finish"}
    ]
    assert not slept.isError
    assert _text(slept).startswith(
        "Sleeping until 2030-01-07T08:45:00+00:00 (in 45m) (task 1). End your turn now"
    )
    assert (wrong.isError, _text(wrong)) == (
        True,
        "give `duration` (10m, 2h30m, 1d) or `until` (an ISO 8601 time)",
    )


# What the model reads back, through the box


async def test_a_repeating_task_in_a_new_thread_per_run(
    box: ToolBox, ctx: RecordingToolContext, door: FakeDoor
) -> None:
    text = await call(
        box,
        ctx,
        "schedule",
        prompt="Summarise yesterday's failed CI runs.\nLink each.",
        when="0 9 * * 1-5",
        where="channel",
        tz="Europe/Paris",
    )
    [task] = door.added
    assert (task.thread_id, task.channel_id, task.tz) == (None, CHANNEL, "Europe/Paris")
    # 09:00 in Paris is 08:00 UTC: the Monday's run has gone (it is 08:00 UTC), so Tuesday's.
    assert text == (
        'Scheduled task 1 "Summarise yesterday\'s failed CI runs.".\n'
        "Repeats: 0 9 * * 1-5 (Europe/Paris); next run 2030-01-08T09:00:00+01:00 (in 1d).\n"
        'Each run opens a new thread "⏰ Summarise yesterday\'s failed CI runs." in the '
        "project channel.\n"
        "To cancel: cancel_schedule with id 1."
    )
    listed = await call(box, ctx, "list_schedules")
    assert "repeats 0 9 * * 1-5 (Europe/Paris), in a new thread per run" in listed
    assert listed.endswith("\n  Summarise yesterday's failed CI runs. Link each.")


async def test_what_to_fix_comes_back_from_the_door_and_the_arguments(
    box: ToolBox, ctx: RecordingToolContext, door: FakeDoor
) -> None:
    assert await refused(box, ctx, "schedule", when="10m") == "`prompt` is required"
    assert await refused(box, ctx, "schedule", prompt="x") == "`when` is required"
    assert await refused(box, ctx, "schedule", prompt=" ", when="10m") == (
        "`prompt` is empty; send the text itself"
    )
    # The door's ScheduleError is the model's to read, not "see the daemon's log".
    assert await refused(box, ctx, "schedule", prompt="x", when="2020-01-01T00:00:00Z") == (
        "the time '2020-01-01T00:00:00Z' is in the past: give a time in the future"
    )
    cron = await refused(box, ctx, "schedule", prompt="x", when="61 * * * *")
    assert cron.startswith("invalid cron expression '61 * * * *'")
    assert await refused(box, ctx, "schedule", prompt="x", when="10m", where="dm") == (
        '`where` must be "thread" or "channel", not \'dm\''
    )
    assert await refused(box, ctx, "schedule", prompt="x" * 4001, when="10m") == (
        "`prompt` is 4001 characters; the limit is 4000"
    )
    assert door.added == []


async def test_sleep_takes_a_duration_or_a_time_once(
    box: ToolBox, ctx: RecordingToolContext, door: FakeDoor
) -> None:
    assert await refused(box, ctx, "sleep", duration="10m") == "`reason` is required"
    assert (
        await refused(box, ctx, "sleep", duration="10m", until="2030-01-08T00:00:00Z", reason="r")
        == "give `duration` or `until`, not both"
    )
    assert await refused(box, ctx, "sleep", duration="*/5 * * * *", reason="poll") == (
        "`duration` must be a delay like 10m, 2h30m or 1d, not '*/5 * * * *'"
    )
    assert await refused(box, ctx, "sleep", duration="PT10M", reason="r") == (
        "`duration` must be a delay like 10m, 2h30m or 1d, not 'PT10M'"
    )
    assert await refused(box, ctx, "sleep", until="2020-01-01T00:00:00Z", reason="r") == (
        "`until`: the time '2020-01-01T00:00:00Z' is in the past: give a time in the future"
    )
    assert await refused(box, ctx, "sleep", until="0 9 * * *", reason="r") == (
        "`until`: '0 9 * * *' repeats (a cron expression): give a delay or a time"
    )
    assert door.slept == []
    text = await call(
        box, ctx, "sleep", until="2030-01-07T17:30:00+01:00", reason="the team is back then"
    )
    assert text.startswith("Sleeping until 2030-01-07T16:30:00+00:00 (in 8h 30m) (task 1).")
    door.message_meanwhile = True
    assert await call(box, ctx, "sleep", duration="5m", reason="r") == (
        "Not sleeping: a new message arrived in this thread just now, and it cancels the "
        "sleep. End your turn; that message comes next."
    )
    door.message_meanwhile = False
    text = await call(box, ctx, "sleep", duration="1d 2h", reason="nightly build")
    assert text.startswith("Sleeping until 2030-01-08T10:00:00+00:00 (in 1d 2h) (task 3).")
    assert door.slept == [
        {"thread_id": THREAD, "channel_id": CHANNEL, "reason": "the team is back then"},
        {"thread_id": THREAD, "channel_id": CHANNEL, "reason": "r"},
        {"thread_id": THREAD, "channel_id": CHANNEL, "reason": "nightly build"},
    ]


async def test_a_thread_sees_and_cancels_only_its_own_sleep(
    box: ToolBox, ctx: RecordingToolContext, door: FakeDoor, tmp_path: Path
) -> None:
    neighbour = _ctx(tmp_path, "neighbour", thread_id=OTHER_THREAD, channel_id=CHANNEL)
    await call(box, neighbour, "sleep", duration="1h", reason="theirs")
    await call(box, ctx, "sleep", duration="2h", reason="mine")
    listed = await call(box, ctx, "list_schedules")
    assert listed == (
        "1 scheduled task in this project channel, soonest first:\n"
        "- 2: this thread sleeps until 2030-01-07T10:00:00+00:00 (in 2h)"
    )
    assert await refused(box, ctx, "cancel_schedule", id=1) == (
        "no task 1 in this project channel; list_schedules shows them"
    )
    assert await call(box, ctx, "cancel_schedule", id="2") == 'Cancelled sleep 2 "sleep".'
    assert list(door.tasks_by_id) == [1]


async def test_cancel_names_what_is_wrong_with_the_id(
    box: ToolBox, ctx: RecordingToolContext, door: FakeDoor
) -> None:
    assert await refused(box, ctx, "cancel_schedule") == (
        "`id` is required: the task's number, from list_schedules"
    )
    assert await refused(box, ctx, "cancel_schedule", id="CI check") == (
        "`id` must be a task's number (from list_schedules), not 'CI check'"
    )
    assert await refused(box, ctx, "cancel_schedule", id=True) == (
        "`id` must be a task's number (from list_schedules), not True"
    )
    assert await refused(box, ctx, "cancel_schedule", id=7) == (
        "no task 7 in this project channel; list_schedules shows them"
    )
    await call(box, ctx, "schedule", prompt="Ping.", when="5m", name="ping")
    door.tasks_by_id[1] = attrs.evolve(door.tasks_by_id[1], enabled=False)
    assert await refused(box, ctx, "cancel_schedule", id="#1") == (
        'task 1 "ping" has run already; nothing is left to cancel'
    )


async def test_the_listing_says_how_each_task_stands(
    box: ToolBox, ctx: RecordingToolContext, door: FakeDoor
) -> None:
    await call(box, ctx, "schedule", prompt="Weekly report. " * 10, when="0 7 * * 1", name="week")
    await call(box, ctx, "schedule", prompt="Ping.", when="5m")
    door.tasks_by_id[1] = attrs.evolve(
        door.tasks_by_id[1], paused=True, last_run_at=NOW - 7 * 86400, last_status="timed out"
    )
    door.tasks_by_id[3] = ScheduledTask(
        channel_id=CHANNEL,
        prompt="stand-up",
        next_run_at=NOW + 30,
        created_by=42,
        thread_id=OTHER_THREAD,
        name="stand-up",
        kind="remind",
        created_by_name="Ada",
        task_id=3,
    )
    assert await call(box, ctx, "list_schedules") == (
        "3 scheduled tasks in this project channel, soonest first:\n"
        '- 3: "stand-up", next 2030-01-07T08:00:30+00:00 (in 30s), once, a reminder posted '
        f"in thread {OTHER_THREAD}, by Ada\n"
        "  stand-up\n"
        '- 2: "Ping.", next 2030-01-07T08:05:00+00:00 (in 5m), once, in this thread, '
        f"by agent in thread {THREAD}\n"
        "  Ping.\n"
        '- 1: "week", paused, repeats 0 7 * * 1 (machine timezone), in this thread, '
        f"by agent in thread {THREAD}; last run 2029-12-31T08:00:00+00:00 (7d ago): timed out\n"
        "  Weekly report. Weekly report. Weekly report. Weekly report. Weekly report. Week…"
    )


# With the real door and store


class UnusedTarget:
    """The bot's side; the tools never run a task themselves."""

    async def start_prompt(self, task: ScheduledTask, text: str) -> StartedRun:
        raise AssertionError("a tool ran a task")

    async def interrupt(self, thread_id: int, notice: str) -> None:
        raise AssertionError("a tool interrupted a turn")

    async def post(self, channel_id: int, content: str, *, mention_user_id: int | None) -> None:
        raise AssertionError("a tool posted")


@pytest.fixture
async def real_door(tmp_path: Path) -> AsyncIterator[Schedules]:
    async with await Store.open(tmp_path / "kimaki.sqlite") as store:
        for channel_id in (CHANNEL, OTHER_CHANNEL):
            await store.places.put_channel(
                ChannelRecord(channel_id=channel_id, directory=tmp_path, guild_id=1, app_id=2)
            )
        yield Schedules(
            store=store.schedules, target=UnusedTarget(), local_tz=UTC, clock=lambda: NOW
        )


async def test_the_tools_on_the_real_door(
    nursery: trio.Nursery, tmp_path: Path, real_door: Schedules
) -> None:
    a = _ctx(tmp_path, "a", thread_id=THREAD, channel_id=CHANNEL)
    b = _ctx(tmp_path, "b", thread_id=OTHER_THREAD, channel_id=OTHER_CHANNEL)
    stray = _ctx(tmp_path, "stray", thread_id=99, channel_id=98)  # not a project channel
    control = ControlServer(port=0, data_dir=tmp_path, health=dict)
    tools = schedule_tools(real_door, now=lambda: NOW, local_tz=UTC)
    places = FakeToolPlaces({TOKEN: a, OTHER: b, "stray": stray})
    install_tool_routes(control, ToolBox((*BUILTIN_TOOLS, *tools)), places)
    url = control_url(await nursery.start(control.serve))
    async with relay_session(url, TOKEN) as session:
        daily = await session.call_tool(
            "schedule",
            {"prompt": "Is CI green on main?", "when": "30 9 * * *", "where": "channel"},
        )
        slept = await session.call_tool("sleep", {"duration": "20m", "reason": "CI is running"})
        listed = await session.call_tool("list_schedules", {})
    async with relay_session(url, OTHER) as session:
        theirs = await session.call_tool("cancel_schedule", {"id": 1})
    async with relay_session(url, "stray") as session:
        nowhere = await session.call_tool("schedule", {"prompt": "x", "when": "10m"})
    async with relay_session(url, TOKEN) as session:
        woken = await session.call_tool("cancel_schedule", {"id": 2})
    assert _text(daily) == (
        'Scheduled task 1 "Is CI green on main?".\n'
        "Repeats: 30 9 * * * (machine timezone); next run 2030-01-07T09:30:00+00:00 (in 1h 30m).\n"
        'Each run opens a new thread "⏰ Is CI green on main?" in the project channel.\n'
        "To cancel: cancel_schedule with id 1."
    )
    assert _text(slept).startswith("Sleeping until 2030-01-07T08:20:00+00:00 (in 20m) (task 2).")
    assert _text(listed) == (
        "2 scheduled tasks in this project channel, soonest first:\n"
        "- 2: this thread sleeps until 2030-01-07T08:20:00+00:00 (in 20m)\n"
        '- 1: "Is CI green on main?", next 2030-01-07T09:30:00+00:00 (in 1h 30m), '
        "repeats 30 9 * * * (machine timezone), in a new thread per run, "
        f"by agent in thread {THREAD}\n"
        "  Is CI green on main?"
    )
    assert (theirs.isError, _text(theirs)) == (
        True,
        "no task 1 in this project channel; list_schedules shows them",
    )
    assert nowhere.isError
    assert _text(nowhere).startswith("channel 98 is not a project channel")
    assert (woken.isError, _text(woken)) == (False, 'Cancelled sleep 2 "sleep".')
    [task] = await real_door.tasks()
    assert (task.task_id, task.channel_id, task.thread_id, task.created_by_name) == (
        1,
        CHANNEL,
        None,
        f"agent in thread {THREAD}",
    )
