"""Run the real daemon (`python -m kimaki`) as a child process, for tests and benchmarks.

`running_daemon()` starts it with its own data dir and lock port, pointed at a Discord-compatible
server (usually the emulator), waits until `/health` says the gateway is ready, and stops it
with SIGTERM when the block ends (SIGKILL if it does not stop). The process is owned by the
caller's nursery, so nothing outlives the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, final

import attrs
import trio

from kimaki._control import query_health
from kimaki.store import ChannelRecord, Store
from kimaki.testing.discord import DiscordEmulator
from kimaki.testing.discord._emulator import Workspace

__all__ = [
    "DaemonProcess",
    "free_port",
    "map_project",
    "running_daemon",
    "wait_for_health",
    "within",
]

T = TypeVar("T")


async def map_project(
    data_dir: Path, emulator: DiscordEmulator, workspace: Workspace, directory: Path
) -> str:
    """Map the workspace's first text channel to `directory` in the daemon's database, as
    `kimaki project add` would, before the daemon starts; returns the channel id."""
    channel = next(iter(workspace.channels.values()))
    await trio.Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    async with await Store.open(data_dir / "discord-sessions.db") as store:
        await store.places.put_channel(
            ChannelRecord(
                channel_id=int(channel["id"]),
                directory=directory,
                guild_id=int(workspace.guild["id"]),
                app_id=int(emulator.application_id),
            )
        )
    return str(channel["id"])


async def within(awaitable: Awaitable[T], seconds: float = 30) -> T:
    """`await awaitable` (say, an emulator wait that has no timeout of its own), failing the
    test instead of hanging when the daemon died and the awaited thing never comes."""
    with trio.fail_after(seconds):
        return await awaitable


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@final
@attrs.define
class DaemonProcess:
    process: trio.Process
    data_dir: Path
    lock_port: int
    stderr: bytearray

    @property
    def log_path(self) -> Path:
        return self.data_dir / "kimaki.log"

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    async def health(self) -> dict[str, Any] | None:
        return await query_health(self.lock_port)

    async def wait_for_log(self, text: str, *, within: float = 30) -> str:
        """Wait until the daemon's log file contains `text` (another process writes it, so
        there is nothing to wait on but the file itself); returns the log."""
        with trio.fail_after(within):
            while True:
                log = self.log_text()
                if text in log:
                    return log
                await trio.sleep(0.05)

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def stop(self, signum: int = signal.SIGTERM, *, grace: float = 15) -> int:
        """Signal the daemon and wait for its exit code (SIGKILL after `grace` seconds)."""
        if self.process.returncode is None:
            self.process.send_signal(signum)
        with trio.move_on_after(grace):
            return await self.process.wait()
        self.process.kill()
        return await self.process.wait()


def daemon_environment(
    *, api_url: str, token: str | None, home: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMAKI_", "NOTIFY_SOCKET"))}
    env.update({"HOME": str(home), "KIMAKI_DISCORD_API_URL": api_url})
    if token is not None:
        env["KIMAKI_BOT_TOKEN"] = token
    env.update(extra or {})
    return env


async def wait_for_health(
    daemon: DaemonProcess, gateway: str = "ready", *, within: float = 30
) -> dict[str, Any]:
    """Poll `/health` until the gateway state is `gateway`; fail if the daemon exits first."""
    with trio.fail_after(within):
        while True:
            if daemon.process.returncode is not None:
                raise RuntimeError(
                    f"the daemon exited with {daemon.process.returncode}: "
                    f"{daemon.stderr.decode(errors='replace')[-2000:]}"
                )
            health = await daemon.health()
            if health is not None and health.get("gateway") == gateway:
                return health
            await trio.sleep(0.05)


@asynccontextmanager
async def running_daemon(
    *,
    api_url: str,
    token: str | None,
    data_dir: Path,
    home: Path | None = None,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
) -> AsyncIterator[DaemonProcess]:
    """Start `python -m kimaki`; yield once it is ready (or at once with `wait_ready=False`)."""
    lock_port = free_port()
    environment = daemon_environment(
        api_url=api_url, token=token, home=home or data_dir.parent, extra=env
    )
    environment["KIMAKI_LOCK_PORT"] = str(lock_port)
    stderr = bytearray()
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "kimaki", "--data-dir", str(data_dir), *args],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        nursery.start_soon(_collect, process.stderr, stderr)
        daemon = DaemonProcess(process, data_dir, lock_port, stderr)
        try:
            if wait_ready:
                await wait_for_health(daemon)
            yield daemon
        finally:
            with trio.CancelScope(shield=True):
                await daemon.stop()


async def _collect(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    async with stream:
        while chunk := await stream.receive_some(65536):
            into += chunk
