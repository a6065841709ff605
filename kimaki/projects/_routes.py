"""The daemon's side of the lock port: `kimaki project` run while the daemon is up.

The shell then goes through the daemon, so the daemon's own REST client, rate limits and store
do the work. The lock port listens on 127.0.0.1, where every local user can connect, so the
routes want the token written to `<data-dir>/control-token` (mode 0600) at start-up.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from kimaki._control import ControlServer
from kimaki._http import Request, Response
from kimaki._log import register_secret
from kimaki.projects._errors import ProjectError
from kimaki.projects._operations import Projects
from kimaki.projects._shapes import CONTROL_TOKEN_FILE, TOKEN_HEADER, added_json, record_json

__all__ = ["install_project_routes"]

_Route = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def install_project_routes(control: ControlServer, projects: Projects) -> None:
    """`GET /projects`, `POST /projects` and `POST /projects/remove` on the lock port.

    Writes a fresh token to `<data-dir>/control-token` (0600); requests without it get 401.
    """
    token = secrets.token_urlsafe(32)
    register_secret(token)
    await trio.to_thread.run_sync(_write_private, projects.data_dir / CONTROL_TOKEN_FILE, token)

    async def list_projects(body: dict[str, Any]) -> dict[str, Any]:
        records = await projects.list_projects(guild_id=_optional_int(body.get("guild_id")))
        return {"projects": [record_json(r) for r in records]}

    async def add(body: dict[str, Any]) -> dict[str, Any]:
        directory = body.get("directory")
        if not isinstance(directory, str) or not directory:
            raise ValueError("directory is required")
        guild_id = _optional_int(body.get("guild_id"))
        return added_json(await projects.add(Path(directory), guild_id=guild_id))

    async def remove(body: dict[str, Any]) -> dict[str, Any]:
        channel_id = _optional_int(body.get("channel_id"))
        if channel_id is None:
            raise ValueError("channel_id is required")
        removed = await projects.remove(
            channel_id, delete_channels=body.get("delete_channels") in (True, "true")
        )
        return {"removed": [record_json(r) for r in removed]}

    def route(action: _Route) -> Callable[[Request], Awaitable[Response]]:
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
            except (ProjectError, ValueError) as exc:
                return Response.json({"error": str(exc)}, 400)

        return serve

    control.add_route("GET", "/projects", route(list_projects))
    control.add_route("POST", "/projects", route(add))
    control.add_route("POST", "/projects/remove", route(remove))


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not an id: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"not an id: {value!r}") from None


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by this user only (replacing an older file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
