"""Named agents, custom command lines, runtime isolation and what `kimaki doctor` reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kimaki.agents.acp import DEFAULT_AGENTS, AgentCommand, find_agents, resolve_agent


def test_named_agents_and_their_runtime_homes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    expected = {
        "opencode": ("opencode", "acp"),
        "kiro": ("kiro-cli", "acp"),
        "gemini": ("gemini", "--acp"),
        "claude": ("claude-agent-acp",),
    }
    for name, argv in expected.items():
        agent = resolve_agent(name, data)
        assert (agent.name, agent.argv) == (name, argv)
        assert agent.home == data / "agent-runtime" / name
    omp = resolve_agent("omp", data)
    assert omp.argv == ("omp", "--session-dir", str(data / "omp-agent-runtime" / "sessions"))
    assert omp.home is None  # OMP keeps its own auth and model database
    assert set(DEFAULT_AGENTS) == {*expected, "omp"}


def test_custom_command_lines(tmp_path: Path) -> None:
    agent = resolve_agent("/opt/bin/kiro-cli acp --trust-all-tools", tmp_path)
    assert agent.name == "kiro"  # a known program keeps its agent's name and home
    assert agent.argv == ("/opt/bin/kiro-cli", "acp", "--trust-all-tools")
    assert agent.home == tmp_path / "agent-runtime" / "kiro"
    custom = resolve_agent("'my agent.sh' --stdio", tmp_path)
    assert (custom.name, custom.argv) == ("my-agent.sh", ("my agent.sh", "--stdio"))
    assert custom.home == tmp_path / "agent-runtime" / "my-agent.sh"
    omp = resolve_agent("omp --session-dir /elsewhere", tmp_path)
    assert omp.argv == ("omp", "--session-dir", "/elsewhere")
    with pytest.raises(ValueError, match="empty"):
        resolve_agent("   ", tmp_path)
    with pytest.raises(ValueError, match="cannot parse"):
        resolve_agent("agent 'unclosed", tmp_path)


def test_find_agents_on_a_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("kiro-cli", "omp"):
        path = bin_dir / program
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    (bin_dir / "gemini").write_text("not executable")
    found = dict(find_agents(str(bin_dir)))
    assert found == {
        "opencode": None,
        "kiro": str(bin_dir / "kiro-cli"),
        "gemini": None,
        "claude": None,
        "omp": str(bin_dir / "omp"),
    }


def test_the_environment_is_isolated_and_logins_carry_over(tmp_path: Path) -> None:
    person = tmp_path / "person"
    auth = person / ".local/share/opencode/auth.json"
    auth.parent.mkdir(parents=True)
    auth.write_text('{"anthropic": "secret"}')
    mcp = person / ".config/opencode/opencode.json"
    mcp.parent.mkdir(parents=True)
    mcp.write_text('{"mcp": {"everything": {}}}')
    agent = resolve_agent("opencode", tmp_path / "data")
    source = {
        "HOME": str(person),
        "PATH": "/usr/bin",
        "DISCORD_TOKEN": "bot",
        "KIMAKI_TOKEN": "bot",
        "OPENAI_API_KEY": "sk-own",
        "OPENCODE_CONFIG": "/etc/kimaki-opencode.json",
        "UNRELATED": "x",
    }
    env = agent.environment({"EXTRA": "1"}, source=source)
    home = tmp_path / "data" / "agent-runtime" / "opencode"
    assert env["HOME"] == str(home)
    assert env["XDG_CONFIG_HOME"] == str(home / ".config")
    assert env["OPENAI_API_KEY"] == "sk-own"
    assert env["OPENCODE_DISABLE_MODELS_FETCH"] == "1"
    assert env["EXTRA"] == "1"
    # The person's own configuration does not come along, not even by its variable.
    assert not {"DISCORD_TOKEN", "KIMAKI_TOKEN", "UNRELATED", "OPENCODE_CONFIG"} & set(env)
    copied = home / ".local/share/opencode/auth.json"
    assert copied.read_text() == '{"anthropic": "secret"}'
    assert copied.stat().st_mode & 0o777 == 0o600
    assert not (home / ".config/opencode/opencode.json").exists()  # settings stay behind
    # A newer login is copied again; an older one never overwrites the agent's own.
    copied.write_text("agent's own")
    os.utime(copied, (auth.stat().st_mtime + 10,) * 2)
    agent.environment(source=source)
    assert copied.read_text() == "agent's own"
    auth.write_text('{"anthropic": "renewed"}')
    os.utime(auth, (copied.stat().st_mtime + 10,) * 2)
    agent.environment(source=source)
    assert copied.read_text() == '{"anthropic": "renewed"}'


def test_a_custom_agent_without_a_home_keeps_the_persons(tmp_path: Path) -> None:
    agent = AgentCommand("mine", ("mine",))
    env = agent.environment(source={"HOME": "/home/me", "DISCORD_BOT_TOKEN": "x"})
    assert env["HOME"] == "/home/me"
    assert "DISCORD_BOT_TOKEN" not in env
