"""The real daemon process against the Discord emulator."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import trio

from kimaki.testing.daemon import running_daemon
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator


async def test_reaches_ready_and_health_says_so(emulator: DiscordEmulator, tmp_path: Path) -> None:
    async with running_daemon(
        api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "data"
    ) as daemon:
        health = await daemon.health()
        assert health is not None
        assert health["gateway"] == "ready"
        assert health["guilds"] == 1
        assert health["waiting_for"] == []
        assert health["pid"] == daemon.process.pid
        assert health["data_dir"] == str(tmp_path / "data")
        assert await daemon.stop() == 0
    log = daemon.log_text()
    assert "[GATEWAY] ready" in log
    assert emulator.token not in log
    assert emulator.token not in daemon.stderr.decode()


async def test_two_data_dirs_run_side_by_side(emulator: DiscordEmulator, tmp_path: Path) -> None:
    async with (
        running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "one"
        ) as one,
        running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "two"
        ) as two,
    ):
        first, second = await one.health(), await two.health()
        assert first is not None
        assert second is not None
        assert first["pid"] != second["pid"]
        assert (first["gateway"], second["gateway"]) == ("ready", "ready")


async def test_uses_the_stored_token(emulator: DiscordEmulator, tmp_path: Path) -> None:
    data = tmp_path / "data"
    await trio.run_process(
        [sys.executable, "-m", "kimaki", "token", "set", "--data-dir", str(data)],
        stdin=emulator.token.encode(),
        capture_stdout=True,
    )
    async with running_daemon(api_url=emulator.api_url, token=None, data_dir=data) as daemon:
        health = await daemon.health()
        assert health is not None
        assert health["gateway"] == "ready"


async def test_rejected_token_exits_78_without_printing_it(
    emulator: DiscordEmulator, tmp_path: Path
) -> None:
    wrong = emulator.token[:-6] + "AAAAAA"
    async with running_daemon(
        api_url=emulator.api_url, token=wrong, data_dir=tmp_path / "data", wait_ready=False
    ) as daemon:
        code = await daemon.process.wait()
    assert code == 78
    err = daemon.stderr.decode()
    assert "Discord rejected the bot token" in err
    assert "Traceback" not in err
    assert wrong not in err
    assert wrong not in daemon.log_text()


async def test_sigint_stops_cleanly(emulator: DiscordEmulator, tmp_path: Path) -> None:
    async with running_daemon(
        api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "data"
    ) as daemon:
        assert await daemon.stop(signal.SIGINT) == 0
    assert "SIGINT received: stopping" in daemon.log_text()


async def test_a_killed_daemon_resumes_its_gateway_session(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_discord_emulator(heartbeat_interval=0.5) as emulator:
        emulator.create_workspace()
        async with running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=data
        ) as first:
            await emulator.gateway.wait_for_heartbeats(2)  # the session is saved with beats
            assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        identifies = len(emulator.gateway.identifies)
        async with running_daemon(api_url=emulator.api_url, token=emulator.token, data_dir=data):
            resumed = await emulator.gateway.wait_for_resume()
            assert resumed["session_id"]
            assert len(emulator.gateway.identifies) == identifies  # no fresh IDENTIFY


async def test_sigusr1_writes_a_heap_snapshot(emulator: DiscordEmulator, tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_daemon(
        api_url=emulator.api_url, token=emulator.token, data_dir=data
    ) as daemon:
        daemon.send_signal(signal.SIGUSR1)
        await daemon.wait_for_log("heap snapshot written")
        summaries = list((data / "heap-snapshots").glob("heap-*.txt"))
        assert len(summaries) == 1
        assert "reason: SIGUSR1" in summaries[0].read_text()
        assert len(list((data / "heap-snapshots").glob("heap-*.tracemalloc.gz"))) == 1
        health = await daemon.health()
        assert health is not None
        assert health["gateway"] == "ready"  # the snapshot did not disturb the daemon
        assert await daemon.stop() == 0
