"""The lock port's authenticated JSON API, both sides: the control token, the daemon's route
wrapper, and the one client every shell command (`kimaki project`, `send`, `task`, `session`)
uses to reach a running daemon.

The lock port listens on 127.0.0.1, where every local user can connect, so every route but
`/health` wants the token the daemon writes to `<data-dir>/control-token` (mode 0600) when it
starts: only the daemon's own user (or root) can read it. One token per daemon process, shared
by every subsystem's routes (a second one written later would lock the first routes out).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Final, final

import httpx
import trio

from kimaki._control import control_url, query_health
from kimaki._http import Request, Response
from kimaki._log import register_secret
from kimaki.errors import ConfigError, FatalError, KimakiError

__all__ = [
    "CONTROL_TOKEN_FILE",
    "EXIT_UNAVAILABLE",
    "TOKEN_HEADER",
    "ControlClient",
    "ControlError",
    "DaemonNotRunningError",
    "JsonAction",
    "find_daemon",
    "issue_control_token",
    "json_route",
    "optional_id",
]

CONTROL_TOKEN_FILE: Final = "control-token"
"""Under the data dir, mode 0600: the lock port listens where every local user can connect."""
TOKEN_HEADER: Final = "x-kimaki-control-token"
EXIT_UNAVAILABLE: Final = 69  # EX_UNAVAILABLE

JsonAction = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""A route's work: the request's JSON object (with the query's values) → the answer's."""


class ControlError(KimakiError):
    """The daemon could not be reached on the lock port, or refused a call; `str()` is the one
    line for the person (the daemon's own message when it sent one)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DaemonNotRunningError(FatalError):
    """Something that needs the running daemon (an immediate send, a session's messages) was
    asked with none running for this data dir: exit 69."""

    exit_code: ClassVar[int] = EXIT_UNAVAILABLE


async def issue_control_token(data_dir: Path) -> str:
    """A fresh token for this daemon process, written to `<data-dir>/control-token` (0600,
    replacing an older one) and kept out of the log."""
    token = secrets.token_urlsafe(32)
    register_secret(token)
    await trio.to_thread.run_sync(_write_private, data_dir / CONTROL_TOKEN_FILE, token)
    return token


def json_route(
    token: str,
    action: JsonAction,
    *,
    refused: tuple[type[Exception], ...] = (ValueError,),
) -> Callable[[Request], Awaitable[Response]]:
    """A lock-port route: 401 without the token, 400 for a body that is not a JSON object, the
    action's answer as JSON, and the exceptions in `refused` as `{"error": str(exc)}` (400):
    they are written for the person, who reads them on the command line."""

    async def serve(request: Request) -> Response:
        given = request.header(TOKEN_HEADER) or ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            return Response.json({"error": "a valid control token is required"}, 401)
        try:
            body = request.json() if request.body else {}
        except ValueError:
            return Response.json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return Response.json({"error": "the body must be a JSON object"}, 400)
        # A GET has no body: its filters come in the query.
        body.update({key: values[0] for key, values in request.query.items()})
        try:
            return Response.json(await action(body))
        except refused as exc:
            return Response.json({"error": str(exc)}, 400)

    return serve


@final
class ControlClient:
    """A running daemon's routes, as the shell calls them."""

    def __init__(self, port: int, token: str) -> None:
        self._url = control_url(port)
        self._token = token

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        missing: str = "the running daemon does not take this command yet (still connecting "
        "to Discord?); try again in a moment",
        waits: bool = False,
    ) -> dict[str, Any]:
        """The route's JSON object; `ControlError` with the daemon's message otherwise.
        `missing` is what a 404 means: the daemon runs but has not installed those routes (yet:
        the routes that need Discord come once it is connected). `waits`: no time limit on the
        answer (a send that waits for its turn to end)."""
        try:
            timeout = httpx.Timeout(60.0, read=None) if waits else httpx.Timeout(60.0)
            async with httpx.AsyncClient(base_url=self._url, timeout=timeout) as client:
                response = await client.request(
                    method, path, json=body, headers={TOKEN_HEADER: self._token}
                )
        except httpx.HTTPError as exc:
            raise ControlError(f"the daemon did not answer on the lock port: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 404:
            raise ControlError(missing, status=404)
        if response.status_code != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else None
            message = str(error or f"the daemon answered {response.status_code}")
            raise ControlError(message, status=response.status_code)
        return data


async def find_daemon(lock_port: int, data_dir: Path) -> ControlClient | None:
    """The running daemon of `data_dir`, or None when there is none (`ConfigError` when it runs
    but its token cannot be read: another user's daemon)."""
    health = await query_health(lock_port)
    if health is None or health.get("data_dir") != str(data_dir):
        return None
    token_path = data_dir / CONTROL_TOKEN_FILE
    try:
        token = (await trio.Path(token_path).read_text()).strip()
    except OSError as exc:
        raise ConfigError(
            f"the daemon (pid {health.get('pid')}) runs, but its control token "
            f"{token_path} cannot be read: {exc.strerror}"
        ) from None
    register_secret(token)
    return ControlClient(lock_port, token)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by this user only (replacing an older file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def optional_id(value: Any) -> int | None:
    """A Discord id (or task id) given as a number or a string; `ValueError` otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not an id: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"not an id: {value!r}") from None
