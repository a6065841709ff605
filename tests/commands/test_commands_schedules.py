"""`/schedule`, `/remind`, `/tasks` through the emulator, as a person uses them.

Most tests use a small in-memory door (`FakeDoor`) with the real WHEN rules
(`kimaki.schedules.parse_when`), so each view's wording can be driven exactly (a run history,
a task made elsewhere, a run going on); the last one goes through the real `Schedules`, its
store and its runner, to a target that records the runs (the runner itself is tested in
tests/schedules/). The group is installed on the running bot's `Interactions` here (the
composition root does not build it yet).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from commands_support import (
    answer,
    buttons,
    choices,
    command,
    commands_bot,
    ephemeral,
    run,
    select_options,
    updated,
)

from kimaki.schedules import (
    NewTask,
    ScheduleError,
    Schedules,
    parse_when,
)
from kimaki.store import ChannelRecord, ScheduledTask, TaskRun
from kimaki.testing.bot import BotHarness
from kimaki.testing.engine import RunningTurn, open_fake_engine
from kimaki.testing.script import Say

Json = dict[str, Any]


@attrs.define
class FakeDoor:
    """The scheduling door in memory: tasks as `Schedules.add` would store them (WHEN read by
    the real `parse_when`), and what was asked of it."""

    tasks_by_id: dict[int, ScheduledTask] = attrs.Factory(dict)
    history: dict[int, list[TaskRun]] = attrs.Factory(dict)
    added: list[NewTask] = attrs.Factory(list)
    ran: list[int] = attrs.Factory(list)
    running: set[int] = attrs.Factory(set)

    async def add(self, task: NewTask) -> ScheduledTask:
        when = parse_when(task.when, now=time.time(), tz=task.tz)
        self.added.append(task)
        task_id = len(self.added)
        stored = ScheduledTask(
            channel_id=task.channel_id,
            prompt=task.prompt,
            next_run_at=when.first,
            created_by=task.created_by,
            thread_id=task.thread_id,
            schedule=when.cron,
            task_id=task_id,
            name=task.name or task.prompt.splitlines()[0][:60],
            kind=task.kind,
            tz=task.tz,
            created_by_name=task.created_by_name,
            reuse_thread=task.reuse_thread,
            mention_user_id=task.mention_user_id,
        )
        self.tasks_by_id[task_id] = stored
        return stored

    async def tasks(self, *, channel_id: int | None = None) -> list[ScheduledTask]:
        found = [
            t
            for t in self.tasks_by_id.values()
            if t.enabled and (channel_id is None or t.channel_id == channel_id)
        ]
        return sorted(found, key=lambda t: t.next_run_at)

    async def task(self, task_id: int) -> ScheduledTask | None:
        return self.tasks_by_id.get(task_id)

    async def runs(self, task_id: int, *, limit: int = 10) -> list[TaskRun]:
        return self.history.get(task_id, [])[:limit]

    async def pause(self, task_id: int) -> ScheduledTask:
        return self._set(task_id, paused=True)

    async def resume(self, task_id: int) -> ScheduledTask:
        return self._set(task_id, paused=False)

    async def delete(self, task_id: int) -> bool:
        return self.tasks_by_id.pop(task_id, None) is not None

    async def run_now(self, task_id: int) -> None:
        if task_id in self.running:
            raise ScheduleError(f"task {task_id} is running already: wait for its run to end")
        self.ran.append(task_id)

    def _set(self, task_id: int, **changes: Any) -> ScheduledTask:
        task = self.tasks_by_id.get(task_id)
        if task is None:
            raise ScheduleError(f"there is no task {task_id}")
        task = self.tasks_by_id[task_id] = attrs.evolve(task, **changes)
        return task

    def paused(self, task_id: int) -> bool:
        return self.tasks_by_id[task_id].paused

    def put(self, **fields: Any) -> ScheduledTask:
        """A task as if made elsewhere (the command line, another channel)."""
        task_id = max(self.tasks_by_id, default=0) + 100
        fields.setdefault("next_run_at", time.time() + 3600)
        fields.setdefault("created_by", 0)
        task = self.tasks_by_id[task_id] = ScheduledTask(task_id=task_id, **fields)
        return task


@asynccontextmanager
async def schedule_bot(tmp_path: Path) -> AsyncIterator[tuple[BotHarness, FakeDoor]]:
    door = FakeDoor()
    async with (
        open_fake_engine() as engine,
        commands_bot(tmp_path, engine, schedule_commands_door=door) as harness,
    ):
        yield harness, door


def stamps(text: str, style: str = "F") -> list[int]:
    """The Unix times of the Discord timestamps (`<t:...:F>`) in a message."""
    return [int(n) for n in re.findall(rf"<t:(\d+):{style}>", text)]


def press(harness: BotHarness, message: Json, label: str) -> Any:
    found = buttons(message)
    assert label in found, found
    return harness.alice.click_button(message, found[label])


async def pick(harness: BotHarness, listing: Json, task_id: int, *, actor: Any = None) -> Json:
    custom_id, values = select_options(listing)
    assert str(task_id) in values, values
    record = (actor or harness.alice).select(listing, custom_id, [str(task_id)])
    return await updated(harness.emulator, record)


async def test_schedule_in_a_channel_answers_with_the_next_run_for_everyone(
    tmp_path: Path,
) -> None:
    async with schedule_bot(tmp_path) as (harness, door):
        before = time.time()
        reply = await command(
            harness,
            "schedule",
            {"prompt": "check CI\nand fix it", "when": "2h", "name": "CI @everyone"},
        )
        assert not ephemeral(reply)  # the channel sees an agent will run here
        text = reply["content"]
        assert "⏰ Scheduled **CI @\u200beveryone** (task #1, by alice)" in text
        [at] = stamps(text)
        assert before + 7200 - 1 <= at <= time.time() + 7200
        assert f"<t:{at}:R>" in text
        assert 'a new thread "⏰ CI @\u200beveryone" each run' in text
        assert "@everyone" not in text  # a name cannot ping the channel
        [new] = door.added
        assert new.channel_id == harness.project.channel_id
        assert new.thread_id is None
        assert new.prompt == "check CI\nand fix it"
        assert new.kind == "prompt"
        assert new.created_by == int(harness.alice.id)
        assert new.created_by_name == "alice"

        # A cron schedule in a timezone, its runs sharing one thread.
        reply = await command(
            harness,
            "schedule",
            {
                "prompt": "morning report",
                "when": "0 9 * * 1-5",
                "timezone": "Europe/Paris",
                "reuse-thread": True,
            },
        )
        text = reply["content"]
        assert "**morning report** (task #2" in text
        assert "repeating `0 9 * * 1-5` (Europe/Paris)" in text
        assert 'it runs in one thread, "⏰ morning report"' in text
        [at] = stamps(text)
        assert at == parse_when("0 9 * * 1-5", now=before, tz="Europe/Paris").first
        assert door.added[1].reuse_thread
        assert door.added[1].tz == "Europe/Paris"


async def test_schedule_in_a_thread_runs_in_that_thread(tmp_path: Path) -> None:
    async with schedule_bot(tmp_path) as (harness, door):
        message = harness.alice.send_message(harness.channel_id, "hello")
        thread_id = await harness.thread_of(message)
        reply = await command(
            harness,
            "schedule",
            {"prompt": "look again", "when": "30m", "reuse-thread": True},
            channel_id=thread_id,
        )
        assert "it runs in this thread" in reply["content"]
        [new] = door.added
        assert new.thread_id == int(thread_id)
        assert new.channel_id == harness.project.channel_id  # the task goes with its channel
        assert not new.reuse_thread  # meaningless in a thread


async def test_bad_times_say_what_to_fix_and_store_nothing(tmp_path: Path) -> None:
    async with schedule_bot(tmp_path) as (harness, door):
        cases = {
            "2001-01-01T09:00Z": "is in the past",
            "61 * * * *": "invalid cron expression '61 * * * *': the minute field",
            "tomorrow": "cannot read 'tomorrow' as a time",
            "2030-06-01T09:00": "has no timezone",
        }
        for when, fix in cases.items():
            reply = await command(harness, "schedule", {"prompt": "x", "when": when})
            assert ephemeral(reply)
            assert reply["content"].startswith("⚠️ ")
            assert fix in reply["content"], reply["content"]
            assert "Nothing was scheduled." in reply["content"]
        reply = await command(
            harness, "remind", {"when": "0 9 * * *", "text": "x", "timezone": "Mars/Olympus"}
        )
        assert "unknown timezone 'Mars/Olympus'" in reply["content"]
        assert door.tasks_by_id == {}

        refused = await command(
            harness, "schedule", {"prompt": "x", "when": "1h"}, actor=harness.stranger()
        )
        assert "Kimaki role" in refused["content"]
        assert door.tasks_by_id == {}


async def test_remind_pings_the_asker_or_the_chosen_user(tmp_path: Path) -> None:
    async with schedule_bot(tmp_path) as (harness, door):
        reply = await command(harness, "remind", {"when": "10m", "text": "stand-up"})
        assert ephemeral(reply)
        alice = int(harness.alice.id)
        assert f"🔔 Reminder #1 for <@{alice}>" in reply["content"]
        assert "> stand-up" in reply["content"]
        [at] = stamps(reply["content"])
        assert abs(at - (time.time() + 600)) < 5

        bob = harness.emulator.add_user("bob", guild_id=harness.guild_id)
        message = harness.alice.send_message(harness.channel_id, "hello")
        thread_id = await harness.thread_of(message)
        reply = await command(
            harness,
            "remind",
            {"when": "1h", "text": "review the PR", "user": bob.id},
            channel_id=thread_id,
        )
        assert f"for <@{bob.id}>" in reply["content"]
        first, second = door.added
        assert (first.kind, first.mention_user_id, first.thread_id) == ("remind", alice, None)
        assert (second.kind, second.mention_user_id) == ("remind", int(bob.id))
        assert second.thread_id == int(thread_id)  # posted where it was asked
        assert second.prompt == "review the PR"
        assert second.created_by_name == "alice"


async def test_timezone_autocomplete(tmp_path: Path) -> None:
    async with schedule_bot(tmp_path) as (harness, _):
        found = await choices(harness, "schedule", "timezone", "paris")
        assert [c["value"] for c in found] == ["Europe/Paris"]
        assert len(await choices(harness, "remind", "timezone", "america/")) == 25


async def test_tasks_lists_this_channels_tasks_and_acts_on_one(tmp_path: Path) -> None:
    async with schedule_bot(tmp_path) as (harness, door):
        empty = await command(harness, "tasks")
        assert "No scheduled tasks in" in empty["content"]
        assert not empty.get("components")

        await command(harness, "schedule", {"prompt": "nightly build", "when": "0 2 * * *"})
        await command(harness, "remind", {"when": "3h", "text": "lunch"})
        other = await harness.map_channel("other", tmp_path / "other")
        door.put(channel_id=other.channel_id, prompt="elsewhere", name="elsewhere")
        door.history[1] = [
            TaskRun(
                task_id=1,
                started_at=time.time() - 86400,
                ended_at=time.time() - 86000,
                status="timed out",
                thread_id=4242,
                late_by=300,
                error="past its 30 min limit",
            )
        ]
        door._set(1, last_run_at=time.time() - 2 * 86400, last_status="timed out")

        listing = await command(harness, "tasks")
        assert ephemeral(listing)
        text = listing["content"]
        assert f"Scheduled tasks in <#{harness.channel_id}> (2)" in text
        assert "⏰ #1 **nightly build**" in text
        assert "`0 2 * * *`" in text
        assert "last: timed out 2 d ago" in text
        assert "🔔 #2 **lunch**" in text
        assert "not run yet" in text
        assert "by alice" in text
        assert "elsewhere" not in text
        _, values = select_options(listing)
        assert sorted(values) == ["1", "2"]

        view = await pick(harness, listing, 1)
        text = view["content"]
        assert "**nightly build** (task #1): a prompt to the agent" in text
        assert 'a new thread "⏰ nightly build" each run' in text
        assert "Made by alice." in text
        assert "repeating `0 2 * * *`" in text
        assert "timed out (5 min late) in <#4242>: past its 30 min limit" in text
        assert set(buttons(view)) == {"Run now", "Pause", "Delete", "◀ Back"}

        view = await updated(harness.emulator, press(harness, view, "Pause"))
        assert "⏸️ **nightly build** is paused" in view["content"]
        assert door.paused(1)
        assert set(buttons(view)) == {"Run now", "Resume", "Delete", "◀ Back"}
        view = await updated(harness.emulator, press(harness, view, "Resume"))
        assert "is resumed" in view["content"]
        assert not door.paused(1)

        view = await updated(harness.emulator, press(harness, view, "Run now"))
        assert "▶️ **nightly build** runs now." in view["content"]
        assert door.ran == [1]
        door.running.add(1)
        view = await updated(harness.emulator, press(harness, view, "Run now"))
        assert "⚠️ task 1 is running already" in view["content"]
        assert door.ran == [1]  # runs of one task never overlap

        confirm = await updated(harness.emulator, press(harness, view, "Delete"))
        assert "Delete **nightly build** (task #1)?" in confirm["content"]
        view = await updated(harness.emulator, press(harness, confirm, "Keep it"))
        assert 1 in door.tasks_by_id
        assert "**nightly build** (task #1)" in view["content"]
        confirm = await updated(harness.emulator, press(harness, view, "Delete"))
        listing = await updated(harness.emulator, press(harness, confirm, "Yes, delete"))
        assert 1 not in door.tasks_by_id
        assert "🗑️ Deleted **nightly build** (task #1)." in listing["content"]
        assert "(1)" in listing["content"]
        assert select_options(listing)[1] == ["2"]

        # A reminder's view says who it pings.
        view = await pick(harness, listing, 2)
        assert f"a reminder for <@{harness.alice.id}>" in view["content"]
        listing = await updated(harness.emulator, press(harness, view, "◀ Back"))
        assert "🔔 #2 **lunch**" in listing["content"]


async def test_a_view_left_open_acts_on_what_is_there_now(tmp_path: Path) -> None:
    async with schedule_bot(tmp_path) as (harness, door):
        await command(harness, "schedule", {"prompt": "tidy up", "when": "1d"})
        view = await pick(harness, await command(harness, "tasks"), 1)
        await door.delete(1)  # the command line deleted it meanwhile
        gone = await updated(harness.emulator, press(harness, view, "Pause"))
        assert "Task #1 no longer exists." in gone["content"]
        assert set(buttons(gone)) == {"◀ Back"}
        assert door.tasks_by_id == {}
        listing = await updated(harness.emulator, press(harness, gone, "◀ Back"))
        assert "No scheduled tasks" in listing["content"]
        assert door.ran == []


async def test_everywhere_is_for_the_server_owner_and_this_server(tmp_path: Path) -> None:
    async with schedule_bot(tmp_path) as (harness, door):
        await command(harness, "schedule", {"prompt": "here", "when": "1h"})
        other = await harness.map_channel("other", tmp_path / "other")
        door.put(channel_id=other.channel_id, prompt="there", name="there", created_by_name="cli")
        foreign = ChannelRecord(
            channel_id=999_999,
            directory=tmp_path / "foreign",
            guild_id=123,
            app_id=harness.project.app_id,
        )
        await harness.store.places.put_channel(foreign)
        door.put(channel_id=foreign.channel_id, prompt="not ours", name="not ours")

        refused = await command(harness, "tasks", {"everywhere": True})
        assert "Only the server owner" in refused["content"]

        listing = await command(harness, "tasks", {"everywhere": True}, actor=harness.owner)
        text = listing["content"]
        assert "Scheduled tasks in this server (2)" in text
        assert "**here** · next <t:" in text
        assert f"in <#{harness.channel_id}>" in text
        assert "**there**" in text
        assert f"in <#{other.channel_id}>" in text
        assert "not ours" not in text
        there = next(t for t in door.tasks_by_id.values() if t.name == "there")
        assert there.task_id is not None
        view = await pick(harness, listing, there.task_id, actor=harness.owner)
        assert "Made by cli." in view["content"]
        record = harness.owner.click_button(view, buttons(view)["Pause"])
        view = await updated(harness.emulator, record)
        assert door.paused(there.task_id)


async def test_menu_descriptions_are_plain_text_in_utc(tmp_path: Path) -> None:
    """A select menu renders no markdown or `<t:…>`: its times are written out, in UTC."""
    async with schedule_bot(tmp_path) as (harness, door):
        door.put(
            channel_id=harness.project.channel_id,
            prompt="p",
            name="fixed",
            next_run_at=1_900_000_000.0,
            created_by_name="bob",
        )
        record = run(harness, "tasks")
        listing = await answer(harness.emulator, record)
        [menu] = [c for row in listing["components"] for c in row["components"] if c["type"] == 3]
        [opt] = menu["options"]
        assert opt["label"] == "#100 fixed"
        assert opt["description"] == "next 2030-03-17 17:46 UTC · not run yet · by bob"


async def test_many_tasks_fit_one_message_and_one_menu(tmp_path: Path) -> None:
    async with schedule_bot(tmp_path) as (harness, door):
        for n in range(40):
            door.put(
                channel_id=harness.project.channel_id,
                prompt="p",
                name=f"a rather long task name number {n:02}",
                next_run_at=time.time() + 3600 + n,
                created_by_name="command line (ci)",
            )
        listing = await command(harness, "tasks")
        text = listing["content"]
        assert len(text) <= 2000
        assert "Scheduled tasks in" in text
        assert "(40)" in text
        assert "… and " in text  # the rest summed up
        assert "(The menu lists the first 25.)" in text
        _, values = select_options(listing)
        assert len(values) == 25
        assert values[0] == "100"  # the next to run first


async def is_paused(door: Schedules, task_id: int) -> bool:
    task = await door.task(task_id)
    assert task is not None
    return task.paused


async def test_through_the_real_door_and_store(tmp_path: Path) -> None:
    """The bot's own scheduler: the commands store, pause, resume, run (a real thread, the
    engine prompted) and delete."""
    finish = trio.Event()
    prompts: list[str] = []

    prompted = trio.Event()

    async def responder(turn: RunningTurn) -> None:
        prompts.append(turn.prompt)
        prompted.set()
        await finish.wait()  # the run goes on until the test lets it end
        await turn.play(Say("built"))

    async with (
        open_fake_engine() as engine,
        commands_bot(tmp_path, engine) as harness,
    ):
        engine.responder = responder
        door = harness.bot.schedules
        channel = harness.project.channel_id

        reply = await command(
            harness, "schedule", {"prompt": "nightly build", "when": "0 2 * * *", "timezone": "UTC"}
        )
        assert "⏰ Scheduled **nightly build** (task #" in reply["content"]
        refused = await command(harness, "schedule", {"prompt": "x", "when": "61 * * * *"})
        assert "the minute field" in refused["content"]
        await command(harness, "remind", {"when": "3h", "text": "lunch"})
        stored = await harness.store.schedules.list_scheduled_tasks(channel_id=channel)
        assert {(t.name, t.kind, t.schedule, t.created_by_name) for t in stored} == {
            ("nightly build", "prompt", "0 2 * * *", "alice"),
            ("lunch", "remind", None, "alice"),
        }
        nightly = next(t for t in stored if t.name == "nightly build")
        assert nightly.task_id is not None
        [at] = stamps(reply["content"])
        assert at == int(nightly.next_run_at)

        listing = await command(harness, "tasks")
        assert "**nightly build**" in listing["content"]
        assert "**lunch**" in listing["content"]
        view = await pick(harness, listing, nightly.task_id)
        view = await updated(harness.emulator, press(harness, view, "Pause"))
        assert "is paused" in view["content"]
        assert await is_paused(door, nightly.task_id)
        view = await updated(harness.emulator, press(harness, view, "Resume"))
        assert not await is_paused(door, nightly.task_id)

        view = await updated(harness.emulator, press(harness, view, "Run now"))
        assert "runs now" in view["content"]
        await harness.emulator.wait_for_thread(
            str(channel), lambda t: t["name"].startswith("⏰ nightly build")
        )
        await prompted.wait()
        assert "nightly build" in prompts[0]
        assert "• <t:" in view["content"]
        assert ": running" in view["content"]  # its run, as the store has it
        again = await updated(harness.emulator, press(harness, view, "Run now"))
        assert f"⚠️ task {nightly.task_id} is running already" in again["content"]
        assert len(prompts) == 1

        confirm = await updated(harness.emulator, press(harness, again, "Delete"))
        listing = await updated(harness.emulator, press(harness, confirm, "Yes, delete"))
        assert "🗑️ Deleted **nightly build**" in listing["content"]
        assert await door.task(nightly.task_id) is None
        finish.set()
