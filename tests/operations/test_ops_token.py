"""The bot token out of an agent's reach: not in the daemon's environment after start-up (an
agent's tool runs as the same user and can read `/proc/<pid>/environ`), handed over privately
across an in-place restart, read from systemd's credentials; and agents run as another OS user
(`KIMAKI_AGENT_USER`) cannot read the data dir at all."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from kimaki._restart import TOKEN_ENV, TOKEN_FD_ENV, take_handed_token
from kimaki.errors import ConfigError
from kimaki.settings import CREDENTIAL_NAME, load_settings
from kimaki.testing.bot import said
from kimaki.testing.daemon import DaemonProcess, map_project, running_daemon, within
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.opencode import running_fake_opencode

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.credential-file-token-value"


def proc_file(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as file:
        return file.read()


def environ_of(pid: int) -> dict[str, str]:
    entries = proc_file(pid, "environ").split(b"\0")
    return dict(
        entry.decode(errors="replace").partition("=")[::2] for entry in entries if b"=" in entry
    )


def assert_token_not_in_environment(daemon: DaemonProcess, token: str) -> None:
    environ = environ_of(daemon.process.pid)
    assert TOKEN_ENV not in environ
    # (KIMAKI_TOKEN_FD may be there: a number, of an fd closed at start-up.)
    assert token.encode() not in proc_file(daemon.process.pid, "environ")
    assert token.encode() not in proc_file(daemon.process.pid, "cmdline")


async def test_the_token_leaves_the_environment_and_survives_sigusr2(tmp_path: Path) -> None:
    async with open_discord_emulator() as emulator:
        emulator.create_workspace()
        # Started the way an EnvironmentFile starts it: the token in its environment.
        async with running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=tmp_path / "data"
        ) as daemon:
            pid = daemon.process.pid
            assert_token_not_in_environment(daemon, emulator.token)

            daemon.send_signal(signal.SIGUSR2)
            # A RESUME carries the token: the new image had it, handed over privately.
            resumed = await within(emulator.gateway.wait_for_resume())
            assert resumed["token"] == emulator.token
            await daemon.wait_for_log("[APP] restarted in place")
            assert daemon.process.pid == pid
            assert_token_not_in_environment(daemon, emulator.token)
            assert await daemon.stop() == 0
        assert emulator.token not in daemon.log_text()


async def test_the_token_is_read_from_systemd_credentials(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    async with open_discord_emulator() as emulator:
        emulator.create_workspace()
        (credentials / CREDENTIAL_NAME).write_text(emulator.token + "\n")
        async with running_daemon(
            api_url=emulator.api_url,
            token=None,
            data_dir=tmp_path / "data",
            env={"CREDENTIALS_DIRECTORY": str(credentials)},
        ) as daemon:
            assert len(emulator.gateway.identifies) == 1  # connected with the credential
            assert_token_not_in_environment(daemon, emulator.token)
            assert await daemon.stop() == 0


def test_the_environment_wins_over_the_credential_and_a_bad_credential_is_named(
    tmp_path: Path,
) -> None:
    (tmp_path / CREDENTIAL_NAME).write_text(TOKEN)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "HOME": str(tmp_path)}
    assert load_settings(environ=env).bot_token == TOKEN
    other = TOKEN.replace("credential", "environment")
    assert load_settings(environ={**env, TOKEN_ENV: other}).bot_token == other
    assert load_settings(environ={"HOME": str(tmp_path)}).bot_token is None
    (tmp_path / CREDENTIAL_NAME).write_text("Bot " + TOKEN)
    with pytest.raises(ConfigError, match=f"the credential {tmp_path / CREDENTIAL_NAME}"):
        load_settings(environ=env)


def test_a_handed_over_token_is_read_once_and_its_fd_closed() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, TOKEN.encode())
    os.close(write_end)
    env = {TOKEN_FD_ENV: str(read_end)}
    assert take_handed_token(env) == TOKEN
    assert env == {}
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(read_end)
    assert take_handed_token(env) is None


def test_an_unknown_agent_user_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KIMAKI_AGENT_USER: there is no user 'no-such-kimaki"):
        load_settings(environ={"HOME": str(tmp_path), "KIMAKI_AGENT_USER": "no-such-kimaki"})


# ----------------------------------------------------------------------------- another user


@contextmanager
def shared_area() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root, which would
    hide the data dir from them whatever its own mode), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="kimaki-agent-user-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="running agents as another user needs root")
async def test_an_agent_run_as_another_user_cannot_read_the_data_dir(tmp_path: Path) -> None:
    with shared_area() as area:
        data, project, report = area / "data", area / "project", area / "report"
        project.mkdir()
        project.chmod(0o777)
        report.mkdir()
        report.chmod(0o777)
        database = data / "discord-sessions.db"
        async with (
            open_discord_emulator() as emulator,
            running_fake_opencode(project) as (_fake, port),
        ):
            # The agent program, run as `nobody`: it tries what a tool call would, then prints
            # the line `opencode serve` prints (for the fake in this process) and waits.
            checks = (
                f"id -u > {report}/uid\n"
                f"cat {database} > /dev/null 2>&1 && echo readable > {report}/database"
                f" || echo denied > {report}/database\n"
                f"ls {data} > /dev/null 2>&1 && echo readable > {report}/data"
                f" || echo denied > {report}/data\n"
                # The daemon: the parent of the reaper ($PPID), whose stat anyone may read.
                "daemon=$(cut -d' ' -f4 /proc/$PPID/stat)\n"
                f"echo $daemon > {report}/daemon-pid\n"
                f"cat /proc/$daemon/environ > /dev/null 2>&1 && echo readable > {report}/daemon"
                f" || echo denied > {report}/daemon\n"
            )
            agent = area / "opencode"
            agent.write_text(
                f"#!/bin/sh\n{checks}"
                f"echo opencode server listening on http://127.0.0.1:{port}\n"
                "exec sleep 1000\n"
            )
            agent.chmod(0o755)
            workspace = emulator.create_workspace()
            channel_id = await map_project(data, emulator, workspace, project)
            async with running_daemon(
                api_url=emulator.api_url,
                token=emulator.token,
                data_dir=data,
                home=tmp_path,
                env={"KIMAKI_OPENCODE_PATH": str(agent), "KIMAKI_AGENT_USER": "nobody"},
            ) as daemon:
                message = workspace.users["alice"].send_message(channel_id, "hello")
                thread = await emulator.wait_for_thread(
                    channel_id, lambda t: t["id"] == message["id"]
                )
                await within(emulator.wait_for_message(thread["id"], said("ok")))
                assert await daemon.stop() == 0
        assert (report / "uid").read_text().strip() == "65534"
        assert (report / "database").read_text().strip() == "denied"
        assert (report / "data").read_text().strip() == "denied"
        assert (report / "daemon-pid").read_text().strip() == str(daemon.process.pid)
        assert (report / "daemon").read_text().strip() == "denied"
        assert database.exists()


@pytest.mark.skipif(
    os.geteuid() == 0, reason="needs a non-root user: as root KIMAKI_AGENT_USER is allowed"
)
async def test_agent_user_without_root_is_refused_at_start(tmp_path: Path) -> None:
    async with open_discord_emulator() as emulator:
        emulator.create_workspace()
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=tmp_path / "data",
            env={"KIMAKI_AGENT_USER": "nobody"},
            wait_ready=False,
        ) as daemon:
            with trio.fail_after(30):
                assert await daemon.process.wait() == 64
        assert "KIMAKI_AGENT_USER=nobody needs the daemon to run as root" in (
            daemon.stderr.decode()
        )
