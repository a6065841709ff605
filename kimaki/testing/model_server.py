"""A fake OpenAI-compatible model server: streamed `/v1/chat/completions` with scripted replies.

The end-to-end tests and the engine benchmark run the real `opencode` binary against it, so a
turn needs no network and no real model, and its timing is known: every request is recorded with
the moment it arrived, and every reply with the moment its last chunk was written.

OpenCode sends two kinds of requests: the agent's own turns, and small side requests (the session
title generator). Side requests get `title` as their answer and never consume the script, so a
test scripts only what the agent says.

```
server = ModelServer([Reply.text("hello"), Reply.tool("bash", {"command": "ls"}), ...])
port = await nursery.start(server.serve)
```
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Final, final

import attrs
import trio

from kimaki._http import Request, Response, serve_http

__all__ = ["ModelRequest", "ModelServer", "Reply", "ReplyTiming", "ToolCall", "opencode_config"]

log = logging.getLogger("kimaki.model")

DEFAULT_TITLE: Final = "Scripted session"
_TITLE_MARKERS: Final = ("title generator", "generate a title", "short title")


@final
@attrs.frozen
class ToolCall:
    name: str
    arguments: dict[str, Any]
    call_id: str | None = None


@final
@attrs.frozen
class Reply:
    """One streamed answer. `hold` (when set) is awaited before the final chunk: a slow stream
    the test releases, or never does (an abort test)."""

    chunks: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    chunk_delay: float = 0.0
    hold: trio.Event | None = attrs.field(default=None, eq=False)
    finish_reason: str | None = None
    error_status: int | None = None
    error_message: str = "scripted failure"
    echo_tool_result: bool = False
    """Answer with `chunks` then the last tool result the request carries (what a model that
    repeats a command's output would say)."""
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    """The token counts the reply reports in `usage` (`prompt_tokens_details.cached_tokens`
    for the cached part of the prompt), as a provider's bill would."""

    def usage(self) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens:
            counts["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return counts

    @classmethod
    def text(cls, text: str, *, chunk_size: int = 8, chunk_delay: float = 0.0) -> Reply:
        chunks = tuple(text[i : i + chunk_size] for i in range(0, len(text), chunk_size))
        return cls(chunks=chunks, chunk_delay=chunk_delay)

    @classmethod
    def tool(cls, name: str, arguments: dict[str, Any], *, text: str = "") -> Reply:
        chunks = (text,) if text else ()
        return cls(chunks=chunks, tool_calls=(ToolCall(name, arguments),))

    @classmethod
    def echo(cls, text: str = "") -> Reply:
        """`text`, then the output of the tool the agent just ran, verbatim."""
        return cls(chunks=(text,) if text else (), echo_tool_result=True)

    @classmethod
    def failure(cls, status: int = 500, message: str = "scripted failure") -> Reply:
        return cls(error_status=status, error_message=message)


@final
@attrs.frozen
class ModelRequest:
    """A request as it arrived; `arrived_at` is `time.perf_counter()` on arrival."""

    index: int
    path: str
    body: Any
    arrived_at: float
    is_side_request: bool

    @property
    def last_user_text(self) -> str:
        for message in reversed(_messages(self.body)):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""


@final
@attrs.frozen
class ReplyTiming:
    """When the reply to request `index` wrote its last content chunk and its end."""

    index: int
    last_token_at: float
    finished_at: float


def _messages(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        return [m for m in body["messages"] if isinstance(m, dict)]
    return []


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(item.get("text", "")) for item in content if isinstance(item, dict))
    return ""


def _last_tool_result(body: Any) -> str:
    for message in reversed(_messages(body)):
        if message.get("role") == "tool":
            return _content_text(message.get("content"))
    return ""


def _is_side_request(body: Any) -> bool:
    """OpenCode's title generator: a system prompt about titles and no tools."""
    if isinstance(body, dict) and body.get("tools"):
        return False
    for message in _messages(body):
        if message.get("role") == "system":
            text = _content_text(message.get("content")).lower()
            if any(marker in text for marker in _TITLE_MARKERS):
                return True
    return False


@final
class ModelServer:
    """Serves scripted replies in order; extra agent requests get `default_reply`."""

    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        default_reply: Reply | None = None,
        title: str = DEFAULT_TITLE,
        model: str = "scripted",
    ) -> None:
        self._script: list[Reply] = list(script)
        self._default = default_reply if default_reply is not None else Reply.text("Done.")
        self._title = title
        self._model = model
        self._ids = itertools.count(1)
        self.requests: list[ModelRequest] = []
        self.timings: list[ReplyTiming] = []
        self._changed = trio.Event()

    def add(self, *replies: Reply) -> None:
        """Append replies to the script (for requests that have not arrived yet)."""
        self._script.extend(replies)

    @property
    def agent_requests(self) -> list[ModelRequest]:
        return [r for r in self.requests if not r.is_side_request]

    async def wait_for_agent_requests(self, count: int) -> Sequence[ModelRequest]:
        while len(self.agent_requests) < count:
            await self._wait_changed()
        return self.agent_requests

    async def wait_for_timing(self, index: int) -> ReplyTiming:
        while True:
            for timing in self.timings:
                if timing.index == index:
                    return timing
            await self._wait_changed()

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def serve(
        self, *, port: int = 0, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on 127.0.0.1 until cancelled; `nursery.start` returns the port."""
        await serve_http(self._handle, port=port, name="model", task_status=task_status)

    async def _handle(self, request: Request) -> Response:
        arrived_at = time.perf_counter()
        if request.method == "GET" and request.path.rstrip("/").endswith("/models"):
            return Response.json({"object": "list", "data": [{"id": self._model}]})
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return Response.json({"error": {"message": "not found"}}, status=404)
        try:
            body = request.json()
        except ValueError:
            return Response.json({"error": {"message": "bad json"}}, status=400)
        side = _is_side_request(body)
        index = len(self.requests)
        self.requests.append(ModelRequest(index, request.path, body, arrived_at, side))
        self._notify()
        if side:
            reply = Reply.text(self._title, chunk_size=len(self._title) or 1)
        elif self._script:
            reply = self._script.pop(0)
        else:
            reply = self._default
        if reply.echo_tool_result:
            echoed = "".join(reply.chunks) + _last_tool_result(body)
            reply = attrs.evolve(reply, chunks=(echoed,), echo_tool_result=False)
        if reply.error_status is not None:
            error = {"error": {"message": reply.error_message, "type": "server_error"}}
            return Response.json(error, status=reply.error_status)
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
        if not stream:
            return Response.json(self._whole(reply))
        return Response.stream(self._chunks(index, reply))

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def _whole(self, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.chunks)}
        if reply.tool_calls:
            message["tool_calls"] = [self._tool_json(call) for call in reply.tool_calls]
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
            "usage": reply.usage(),
        }

    def _tool_json(self, call: ToolCall) -> dict[str, Any]:
        return {
            "id": call.call_id or f"call_{next(self._ids)}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }

    async def _chunks(self, index: int, reply: Reply) -> AsyncIterator[bytes]:
        yield self._chunk({"role": "assistant", "content": ""})
        for text in reply.chunks:
            if reply.chunk_delay:
                await trio.sleep(reply.chunk_delay)
            yield self._chunk({"content": text})
        for position, call in enumerate(reply.tool_calls):
            tool = self._tool_json(call)
            tool["index"] = position
            yield self._chunk({"tool_calls": [tool]})
        last_token_at = time.perf_counter()
        if reply.hold is not None:
            await reply.hold.wait()
        final = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(reply)}],
            "usage": reply.usage(),
        }
        yield b"data: " + json.dumps(final).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
        self.timings.append(ReplyTiming(index, last_token_at, time.perf_counter()))
        self._notify()


def _finish(reply: Reply) -> str:
    if reply.finish_reason is not None:
        return reply.finish_reason
    return "tool_calls" if reply.tool_calls else "stop"


def opencode_config(
    port: int,
    *,
    provider: str = "scripted",
    model: str = "scripted",
    permission: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An `OPENCODE_CONFIG_CONTENT` that points OpenCode at this server, offline."""
    config: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            provider: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Scripted",
                "options": {"baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": "scripted"},
                "models": {
                    model: {
                        "name": "Scripted model",
                        "tool_call": True,
                        "limit": {"context": 100_000, "output": 4_096},
                    }
                },
            }
        },
        "model": f"{provider}/{model}",
        "small_model": f"{provider}/{model}",
    }
    if permission is not None:
        config["permission"] = permission
    return config
