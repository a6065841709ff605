"""The exceptions of the agent layer (engines and the agent-server supervisor).

```
EngineError ........................ base; `str(exc)` is fit to show in a Discord thread
├── SessionNotFoundError ........... a resumed session id the engine no longer knows:
│                                    start a new session and tell the person
├── EngineUnavailableError ......... the agent server could not be started, or crashed too
│   │                                often and was given up (the message ends with its stderr)
│   └── AgentSetupError ............ this machine cannot run the agent as configured; retrying
│       │                            will not help, the message names the fix
│       ├── AgentNotInstalledError . the program is not there (install it, or point at it)
│       └── AgentLoginRequiredError  the agent wants a login first
├── TurnInProgressError ............ prompt() while the session's previous turn still runs
└── EngineRequestError ............. the agent refused a request (`status`, engine's message)
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from kimaki.errors import KimakiError

__all__ = [
    "DOCTOR_HINT",
    "INSTALL_COMMANDS",
    "AgentLoginRequiredError",
    "AgentNotInstalledError",
    "AgentSetupError",
    "EngineError",
    "EngineRequestError",
    "EngineUnavailableError",
    "SessionNotFoundError",
    "TurnInProgressError",
    "first_line",
    "login_fix",
    "setup_fix",
]

DOCTOR_HINT: Final = "`kimaki doctor` checks the setup"

# How to install the programs kimaki starts, by program name. Shared by the lines in a thread
# and by `kimaki doctor`, so both name the same fix.
INSTALL_COMMANDS: Final[Mapping[str, str]] = {
    "opencode": "npm install -g opencode-ai",
    "gemini": "npm install -g @google/gemini-cli",
    "claude-agent-acp": "npm install -g @zed-industries/claude-agent-acp",
}


class EngineError(KimakiError):
    """Something an engine could not do; the message is written for the person in the thread."""


class SessionNotFoundError(EngineError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"the agent no longer knows session {session_id}")
        self.session_id = session_id


class EngineUnavailableError(EngineError):
    """The agent server is not running and could not be (re)started right now."""


class AgentSetupError(EngineUnavailableError):
    """The agent cannot run here as configured (missing program, no login): the supervisor
    does not retry on its own, and the message's first line says what to do."""


class AgentNotInstalledError(AgentSetupError):
    pass


class AgentLoginRequiredError(AgentSetupError):
    pass


class TurnInProgressError(EngineError):
    pass


class EngineRequestError(EngineError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def first_line(message: str) -> str:
    """The first line of an error message: what a thread shows (the stderr tail after it is
    for the log)."""
    return message.strip().splitlines()[0] if message.strip() else message


def setup_fix(program: str, *, setting: str | None = None) -> str:
    """The fix for a program that is not installed, in one line: its install command when
    known, the setting that points at it, and `kimaki doctor`.

    `program` is the command's first word (a name on PATH or a path).
    """
    name = os.path.basename(program)
    ways = []
    install = INSTALL_COMMANDS.get(name)
    if install:
        ways.append(f"install it with `{install}`")
    if setting:
        ways.append(f"point {setting} at it")
    elif os.sep in program:
        ways.append("check the path")
    else:
        ways.append("put it on the daemon's PATH")
    return f"{' or '.join(ways)}; {DOCTOR_HINT}"


def login_fix(agent: str, how: str | None = None, *, home: str = "") -> str:
    """The fix for an agent that needs a login, in one line (`how`: the agent's own login
    methods; `home`: e.g. " with HOME=<its runtime home>")."""
    method = f" ({how})" if how else ""
    return (
        f"log {agent} in{method} on the machine kimaki runs on{home}, then send the "
        f"message again; {DOCTOR_HINT}"
    )
