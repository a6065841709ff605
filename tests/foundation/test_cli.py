"""The command line as a person meets it: real `python -m kimaki` processes."""

from __future__ import annotations

import getpass
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from kimaki._control import ControlServer
from kimaki._http import Request, Response, serve_http
from kimaki._version import __version__
from kimaki.app import read_token_from_user
from kimaki.errors import ConfigError

TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2.GabcDE.abcdefghijklmnopqrstuvwxyz0123456789AB"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMAKI_")}
    env["HOME"] = str(home)
    env.update(extra)
    return env


async def kimaki(
    *args: str, home: Path, stdin: bytes = b"", **env: str
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "kimaki", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=_env(home, **env),
    )


async def test_version(tmp_path: Path) -> None:
    result = await kimaki("--version", home=tmp_path)
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"kimaki {__version__}"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["token"],
        ["token", "set"],
        ["token", "clear"],
        ["doctor"],
        ["project"],
        ["project", "add"],
        ["project", "list"],
        ["project", "remove"],
    ],
)
async def test_every_command_has_help(tmp_path: Path, command: list[str]) -> None:
    result = await kimaki(*command, "--help", home=tmp_path)
    assert result.returncode == 0
    assert "usage: kimaki" in result.stdout.decode()


async def test_unknown_flag_exits_64_with_one_line(tmp_path: Path) -> None:
    result = await kimaki("--bogus", home=tmp_path)
    assert result.returncode == 64
    assert "kimaki: unrecognized arguments: --bogus" in result.stderr.decode()


async def test_no_token_exits_64_naming_both_fixes(tmp_path: Path) -> None:
    result = await kimaki("--data-dir", str(tmp_path / "data"), home=tmp_path)
    assert result.returncode == 64
    err = result.stderr.decode()
    assert "KIMAKI_BOT_TOKEN" in err
    assert "kimaki token set" in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("kimaki: no Discord bot token")


async def test_data_dir_is_created_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await kimaki("--data-dir", str(data), home=tmp_path)
    assert data.stat().st_mode & 0o777 == 0o700
    for sub in ("heap-snapshots", "worktrees", "attachments"):
        assert (data / sub).stat().st_mode & 0o777 == 0o700
    assert (data / "discord-sessions.db").stat().st_mode & 0o777 == 0o600
    assert (data / "kimaki.log").stat().st_mode & 0o777 == 0o600


async def test_unusable_data_dir_exits_64(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = await kimaki("--data-dir", str(tmp_path / "file" / "data"), home=tmp_path)
    assert result.returncode == 64
    err = result.stderr.decode()
    assert "is not writable" in err
    assert "KIMAKI_DATA_DIR" in err
    assert "Traceback" not in err


async def test_bad_setting_exits_64(tmp_path: Path) -> None:
    result = await kimaki(home=tmp_path, KIMAKI_LOCK_PORT="none")
    assert result.returncode == 64
    assert "KIMAKI_LOCK_PORT must be a port number" in result.stderr.decode()


async def test_token_set_reads_stdin_and_stores_it(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    result = await kimaki("token", "set", "--data-dir", data, home=tmp_path, stdin=TOKEN.encode())
    assert result.returncode == 0, result.stderr
    assert TOKEN not in (result.stdout + result.stderr).decode()

    cleared = await kimaki("token", "clear", "--data-dir", data, home=tmp_path)
    assert cleared.stdout.decode().strip() == "token removed"
    again = await kimaki("token", "clear", "--data-dir", data, home=tmp_path)
    assert again.stdout.decode().strip() == "no token was stored"


async def test_token_is_never_taken_from_argv(tmp_path: Path) -> None:
    result = await kimaki("token", "set", TOKEN, home=tmp_path)
    assert result.returncode == 64
    assert TOKEN not in result.stderr.decode()


async def test_token_set_refuses_a_bad_token(tmp_path: Path) -> None:
    result = await kimaki(
        "token",
        "set",
        "--data-dir",
        str(tmp_path / "d"),
        home=tmp_path,
        stdin=b"Bot " + TOKEN.encode(),
    )
    assert result.returncode == 64
    assert "without the 'Bot ' prefix" in result.stderr.decode()


async def _hold_lock(nursery: trio.Nursery, data_dir: Path) -> int:
    server = ControlServer(
        port=0,
        data_dir=data_dir,
        health=lambda: {
            "pid": os.getpid(),
            "data_dir": str(data_dir),
            "version": __version__,
            "gateway": "ready",
            "guilds": 1,
        },
    )
    port: int = await nursery.start(server.serve)
    return port


async def test_second_daemon_on_the_same_data_dir_exits_64(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "kimaki.log").write_text("the running daemon's log\n")
    async with trio.open_nursery() as nursery:
        port = await _hold_lock(nursery, data)
        result = await kimaki(
            "--data-dir",
            str(data),
            home=tmp_path,
            KIMAKI_LOCK_PORT=str(port),
            KIMAKI_BOT_TOKEN=TOKEN,
        )
        nursery.cancel_scope.cancel()
    assert result.returncode == 64
    assert f"another kimaki is running for {data} (pid {os.getpid()})" in result.stderr.decode()
    # The loser did not truncate the running daemon's log.
    assert (data / "kimaki.log").read_text() == "the running daemon's log\n"


async def test_lock_port_held_by_another_data_dir_or_program(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await _hold_lock(nursery, tmp_path / "other")
        result = await kimaki(
            "--data-dir",
            str(tmp_path / "mine"),
            "--lock-port",
            str(port),
            home=tmp_path,
            KIMAKI_BOT_TOKEN=TOKEN,
        )
        assert result.returncode == 64
        assert f"held by the kimaki for {tmp_path / 'other'}" in result.stderr.decode()

        async def not_kimaki(request: Request) -> Response:
            return Response.text("hello", status=404)

        foreign = await nursery.start(serve_http, not_kimaki)
        result = await kimaki(
            "--data-dir",
            str(tmp_path / "mine"),
            "--lock-port",
            str(foreign),
            home=tmp_path,
            KIMAKI_BOT_TOKEN=TOKEN,
        )
        assert result.returncode == 64
        assert f"lock port {foreign} is in use by another program" in result.stderr.decode()
        nursery.cancel_scope.cancel()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_end_of_input_at_the_token_prompt_is_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    def ctrl_d(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr(getpass, "getpass", ctrl_d)
    with pytest.raises(ConfigError, match="no token given"):
        read_token_from_user()


@pytest.mark.parametrize("command", [["mcp-tools"], ["mcp-proxy", "--server", "docs"]])
async def test_the_agent_side_commands_say_who_runs_them(
    tmp_path: Path, command: list[str]
) -> None:
    """Run by hand (no grant in the environment), they say so instead of waiting on stdin."""
    result = await kimaki(*command, home=tmp_path)
    assert result.returncode == 64
    assert result.stdout == b""  # stdout is the MCP channel: never written to
    assert b"started by an agent that kimaki runs" in result.stderr


async def test_the_proxy_refused_its_plan_exits_with_the_reason(tmp_path: Path) -> None:
    async def refuse(request: Request) -> Response:
        return Response.json({"error": 'MCP server "docs" is not enabled here'}, status=403)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, refuse)
        result = await kimaki(
            "mcp-proxy",
            "--server",
            "docs",
            home=tmp_path,
            KIMAKI_CONTROL_URL=f"http://127.0.0.1:{port}",
            KIMAKI_GRANT="grant-token-for-the-test",
        )
        nursery.cancel_scope.cancel()
    assert result.returncode == 70
    assert result.stdout == b""
    assert b"not enabled here" in result.stderr
    assert b"grant-token-for-the-test" not in result.stderr
