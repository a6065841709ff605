"""Nothing outlives the daemon: the tools an agent server started end with it, on every exit path.

The real daemon (`python -m kimaki`) runs against the Discord emulator; its "opencode" is a
script that starts a tool the way a `bash` tool call would, in a session of its own (`setsid`)
and ignoring SIGTERM, SIGHUP and SIGINT, then becomes the stub server of a fake OpenCode in
this process. Each start appends the tool's pid to a file, so the test knows what must be gone.
Whether it is gone is a question about another process: the test polls /proc with a deadline.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from kimaki._reaper import descendants
from kimaki.agents._process import LaunchSpec, child_environment, spawn
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.testing.bot import said
from kimaki.testing.daemon import DaemonProcess, map_project, running_daemon, within
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.discord._actors import Actor
from kimaki.testing.model_server import ModelServer, Reply, opencode_config
from kimaki.testing.opencode import (
    real_opencode_binary,
    running_fake_opencode,
    stub_command,
    wait_for_exit,
)

GONE_WITHIN = 5.0


def tool_script(pid_file: Path, marker: str) -> str:
    """Shell lines that start a detached tool ignoring the polite signals; its pid is appended
    to `pid_file` (and `marker`, a unique sleep length, names it in /proc)."""
    tool = f'trap "" TERM HUP INT; echo $$ >> {shlex.quote(str(pid_file))}; exec sleep {marker}'
    return f"setsid sh -c {shlex.quote(tool)} </dev/null >/dev/null 2>&1 &\n"


async def tool_pids(pid_file: Path, count: int = 1) -> list[int]:
    """The tools started so far, once at least `count` have written their pid (another process
    writes the file: there is nothing to wait on but the file itself)."""
    with trio.fail_after(30):
        while True:
            pids = read_pids(pid_file)
            if len(pids) >= count:
                return pids
            await trio.sleep(0.01)


def read_pids(pid_file: Path) -> list[int]:
    try:
        return [int(line) for line in pid_file.read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            return file.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def marked(marker: str) -> list[int]:
    """Live processes whose command line carries `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as file:
                if marker.encode() in file.read() and alive(int(name)):
                    found.append(int(name))
        except OSError:
            continue
    return found


async def assert_gone(pids: list[int], marker: str | None = None) -> None:
    """Every one of `pids` (and anything carrying `marker`) has exited within `GONE_WITHIN`."""
    deadline = trio.current_time() + GONE_WITHIN
    while trio.current_time() < deadline:
        left = [pid for pid in pids if alive(pid)] + (marked(marker) if marker else [])
        if not left:
            return
        await trio.sleep(0.05)
    raise AssertionError(f"still running {GONE_WITHIN:.0f} s later: {left}")


def unique_marker() -> str:
    return f"97.{os.getpid()}{int(time.monotonic() * 1000) % 100000:05d}"


@attrs.define
class Setup:
    emulator: DiscordEmulator
    daemon: DaemonProcess
    alice: Actor
    channel_id: str
    pid_file: Path
    marker: str

    async def open_thread(self) -> str:
        message = self.alice.send_message(self.channel_id, "run something long")
        await self.emulator.wait_for_thread(self.channel_id, lambda t: t["id"] == message["id"])
        thread = str(message["id"])
        await within(self.emulator.wait_for_message(thread, said("ok")))
        return thread

    async def server_pid(self, nth: int = 1) -> int:
        """The pid the daemon manages (the reaper's) at its `nth` start."""
        with trio.fail_after(30):
            while True:
                starts = self.daemon.log_text().split("] ready (pid ")
                if len(starts) > nth:
                    return int(starts[nth].split(")", 1)[0])
                await trio.sleep(0.05)


@asynccontextmanager
async def daemon_with_tool(
    tmp_path: Path, *, ignore_sigterm: bool = False, env: dict[str, str] | None = None
) -> AsyncIterator[Setup]:
    data, project = tmp_path / "data", tmp_path / "project"
    project.mkdir()
    pid_file, marker = tmp_path / "tool.pids", unique_marker()
    async with (
        open_discord_emulator() as emulator,
        running_fake_opencode(project) as (_fake, port),
    ):
        trap = "trap '' TERM\n" if ignore_sigterm else ""
        agent = tmp_path / "opencode"
        agent.write_text(
            f"#!/bin/sh\n{trap}{tool_script(pid_file, marker)}"
            f'exec {shlex.join(stub_command(port))} "$@"\n'
        )
        agent.chmod(0o755)
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={"KIMAKI_OPENCODE_PATH": str(agent), **(env or {})},
        ) as daemon:
            setup = Setup(emulator, daemon, workspace.users["alice"], channel_id, pid_file, marker)
            try:
                yield setup
            finally:
                for pid in marked(marker):  # never leave one behind, whatever the outcome
                    os.kill(pid, signal.SIGKILL)


async def test_sigterm_ends_the_tools_of_agent_servers(tmp_path: Path) -> None:
    async with daemon_with_tool(tmp_path) as setup:
        await setup.open_thread()
        tools = await tool_pids(setup.pid_file)
        assert alive(tools[0])
        assert await setup.daemon.stop() == 0
        await assert_gone(tools, setup.marker)


async def test_a_second_sigint_ends_the_tools_too(tmp_path: Path) -> None:
    async with daemon_with_tool(tmp_path, ignore_sigterm=True) as setup:
        await setup.open_thread()
        tools = await tool_pids(setup.pid_file)
        setup.daemon.send_signal(signal.SIGINT)
        await setup.daemon.wait_for_log("stopping on request")
        setup.daemon.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await setup.daemon.process.wait() == 130
        await assert_gone(tools, setup.marker)


async def test_sigkill_of_the_daemon_ends_the_tools(tmp_path: Path) -> None:
    async with daemon_with_tool(tmp_path) as setup:
        await setup.open_thread()
        tools = await tool_pids(setup.pid_file)
        server = await setup.server_pid()
        setup.daemon.process.kill()
        await setup.daemon.process.wait()
        await assert_gone([server, *tools], setup.marker)


async def test_sigkill_of_the_server_ends_its_tools(tmp_path: Path) -> None:
    async with daemon_with_tool(tmp_path) as setup:
        await setup.open_thread()
        [tool] = await tool_pids(setup.pid_file)
        managed = await setup.server_pid()
        [server] = [pid for pid in descendants(managed) if pid != tool]  # the stub itself
        os.kill(server, signal.SIGKILL)
        await assert_gone([tool, managed])
        assert await setup.daemon.stop() == 0
        await assert_gone(await tool_pids(setup.pid_file), setup.marker)


async def test_restart_agent_server_ends_the_tools_of_the_old_one(tmp_path: Path) -> None:
    async with daemon_with_tool(tmp_path) as setup:
        thread = await setup.open_thread()
        [tool] = await tool_pids(setup.pid_file)
        guild_id = setup.emulator.state.channel(setup.channel_id).get("guild_id")
        await setup.emulator.wait_until(
            lambda: setup.emulator.state.find_command("restart-agent-server", guild_id)
        )
        record = setup.alice.run_command(thread, "restart-agent-server")
        await within(setup.emulator.wait_for_interaction_response(record))
        await setup.server_pid(2)
        await assert_gone([tool])
        assert len(await tool_pids(setup.pid_file, 2)) == 2  # the new server started its own
        assert await setup.daemon.stop() == 0
        await assert_gone(await tool_pids(setup.pid_file), setup.marker)


async def test_idle_stop_ends_the_tools(tmp_path: Path) -> None:
    async with daemon_with_tool(tmp_path, env={"KIMAKI_AGENT_IDLE_TIMEOUT": "1"}) as setup:
        await setup.open_thread()
        tools = await tool_pids(setup.pid_file)
        await setup.daemon.wait_for_log("; stopping it")
        await assert_gone(tools, setup.marker)
        assert setup.daemon.process.returncode is None


# ----------------------------------------------------------------------------- the reaper


async def test_a_stopped_server_takes_a_detached_tool_that_ignores_sigterm(
    tmp_path: Path,
) -> None:
    pid_file, marker = tmp_path / "tool.pids", unique_marker()
    script = f"{tool_script(pid_file, marker)}trap '' TERM\nexec sleep 1000\n"
    spec = LaunchSpec(argv=("sh", "-c", script), cwd=tmp_path, env=child_environment())
    process = spawn(spec)
    try:
        [tool] = await tool_pids(pid_file)
        started = trio.current_time()
        returncode = await process.stop(grace=0.5)
        assert returncode == -signal.SIGKILL  # the server ignored SIGTERM: killed after grace
        assert trio.current_time() - started < GONE_WITHIN
        await assert_gone([tool], marker)
    finally:
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)
        await process.aclose_streams()


async def test_the_server_is_killed_if_the_reaper_is(tmp_path: Path) -> None:
    spec = LaunchSpec(argv=("sleep", "1000"), cwd=tmp_path, env=child_environment())
    process = spawn(spec)
    try:
        with trio.fail_after(10):
            while True:
                if started := descendants(process.pid):
                    break
                await trio.sleep(0.01)
        [server] = started
        os.kill(process.pid, signal.SIGKILL)
        with trio.fail_after(GONE_WITHIN):
            await wait_for_exit(server)
    finally:
        await process.stop()
        await process.aclose_streams()


# ----------------------------------------------------------------------------- real opencode


@pytest.mark.e2e
@pytest.mark.slow
async def test_real_opencode_stopped_takes_its_running_bash_tool(tmp_path: Path) -> None:
    """The reported case: `opencode serve` running a `bash` tool call that moved to its own
    session and ignores SIGTERM; an orderly stop of the daemon's engine must end it."""
    binary = real_opencode_binary()
    pid_file, marker = tmp_path / "tool.pids", unique_marker()
    project = tmp_path / "project"
    project.mkdir()
    tool = f'trap "" TERM HUP INT; echo $$ >> {pid_file}; exec sleep {marker}'
    bash = {"command": f"setsid sh -c {shlex.quote(tool)}", "description": "Run it"}
    model = ModelServer([Reply.tool("bash", bash), Reply.text("done")])
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(model.serve)
            content = opencode_config(port, permission={"bash": "allow"})
            config = OpenCodeConfig(
                command=(binary,),
                home_for=lambda directory: tmp_path / "home",
                extra_env={"OPENCODE_CONFIG_CONTENT": json.dumps(content)},
                ready_timeout=60.0,
            )
            async with open_opencode_engine(config) as engine:
                session = await engine.open_session(project)
                await session.prompt("run it")
                [tool_pid] = await tool_pids(pid_file)
                assert alive(tool_pid)
            await assert_gone([tool_pid], marker)
            nursery.cancel_scope.cancel()
    finally:
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)
