"""The exceptions that end the daemon, and the exit code each one means.

```
KimakiError
├── FatalError ................ stops the daemon; `exit_code` says how (see docs/operations.md)
│   ├── ConfigError ........... 64: usage or configuration (no token, bad flag, lock held, ...)
│   └── CredentialsError ...... 78: Discord rejected the credentials or a required intent
```

Anything else escaping the root nursery is a crash (exit 70). `FatalError`s carry a message
written for the person running the daemon: what is wrong and how to fix it, in one line.
Errors of a single subsystem (REST, gateway, engines) have their own trees in their modules.
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = [
    "EXIT_CRASH",
    "EXIT_CREDENTIALS",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConfigError",
    "CredentialsError",
    "FatalError",
    "KimakiError",
]

EXIT_OK: Final = 0
EXIT_USAGE: Final = 64  # EX_USAGE
EXIT_CRASH: Final = 70  # EX_SOFTWARE
EXIT_CREDENTIALS: Final = 78  # EX_CONFIG


class KimakiError(Exception):
    """Base of every exception this package defines."""


class FatalError(KimakiError):
    """The daemon cannot go on; `str(exc)` is the one line shown to the person running it."""

    exit_code: ClassVar[int] = EXIT_CRASH


class ConfigError(FatalError):
    """A usage or configuration problem the person running the daemon can fix."""

    exit_code: ClassVar[int] = EXIT_USAGE


class CredentialsError(FatalError):
    """Discord rejected the bot token, or an intent the bot needs is switched off."""

    exit_code: ClassVar[int] = EXIT_CREDENTIALS
