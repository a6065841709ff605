"""The daemon's side of the lock port: `kimaki project` run while the daemon is up.

The shell then goes through the daemon, so the daemon's own REST client, rate limits and store
do the work. The lock port listens on 127.0.0.1, where every local user can connect, so the
routes want the token written to `<data-dir>/control-token` (mode 0600) at start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kimaki._control import ControlServer
from kimaki._control_client import JsonAction, issue_control_token, json_route, optional_id
from kimaki._http import Request, Response
from kimaki.projects._errors import ProjectError
from kimaki.projects._operations import Projects
from kimaki.projects._shapes import added_json, record_json

__all__ = ["install_project_routes"]


async def install_project_routes(
    control: ControlServer, projects: Projects, token: str | None = None
) -> None:
    """`GET /projects`, `POST /projects` and `POST /projects/remove` on the lock port.

    `token` is the daemon's control token (`issue_control_token`), shared with the other
    subsystems' routes; without one a fresh token is written to `<data-dir>/control-token`
    (0600). Requests without it get 401.
    """
    if token is None:
        token = await issue_control_token(projects.data_dir)

    async def list_projects(body: dict[str, Any]) -> dict[str, Any]:
        records = await projects.list_projects(guild_id=optional_id(body.get("guild_id")))
        return {"projects": [record_json(r) for r in records]}

    async def add(body: dict[str, Any]) -> dict[str, Any]:
        directory = body.get("directory")
        if not isinstance(directory, str) or not directory:
            raise ValueError("directory is required")
        guild_id = optional_id(body.get("guild_id"))
        return added_json(await projects.add(Path(directory), guild_id=guild_id))

    async def remove(body: dict[str, Any]) -> dict[str, Any]:
        channel_id = optional_id(body.get("channel_id"))
        if channel_id is None:
            raise ValueError("channel_id is required")
        removed = await projects.remove(
            channel_id, delete_channels=body.get("delete_channels") in (True, "true")
        )
        return {"removed": [record_json(r) for r in removed]}

    def route(action: JsonAction) -> Callable[[Request], Awaitable[Response]]:
        return json_route(token, action, refused=(ProjectError, ValueError))

    control.add_route("GET", "/projects", route(list_projects))
    control.add_route("POST", "/projects", route(add))
    control.add_route("POST", "/projects/remove", route(remove))
