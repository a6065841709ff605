"""`kimaki doctor`: every engine, the command line it starts, and the file it would really run
(or "not found" and how to install it), from a real `python -m kimaki` process given a PATH the
test controls."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import trio

from kimaki.agents import INSTALL_COMMANDS


def executable(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / name
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


async def doctor(
    home: Path, path: Path | str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KIMAKI_")}
    environment.update(HOME=str(home), PATH=str(path), **env)
    return await trio.run_process(
        [sys.executable, "-m", "kimaki", "doctor"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=environment,
        cwd=cwd,
    )


def table(stdout: bytes) -> dict[str, list[str]]:
    """Engine → [command line, where], from the aligned columns (two spaces apart)."""
    rows = {}
    for line in stdout.decode().splitlines()[1:]:
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        if len(cells) == 3:
            rows[cells[0]] = cells[1:]
    return rows


async def test_each_engine_with_its_command_and_where_it_is(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    kiro = executable(bin_dir, "kiro-cli")
    opencode = executable(bin_dir, "opencode")
    custom = executable(tmp_path / "opt", "my-agent")
    result = await doctor(
        tmp_path,
        bin_dir,
        KIMAKI_DATA_DIR=str(tmp_path / "data"),
        KIMAKI_AGENTS=f"mine={custom} --acp; gemini=",
    )
    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    sessions = tmp_path / "data" / "omp-agent-runtime" / "sessions"
    assert rows == {
        "opencode (default)": ["opencode serve", str(opencode)],
        "acp:opencode": ["opencode acp", str(opencode)],
        "acp:kiro": ["kiro-cli acp", str(kiro)],
        "acp:claude": [
            "claude-agent-acp",
            f"not found on PATH (install: {INSTALL_COMMANDS['claude-agent-acp']})",
        ],
        "acp:omp": [f"omp --session-dir {sessions}", "not found on PATH"],
        "acp:mine": [f"{custom} --acp", str(custom)],
    }
    assert "2 of 6 engines cannot start here" in result.stdout.decode()
    assert not (tmp_path / "data").exists()  # it looks; it changes nothing


async def test_the_opencode_path_and_default_engine_from_settings(tmp_path: Path) -> None:
    opencode = executable(tmp_path / "oc", "opencode")
    result = await doctor(
        tmp_path,
        tmp_path / "empty",
        KIMAKI_OPENCODE_PATH=str(opencode),
        KIMAKI_DEFAULT_ENGINE="acp:claude",
    )
    assert result.returncode == 0
    rows = table(result.stdout)
    assert rows["opencode"] == [f"{opencode} serve", str(opencode)]
    # The ACP engine of OpenCode runs the same configured OpenCode, not `opencode` on PATH.
    assert rows["acp:opencode"] == [f"{opencode} acp", str(opencode)]
    assert rows["acp:claude (default)"] == [
        "claude-agent-acp",
        f"not found on PATH (install: {INSTALL_COMMANDS['claude-agent-acp']})",
    ]


async def test_the_file_that_would_run_or_how_to_install_it(tmp_path: Path) -> None:
    executable(tmp_path / "bin", "kiro-cli")
    # A relative PATH entry is where the daemon would look from its directory: shown absolute.
    result = await doctor(tmp_path, "bin", cwd=tmp_path)
    assert result.returncode == 0
    rows = table(result.stdout)
    assert rows["acp:kiro"] == ["kiro-cli acp", str(tmp_path / "bin" / "kiro-cli")]
    install = f"(install: {INSTALL_COMMANDS['opencode']})"
    assert rows["opencode (default)"] == ["opencode serve", f"not found on PATH {install}"]
    assert rows["acp:opencode"] == ["opencode acp", f"not found on PATH {install}"]
    # A configured path that is not there is "not found", with the same hint.
    missing = tmp_path / "nowhere" / "opencode"
    rows = table((await doctor(tmp_path, "bin", KIMAKI_OPENCODE_PATH=str(missing))).stdout)
    assert rows["opencode (default)"] == [f"{missing} serve", f"not found {install}"]


async def test_a_bad_agent_setting_exits_64_naming_the_variable(tmp_path: Path) -> None:
    result = await doctor(tmp_path, tmp_path, KIMAKI_AGENTS="mine=my-agent 'unclosed")
    assert result.returncode == 64
    assert result.stderr.decode().startswith("kimaki: KIMAKI_AGENTS: cannot parse")
    assert result.stdout == b""
