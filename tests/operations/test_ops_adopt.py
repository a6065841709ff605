"""Agent servers across an in-place restart: handed over by one engine, adopted by the next.

The in-process tests hand a server from one engine to another inside the test process (the
server stays a child of the same pid, as it does across `os.execv`); the last test does the
real thing, a stand-in daemon that re-executes itself with `kimaki._restart.exec_self`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki.agents import AgentServerHandover, EventQueue, ServerState, TextCompleted, TurnEnded
from kimaki.agents.opencode import open_opencode_engine
from kimaki.testing.engine import until_turn_end
from kimaki.testing.opencode import (
    process_running,
    real_opencode_binary,
    running_fake_opencode,
    stub_config,
    wait_for_exit,
)
from kimaki.testing.script import Hold, Say, TurnScript


def open_pipes() -> set[str]:
    """What this process's fds point to, e.g. `pipe:[1234]`."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return found


async def first_text(events: EventQueue) -> TextCompleted:
    with trio.fail_after(10):
        async for event in events:
            if isinstance(event, TextCompleted):
                return event
    raise AssertionError("no text")


async def hand_over_a_running_turn(
    tmp_path: Path, port: int
) -> tuple[list[AgentServerHandover], str, str, TextCompleted]:
    """Engine A starts a turn that says something then holds; hands its server over."""
    async with open_opencode_engine(stub_config(port)) as engine:
        session = await engine.open_session(tmp_path)
        turn_id = await session.prompt("go")
        before = await first_text(session.events)
        handovers = await engine.handover()
        assert engine.server(tmp_path).state is ServerState.STOPPED
    return handovers, session.session_id, turn_id, before


async def hand_over_an_idle_server(tmp_path: Path, port: int) -> list[AgentServerHandover]:
    """Engine A starts its server, no turn, and hands it over."""
    async with open_opencode_engine(stub_config(port)) as engine:
        await engine.server(tmp_path).connection()
        return await engine.handover()


async def test_a_live_server_is_adopted_and_its_turn_continues(tmp_path: Path) -> None:
    turn = TurnScript(Say("before the restart"), Hold(), Say("after the restart"))
    async with running_fake_opencode(tmp_path, turn) as (fake, port):
        handovers, session_id, turn_id, before = await hand_over_a_running_turn(tmp_path, port)
        [handover] = handovers
        assert handover.engine == "opencode"
        assert handover.directory == await trio.Path(tmp_path).resolve()
        assert handover.port == port  # the stub prints the fake's port as its own
        assert handover.password
        # Leaving engine A stopped nothing: the server keeps running (and working).
        assert process_running(handover.pid)
        assert handover.stdout_fd is not None
        assert os.fstat(handover.stdout_fd).st_ino == os.stat(f"/proc/{handover.pid}/fd/1").st_ino
        requests_before = len(fake.requests)

        async with open_opencode_engine(stub_config(port), adopt=handovers) as engine:
            server = engine.server(tmp_path)
            with trio.fail_after(10):
                await server.wait_for_state(ServerState.READY)
            assert server.statistics().pid == handover.pid
            assert server.statistics().starts == 0  # adopted, not started
            health = [r for r in fake.requests[requests_before:] if r.path == "/global/health"]
            assert health, "the adopted server was health-checked"

            session = await engine.open_session(tmp_path, resume_id=session_id)
            await session.resume_turn(turn_id)
            fake.release()
            events = await until_turn_end(session.events)
            # What was final before the restart comes again, with the same part id (a renderer
            # skips it by that id); then the rest of the turn.
            texts = [(e.part_id, e.text) for e in events if isinstance(e, TextCompleted)]
            assert texts[0] == (before.part_id, "before the restart")
            assert [text for _, text in texts] == ["before the restart", "after the restart"]
            assert events[-1] == TurnEnded(turn_id, "end_turn")
        # The adopted server is this engine's now: stopped and reaped with it.
        assert not process_running(handover.pid)


async def test_a_server_that_died_during_the_restart_is_replaced(tmp_path: Path) -> None:
    turn = TurnScript(Say("before the restart"), Hold(), Say("never said"))
    async with running_fake_opencode(tmp_path, turn) as (fake, port):
        handovers, session_id, turn_id, _ = await hand_over_a_running_turn(tmp_path, port)
        [handover] = handovers
        assert handover.stdout_fd is not None
        pipe = os.readlink(f"/proc/self/fd/{handover.stdout_fd}")
        os.kill(handover.pid, signal.SIGKILL)
        await wait_for_exit(handover.pid)

        async with open_opencode_engine(stub_config(port), adopt=handovers) as engine:
            server = engine.server(tmp_path)
            assert server.state is ServerState.STOPPED  # nothing adopted
            session = await engine.open_session(tmp_path, resume_id=session_id)  # starts one
            assert server.statistics().pid not in (None, handover.pid)
            await session.resume_turn(turn_id)
            events = await until_turn_end(session.events)
            end = events[-1]
            assert isinstance(end, TurnEnded)
            assert (end.turn_id, end.stop_reason) == (turn_id, "error")
            assert "stopped while kimaki restarted" in (end.message or "")
            fake.release()
        # The dead server's output pipes were closed along the way.
        assert pipe not in open_pipes()


async def test_a_server_that_fails_its_health_check_is_stopped_not_adopted(
    tmp_path: Path,
) -> None:
    async with running_fake_opencode(tmp_path) as (fake, port):
        handovers = await hand_over_an_idle_server(tmp_path, port)
        [handover] = handovers
        fake.unhealthy = True
        async with open_opencode_engine(
            stub_config(port, adopt_timeout=0.5), adopt=handovers
        ) as engine:
            server = engine.server(tmp_path)
            await wait_for_exit(handover.pid)  # stopped: it is not the server it was
            with trio.fail_after(10):
                await server.wait_for_state(ServerState.STOPPED)
            assert "could not be adopted" in (server.statistics().last_error or "")
            fake.unhealthy = False
            connection = await server.connection()  # the next request starts a new one
            assert connection.process.pid != handover.pid


async def test_records_of_a_dead_or_foreign_pid_are_never_signalled(tmp_path: Path) -> None:
    # Not a child of this process (the test's parent): adopting it must not touch it.
    stranger = AgentServerHandover("opencode", tmp_path, os.getppid(), 1, "pw-abcdefgh", 0.0)
    async with (
        running_fake_opencode(tmp_path) as (_fake, port),
        open_opencode_engine(stub_config(port), adopt=[stranger]) as engine,
    ):
        assert engine.server(tmp_path).state is ServerState.STOPPED
    assert process_running(os.getppid())


# ----------------------------------------------------------------------------- a real exec

_STAND_IN = """
import json, os, sys, trio
from pathlib import Path
from kimaki._restart import RestartMarker, exec_self, take_restart_marker
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.store import Store

directory, database, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
config = OpenCodeConfig(command=tuple(command), home_for=lambda d: directory / "home")
marker = take_restart_marker()

def say(**fields):
    print(json.dumps(fields), flush=True)

async def before_exec():
    async with await Store.open(database) as store:
        async with open_opencode_engine(config) as engine:
            connection = await engine.server(directory).connection()
            say(phase="first", pid=os.getpid(), server=connection.process.pid)
            handovers = await engine.handover()
        await store.handover.save_agent_servers(handovers)
    return [fd for h in handovers for fd in (h.stdout_fd, h.stderr_fd) if fd is not None]

async def after_exec():
    async with await Store.open(database) as store:
        handovers = await store.handover.take_agent_servers()
    async with open_opencode_engine(config, adopt=handovers) as engine:
        server = engine.server(directory)
        connection = await server.connection()
        fd = handovers[0].stdout_fd
        say(
            phase="second",
            pid=os.getpid(),
            server=connection.process.pid,
            adopted=connection.process.adopted,
            starts=server.statistics().starts,
            same_pipe=os.fstat(fd).st_ino == os.stat(f"/proc/{connection.process.pid}/fd/1").st_ino,
            version=connection.version,
        )
        await trio.sleep_forever()

if marker is None:
    fds = trio.run(before_exec)
    exec_self(RestartMarker(os.getpid(), 0.0, "test"), pass_fds=fds)
else:
    trio.run(after_exec)
"""


async def run_stand_in(tmp_path: Path, command: list[str]) -> list[dict[str, Any]]:
    """Start the stand-in, read both phases' reports, SIGKILL it; returns the reports."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _STAND_IN, str(tmp_path), str(tmp_path / "db"), *command],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    reports: list[dict[str, Any]] = []
    try:
        buffer = b""
        with trio.fail_after(60):
            while len(reports) < 2:
                data = await process.stdout.receive_some(4096)
                if not data:
                    raise AssertionError(f"the stand-in exited: {reports}")
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    reports.append(json.loads(line))
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
            await process.stdout.aclose()
    return reports


async def test_a_server_survives_the_exec_and_is_adopted(tmp_path: Path) -> None:
    fake_opencode = [sys.executable, "-m", "kimaki.testing.opencode"]
    first, second = await run_stand_in(tmp_path, fake_opencode)
    assert first["phase"] == "first"
    assert second == {
        "phase": "second",
        "pid": first["pid"],  # execv: the same process
        "server": first["server"],  # the same server, still its child
        "adopted": True,
        "starts": 0,
        "same_pipe": True,  # its stdout is the pipe the first image read
        "version": "1.18.33",
    }
    # The stand-in was SIGKILLed: the adopted server goes with it (parent-death signal).
    with trio.fail_after(10):
        await wait_for_exit(first["server"])


@pytest.mark.e2e
@pytest.mark.slow
async def test_the_real_opencode_survives_the_exec_and_is_adopted(tmp_path: Path) -> None:
    first, second = await run_stand_in(tmp_path, [real_opencode_binary()])
    assert (second["pid"], second["server"]) == (first["pid"], first["server"])
    assert (second["adopted"], second["starts"], second["same_pipe"]) == (True, 0, True)
    with trio.fail_after(20):
        await wait_for_exit(first["server"])
