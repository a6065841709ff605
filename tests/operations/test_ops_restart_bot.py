"""The real daemon with its bot, restarting and stopping while people talk to it.

The daemon (`python -m kimaki`) runs against the Discord emulator; its "opencode" is a stub
process that points it at a fake OpenCode in this test process, so the test scripts the turns
(a turn that holds until released is a turn still running when the signal comes).
"""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from kimaki.testing.bot import bot_paragraphs, said
from kimaki.testing.daemon import (
    DaemonProcess,
    map_project,
    running_daemon,
    wait_for_health,
    within,
)
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.discord._actors import Actor
from kimaki.testing.opencode import (
    FakeOpenCode,
    process_running,
    running_fake_opencode,
    stub_command,
    wait_for_exit,
)
from kimaki.testing.script import Hold, Say, TurnScript


@attrs.define
class Setup:
    emulator: DiscordEmulator
    daemon: DaemonProcess
    fake: FakeOpenCode
    alice: Actor
    channel_id: str

    async def open_thread(self, text: str, reply: str) -> str:
        """Alice writes in the project channel; the id of the thread the bot opens, once the
        agent's `reply` is posted there."""
        message = self.alice.send_message(self.channel_id, text)
        await self.emulator.wait_for_thread(self.channel_id, lambda t: t["id"] == message["id"])
        thread = str(message["id"])
        await self.emulator.wait_for_message(thread, said(reply))
        return thread

    async def server_pid(self) -> int:
        log = await self.daemon.wait_for_log("] ready (pid ")
        return int(log.split("] ready (pid ", 1)[1].split(")", 1)[0])


@asynccontextmanager
async def daemon_with_bot(
    tmp_path: Path, *turns: TurnScript, ignore_sigterm: bool = False
) -> AsyncIterator[Setup]:
    data, project = tmp_path / "data", tmp_path / "project"
    project.mkdir()
    async with (
        open_discord_emulator() as emulator,
        running_fake_opencode(project, *turns) as (fake, port),
    ):
        trap = "trap '' TERM\n" if ignore_sigterm else ""
        agent = tmp_path / "opencode"
        agent.write_text(f'#!/bin/sh\n{trap}exec {shlex.join(stub_command(port))} "$@"\n')
        agent.chmod(0o755)
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={"KIMAKI_OPENCODE_PATH": str(agent)},
        ) as daemon:
            yield Setup(emulator, daemon, fake, workspace.users["alice"], channel_id)


async def test_sigterm_with_a_running_turn_stops_within_10_s(tmp_path: Path) -> None:
    turn = TurnScript(Say("working on it"), Hold())
    async with daemon_with_bot(tmp_path, turn, ignore_sigterm=True) as setup:
        await setup.open_thread("do something long", "working on it")
        server = await setup.server_pid()
        started = trio.current_time()
        assert await setup.daemon.stop(grace=15) == 0
        # The agent server ignores SIGTERM: it got its grace, then SIGKILL, within the 10 s.
        assert trio.current_time() - started < 10
        assert not process_running(server)
        assert await within(setup.emulator.gateway.wait_for_client_close()) == 1000
    log = setup.daemon.log_text()
    assert "SIGTERM received: stopping" in log
    assert "ignored SIGTERM" in log


async def test_sigterm_aborts_running_turns_with_a_notice(tmp_path: Path) -> None:
    turn = TurnScript(Say("working on it"), Hold())
    async with daemon_with_bot(tmp_path, turn) as setup:
        thread = await setup.open_thread("do something long", "working on it")
        assert await setup.daemon.stop() == 0
        assert any(r.path.endswith("/abort") for r in setup.fake.requests)
        assert "⏹ the bot is shutting down" in "\n".join(bot_paragraphs(setup.emulator, thread))


async def test_a_second_sigint_exits_at_once(tmp_path: Path) -> None:
    async with daemon_with_bot(tmp_path, ignore_sigterm=True) as setup:
        await setup.open_thread("hello", "ok")
        server = await setup.server_pid()
        setup.daemon.send_signal(signal.SIGINT)
        # The stop now waits for the agent server, which ignores SIGTERM for 5 s.
        await setup.daemon.wait_for_log("stopping on request")
        started = trio.current_time()
        setup.daemon.send_signal(signal.SIGINT)
        with trio.fail_after(3):
            assert await setup.daemon.process.wait() == 130
        assert trio.current_time() - started < 3
        with trio.fail_after(10):  # no orphan: the parent-death signal takes the server
            await wait_for_exit(server)
    assert "second SIGINT: exiting at once" in setup.daemon.log_text()


async def test_agent_servers_survive_the_restart_and_are_adopted(tmp_path: Path) -> None:
    async with daemon_with_bot(tmp_path) as setup:
        await setup.open_thread("hello", "ok")
        server = await setup.server_pid()
        setup.daemon.send_signal(signal.SIGUSR2)
        await within(setup.emulator.gateway.wait_for_resume())
        await setup.daemon.wait_for_log(f"adopted (pid {server})")
        health = await wait_for_health(setup.daemon)
        assert health["pid"] == setup.daemon.process.pid
        assert process_running(server)
        assert await setup.daemon.stop() == 0
        assert not process_running(server)  # adopted, so stopped with the daemon


async def test_messages_sent_during_the_restart_are_answered_once_in_order(
    tmp_path: Path,
) -> None:
    async with daemon_with_bot(tmp_path) as setup:
        thread = await setup.open_thread("hello", "ok")
        setup.daemon.send_signal(signal.SIGUSR2)
        await setup.daemon.wait_for_log("re-executing")
        during = setup.alice.send_message(thread, "sent while the daemon restarts")
        await within(setup.emulator.gateway.wait_for_resume())
        await setup.emulator.wait_for_message(thread, said("ok"), after=during)
        await setup.open_thread("a new thread after the restart", "ok")
        assert bot_paragraphs(setup.emulator, thread).count("ok") == 2


async def test_a_running_turn_continues_across_the_restart_without_repeats(
    tmp_path: Path,
) -> None:
    turn = TurnScript(Say("before the restart"), Hold(), Say("after the restart"))
    async with daemon_with_bot(tmp_path, turn) as setup:
        thread = await setup.open_thread("do something long", "before the restart")
        setup.daemon.send_signal(signal.SIGUSR2)
        await within(setup.emulator.gateway.wait_for_resume())
        await setup.daemon.wait_for_log("following turn", within=10)
        setup.fake.release()
        await setup.emulator.wait_for_message(thread, said("after the restart"))
        posted = bot_paragraphs(setup.emulator, thread)
        assert posted.count("before the restart") == 1
        assert posted.count("after the restart") == 1


async def test_a_turn_whose_server_died_during_the_restart_ends_with_an_error(
    tmp_path: Path,
) -> None:
    turn = TurnScript(Say("before the restart"), Hold(), Say("never said"))
    async with daemon_with_bot(tmp_path, turn) as setup:
        thread = await setup.open_thread("do something long", "before the restart")
        server = await setup.server_pid()
        setup.daemon.send_signal(signal.SIGUSR2)
        await setup.daemon.wait_for_log("handed over")
        os.kill(server, signal.SIGKILL)
        await within(setup.emulator.gateway.wait_for_resume())
        await setup.daemon.wait_for_log("did not survive the restart", within=10)
        await setup.emulator.wait_for_message(
            thread, lambda m: "stopped while kimaki restarted" in str(m.get("content"))
        )
        setup.fake.release()
        assert "never said" not in bot_paragraphs(setup.emulator, thread)
