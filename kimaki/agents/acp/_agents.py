"""Which ACP agents kimaki knows by name, how each is started, and where it keeps its state.

```
name        command                         runtime home (HOME, XDG_*)
opencode    opencode acp                    <data>/agent-runtime/opencode/
kiro        kiro-cli acp                    <data>/agent-runtime/kiro/
gemini      gemini --acp                    <data>/agent-runtime/gemini/
claude      claude-agent-acp                <data>/agent-runtime/claude/
omp         omp --session-dir <data>/omp-agent-runtime/sessions     (the person's own HOME)
anything else: a command line; its name is its program's name
```

Why an isolated home: an agent reads its MCP servers, plugins and settings from the person's
home directory. Run from there, whatever the person configured for their own terminal would
silently reach every Discord channel. With its own home, an agent starts from an empty
configuration and gets only what kimaki passes over ACP (`session/new`'s `mcpServers`).

For the same reason, a variable pointing at other configuration (`OPENCODE_CONFIG`) is not taken
from the daemon's environment; pass it explicitly (`AcpConfig.extra_env`). Logins are the
exception: a few known credential files (OpenCode's `auth.json`, Claude's `.credentials.json`,
Gemini's OAuth files) are copied from the person's home into the runtime home when newer there,
so a login made in a terminal keeps working; provider keys (`*_API_KEY`) pass the environment
allowlist anyway. To log an agent in for kimaki only, run its login with
`HOME=<data>/agent-runtime/<name>`.

OMP keeps the person's home, as seed 004 describes: its auth and model database stay where they
are, and only its session files move under the data directory (`--session-dir`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, final

import attrs

from kimaki.agents._process import child_environment

__all__ = [
    "DEFAULT_AGENTS",
    "AgentCommand",
    "find_agents",
    "locate_program",
    "resolve_agent",
    "runtime_home",
]

RUNTIME_DIR: Final = "agent-runtime"
OMP_SESSIONS: Final = ("omp-agent-runtime", "sessions")
_NAME_JUNK: Final = re.compile(r"[^A-Za-z0-9_.-]+")


@final
@attrs.frozen
class AgentCommand:
    """How to start one ACP agent.

    `home` is the agent's HOME (and XDG base directories), created on launch; None keeps the
    person's own. `credential_files` (relative to a home) are copied from the person's home into
    `home` before each start when newer. `extra_env` is added to the allowlisted environment,
    `passthrough_env` names variables copied from the daemon's environment.
    """

    name: str
    argv: tuple[str, ...]
    home: Path | None = None
    extra_env: Mapping[str, str] = attrs.field(factory=dict)
    passthrough_env: tuple[str, ...] = ()
    credential_files: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return self.argv[0]

    def environment(
        self, extra: Mapping[str, str] | None = None, *, source: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The agent's whole environment (blocking: creates the home, copies credentials)."""
        source = os.environ if source is None else source
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True)
            person_home = source.get("HOME")
            if person_home:
                _copy_credentials(Path(person_home), self.home, self.credential_files)
        return child_environment(
            home=self.home,
            passthrough=self.passthrough_env,
            extra={**self.extra_env, **(extra or {})},
            source=source,
        )


@final
@attrs.frozen
class _Default:
    argv: tuple[str, ...]
    isolated: bool = True
    extra_env: Mapping[str, str] = attrs.field(factory=dict)
    passthrough_env: tuple[str, ...] = ()
    credential_files: tuple[str, ...] = ()


_DEFAULTS: Final[Mapping[str, _Default]] = {
    "opencode": _Default(
        ("opencode", "acp"),
        # The same choice as the OpenCode engine: the bundled model list, no fetch at start.
        extra_env={"OPENCODE_DISABLE_MODELS_FETCH": "1"},
        credential_files=(".local/share/opencode/auth.json",),
    ),
    "kiro": _Default(("kiro-cli", "acp")),
    "gemini": _Default(
        ("gemini", "--acp"),
        passthrough_env=("GOOGLE_CLOUD_PROJECT", "GOOGLE_GENAI_USE_VERTEXAI"),
        credential_files=(".gemini/oauth_creds.json", ".gemini/google_accounts.json"),
    ),
    "claude": _Default(
        ("claude-agent-acp",),
        passthrough_env=("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"),
        credential_files=(".claude/.credentials.json",),
    ),
    "omp": _Default(("omp",), isolated=False, passthrough_env=("OMP_PROFILE",)),
}

DEFAULT_AGENTS: Final[Mapping[str, tuple[str, ...]]] = {
    name: default.argv for name, default in _DEFAULTS.items()
}
"""The agents known by name, and their default command lines."""


def runtime_home(data_dir: Path, name: str) -> Path:
    """`<data>/agent-runtime/<name>`: the isolated home of the agent `name`."""
    return data_dir / RUNTIME_DIR / name


def resolve_agent(name_or_command_line: str, data_dir: Path) -> AgentCommand:
    """An agent by name (`kiro`) or by command line (`kiro-cli acp --trust-all-tools`).

    A command line whose program is a known agent's keeps that agent's name, environment and
    credentials; any other program is an agent named after it. Raises `ValueError` for an empty
    or unparsable command line.
    """
    text = name_or_command_line.strip()
    if text in _DEFAULTS:
        name, argv = text, _DEFAULTS[text].argv
    else:
        try:
            argv = tuple(shlex.split(text))
        except ValueError as exc:
            raise ValueError(f"cannot parse the agent command {text!r}: {exc}") from None
        if not argv:
            raise ValueError("the agent command is empty")
        program = os.path.basename(argv[0])
        known = [n for n, d in _DEFAULTS.items() if os.path.basename(d.argv[0]) == program]
        name = known[0] if known else (_NAME_JUNK.sub("-", program).strip("-.") or "agent")
    default = _DEFAULTS.get(name)
    if name == "omp" and "--session-dir" not in argv:
        argv = (*argv, "--session-dir", str(data_dir.joinpath(*OMP_SESSIONS)))
    if default is None:
        return AgentCommand(name, argv, home=runtime_home(data_dir, name))
    return AgentCommand(
        name,
        argv,
        home=runtime_home(data_dir, name) if default.isolated else None,
        extra_env=dict(default.extra_env),
        passthrough_env=default.passthrough_env,
        credential_files=default.credential_files,
    )


def find_agents(
    path_env: str | None = None, agents: Mapping[str, Sequence[str]] = DEFAULT_AGENTS
) -> list[tuple[str, str | None]]:
    """Each agent's name and the absolute path its program runs from, or None (blocking).

    For `kimaki doctor` and the start-up log: which agents this machine can run.
    """
    return [(name, locate_program(argv[0], path_env)) for name, argv in agents.items()]


def locate_program(program: str, path_env: str | None = None) -> str | None:
    """The absolute path `program` runs from, or None when it is not there (blocking).

    A program with a `/` (KIMAKI_OPENCODE_PATH=/opt/opencode/bin/opencode) is that file;
    a bare name is looked up on `path_env` (default `$PATH`), as the exec will do. Either way
    it must be an executable file.
    """
    path = os.environ.get("PATH", os.defpath) if path_env is None else path_env
    found = shutil.which(program, path=path)
    return os.path.abspath(found) if found else None


def _copy_credentials(source_home: Path, home: Path, files: Sequence[str]) -> None:
    if source_home.resolve() == home.resolve():
        return
    for relative in files:
        source = source_home / relative
        target = home / relative
        with contextlib.suppress(OSError):
            if not source.is_file():
                continue
            if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            target.chmod(0o600)
