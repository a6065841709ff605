"""A first run without the agent program: the real daemon says so once, at start, with the fix."""

from __future__ import annotations

from pathlib import Path

from kimaki.testing.daemon import running_daemon
from kimaki.testing.discord import open_discord_emulator


async def test_a_missing_default_engine_is_warned_about_once_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "opencode"
    async with open_discord_emulator() as emulator:
        emulator.create_workspace()
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=tmp_path / "data",
            env={"KIMAKI_OPENCODE_PATH": str(missing)},
        ) as daemon:
            # Ready (the engines are logged before the gateway connects), and still running:
            # a missing program is the person's to fix, not a reason to exit.
            assert daemon.process.returncode is None
            assert await daemon.stop() == 0
    warnings = [line for line in daemon.log_text().splitlines() if "cannot start" in line]
    assert len(warnings) == 1
    [warning] = warnings
    assert "WARNING" in warning
    assert f"the default engine opencode cannot start: {missing} is not there" in warning
    assert "npm install -g opencode-ai" in warning
    assert "KIMAKI_OPENCODE_PATH" in warning
    assert "KIMAKI_DEFAULT_ENGINE" in warning
