from __future__ import annotations

from pathlib import Path

import pytest

from kimaki.errors import ConfigError
from kimaki.settings import DEFAULT_DISCORD_API_URL, derive_lock_port, load_settings

TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2.GabcDE.abcdefghijklmnopqrstuvwxyz0123456789AB"


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings(environ={})
    assert settings.data_dir == tmp_path / ".kimaki"
    assert settings.projects_dir == tmp_path / ".kimaki" / "projects"
    assert settings.discord_api_url == DEFAULT_DISCORD_API_URL
    assert settings.lock_port == derive_lock_port(tmp_path / ".kimaki")
    assert settings.opencode_path == "opencode"
    assert settings.bot_token is None
    assert settings.database_path == tmp_path / ".kimaki" / "discord-sessions.db"
    assert settings.log_path == tmp_path / ".kimaki" / "kimaki.log"


def test_flags_beat_environment_beats_defaults(tmp_path: Path) -> None:
    env = {
        "KIMAKI_DATA_DIR": str(tmp_path / "env-data"),
        "KIMAKI_PROJECTS_DIR": str(tmp_path / "env-projects"),
        "KIMAKI_LOCK_PORT": "31001",
    }
    from_env = load_settings(environ=env)
    assert from_env.data_dir == tmp_path / "env-data"
    assert from_env.projects_dir == tmp_path / "env-projects"
    assert from_env.lock_port == 31001

    from_flags = load_settings(
        data_dir=str(tmp_path / "flag-data"),
        projects_dir=str(tmp_path / "flag-projects"),
        lock_port="31002",
        environ=env,
    )
    assert from_flags.data_dir == tmp_path / "flag-data"
    assert from_flags.projects_dir == tmp_path / "flag-projects"
    assert from_flags.lock_port == 31002


def test_projects_dir_follows_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path / "d"), environ={})
    assert settings.projects_dir == tmp_path / "d" / "projects"


def test_relative_and_tilde_paths_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings(data_dir="rel/../data", projects_dir="~/p", environ={})
    assert settings.data_dir == tmp_path / "data"
    assert settings.projects_dir == tmp_path / "home" / "p"


def test_lock_port_is_stable_in_range_and_differs_per_data_dir(tmp_path: Path) -> None:
    ports = {derive_lock_port(tmp_path / f"bot{i}") for i in range(50)}
    assert all(30000 <= port <= 39999 for port in ports)
    assert len(ports) > 45  # different data dirs get different ports (a rare collision is fine)
    assert derive_lock_port(tmp_path / "bot1") == derive_lock_port(tmp_path / "bot1")


def test_api_url_and_opencode_path_from_environment(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=str(tmp_path),
        environ={
            "KIMAKI_DISCORD_API_URL": "http://127.0.0.1:9999/api/v10/",
            "KIMAKI_OPENCODE_PATH": "/opt/opencode/bin/opencode",
            "KIMAKI_BOT_TOKEN": TOKEN,
        },
    )
    assert settings.discord_api_url == "http://127.0.0.1:9999/api/v10"
    assert settings.opencode_path == "/opt/opencode/bin/opencode"
    assert settings.bot_token == TOKEN
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("kwargs", "environ", "expected"),
    [
        ({"lock_port": "abc"}, {}, "--lock-port must be a port number, got 'abc'"),
        ({"lock_port": "70000"}, {}, "--lock-port must be between 1 and 65535, got 70000"),
        ({}, {"KIMAKI_LOCK_PORT": "0"}, "KIMAKI_LOCK_PORT must be between 1 and 65535, got 0"),
        ({}, {"KIMAKI_LOCK_PORT": "x1"}, "KIMAKI_LOCK_PORT must be a port number, got 'x1'"),
        (
            {},
            {"KIMAKI_DISCORD_API_URL": "discord.com/api"},
            "KIMAKI_DISCORD_API_URL must be an http(s) URL",
        ),
        ({}, {"KIMAKI_BOT_TOKEN": "short"}, "KIMAKI_BOT_TOKEN does not look like a Discord bot"),
        (
            {},
            {"KIMAKI_BOT_TOKEN": TOKEN[:20] + " " + TOKEN[20:]},
            "KIMAKI_BOT_TOKEN does not look like a Discord bot token",
        ),
        (
            {},
            {"KIMAKI_BOT_TOKEN": "Bot " + TOKEN},
            "KIMAKI_BOT_TOKEN must be the bare token, without the 'Bot ' prefix",
        ),
    ],
)
def test_validation_messages_name_what_to_fix(
    tmp_path: Path, kwargs: dict[str, str], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data_dir=str(tmp_path), environ=environ, **kwargs)
    assert expected in str(info.value)
    assert TOKEN not in str(info.value)


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--data-dir / KIMAKI_DATA_DIR: .* not a directory"):
        load_settings(data_dir=str(tmp_path / "file"), environ={})
    with pytest.raises(ConfigError, match=r"KIMAKI_PROJECTS_DIR: .* not a directory"):
        load_settings(environ={"KIMAKI_PROJECTS_DIR": str(tmp_path / "file")})


@pytest.mark.parametrize(
    ("value", "seconds"), [("90", 90.0), ("45s", 45.0), ("30m", 1800.0), ("2h", 7200.0)]
)
def test_agent_idle_timeout(tmp_path: Path, value: str, seconds: float) -> None:
    assert load_settings(data_dir=str(tmp_path), environ={}).agent_idle_timeout == 1800.0
    settings = load_settings(data_dir=str(tmp_path), environ={"KIMAKI_AGENT_IDLE_TIMEOUT": value})
    assert settings.agent_idle_timeout == seconds


def test_agent_probe_interval_and_silence_timeout(tmp_path: Path) -> None:
    defaults = load_settings(data_dir=str(tmp_path), environ={})
    assert (defaults.agent_probe_interval, defaults.agent_silence_timeout) == (60.0, 60.0)
    settings = load_settings(
        data_dir=str(tmp_path),
        environ={"KIMAKI_AGENT_PROBE_INTERVAL": "2m", "KIMAKI_AGENT_SILENCE_TIMEOUT": "45s"},
    )
    assert (settings.agent_probe_interval, settings.agent_silence_timeout) == (120.0, 45.0)
    for name in ("KIMAKI_AGENT_PROBE_INTERVAL", "KIMAKI_AGENT_SILENCE_TIMEOUT"):
        with pytest.raises(ConfigError, match=f"{name} must be a duration"):
            load_settings(data_dir=str(tmp_path), environ={name: "0"})


@pytest.mark.parametrize("value", ["soon", "0", "-5m", "m"])
def test_agent_idle_timeout_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="KIMAKI_AGENT_IDLE_TIMEOUT must be a duration"):
        load_settings(data_dir=str(tmp_path), environ={"KIMAKI_AGENT_IDLE_TIMEOUT": value})


def test_memory_settings(tmp_path: Path) -> None:
    default = load_settings(data_dir=str(tmp_path), environ={})
    assert (default.memory_limit, default.trace_memory) == (None, False)
    from_env = load_settings(
        data_dir=str(tmp_path),
        environ={"KIMAKI_MEMORY_LIMIT": "2G", "KIMAKI_TRACE_MEMORY": "1"},
    )
    assert (from_env.memory_limit, from_env.trace_memory) == (2 * 2**30, True)
    from_flags = load_settings(
        data_dir=str(tmp_path),
        memory_limit="512M",
        trace_memory=True,
        environ={"KIMAKI_MEMORY_LIMIT": "2G"},
    )
    assert from_flags.memory_limit == 512 * 2**20
    with pytest.raises(ConfigError, match="--memory-limit must be a size such as 512M or 2G"):
        load_settings(data_dir=str(tmp_path), memory_limit="lots", environ={})
    with pytest.raises(ConfigError, match="KIMAKI_MEMORY_LIMIT must be a size"):
        load_settings(data_dir=str(tmp_path), environ={"KIMAKI_MEMORY_LIMIT": "-3"})


def test_gateway_handshake_timeout(tmp_path: Path) -> None:
    assert load_settings(data_dir=str(tmp_path), environ={}).gateway_handshake_timeout == 15.0
    settings = load_settings(
        data_dir=str(tmp_path), environ={"KIMAKI_GATEWAY_HANDSHAKE_TIMEOUT": "30s"}
    )
    assert settings.gateway_handshake_timeout == 30.0
    with pytest.raises(ConfigError, match="KIMAKI_GATEWAY_HANDSHAKE_TIMEOUT must be a duration"):
        load_settings(data_dir=str(tmp_path), environ={"KIMAKI_GATEWAY_HANDSHAKE_TIMEOUT": "0"})
