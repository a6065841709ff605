"""The ACP agents and the default engine in settings: `KIMAKI_AGENTS`, `KIMAKI_DEFAULT_ENGINE`."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimaki.agents.acp import AgentCommand
from kimaki.errors import ConfigError
from kimaki.settings import Settings, load_settings


def settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(environ={"KIMAKI_DATA_DIR": str(tmp_path / "data"), **env})


def agents(loaded: Settings) -> dict[str, AgentCommand]:
    return {agent.name: agent for agent in loaded.agents}


def test_the_named_agents_of_the_issue_by_default(tmp_path: Path) -> None:
    loaded = settings(tmp_path)
    data = tmp_path / "data"
    assert {name: agent.argv for name, agent in agents(loaded).items()} == {
        "opencode": ("opencode", "acp"),
        "kiro": ("kiro-cli", "acp"),
        "gemini": ("gemini", "--acp"),
        "claude": ("claude-agent-acp",),
        "omp": ("omp", "--session-dir", str(data / "omp-agent-runtime" / "sessions")),
    }
    assert loaded.default_engine == "opencode"
    assert loaded.engine_names == (
        "opencode",
        "acp:opencode",
        "acp:kiro",
        "acp:gemini",
        "acp:claude",
        "acp:omp",
    )


def test_an_entry_replaces_a_default_and_keeps_its_home(tmp_path: Path) -> None:
    loaded = settings(tmp_path, KIMAKI_AGENTS="kiro = kiro-cli acp --trust-all-tools")
    kiro = agents(loaded)["kiro"]
    assert kiro.argv == ("kiro-cli", "acp", "--trust-all-tools")
    assert kiro.home == tmp_path / "data" / "agent-runtime" / "kiro"
    assert len(loaded.agents) == 5


def test_custom_agents_by_name_or_bare_command_line(tmp_path: Path) -> None:
    loaded = settings(
        tmp_path,
        KIMAKI_AGENTS="mine=/opt/agent/bin/run --acp --flag='a b';\n  my-agent --level=3  \n",
        KIMAKI_DEFAULT_ENGINE="acp:mine",
    )
    found = agents(loaded)
    assert found["mine"].argv == ("/opt/agent/bin/run", "--acp", "--flag=a b")
    assert found["mine"].home == tmp_path / "data" / "agent-runtime" / "mine"
    assert found["my-agent"].argv == ("my-agent", "--level=3")
    assert loaded.default_engine == "acp:mine"
    assert loaded.engine_names[-2:] == ("acp:mine", "acp:my-agent")


def test_a_second_name_for_a_known_agent_shares_its_login(tmp_path: Path) -> None:
    """`fast=opencode acp ...` is another OpenCode ACP agent: same home, same credentials."""
    found = agents(settings(tmp_path, KIMAKI_AGENTS="fast=opencode acp --model x/y"))
    assert found["fast"].argv == ("opencode", "acp", "--model", "x/y")
    assert found["fast"].home == found["opencode"].home
    assert found["fast"].credential_files == found["opencode"].credential_files


def test_acp_opencode_runs_the_configured_opencode(tmp_path: Path) -> None:
    """KIMAKI_OPENCODE_PATH says which OpenCode this machine runs, for both of its engines."""
    opencode = "/opt/opencode/bin/opencode"
    loaded = settings(
        tmp_path, KIMAKI_OPENCODE_PATH=opencode, KIMAKI_AGENTS="fast=opencode acp --model x/y"
    )
    found = agents(loaded)
    assert loaded.engine_commands["opencode"] == (opencode, "serve")
    assert loaded.engine_commands["acp:opencode"] == (opencode, "acp")
    assert found["fast"].argv == (opencode, "acp", "--model", "x/y")
    # A command line naming another OpenCode on purpose keeps it.
    other = agents(settings(tmp_path, KIMAKI_OPENCODE_PATH=opencode, KIMAKI_AGENTS="o=/tmp/oc acp"))
    assert other["o"].argv == ("/tmp/oc", "acp")


def test_an_empty_command_line_removes_an_agent(tmp_path: Path) -> None:
    loaded = settings(tmp_path, KIMAKI_AGENTS="gemini=; omp=")
    assert list(agents(loaded)) == ["opencode", "kiro", "claude"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mine=my-agent 'unclosed", "cannot parse the agent command"),
        ("=my-agent", "'' is not an agent name"),
        ("acp:mine=my-agent", "'acp:mine' is not an agent name"),
        ("a-much-too-long-agent-name-over-32-chars=x", "is not an agent name"),
    ],
)
def test_a_bad_entry_names_the_variable(tmp_path: Path, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="KIMAKI_AGENTS") as caught:
        settings(tmp_path, KIMAKI_AGENTS=value)
    assert expected in str(caught.value)


@pytest.mark.parametrize("engine", ["gemini", "acp:nobody", "acp:gemini"])
def test_an_unknown_default_engine_lists_the_choices(tmp_path: Path, engine: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, KIMAKI_DEFAULT_ENGINE=engine, KIMAKI_AGENTS="gemini=")
    message = str(caught.value)
    assert message.startswith("KIMAKI_DEFAULT_ENGINE must be one of opencode, acp:opencode")
    assert "acp:gemini," not in message
    assert repr(engine) in message


def test_the_default_engine_may_be_an_acp_agent(tmp_path: Path) -> None:
    assert settings(tmp_path, KIMAKI_DEFAULT_ENGINE=" acp:claude ").default_engine == "acp:claude"
