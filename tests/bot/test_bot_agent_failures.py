"""What a thread reads when its agent server cannot serve it: one line that says why and what
to do, never an errno or a traceback, and never a message silently dropped.

The OpenCode engine runs real server processes here (the fake `opencode` run as a process, or a
stub in front of the fake in this process); the bot talks to the Discord emulator.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki.agents import EngineUnavailableError, RestartPolicy, ServerState
from kimaki.agents.opencode import OpenCodeConfig, OpenCodeEngine, open_opencode_engine
from kimaki.testing.bot import BotHarness, bot_paragraphs, running_bot
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.engine import FakeEngine
from kimaki.testing.opencode import running_fake_opencode, stub_command
from kimaki.testing.script import Crash, Say, TurnScript

FAKE = (sys.executable, "-m", "kimaki.testing.opencode")
FAST = RestartPolicy(initial_delay=0.01, max_delay=0.05, max_crashes=3)


@asynccontextmanager
async def opencode_harness(
    tmp_path: Path, **config: Any
) -> AsyncIterator[tuple[OpenCodeEngine, BotHarness]]:
    options: dict[str, Any] = {"command": FAKE, "policy": FAST, "stop_grace": 2.0}
    options.update(config)
    async with (
        open_discord_emulator() as emulator,
        open_opencode_engine(OpenCodeConfig(**options)) as engine,
        running_bot(emulator, engine, tmp_path / "data") as harness,
    ):
        yield engine, harness


async def _first_line_in_thread(harness: BotHarness, text: str) -> tuple[str, str]:
    """Send `text` in the project channel; the thread and the bot's first message there."""
    message = harness.alice.send_message(harness.channel_id, text)
    thread_id = await harness.thread_of(message)
    with trio.fail_after(30):
        reply = await harness.emulator.wait_for_message(thread_id)
    return thread_id, str(reply["content"])


async def _answered(emulator: DiscordEmulator, thread_id: str, text: str) -> None:
    with trio.fail_after(30):
        await emulator.wait_for_message(thread_id, lambda m: text in str(m["content"]))


async def test_no_opencode_installed_gets_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    async with opencode_harness(tmp_path, command=("opencode",)) as (_engine, harness):
        thread_id, line = await _first_line_in_thread(harness, "hello")
        assert line == (
            "⚠️ opencode is not installed (`opencode`): install it with "
            "`npm install -g opencode-ai` or point KIMAKI_OPENCODE_PATH at it; "
            "`kimaki doctor` checks the setup"
        )
        assert bot_paragraphs(harness.emulator, thread_id) == [line]


async def test_a_server_that_exits_at_once_gets_one_line(tmp_path: Path) -> None:
    command = (*FAKE, "--exit-at-start", "3")
    async with opencode_harness(tmp_path, command=command) as (_engine, harness):
        _thread_id, line = await _first_line_in_thread(harness, "hello")
        assert line.startswith("⚠️ The agent could not be started: opencode[")
        assert line.endswith(
            "exited with code 3 while starting: fake opencode: refusing to start as scripted "
            "(`kimaki doctor` checks the setup)"
        )
        assert "\n" not in line


async def test_a_server_killed_while_starting_answers_the_message_and_restarts(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    command = (*FAKE, "--listen-gate", str(gate))
    async with opencode_harness(tmp_path, command=command) as (engine, harness):
        server = engine.server(tmp_path / "data" / "project")
        message = harness.alice.send_message(harness.channel_id, "first message")
        thread_id = await harness.thread_of(message)
        os.kill((await server.wait_for_process()).pid, signal.SIGKILL)
        with trio.fail_after(30):
            reply = await harness.emulator.wait_for_message(thread_id)
        assert str(reply["content"]).startswith("⚠️ The agent could not be started: opencode[")
        assert "exited with code -9 while starting" in str(reply["content"])
        gate.unlink()
        with trio.fail_after(30):
            await server.wait_for_state(ServerState.READY)  # restarted on its own
        harness.alice.send_message(thread_id, "second message")
        await _answered(harness.emulator, thread_id, "ok")
        assert server.statistics().crashes == 1


async def test_a_prompt_the_engine_cannot_take_gets_one_line(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    """The server went away between opening the session and taking the prompt: the line is
    said (it used to be swallowed by the turn's cancelled nursery, with an UnboundLocalError)."""
    fake_engine.prompt_error = EngineUnavailableError("opencode[/p] exited unexpectedly (code -9)")
    thread_id, line = await _first_line_in_thread(harness, "hello")
    assert line == (
        "⚠️ The agent could not take the message: opencode[/p] exited unexpectedly (code -9)"
    )
    fake_engine.prompt_error = None
    harness.alice.send_message(thread_id, "again")  # the thread goes on
    await _answered(harness.emulator, thread_id, "echo: again")
    assert bot_paragraphs(harness.emulator, thread_id).count(line) == 1


async def test_a_server_given_up_says_so_once_and_the_next_message_is_served(
    tmp_path: Path,
) -> None:
    project = tmp_path / "data" / "project"
    async with running_fake_opencode(project, TurnScript(Say("working"), Crash())) as (
        fake,
        port,
    ):
        config = OpenCodeConfig(
            command=stub_command(port),
            policy=RestartPolicy(initial_delay=0.01, max_crashes=1),
            stream_backoff=(0.01, 0.05),
            stop_grace=2.0,
        )
        async with (
            open_discord_emulator() as emulator,
            open_opencode_engine(config) as engine,
            running_bot(emulator, engine, tmp_path / "data") as harness,
        ):

            def crash() -> None:
                process = engine.server(project).process
                assert process is not None
                os.kill(process.pid, signal.SIGKILL)

            fake.on_crash = crash
            message = harness.alice.send_message(harness.channel_id, "go")
            thread_id = await harness.thread_of(message)
            with trio.fail_after(30):
                await emulator.wait_for_message(
                    thread_id, lambda m: "crashed 1 times within 60 s" in str(m["content"])
                )
            harness.alice.send_message(thread_id, "are you back?")
            await _answered(emulator, thread_id, "ok")
            said = bot_paragraphs(emulator, thread_id)
            notices = [p for p in said if p.startswith("⚠️")]
            assert len(notices) == 1, said
            assert notices[0].startswith("⚠️ opencode[")
            assert notices[0].endswith("not restarting it until the next request.")
