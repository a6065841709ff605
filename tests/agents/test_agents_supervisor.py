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
    AgentNotInstalledError,
    AgentProcess,
    EngineUnavailableError,
    ProbePolicy,
    RestartPolicy,
    ServerState,
    child_environment,
)
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.agents.opencode import _engine as opencode_engine
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


async def test_a_server_that_exits_at_start_is_a_crash_until_given_up(tmp_path: Path) -> None:
    async with open_opencode_engine(config(tmp_path, "--exit-at-start", "3")) as engine:
        server = engine.server(tmp_path)
        with pytest.raises(EngineUnavailableError) as raised:
            await server.connection()
        # One line with the server's last words and where to look, not an errno.
        first = str(raised.value).splitlines()[0]
        assert "exited with code 3 while starting: fake opencode: refusing to start" in first
        assert "`kimaki doctor`" in first
        # Each failed start is one more crash: restarted after the backoff, then given up.
        with trio.fail_after(20):
            await server.wait_for_state(ServerState.FAILED)
        stats = server.statistics()
        assert (stats.starts, stats.crashes, stats.start_failures) == (3, 3, 3)
        assert "crashed 3 times within 60 s" in (stats.last_error or "")
        # The next request tries again.
        with pytest.raises(EngineUnavailableError):
            await server.connection()
        assert server.statistics().starts >= 4


async def test_a_missing_binary_names_the_fix_and_is_not_retried(tmp_path: Path) -> None:
    cfg = config(tmp_path, command=(str(tmp_path / "bin" / "opencode"),))
    async with open_opencode_engine(cfg) as engine:
        server = engine.server(tmp_path)
        with pytest.raises(AgentNotInstalledError) as raised:
            await server.connection()
        message = str(raised.value)
        assert "Errno" not in message
        assert "opencode is not installed" in message
        assert "npm install -g opencode-ai" in message
        assert "KIMAKI_OPENCODE_PATH" in message
        assert "kimaki doctor" in message
        assert server.state is ServerState.STOPPED  # not backing off: a retry cannot help
        assert server.statistics().start_failures == 1


async def test_a_missing_program_on_path_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    async with open_opencode_engine(config(tmp_path, command=("opencode",))) as engine:
        with pytest.raises(AgentNotInstalledError, match=r"^opencode is not installed"):
            await engine.server(tmp_path).connection()


@pytest.mark.parametrize("gate", ["--listen-gate", "--health-gate"])
async def test_a_server_killed_while_starting_is_restarted(
    tmp_path: Path, gate: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before it listens, or after it listens but before it is healthy: the request
    waiting for it hears why at once, and the server is started again on its own."""
    gate_file = tmp_path / "gate"
    gate_file.touch()
    listened = trio.Event()
    read_url = opencode_engine._read_listening_url

    async def spy(process: AgentProcess) -> str:
        url = await read_url(process)
        listened.set()
        return url

    monkeypatch.setattr(opencode_engine, "_read_listening_url", spy)
    async with open_opencode_engine(config(tmp_path, gate, str(gate_file))) as engine:
        server = engine.server(tmp_path)
        failed: list[EngineUnavailableError] = []

        async def request() -> None:
            with pytest.raises(EngineUnavailableError) as raised:
                await server.connection()
            failed.append(raised.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(request)
            first_pid = (await server.wait_for_process()).pid
            if gate == "--health-gate":  # past the listening line: health answers 503
                await listened.wait()
            os.kill(first_pid, signal.SIGKILL)
        [error] = failed
        assert "exited with code -9 while starting" in str(error)
        gate_file.unlink()
        with trio.fail_after(20):
            await server.wait_for_state(ServerState.READY)  # no new request needed
        stats = server.statistics()
        assert (stats.starts, stats.crashes, stats.start_failures) == (2, 1, 1)
        assert server.process is not None
        assert server.process.pid != first_pid
        assert not process_running(first_pid)


async def test_a_hung_server_in_use_is_probed_and_restarted(tmp_path: Path) -> None:
    """A server that stops answering without exiting (SIGSTOP) while a turn holds it fails its
    health probe, is killed and restarted; the turn hears it once."""
    probe = ProbePolicy(interval=60.0, silence=0.3, timeout=0.5)
    async with open_opencode_engine(config(tmp_path, probe=probe)) as engine:
        server = engine.server(tmp_path)
        first = await server.connection()
        lost: list[str] = []
        engine._directory(tmp_path).crashed = lambda m, *, gave_up: lost.append(m)  # type: ignore[method-assign]
        server.hold()  # a turn runs
        os.killpg(first.process.pid, signal.SIGSTOP)  # the server and all it runs
        with trio.fail_after(20):
            await server.wait_for_state(ServerState.BACKOFF, ServerState.STARTING)
            second = await server.connection()
        assert second.process.pid != first.process.pid
        assert not process_running(first.process.pid)
        [message] = lost
        assert "stopped answering (no answer to its health check within 0.5 s)" in message
        assert server.statistics().crashes == 1
        server.release()


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
        # No turn ran: nothing waits in the session's queue to end the next turn early.
        with pytest.raises(trio.WouldBlock):
            session.events.receive_nowait()
        last_error = server.statistics().last_error or ""
        assert "crashed 3 times within 60 s" in last_error
        assert "crashing as scripted" in last_error  # the server's own last words
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
