"""The control endpoint on the lock port: single-instance lock, `/health`, and IPC.

Binding the port *is* the lock: a second daemon for the same data dir fails to bind, asks the
holder's `/health` who it is, and exits 64 naming the holder's pid. The port is derived from the
data dir, so daemons with different data dirs run side by side. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, final

import httpx
import trio

from kimaki._http import Request, Response, serve_http
from kimaki.errors import ConfigError

__all__ = ["ControlServer", "control_url", "query_health"]

log = logging.getLogger("kimaki.control")

Route = Callable[[Request], Awaitable[Response]]


def control_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@final
class ControlServer:
    """Serves the lock port. Routes are added by the subsystems that own them."""

    def __init__(self, *, port: int, data_dir: Path, health: Callable[[], dict[str, Any]]) -> None:
        self._port = port
        self._data_dir = data_dir
        self._routes: dict[tuple[str, str], Route] = {("GET", "/health"): self._health_route}
        self._health = health

    def add_route(self, method: str, path: str, route: Route) -> None:
        self._routes[(method.upper(), path)] = route

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the lock port (or raise `ConfigError` saying who holds it) and serve."""
        try:
            await serve_http(
                self._dispatch, port=self._port, name="control", task_status=task_status
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(
                    f"cannot bind the lock port 127.0.0.1:{self._port} ({exc.strerror}); "
                    "set KIMAKI_LOCK_PORT to a free port"
                ) from None
            raise await self._lock_conflict() from None

    async def _lock_conflict(self) -> ConfigError:
        holder = await query_health(self._port)
        if holder is None:
            return ConfigError(
                f"lock port {self._port} is in use by another program; "
                "set KIMAKI_LOCK_PORT to a free port"
            )
        if holder.get("data_dir") == str(self._data_dir):
            return ConfigError(
                f"another kimaki is running for {self._data_dir} (pid {holder.get('pid')})"
            )
        return ConfigError(
            f"lock port {self._port} is held by the kimaki for {holder.get('data_dir')} "
            f"(pid {holder.get('pid')}); set KIMAKI_LOCK_PORT to another port for "
            f"{self._data_dir}"
        )

    async def _dispatch(self, request: Request) -> Response:
        route = self._routes.get((request.method, request.path))
        if route is None:
            known = {path for _, path in self._routes}
            status = 405 if request.path in known else 404
            return Response.json({"error": "not found" if status == 404 else "bad method"}, status)
        return await route(request)

    async def _health_route(self, request: Request) -> Response:
        return Response.json(self._health())


async def query_health(port: int) -> dict[str, Any] | None:
    """The `/health` answer of whatever listens on `port`, or None if it is not a kimaki."""
    try:
        async with httpx.AsyncClient(base_url=control_url(port), timeout=2.0) as client:
            response = await client.get("/health")
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(data, dict) or "pid" not in data or "data_dir" not in data:
        return None
    return data
