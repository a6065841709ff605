"""Scheduled tasks against the real daemon (`python -m kimaki`) across in-place restarts
(SIGUSR2) and downtime: a task due while the daemon re-executes itself runs once, none is lost,
and one missed while it was stopped runs late (within the grace) or is skipped, saying so.

Task times are wall-clock, so the tasks are stored a few seconds ahead, in the daemon's own
database (as `kimaki send --send-at` does with no daemon running), and the test waits on the
emulator for what they post; each time a run shows there, the daemon restarts at once, while
the other runs are due, waiting for Discord's rate limit, or being queued in their threads.
The daemon's "opencode" is a stub pointing at a fake OpenCode in this test process (as in
test_ops_replay.py), which records every prompt it receives.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from kimaki.schedules import NewTask, ScheduleError, Schedules, StartedRun
from kimaki.store import ChannelRecord, ScheduledTask, Store, TaskRun
from kimaki.testing.bot import said
from kimaki.testing.daemon import DaemonProcess, map_project, running_daemon, wait_for_health
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.opencode import FakeOpenCode, running_fake_opencode, stub_command
from kimaki.testing.script import Say, TurnScript
from kimaki.testing.traffic import fake_opencode_prompts

Json = Mapping[str, Any]
ANSWER = "checked, all good"


@attrs.define
class Project:
    """The emulator, the fake agent, and a project channel mapped in the daemon's data dir."""

    emulator: DiscordEmulator
    fake: FakeOpenCode
    data: Path
    channel_id: str
    env: dict[str, str]
    logs: list[str] = attrs.Factory(list)

    def daemon(self, **env: str) -> AbstractAsyncContextManager[DaemonProcess]:
        return running_daemon(
            api_url=self.emulator.api_url,
            token=self.emulator.token,
            data_dir=self.data,
            env=self.env | env,
        )

    async def add(self, *tasks: NewTask) -> list[ScheduledTask]:
        """Store tasks as the command line does with no daemon running (validated by the door)."""
        async with await Store.open(self.data / "discord-sessions.db") as store:
            door = Schedules(store=store.schedules, target=None)
            return [await door.add(task) for task in tasks]

    async def add_missed(self, *tasks: ScheduledTask) -> list[ScheduledTask]:
        """Store tasks whose time is already past, as tasks that fell due while the daemon was
        stopped are left (the door refuses a past time, so straight into the store)."""
        async with await Store.open(self.data / "discord-sessions.db") as store:
            return [await store.schedules.add_scheduled_task(task) for task in tasks]

    async def runs(self, tasks: Iterable[ScheduledTask]) -> list[list[TaskRun]]:
        async with await Store.open(self.data / "discord-sessions.db") as store:
            return [await store.schedules.task_runs(_id(task)) for task in tasks]

    def messages(self, channel_id: str) -> list[Json]:
        """The bot's messages in a channel or thread, oldest first."""
        bot = self.emulator.bot_user["id"]
        found = self.emulator.state.messages.get(channel_id, {}).values()
        return sorted((m for m in found if m["author"]["id"] == bot), key=lambda m: int(m["id"]))

    def count(self, channel_id: str, content: str) -> int:
        """The bot's messages that are exactly `content` (a reminder)."""
        return sum(m["content"] == content for m in self.messages(channel_id))

    def answers(self, channel_id: str, text: str) -> int:
        """The bot's messages with `text` as a paragraph (an agent's answer, with its footer)."""
        return sum(said(text)(m) for m in self.messages(channel_id))

    def threads(self, name: str) -> list[Json]:
        return [
            c
            for c in self.emulator.state.channels.values()
            if c.get("parent_id") == self.channel_id and c.get("name") == name
        ]

    async def wait_until(self, done: Callable[[], bool], what: str) -> None:
        await self.emulator.wait_until(
            lambda: True if done() else None,
            describe=lambda: f"{what}\n{self.emulator.transcript(self.channel_id)}",
        )

    async def stop(self, daemon: DaemonProcess) -> None:
        assert await daemon.stop() == 0
        self.logs.append(daemon.log_text())

    def assert_clean_log(self) -> None:
        log = "\n".join(self.logs)
        assert "[ERROR]" not in log
        assert "Traceback" not in log
        assert "could not start" not in log  # a run whose prompt or reminder went nowhere


@asynccontextmanager
async def scheduled_project(tmp_path: Path, *turns: TurnScript) -> AsyncIterator[Project]:
    data, directory = tmp_path / "data", tmp_path / "project"
    directory.mkdir()
    async with (
        open_discord_emulator() as emulator,
        running_fake_opencode(directory, *turns) as (fake, port),
    ):
        agent = tmp_path / "opencode"
        agent.write_text(f'#!/bin/sh\nexec {shlex.join(stub_command(port))} "$@"\n')
        agent.chmod(0o755)
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, directory)
        emulator.wait_timeout = 30.0
        yield Project(emulator, fake, data, channel_id, {"KIMAKI_OPENCODE_PATH": str(agent)})


def _id(task: ScheduledTask) -> int:
    assert task.task_id is not None
    return task.task_id


def at(seconds: float) -> str:
    """An ISO 8601 time `seconds` from now."""
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


def task(project: Project, text: str, when: str, **fields: Any) -> NewTask:
    return NewTask(
        channel_id=int(project.channel_id),
        prompt=text,
        when=when,
        created_by=0,
        created_by_name="command line (tester)",
        name=text,
        **fields,
    )


async def restart(daemon: DaemonProcess, emulator: DiscordEmulator) -> None:
    """SIGUSR2, and wait for the new process image's RESUME and its `/health`."""
    resumes = len(emulator.gateway.resumes)
    daemon.send_signal(signal.SIGUSR2)
    with trio.fail_after(30):
        await emulator.gateway.wait_for_resume(resumes + 1)
    await wait_for_health(daemon)


def _beyond(progress: Callable[[], int], seen: int) -> bool:
    return progress() > seen


async def restart_on_progress(
    daemon: DaemonProcess, project: Project, progress: Callable[[], int], total: int
) -> int:
    """SIGUSR2 each time `progress()` moves on (a reminder posted, a run's thread opened, an
    answer), while the other runs are due, being started or under way, until it reaches
    `total`, and once more after that. Returns how many restarts there were."""
    restarts = seen = 0
    while seen < total:
        await project.wait_until(partial(_beyond, progress, seen), f"stuck at {seen} of {total}")
        seen = progress()
        await restart(daemon, project.emulator)
        restarts += 1
    return restarts


@pytest.mark.slow
async def test_reminders_due_across_restarts_are_posted_once(tmp_path: Path) -> None:
    # Eight reminders in one channel, due over 3 s: more than Discord's 5 posts per 5 s there,
    # so some are waiting for the rate limit when the daemon restarts.
    async with scheduled_project(tmp_path) as project:
        texts = [f"stretch your legs ({n})" for n in range(8)]
        tasks = await project.add(
            *(task(project, text, at(5.0 + 0.4 * n), kind="remind") for n, text in enumerate(texts))
        )

        def posted() -> int:
            return sum(project.count(project.channel_id, f"🔔 {text}") > 0 for text in texts)

        async with project.daemon() as daemon:
            restarts = await restart_on_progress(daemon, project, posted, len(texts))
            await project.stop(daemon)

        assert restarts >= 2
        for text in texts:
            assert project.count(project.channel_id, f"🔔 {text}") == 1, text
        for text, runs in zip(texts, await project.runs(tasks), strict=True):
            assert [run.status for run in runs] == ["posted"], text
        project.assert_clean_log()


@pytest.mark.slow
async def test_a_prompt_due_across_restarts_reaches_the_agent_once(tmp_path: Path) -> None:
    # Each answer streams for about half a second, so a turn is often under way at a restart
    # and handed over to the next process.
    turns = [TurnScript(Say(ANSWER, chunk=3, delay=0.1)) for _ in range(3)]
    async with scheduled_project(tmp_path, *turns) as project:
        names = [f"nightly report {n}" for n in range(3)]
        tasks = await project.add(
            *(task(project, name, at(5.0 + 0.7 * n)) for n, name in enumerate(names))
        )

        def progress() -> int:
            """Threads opened, and answers in them."""
            threads = [t for name in names for t in project.threads(f"⏰ {name}")]
            return len(threads) + sum(project.answers(t["id"], ANSWER) for t in threads)

        async with project.daemon() as daemon:
            restarts = await restart_on_progress(daemon, project, progress, 2 * len(names))
            await project.stop(daemon)

        assert restarts >= 2
        prompts = fake_opencode_prompts(project.fake)
        for name, stored in zip(names, tasks, strict=True):
            [thread] = project.threads(f"⏰ {name}")  # one thread per run, one run
            lines = [m["content"] for m in project.messages(thread["id"])]
            announcement = (
                f"⏰ Scheduled task #{stored.task_id} “{name}”, by command line (tester):"
            )
            assert sum(line.startswith(announcement) for line in lines) == 1, lines
            assert project.answers(thread["id"], ANSWER) == 1, lines
            assert sum(name in prompt for prompt in prompts) == 1, prompts
        for name, runs in zip(names, await project.runs(tasks), strict=True):
            # Answered, or handed over with its turn to the next process ("restarted").
            assert len(runs) == 1, name
            assert runs[0].status in ("answered", "restarted"), (name, runs)
        project.assert_clean_log()


@pytest.mark.slow
async def test_tasks_missed_while_stopped_run_late_within_the_grace(tmp_path: Path) -> None:
    async with scheduled_project(tmp_path) as project:
        async with project.daemon() as daemon:
            await project.stop(daemon)
        # While it was stopped, three tasks fell due: 2 and 3 min ago (within the 5 min
        # grace), and 10 min ago (past it).
        now = time.time()
        channel = int(project.channel_id)
        missed = await project.add_missed(
            ScheduledTask(channel, "water the plants", now - 120, 0, name="plants", kind="remind"),
            ScheduledTask(channel, "check the build", now - 180, 0, name="build check"),
            ScheduledTask(channel, "call the bank", now - 600, 0, name="bank", kind="remind"),
        )
        bank = missed[2]

        async with project.daemon(KIMAKI_TASK_GRACE="5m") as daemon:
            await project.wait_until(
                lambda: project.count(project.channel_id, "🔔 water the plants") > 0,
                "the reminder within the grace was not posted",
            )
            late = await project.emulator.wait_for_message(
                project.channel_id, lambda m: "**plants**" in m["content"]
            )
            assert "running it 2 min" in late["content"]
            assert late["content"].endswith("late (kimaki was not running then).")
            assert int(late["id"]) < int(
                next(
                    m["id"]
                    for m in project.messages(project.channel_id)
                    if m["content"] == "🔔 water the plants"
                )
            )

            await project.wait_until(
                lambda: any(
                    project.answers(t["id"], "ok") for t in project.threads("⏰ build check")
                ),
                "the prompt within the grace was not answered",
            )
            late = await project.emulator.wait_for_message(
                project.channel_id, lambda m: "**build check**" in m["content"]
            )
            assert "running it 3 min" in late["content"]

            skipped = await project.emulator.wait_for_message(
                project.channel_id, lambda m: "**bank**" in m["content"]
            )
            assert "but kimaki was not running; skipped it (missed by 10 min" in skipped["content"]
            assert "more than the 5 min grace period" in skipped["content"]

            # A restart right after catching up runs nothing again.
            resumes = len(project.emulator.gateway.resumes)
            daemon.send_signal(signal.SIGUSR2)
            with trio.fail_after(30):
                await project.emulator.gateway.wait_for_resume(resumes + 1)
            await wait_for_health(daemon)
            await project.stop(daemon)

        assert project.count(project.channel_id, "🔔 water the plants") == 1
        assert project.count(project.channel_id, "🔔 call the bank") == 0
        assert len(project.threads("⏰ build check")) == 1
        assert sum("check the build" in p for p in fake_opencode_prompts(project.fake)) == 1
        [plants_runs, build_runs, bank_runs] = await project.runs(missed)
        assert [run.status for run in plants_runs] == ["posted"]
        assert plants_runs[0].late_by >= 120
        assert [run.status for run in build_runs] in (["answered"], ["restarted"])
        assert [run.status for run in bank_runs] == ["skipped"]
        error = bank_runs[0].error or ""
        assert error.startswith("missed by 10 min"), error
        assert error.endswith("(grace 5 min)"), error
        log = "\n".join(project.logs)
        assert f"scheduled task {bank.task_id} (bank) skipped: missed by 10 min" in log
        project.assert_clean_log()


@attrs.define
class Wall:
    """A wall clock the test moves by hand (a task's time is wall-clock)."""

    now: float = attrs.Factory(time.time)

    def __call__(self) -> float:
        return self.now


@attrs.define
class HeldTarget:
    """A run target whose reminder posts wait until `release`, as a post waiting for
    Discord's rate limit does."""

    posting: trio.Event = attrs.Factory(trio.Event)
    release: trio.Event = attrs.Factory(trio.Event)
    posts: list[str] = attrs.Factory(list)

    async def post(self, channel_id: int, content: str, *, mention_user_id: int | None) -> None:
        self.posting.set()
        await self.release.wait()
        self.posts.append(content)

    async def start_prompt(self, task: ScheduledTask, text: str) -> StartedRun:
        raise AssertionError("only reminders here")

    async def interrupt(self, thread_id: int, notice: str) -> None:
        raise AssertionError("only reminders here")


async def test_before_a_restart_the_run_being_started_finishes_and_nothing_more_starts(
    tmp_path: Path,
) -> None:
    """What the bot does first when SIGUSR2 comes (`Schedules.stop_starting`), on the real
    store: a reminder being posted is posted and recorded before the thread pipeline is
    handed over; what falls due afterwards is left due for the next process."""
    channel = 1_400_000_000_000_000_001
    wall, target = Wall(), HeldTarget()

    def remind(text: str, when: str) -> NewTask:
        return NewTask(channel, text, when, created_by=0, created_by_name="tester", kind="remind")

    async with await Store.open(tmp_path / "kimaki.db") as store:
        await store.places.put_channel(ChannelRecord(channel, tmp_path, guild_id=1, app_id=2))
        door = Schedules(store=store.schedules, target=target, clock=wall)
        async with trio.open_nursery() as nursery:
            await nursery.start(door.run)
            first = await door.add(remind("first", "1m"))
            later = await door.add(remind("later", "2m"))
            wall.now += 61
            await door.add(remind("made meanwhile", "1h"))  # wakes the runner: "first" is due
            with trio.fail_after(10):
                await target.posting.wait()

            stopped = trio.Event()

            async def stop_starting() -> None:
                await door.stop_starting()
                stopped.set()

            nursery.start_soon(stop_starting)
            await trio.testing.wait_all_tasks_blocked()
            assert not stopped.is_set()  # its post is under way
            with pytest.raises(ScheduleError, match="restarting or stopping"):
                await door.run_now(_id(later))
            target.release.set()
            with trio.fail_after(10):
                await stopped.wait()
            assert target.posts == ["🔔 first"]
            assert [run.status for run in await door.runs(_id(first))] == ["posted"]

            # Everything is due now, and a new task wakes the runner: it starts nothing.
            wall.now += 3600
            await door.add(remind("made while restarting", "1m"))
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            assert target.posts == ["🔔 first"]
            nursery.cancel_scope.cancel()

        still_due = [task.name for task in await door.tasks()]
        assert still_due == ["later", "made meanwhile", "made while restarting"]
        assert await door.runs(_id(later)) == []
