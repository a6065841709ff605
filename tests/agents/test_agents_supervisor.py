"""The agent-server supervisor with real child processes: the fake OpenCode server run as
`python -m kimaki.testing.opencode`, with scripted faults."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import trio

from kimaki.agents import (
    EngineUnavailableError,
    RestartPolicy,
    ServerFailed,
    ServerState,
    child_environment,
)
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.testing.opencode import process_running, sigkill_daemon_stand_in, wait_for_exit

FAKE = (sys.executable, "-m", "kimaki.testing.opencode")
FAST = RestartPolicy(initial_delay=0.01, max_delay=0.05, max_crashes=3, crash_window=60.0)


def config(tmp_path: Path, *faults: str, **overrides: object) -> OpenCodeConfig:
    options: dict[str, object] = {
        "command": (*FAKE, *faults),
        "home_for": lambda directory: tmp_path / "home",
        "policy": FAST,
        "ready_timeout": 20.0,
        "stop_grace": 2.0,
        "stream_backoff": (0.01, 0.05),
    }
    options.update(overrides)
    return OpenCodeConfig(**options)  # type: ignore[arg-type]


def test_child_environment_is_an_allowlist(tmp_path: Path) -> None:
    source = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "OPENAI_API_KEY": "sk-test",
        "KIMAKI_BOT_TOKEN": "bot-token",
        "KIMAKI_API_KEY": "sneaky",
        "DISCORD_TOKEN": "other",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "EXTRA": "wanted",
    }
    env = child_environment(
        source=source,
        home=tmp_path / "home",
        passthrough=("EXTRA", "KIMAKI_BOT_TOKEN"),
        extra={"OPENCODE_SERVER_PASSWORD": "pw", "KIMAKI_ANYTHING": "no"},
    )
    assert env["PATH"] == "/usr/bin"
    assert env["HOME"] == str(tmp_path / "home")
    assert env["XDG_CONFIG_HOME"] == str(tmp_path / "home" / ".config")
    assert (tmp_path / "home" / ".local" / "share").is_dir()
    assert env["LC_ALL"] == "C"
    assert env["OPENAI_API_KEY"] == "sk-test"
    assert env["EXTRA"] == "wanted"
    assert env["OPENCODE_SERVER_PASSWORD"] == "pw"
    for name in ("KIMAKI_BOT_TOKEN", "KIMAKI_API_KEY", "DISCORD_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert name not in env
    assert "KIMAKI_ANYTHING" not in env


async def test_server_gets_only_allowed_environment_and_its_own_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIMAKI_BOT_TOKEN", "MTIzNDU2Nzg5MDEyMzQ1Njc4.abcdef.token-never-leaves")
    monkeypatch.setenv("SOME_RANDOM_SETTING", "x")
    record = tmp_path / "env.json"
    async with open_opencode_engine(config(tmp_path, "--record-env", str(record))) as engine:
        server = engine.server(tmp_path)
        connection = await server.connection()
        assert await connection.client.health() == "1.18.33"
        env = json.loads(record.read_text())
    assert "KIMAKI_BOT_TOKEN" not in env
    assert "SOME_RANDOM_SETTING" not in env
    assert len(env["OPENCODE_SERVER_PASSWORD"]) >= 32
    assert env["OPENCODE_DISABLE_MODELS_FETCH"] == "1"
    assert env["HOME"] == str(tmp_path / "home")


async def test_requests_need_the_servers_password(tmp_path: Path) -> None:
    async with open_opencode_engine(config(tmp_path)) as engine:
        connection = await engine.server(tmp_path).connection()
        import httpx

        async with httpx.AsyncClient() as anonymous:
            response = await anonymous.get(f"{connection.client.base_url}/global/health")
        assert response.status_code == 401


async def test_a_server_that_exits_at_start_reports_its_stderr(tmp_path: Path) -> None:
    async with open_opencode_engine(config(tmp_path, "--exit-at-start", "3")) as engine:
        server = engine.server(tmp_path)
        with pytest.raises(EngineUnavailableError) as raised:
            await server.connection()
        assert "exited with code 3 while starting" in str(raised.value)
        assert "refusing to start as scripted" in str(raised.value)
        # Not restarted on its own: the next request tries again.
        assert server.state is ServerState.STOPPED
        with pytest.raises(EngineUnavailableError):
            await server.connection()
        assert server.statistics().starts == 2


async def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, command=(str(tmp_path / "no-such-opencode"),))
    async with open_opencode_engine(cfg) as engine:
        with pytest.raises(EngineUnavailableError, match="could not start"):
            await engine.server(tmp_path).connection()


async def test_health_that_never_comes_is_a_timeout_naming_the_server(tmp_path: Path) -> None:
    cfg = config(tmp_path, "--unhealthy", ready_timeout=1.5)
    async with open_opencode_engine(cfg) as engine:
        with pytest.raises(EngineUnavailableError, match=r"not ready after 2 s"):
            await engine.server(tmp_path).connection()


async def test_a_slow_start_is_waited_for(tmp_path: Path) -> None:
    async with open_opencode_engine(config(tmp_path, "--start-delay", "0.5")) as engine:
        connection = await engine.server(tmp_path).connection()
        assert connection.version == "1.18.33"


async def test_a_crash_restarts_the_server(tmp_path: Path) -> None:
    async with open_opencode_engine(config(tmp_path)) as engine:
        server = engine.server(tmp_path)
        first = await server.connection()
        os.kill(first.process.pid, signal.SIGKILL)
        await server.wait_for_state(ServerState.BACKOFF, ServerState.STARTING)
        second = await server.connection()
        assert second is not first
        assert second.process.pid != first.process.pid
        assert not process_running(first.process.pid)
        stats = server.statistics()
        assert (stats.starts, stats.crashes) == (2, 1)
        assert "exited unexpectedly (code -9)" in (stats.last_error or "")


async def test_a_crash_loop_is_given_up_once_then_retried_on_request(tmp_path: Path) -> None:
    async with open_opencode_engine(config(tmp_path, "--crash-after", "0.3")) as engine:
        server = engine.server(tmp_path)
        session = await engine.open_session(tmp_path)
        await server.wait_for_state(ServerState.FAILED)
        assert server.statistics().crashes == 3
        failed = session.events.receive_nowait()
        assert isinstance(failed, ServerFailed)
        assert "crashed 3 times within 60 s" in failed.message
        assert "crashing as scripted" in failed.message  # the server's own last words
        with pytest.raises(trio.WouldBlock):
            session.events.receive_nowait()
        # The next request starts it again (and it crashes again later, as scripted).
        await server.connection()
        assert server.statistics().starts == 4


async def test_an_idle_server_is_stopped_and_started_again_on_demand(tmp_path: Path) -> None:
    async with open_opencode_engine(config(tmp_path, idle_timeout=0.3)) as engine:
        server = engine.server(tmp_path)
        first = await server.connection()
        await server.wait_for_state(ServerState.STOPPED)
        assert not process_running(first.process.pid)
        second = await server.connection()
        assert second.process.pid != first.process.pid
        assert server.statistics().crashes == 0


async def test_a_server_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    cfg = config(tmp_path, "--ignore-sigterm", stop_grace=0.3)
    async with open_opencode_engine(cfg) as engine:
        server = engine.server(tmp_path)
        connection = await server.connection()
        server.stop()
        await server.wait_for_state(ServerState.STOPPED)
    assert connection.process.returncode == -signal.SIGKILL


async def test_leaving_the_engine_stops_and_reaps_every_server(tmp_path: Path) -> None:
    pids = []
    async with open_opencode_engine(config(tmp_path)) as engine:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            pids.append((await engine.server(directory).connection()).process.pid)
    for pid in pids:
        assert not process_running(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
async def test_sigkill_of_the_daemon_leaves_no_server_behind(tmp_path: Path) -> None:
    server_pid = await sigkill_daemon_stand_in(str(tmp_path), FAKE)
    with trio.fail_after(15):
        await wait_for_exit(server_pid)
    assert not process_running(server_pid)
