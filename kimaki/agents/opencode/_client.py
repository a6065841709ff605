"""An HTTP client for one `opencode serve` (paths and shapes of OpenCode 1.18.33).

Two httpx clients share the base URL and credentials: one for ordinary requests, one only for
the `GET /event` stream. A long-lived stream holds its connection for hours; on its own pool it
can never take the connection an abort or a permission reply needs.

Failures become the engine's errors: an unreachable server is `EngineUnavailableError`, an
error answer `EngineRequestError` (or `SessionNotFoundError` for an unknown session), an
answer that is not the JSON the API documents `EngineRequestError` too (the real server answers
unknown paths with its web UI, 200 text/html).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, final

import httpx

from kimaki._log import register_secret
from kimaki.agents._engine import AttachedFile, ModelRef
from kimaki.agents._errors import EngineRequestError, EngineUnavailableError, SessionNotFoundError
from kimaki.agents.opencode._sse import SSEEvent, SSEParser
from kimaki.agents.opencode._wire import (
    MessageInfo,
    Part,
    SessionInfo,
    decode_message,
    decode_part,
    decode_session,
)

__all__ = ["USERNAME", "OpenCodeClient", "file_part", "text_part"]

log = logging.getLogger("kimaki.opencode")

USERNAME: Final = "opencode"
# The server sends `server.heartbeat` every 10 s; three missed beats mean a dead stream.
_STREAM_READ_TIMEOUT: Final = 35.0


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def file_part(file: AttachedFile) -> dict[str, Any]:
    encoded = base64.b64encode(file.data).decode("ascii")
    return {
        "type": "file",
        "mime": file.mime,
        "filename": file.filename,
        "url": f"data:{file.mime};base64,{encoded}",
    }


@final
class OpenCodeClient:
    def __init__(
        self,
        base_url: str,
        password: str | None,
        *,
        timeout: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        self.base_url = base_url
        register_secret(password)
        auth = httpx.BasicAuth(USERNAME, password) if password else None
        # `verify=False`: the server is plain HTTP on 127.0.0.1, so TLS is never used, and
        # without it each client would load the CA bundle (~0.1 s of blocked event loop, twice
        # per server start, and on the critical path of an in-place restart).
        self._http = httpx.AsyncClient(
            base_url=base_url,
            auth=auth,
            verify=False,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._stream_http = httpx.AsyncClient(
            base_url=base_url,
            auth=auth,
            verify=False,
            timeout=httpx.Timeout(5.0, read=_STREAM_READ_TIMEOUT),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._stream_http.aclose()

    # ------------------------------------------------------------------ plumbing

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        request_timeout: float | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if request_timeout is None else request_timeout,
            )
        except httpx.TransportError as exc:
            raise EngineUnavailableError(f"the OpenCode server is not reachable ({exc!r})") from exc
        if response.status_code == 404 and session_id is not None:
            raise SessionNotFoundError(session_id)
        if response.status_code >= 400:
            raise EngineRequestError(_error_message(response), status=response.status_code)
        return response

    async def _json(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        request_timeout: float | None = None,
    ) -> Any:
        response = await self._request(
            method,
            path,
            json=json,
            params=params,
            session_id=session_id,
            request_timeout=request_timeout,
        )
        if not response.headers.get("content-type", "").startswith("application/json"):
            raise EngineRequestError(
                f"OpenCode answered {method} {path} with {response.headers.get('content-type')}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise EngineRequestError(f"OpenCode answered {method} {path} with bad JSON") from exc

    # ------------------------------------------------------------------ API

    async def health(self) -> str:
        """The server's version; raises unless it says it is healthy."""
        body = await self._json("GET", "/global/health")
        if not isinstance(body, dict) or body.get("healthy") is not True:
            raise EngineRequestError(f"OpenCode reports itself unhealthy: {body!r}")
        return str(body.get("version", ""))

    async def create_session(self, *, title: str | None = None) -> SessionInfo:
        body: dict[str, Any] = {} if title is None else {"title": title}
        return decode_session(await self._json("POST", "/session", json=body))

    async def get_session(self, session_id: str) -> SessionInfo:
        return decode_session(
            await self._json("GET", f"/session/{session_id}", session_id=session_id)
        )

    async def list_sessions(
        self,
        *,
        directory: str | None = None,
        roots: bool = False,
        search: str = "",
        limit: int | None = None,
    ) -> list[tuple[SessionInfo, float]]:
        """Sessions, most recently updated first, with their update time (Unix seconds).

        `roots` leaves out sessions an agent started for a subtask.
        """
        params: dict[str, Any] = {}
        if directory is not None:
            params["directory"] = directory
        if roots:
            params["roots"] = "true"
        if search:
            params["search"] = search
        if limit is not None:
            params["limit"] = limit
        body = await self._json("GET", "/session", params=params)
        result = []
        for item in _list(body):
            info = decode_session(item)
            times = item.get("time")
            updated = times.get("updated") if isinstance(times, dict) else None
            result.append((info, updated / 1000 if isinstance(updated, int | float) else 0.0))
        return result

    async def revert_point(self, session_id: str) -> str | None:
        """The message a session is reverted to (it and later ones are hidden), if any."""
        body = await self._json("GET", f"/session/{session_id}", session_id=session_id)
        revert = body.get("revert") if isinstance(body, dict) else None
        message_id = revert.get("messageID") if isinstance(revert, dict) else None
        return message_id if isinstance(message_id, str) else None

    async def revert(self, session_id: str, message_id: str) -> None:
        """Undo `message_id` and everything after it (messages and file edits)."""
        await self._request(
            "POST",
            f"/session/{session_id}/revert",
            json={"messageID": message_id},
            session_id=session_id,
        )

    async def unrevert(self, session_id: str) -> None:
        await self._request("POST", f"/session/{session_id}/unrevert", session_id=session_id)

    async def summarize(self, session_id: str, model: ModelRef, *, request_timeout: float) -> None:
        """Compact the session; the server answers when the summary is written."""
        body = {"providerID": model.provider_id, "modelID": model.model_id}
        await self._request(
            "POST",
            f"/session/{session_id}/summarize",
            json=body,
            session_id=session_id,
            request_timeout=request_timeout,
        )

    async def projects(self) -> list[str]:
        """The work trees of the projects this OpenCode installation knows."""
        return [
            str(project["worktree"])
            for project in _list(await self._json("GET", "/project"))
            if isinstance(project, dict) and isinstance(project.get("worktree"), str)
        ]

    async def messages(
        self, session_id: str, *, limit: int | None = None
    ) -> list[tuple[MessageInfo, list[Part]]]:
        params = {"limit": limit} if limit is not None else None
        body = await self._json(
            "GET", f"/session/{session_id}/message", params=params, session_id=session_id
        )
        result = []
        for item in _list(body):
            if isinstance(item, dict):
                parts = [decode_part(part) for part in _list(item.get("parts"))]
                result.append((decode_message(item.get("info")), parts))
        return result

    async def session_status(self) -> dict[str, str]:
        """Status type by session id; sessions missing from the map are idle."""
        body = await self._json("GET", "/session/status")
        if not isinstance(body, dict):
            return {}
        return {
            key: str(value.get("type")) for key, value in body.items() if isinstance(value, dict)
        }

    async def prompt_async(
        self,
        session_id: str,
        parts: Sequence[Mapping[str, Any]],
        *,
        message_id: str | None = None,
        model: ModelRef | None = None,
        agent: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"parts": list(parts)}
        if message_id is not None:
            body["messageID"] = message_id
        if model is not None:
            body["model"] = {"providerID": model.provider_id, "modelID": model.model_id}
        if agent is not None:
            body["agent"] = agent
        await self._request(
            "POST", f"/session/{session_id}/prompt_async", json=body, session_id=session_id
        )

    async def abort(self, session_id: str) -> bool:
        return bool(await self._json("POST", f"/session/{session_id}/abort", session_id=session_id))

    async def reply_permission(self, request_id: str, reply: str) -> None:
        await self._request("POST", f"/permission/{request_id}/reply", json={"reply": reply})

    async def reply_question(self, request_id: str, answers: Sequence[Sequence[str]]) -> None:
        body = {"answers": [list(answer) for answer in answers]}
        await self._request("POST", f"/question/{request_id}/reply", json=body)

    async def reject_question(self, request_id: str) -> None:
        await self._request("POST", f"/question/{request_id}/reject")

    async def agents(self) -> list[dict[str, Any]]:
        return [a for a in _list(await self._json("GET", "/agent")) if isinstance(a, dict)]

    async def providers(self) -> dict[str, Any]:
        body = await self._json("GET", "/config/providers")
        return body if isinstance(body, dict) else {}

    async def commands(self) -> list[dict[str, Any]]:
        return [c for c in _list(await self._json("GET", "/command")) if isinstance(c, dict)]

    async def stream_events(
        self, on_event: Callable[[SSEEvent], None], parser: SSEParser | None = None
    ) -> None:
        """Read one `GET /event` connection, calling `on_event` for each event in order.

        Returns when the server ends the stream; raises `EngineUnavailableError` when it
        breaks (or stays silent past the heartbeat timeout).
        """
        parser = parser or SSEParser()
        try:
            async with self._stream_http.stream(
                "GET", "/event", headers={"accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    raise EngineRequestError(
                        f"GET /event answered {response.status_code}",
                        status=response.status_code,
                    )
                async for chunk in response.aiter_raw():
                    for event in parser.feed(chunk):
                        on_event(event)
        except httpx.TransportError as exc:
            raise EngineUnavailableError(f"the OpenCode event stream broke ({exc!r})") from exc


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"OpenCode answered {response.status_code}"
    if isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
        for key in ("message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return f"OpenCode answered {response.status_code}"
