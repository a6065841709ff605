"""The real daemon (`python -m kimaki`) restarting in place, stopping, and what systemd hears."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import kimaki
from kimaki._restart import (
    LOG_FILE_ENV,
    RESTART_ENV,
    RestartMarker,
    restart_command,
    take_restart_marker,
)
from kimaki.testing.daemon import running_daemon, wait_for_health, within
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator


class NotifySocket:
    """A datagram socket standing in for systemd's `$NOTIFY_SOCKET`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._changed = trio.lowlevel.ParkingLot()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            await sock.bind(str(self.path))
            task_status.started()
            while True:
                self.messages.append((await sock.recv(4096)).decode())
                self._changed.unpark_all()

    def count(self, message: str) -> int:
        return self.messages.count(message)

    async def wait_for(self, message: str, count: int = 1) -> None:
        with trio.fail_after(30):
            while self.count(message) < count:
                await self._changed.park()

    def first_line_index(self, prefix: str, start: int = 0) -> int:
        for index in range(start, len(self.messages)):
            if self.messages[index].startswith(prefix):
                return index
        raise AssertionError(f"no {prefix!r} after {start} in {self.messages}")


@asynccontextmanager
async def notify_socket() -> AsyncIterator[NotifySocket]:
    directory = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")  # AF_UNIX paths are short
    path = directory / f"kimaki-notify-{os.getpid()}-{id(object())}"
    notify = NotifySocket(path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(notify.serve)
            yield notify
            nursery.cancel_scope.cancel()
    finally:
        path.unlink(missing_ok=True)


async def test_sigusr2_restarts_in_place_and_resumes_the_gateway(tmp_path: Path) -> None:
    async with (
        open_discord_emulator() as emulator,
        notify_socket() as notify,
    ):
        emulator.create_workspace()
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "300000"}
        async with running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "data", env=env
        ) as daemon:
            pid = daemon.process.pid
            await notify.wait_for("WATCHDOG=1", 2)
            identifies = len(emulator.gateway.identifies)

            daemon.send_signal(signal.SIGUSR2)
            assert await within(emulator.gateway.wait_for_client_close()) == 4900  # resumable
            resumed = await within(emulator.gateway.wait_for_resume())
            assert resumed["session_id"]
            health = await wait_for_health(daemon)
            assert health["pid"] == pid  # the same process, re-executed
            assert health["guilds"] == 1  # known without a GUILD_CREATE (filled over REST)
            assert daemon.process.returncode is None
            assert len(emulator.gateway.identifies) == identifies  # no fresh IDENTIFY
            await notify.wait_for("READY=1\nSTATUS=connected to Discord, 1 guild(s)")
            pings = notify.count("WATCHDOG=1")
            await notify.wait_for("WATCHDOG=1", pings + 2)  # the new process pings too
            assert await daemon.stop() == 0

    log = daemon.log_text()
    # One log across the restart: the first run's lines are kept, the second appends.
    order = [
        "[GATEWAY] identifying",
        "[APP] SIGUSR2 received: restarting in place",
        "[RESTART] re-executing",
        "[APP] restarted in place (SIGUSR2)",
        "[GATEWAY] resumed session",
        "[APP] SIGTERM received: stopping",
    ]
    positions = [log.index(line) for line in order]
    assert positions == sorted(positions)
    assert log.count(f"starting: pid {pid}") == 2
    assert emulator.token not in log

    # What systemd heard: ready, reloading (with the time), ready again, stopping; watchdog
    # pings from both process images.
    messages = notify.messages
    ready = notify.first_line_index("READY=1")
    reloading = notify.first_line_index("RELOADING=1", ready)
    ready_again = notify.first_line_index("READY=1", reloading)
    stopping = notify.first_line_index("STOPPING=1", ready_again)
    lines = messages[reloading].split("\n")
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].removeprefix("MONOTONIC_USEC=")) > 0
    assert "WATCHDOG=1" in messages[:reloading]
    assert "WATCHDOG=1" in messages[ready_again:stopping]


async def test_signals_while_re_executing_do_not_kill_the_daemon(
    emulator: DiscordEmulator, tmp_path: Path
) -> None:
    async with running_daemon(
        api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "data"
    ) as daemon:
        daemon.send_signal(signal.SIGUSR2)
        await daemon.wait_for_log("[RESTART] re-executing")
        # The new image is starting; a reload or a snapshot request now would kill it if
        # their default action applied.
        daemon.send_signal(signal.SIGUSR2)
        daemon.send_signal(signal.SIGUSR1)
        await within(emulator.gateway.wait_for_resume())
        health = await wait_for_health(daemon)
        assert health["pid"] == daemon.process.pid
        assert daemon.process.returncode is None
        assert await daemon.stop() == 0


async def test_sigterm_stops_in_order_and_ends_the_gateway_session(tmp_path: Path) -> None:
    async with (
        open_discord_emulator() as emulator,
        notify_socket() as notify,
    ):
        emulator.create_workspace()
        env = {"NOTIFY_SOCKET": str(notify.path)}
        async with running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "data", env=env
        ) as daemon:
            await notify.wait_for("READY=1\nSTATUS=connected to Discord, 1 guild(s)")
            started = trio.current_time()
            assert await daemon.stop(grace=12) == 0
            assert trio.current_time() - started < 10
            # 1000: the session ends on Discord's side.
            assert await within(emulator.gateway.wait_for_client_close()) == 1000
    assert notify.messages[-1] == "STOPPING=1\nSTATUS=stopping"
    assert "SIGTERM received: stopping" in daemon.log_text()


async def test_a_broken_new_version_exits_non_zero_and_says_why(
    emulator: DiscordEmulator, tmp_path: Path
) -> None:
    # The daemon runs from a copy of the package, which an "upgrade" then breaks.
    code = tmp_path / "code"
    shutil.copytree(
        Path(kimaki.__file__).parent,
        code / "kimaki",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (code / "kimaki" / "_version.py").write_text('__version__ = "0.0.0+copy"\n')
    env = {"PYTHONPATH": str(code), "PYTHONSAFEPATH": "1"}  # not the checkout in the cwd
    async with running_daemon(
        api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "data", env=env
    ) as daemon:
        health = await daemon.health()
        assert health is not None
        assert health["version"] == "0.0.0+copy"  # the copy is what runs
        with (code / "kimaki" / "app.py").open("a") as source:
            source.write("\ndef half_written_upgrade(:\n")
        daemon.send_signal(signal.SIGUSR2)
        with trio.fail_after(30):
            assert await daemon.process.wait() == 70  # systemd's Restart=on-failure applies
    err = daemon.stderr.decode()
    assert "the installed kimaki cannot start, its code does not load (SyntaxError" in err
    log = daemon.log_text()
    assert "[APP] SIGUSR2 received" in log  # the first run's log is kept
    assert "[CRITICAL] [KIMAKI] the installed kimaki cannot start" in log
    assert "half_written_upgrade" in log  # the traceback, for whoever fixes it


def test_the_command_line_comes_back_with_the_same_interpreter() -> None:
    module = ["python3", "-X", "dev", "-m", "kimaki", "--data-dir", "/d"]
    assert restart_command(module, "/venv/bin/python3") == [
        "/venv/bin/python3",
        "-X",
        "dev",
        "-m",
        "kimaki",
        "--data-dir",
        "/d",
    ]
    script = ["/venv/bin/python", "/venv/bin/kimaki", "run"]
    assert restart_command(script, "/venv/bin/python") == script


def test_the_marker_is_taken_once_and_only_from_our_own_exec() -> None:
    marker = RestartMarker(os.getpid(), 123.5, "SIGUSR2")
    env = {RESTART_ENV: marker.encode(), LOG_FILE_ENV: "/x/kimaki.log", "OTHER": "1"}
    assert take_restart_marker(env) == marker
    assert env == {"OTHER": "1"}  # nothing the daemon starts later inherits it
    assert take_restart_marker(env) is None
    inherited = {RESTART_ENV: RestartMarker(os.getpid() + 1, 1.0).encode()}
    assert take_restart_marker(inherited) is None
    assert take_restart_marker({RESTART_ENV: "garbage"}) is None


@pytest.mark.parametrize("reason", ["SIGUSR2", "a: colon"])
def test_marker_round_trip(reason: str) -> None:
    marker = RestartMarker(41, 9.25, reason)
    assert RestartMarker.decode(marker.encode()) == marker
