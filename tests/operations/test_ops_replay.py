"""Exactly once against the real daemon: SIGKILL at random points while people write, open
threads and run commands (every restart RESUMEs from the stored sequence and the emulator
replays what came after it), and SIGUSR2 again and again under the same traffic. Nothing may
be answered, prompted or run twice, and no error may reach the log.

The daemon's "opencode" is a stub pointing at a fake OpenCode in this test process, so the
agent (and a turn it is running) outlives the daemon, as a real agent server adopted across a
restart would; the fake records every prompt it receives.
"""

from __future__ import annotations

import random
import shlex
import signal
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs
import trio

from kimaki.testing.bot import said
from kimaki.testing.daemon import DaemonProcess, map_project, running_daemon, within
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.discord._actors import Actor
from kimaki.testing.opencode import FakeOpenCode, running_fake_opencode, stub_command
from kimaki.testing.traffic import Traffic, TrafficReport, fake_opencode_prompts


@attrs.define
class Busy:
    """The emulator, the fake agent, and people using a project channel."""

    emulator: DiscordEmulator
    fake: FakeOpenCode
    data: Path
    env: dict[str, str]
    channel_id: str
    alice: Actor
    bob: Actor
    traffic: Traffic
    logs: list[str] = attrs.Factory(list)

    def daemon(self) -> AbstractAsyncContextManager[DaemonProcess]:
        return running_daemon(
            api_url=self.emulator.api_url,
            token=self.emulator.token,
            data_dir=self.data,
            env=self.env,
        )

    async def start_traffic(self, nursery: trio.Nursery) -> list[str]:
        """Two conversations in threads, new threads and `/new-session`s, until `stop`."""
        threads = []
        for person in (self.alice, self.bob):
            opened = person.send_message(self.channel_id, f"hello from {person.name}")
            threads.append(str(opened["id"]))
            await self.emulator.wait_for_message(threads[-1], said("ok"))
        for person, thread in zip((self.alice, self.bob), threads, strict=True):
            nursery.start_soon(self.traffic.converse, person, thread)
        nursery.start_soon(self.traffic.open_threads, self.bob, self.channel_id, 1.5)
        nursery.start_soon(self.traffic.run_commands, self.alice, self.channel_id, 2.0)
        return threads

    async def finish(self, daemon: DaemonProcess) -> TrafficReport:
        self.traffic.stop.set()
        await self.traffic.settle(within=10)
        assert await daemon.stop() == 0
        self.logs.append(daemon.log_text())
        return self.traffic.report(fake_opencode_prompts(self.fake))

    def assert_clean_log(self) -> None:
        log = "\n".join(self.logs)
        assert "[ERROR]" not in log
        assert "Traceback" not in log
        assert "already been" not in log  # 40060 acknowledged, 160004 thread created


@asynccontextmanager
async def busy_project(tmp_path: Path) -> AsyncIterator[Busy]:
    data, project = tmp_path / "data", tmp_path / "project"
    project.mkdir()
    async with (
        open_discord_emulator() as emulator,
        running_fake_opencode(project) as (fake, port),
    ):
        agent = tmp_path / "opencode"
        agent.write_text(f'#!/bin/sh\nexec {shlex.join(stub_command(port))} "$@"\n')
        agent.chmod(0o755)
        workspace = emulator.create_workspace(users=["alice", "bob"])
        channel_id = await map_project(data, emulator, workspace, project)
        emulator.wait_timeout = 20.0  # an answer later than this counts as lost
        yield Busy(
            emulator,
            fake,
            data,
            {"KIMAKI_OPENCODE_PATH": str(agent)},
            channel_id,
            workspace.users["alice"],
            workspace.users["bob"],
            Traffic(emulator),
        )


async def test_sigkill_under_traffic_answers_and_runs_everything_once(tmp_path: Path) -> None:
    chance = random.Random(19)  # the kill points: random, the same every run
    async with busy_project(tmp_path) as busy, trio.open_nursery() as people:
        gateway = busy.emulator.gateway
        async with busy.daemon() as first:
            await busy.start_traffic(people)
            await trio.sleep(chance.uniform(0.3, 1.5))
            first.process.kill()
            await first.process.wait()
            busy.logs.append(first.log_text())
        for _ in range(3):
            resumes = len(gateway.resumes)
            async with busy.daemon() as again:
                await within(gateway.wait_for_resume(resumes + 1))
                await trio.sleep(chance.uniform(0.3, 1.5))
                again.process.kill()
                await again.process.wait()
                busy.logs.append(again.log_text())
        resumes = len(gateway.resumes)
        async with busy.daemon() as last:
            await within(gateway.wait_for_resume(resumes + 1))
            await trio.sleep(1.0)
            report = await busy.finish(last)

    assert report.messages > 10, report.summary()
    assert report.commands > 3, report.summary()
    assert report.duplicate_prompts == 0, report.summary()
    assert report.duplicated == 0, report.summary()
    assert report.commands_twice == 0, report.summary()
    assert report.lost == 0, report.summary()
    busy.assert_clean_log()
    assert "resumed session" in "\n".join(busy.logs)


async def test_sigusr2_under_traffic_prompts_nothing_twice(tmp_path: Path) -> None:
    chance = random.Random(20)
    async with busy_project(tmp_path) as busy, trio.open_nursery() as people:
        gateway = busy.emulator.gateway
        async with busy.daemon() as daemon:
            await busy.start_traffic(people)
            for restart in range(20):
                await trio.sleep(chance.uniform(0.1, 0.6))
                daemon.send_signal(signal.SIGUSR2)
                await within(gateway.wait_for_resume(restart + 1))
            await trio.sleep(1.0)
            report = await busy.finish(daemon)

    assert report.duplicate_prompts == 0, report.summary()
    assert report.duplicated == 0, report.summary()
    assert report.commands_twice == 0, report.summary()
    assert report.commands_not_run == 0, report.summary()
    assert report.lost == 0, report.summary()
    busy.assert_clean_log()
