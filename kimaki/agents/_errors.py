"""The exceptions of the agent layer (engines and the agent-server supervisor).

```
EngineError ........................ base; `str(exc)` is fit to show in a Discord thread
├── SessionNotFoundError ........... a resumed session id the engine no longer knows:
│                                    start a new session and tell the person
├── EngineUnavailableError ......... the agent server could not be started, or crashed too
│                                    often and was given up (the message ends with its stderr)
├── TurnInProgressError ............ prompt() while the session's previous turn still runs
└── EngineRequestError ............. the agent refused a request (`status`, engine's message)
```
"""

from __future__ import annotations

from kimaki.errors import KimakiError

__all__ = [
    "EngineError",
    "EngineRequestError",
    "EngineUnavailableError",
    "SessionNotFoundError",
    "TurnInProgressError",
]


class EngineError(KimakiError):
    """Something an engine could not do; the message is written for the person in the thread."""


class SessionNotFoundError(EngineError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"the agent no longer knows session {session_id}")
        self.session_id = session_id


class EngineUnavailableError(EngineError):
    """The agent server is not running and could not be (re)started right now."""


class TurnInProgressError(EngineError):
    pass


class EngineRequestError(EngineError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
