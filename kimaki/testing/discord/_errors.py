"""The emulator's exceptions.

```
EmulatorError
├── DiscordAPIError ........ Discord would refuse this (status, JSON code, message, form errors);
│                            the REST side answers with it, actors raise it to the test
├── InvalidRequestError .... a request the bot sent does not match discord-openapi.json
└── WaitTimeout ............ a waiter gave up; the message carries the channel's transcript
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kimaki.errors import KimakiError

__all__ = [
    "DiscordAPIError",
    "EmulatorError",
    "InvalidRequestError",
    "WaitTimeout",
    "invalid_form_body",
]


class EmulatorError(KimakiError):
    """Base of the emulator's exceptions."""


class DiscordAPIError(EmulatorError):
    """An error Discord would answer with, in its JSON shape."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def invalid_form_body(path: Sequence[str | int], code: str, message: str) -> DiscordAPIError:
    """A 50035 with Discord's nested `errors` object pointing at the offending field."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path):
        errors = {str(part): errors}
    return DiscordAPIError(400, 50035, "Invalid Form Body", errors)


class InvalidRequestError(EmulatorError):
    """The bot sent a request the OpenAPI description of Discord does not allow."""


class WaitTimeout(EmulatorError):
    """A waiter timed out; `str(exc)` includes what the channel looked like."""
