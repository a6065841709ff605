"""A fake `opencode serve`: the routes and event shapes the daemon relies on, with scripted turns.

The shapes are copied from what OpenCode 1.18.33 actually sends (recorded from the binary
against a fake model): a turn is `message.updated` (user) → its text part → `session.status`
busy → per model step an assistant `message.updated`, `step-start`, parts (text as an empty part,
`message.part.delta`s, then the part with `time.end`; tools pending → running → completed or
error), `step-finish`, the message completed → `session.status` idle → `session.idle`. An abort
answers `session.error` (`MessageAbortedError`), idle, then the final parts and idle again;
every new event stream starts with `server.connected` and a burst of `plugin.added`.

Two ways to run it:

- In process: `port = await nursery.start(fake.serve)`. `stub_command(port)` is a command an
  engine can "start" as its server: a tiny process that prints the `listening on` line for this
  fake and sleeps, so the supervisor manages a real child while the test scripts the server.
- As a process: `python -m kimaki.testing.opencode [faults] serve --port 0 --hostname
  127.0.0.1`, printing the same line as the real binary; faults (`--start-delay`,
  `--exit-at-start`, `--unhealthy`, `--crash-after`, `--ignore-sigterm`, `--record-env`, and
  the gates `--listen-gate`/`--health-gate`: hold that step of the start while a file exists)
  and `POST /__fake__/crash` exercise the supervisor with a real process; `hang()` makes the
  fake in this process stop answering without exiting.

Turns are scripted in the vocabulary of `kimaki.testing.script` (`TurnScript(Say(...), ...)`),
the one the fake engine and the fake ACP agent play too; this fake plays every action but the
ACP-only ones (`ContextUsage`, `ClientRequest`, `ReadFile`, `WriteFile`, `Recall`). Prompts
past the script get `Say("ok")`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import logging
import math
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio

from kimaki._http import Request, Response, serve_http
from kimaki.testing.script import (
    Action,
    Ask,
    Crash,
    DropStream,
    Fail,
    Hold,
    Malformed,
    Plan,
    Rename,
    Say,
    ScriptError,
    Step,
    Stop,
    Think,
    Tool,
    TurnScript,
    supported_by,
)

if TYPE_CHECKING:
    from kimaki.agents.opencode import OpenCodeConfig

__all__ = [
    "FakeOpenCode",
    "main",
    "process_running",
    "real_opencode_binary",
    "running_fake_opencode",
    "sigkill_daemon_stand_in",
    "stub_command",
    "stub_config",
    "wait_for_exit",
]

log = logging.getLogger("kimaki.fakeopencode")

VERSION: Final = "1.18.33"
REJECTED: Final = "The user rejected permission to use this specific tool call."
DISMISSED: Final = "The user dismissed this question"
_ALPHABET: Final = string.ascii_letters + string.digits
_HEARTBEAT: Final = 10.0

_STUB: Final = (
    "import sys, time\n"
    "print(f'opencode server listening on http://127.0.0.1:{sys.argv[1]}', flush=True)\n"
    "time.sleep(1e9)\n"
)


def stub_command(port: int) -> tuple[str, ...]:
    """A server command for an engine under test: prints this fake's URL, then sleeps."""
    return (sys.executable, "-c", _STUB, str(port))


def stub_config(port: int, **options: Any) -> OpenCodeConfig:
    """An engine config whose server is `stub_command(port)`, with the quick stream backoff and
    stop grace tests want; `options` override any `OpenCodeConfig` field."""
    from kimaki.agents.opencode import OpenCodeConfig  # the fake process does not need it

    fields: dict[str, Any] = {
        "command": stub_command(port),
        "stream_backoff": (0.01, 0.05),
        "stop_grace": 2.0,
    }
    return OpenCodeConfig(**(fields | options))


@asynccontextmanager
async def running_fake_opencode(
    directory: str | Path, *turns: TurnScript
) -> AsyncIterator[tuple[FakeOpenCode, int]]:
    """A `FakeOpenCode` for `directory` playing `turns` (with a short plugin burst), and its
    port for `stub_command`/`stub_config`; it stops when the block ends."""
    fake = FakeOpenCode(turns=turns, directory=str(directory), plugin_burst=3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake.serve)
        yield fake, port
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- scripts

# What this wire can say of the script vocabulary.
PLAYS: Final = (
    Say,
    Think,
    Tool,
    Ask,
    Plan,
    Step,
    Rename,
    Hold,
    Stop,
    Fail,
    Crash,
    Malformed,
    DropStream,
)
# A stop reason as the finish of the turn's last step.
_FINISH: Final = {"end_turn": "stop", "max_tokens": "length", "refused": "content-filter"}
_DEFAULT_STEP: Final = Step()  # what a step the script does not count reports


def _playable(turns: Iterable[TurnScript]) -> list[TurnScript]:
    turns = supported_by(turns, PLAYS, "the fake OpenCode")
    for turn in turns:
        for action in turn.actions:
            if isinstance(action, Hold) and action.ignore_cancel:
                raise ScriptError("OpenCode's abort always ends a Hold")
            if isinstance(action, Stop) and (
                action.reason not in _FINISH
                or (action.message is not None and action.reason != "refused")
            ):
                raise ScriptError(f"OpenCode cannot end a turn with {action}")
    return turns


@final
@attrs.frozen
class RecordedRequest:
    method: str
    path: str
    body: Any
    at: float


# ----------------------------------------------------------------------------- state


_counter = itertools.count(1)


def _ascending(prefix: str) -> str:
    value = (int(time.time() * 1000) * 0x1000 + next(_counter) % 0x1000) & 0xFFFF_FFFF_FFFF
    return f"{prefix}_{value:012x}" + "".join(secrets.choice(_ALPHABET) for _ in range(14))


def _now_ms() -> int:
    return int(time.time() * 1000)


_ZERO_TOKENS: Final = {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}


def _step_tokens(step: Step) -> dict[str, Any]:
    """A `step-finish` part's `tokens`, as OpenCode reports them."""
    return {
        "total": step.input + step.output + step.reasoning + step.cache_read + step.cache_write,
        "input": step.input,
        "output": step.output,
        "reasoning": step.reasoning,
        "cache": {"write": step.cache_write, "read": step.cache_read},
    }


@attrs.define
class _Session:
    id: str
    title: str
    directory: str
    created: int
    messages: list[dict[str, Any]] = attrs.Factory(list)
    busy: bool = False
    run: _TurnRun | None = None
    updated: int = 0
    parent_id: str | None = None
    # The message the session is reverted to (`/revert`); the next prompt drops it and later.
    revert: str | None = None
    summaries: list[dict[str, Any]] = attrs.Factory(list)

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": self.id,
            "slug": "fake-session",
            "projectID": "global",
            "directory": self.directory,
            "path": self.directory.lstrip("/"),
            "title": self.title,
            "version": VERSION,
            "cost": 0,
            "tokens": _ZERO_TOKENS,
            "time": {"created": self.created, "updated": self.updated or self.created},
        }
        if self.parent_id is not None:
            info["parentID"] = self.parent_id
        if self.revert is not None:
            info["revert"] = {"messageID": self.revert}
        return info

    def add_message(self, role: str, text: str) -> dict[str, Any]:
        """A finished message with one text part, as if a turn had written it (for tests)."""
        message_id = _ascending("msg")
        info: dict[str, Any] = {
            "id": message_id,
            "sessionID": self.id,
            "role": role,
            "time": {"created": _now_ms(), "completed": _now_ms()},
        }
        if role == "assistant":
            info.update(providerID="fake", modelID="fake-model", finish="stop")
        part = {
            "id": _ascending("prt"),
            "sessionID": self.id,
            "messageID": message_id,
            "type": "text",
            "text": text,
            "time": {"start": _now_ms(), "end": _now_ms()},
        }
        message = {"info": info, "parts": [part]}
        self.messages.append(message)
        self.updated = _now_ms()
        return message


@attrs.define
class _Pending:
    kind: str  # "permission" | "question"
    request: dict[str, Any]
    answered: trio.Event = attrs.Factory(trio.Event)
    reply: Any = None


@final
class FakeOpenCode:
    def __init__(
        self,
        *,
        turns: Iterable[TurnScript] = (),
        password: str | None = None,
        directory: str | None = None,
        plugin_burst: int = 45,
        unhealthy: bool = False,
        unhealthy_while: Callable[[], bool] | None = None,
        default_reply: str = "ok",
        on_crash: Callable[[], None] | None = None,
    ) -> None:
        self._turns = _playable(turns)
        self.password = password
        self.directory = directory or os.getcwd()
        self.plugin_burst = plugin_burst
        self.unhealthy = unhealthy
        self.unhealthy_while = unhealthy_while
        self.default_reply = default_reply
        self.on_crash = on_crash
        self.sessions: dict[str, _Session] = {}
        self.requests: list[RecordedRequest] = []
        self._pending: dict[str, _Pending] = {}
        self._subscribers: dict[int, trio.MemorySendChannel[bytes]] = {}
        self._ids = itertools.count()
        self._refuse_streams = False
        self._release = trio.Event()
        self._changed = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self.streams_opened = 0
        self._answering = trio.Event()
        self._answering.set()

    # ------------------------------------------------------------------ test controls

    def add_turns(self, *turns: TurnScript) -> None:
        """Script the next prompts' turns, in order, across sessions (`ScriptError` for an
        action this wire cannot say)."""
        self._turns.extend(_playable(turns))

    def release(self) -> None:
        """Let every `Hold` go on."""
        self._release.set()
        self._release = trio.Event()

    def hang(self) -> None:
        """Stop answering without exiting, as a deadlocked server does: requests are taken
        but not answered, and event streams send nothing, not even heartbeats, until
        `recover()`."""
        if self._answering.is_set():
            self._answering = trio.Event()

    def recover(self) -> None:
        self._answering.set()

    def drop_streams(self) -> None:
        for channel in list(self._subscribers.values()):
            channel.close()

    def emit_raw(self, data: str) -> None:
        self._broadcast(b"data: " + data.encode() + b"\n\n")

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def pending(self, kind: str) -> list[dict[str, Any]]:
        return [p.request for p in self._pending.values() if p.kind == kind]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.park()

    def _poke(self) -> None:
        self._changed.unpark_all()

    # ------------------------------------------------------------------ serving

    async def serve(
        self,
        *,
        port: int = 0,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            bound = await nursery.start(
                lambda task_status: serve_http(
                    self._handle, port=port, name="fakeopencode", task_status=task_status
                )
            )
            task_status.started(bound)

    def _authorized(self, request: Request) -> bool:
        if not self.password:
            return True
        header = request.header("authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return decoded == f"opencode:{self.password}"

    async def _handle(self, request: Request) -> Response:
        try:
            body = request.json() if request.body else None
        except ValueError:
            return _bad_request("malformed JSON body")
        self.requests.append(RecordedRequest(request.method, request.path, body, time.time()))
        self._poke()
        await self._answering.wait()
        if not self._authorized(request):
            return Response(401, [("www-authenticate", 'Basic realm="opencode"')])
        return await self._route(request, body)

    async def _route(self, request: Request, body: Any) -> Response:
        method, parts = request.method, [p for p in request.path.split("/") if p]
        match method, parts:
            case "GET", ["global", "health"]:
                if self.unhealthy or (self.unhealthy_while and self.unhealthy_while()):
                    return Response.json({"healthy": False}, status=503)
                return Response.json({"healthy": True, "version": VERSION})
            case "GET", ["event"]:
                return self._event_stream()
            case "POST", ["session"]:
                return self._create_session(body)
            case "GET", ["session"]:
                return self._list_sessions(request)
            case "GET", ["session", "status"]:
                return Response.json(
                    {s.id: {"type": "busy"} for s in self.sessions.values() if s.busy}
                )
            case "GET", ["session", session_id]:
                session = self.sessions.get(session_id)
                return Response.json(session.info()) if session else _not_found(session_id)
            case "GET", ["session", session_id, "message"]:
                session = self.sessions.get(session_id)
                if session is None:
                    return _not_found(session_id)
                limit = request.query.get("limit")
                messages = session.messages
                if limit and limit[0].isdigit():
                    messages = messages[-int(limit[0]) :]
                return Response.json(messages)
            case "POST", ["session", session_id, "prompt_async"]:
                return self._prompt(session_id, body)
            case "POST", ["session", session_id, "abort"]:
                session = self.sessions.get(session_id)
                if session is None:
                    return _not_found(session_id)
                return Response.json(self._abort(session))
            case "POST", ["session", session_id, "revert"]:
                return self._revert(session_id, body)
            case "POST", ["session", session_id, "unrevert"]:
                session = self.sessions.get(session_id)
                if session is None:
                    return _not_found(session_id)
                session.revert = None
                return Response.json(session.info())
            case "POST", ["session", session_id, "summarize"]:
                return self._summarize(session_id, body)
            case "GET", ["project"]:
                return Response.json(
                    [
                        {
                            "id": "fake-project",
                            "worktree": self.directory,
                            "time": {"created": 0},
                            "sandboxes": [],
                        }
                    ]
                )
            case "GET", ["permission"]:
                return Response.json(self.pending("permission"))
            case "POST", ["permission", request_id, "reply"]:
                return self._answer("permission", request_id, body)
            case "GET", ["question"]:
                return Response.json(self.pending("question"))
            case "POST", ["question", request_id, "reply"]:
                return self._answer("question", request_id, body)
            case "POST", ["question", request_id, "reject"]:
                return self._answer("question", request_id, None)
            case "GET", ["agent"]:
                return Response.json(_AGENTS)
            case "GET", ["config", "providers"]:
                return Response.json(_PROVIDERS)
            case "GET", ["command"]:
                return Response.json(_COMMANDS)
            case "POST", ["__fake__", "crash"]:
                self._crash()
                return Response.json(True)
        # The real server answers every unknown path with its web UI.
        return Response.text("<!doctype html><title>opencode</title>", content_type="text/html")

    # ------------------------------------------------------------------ events

    def _event(self, kind: str, properties: dict[str, Any]) -> bytes:
        payload = {"id": _ascending("evt"), "type": kind, "properties": properties}
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def emit(self, kind: str, properties: dict[str, Any]) -> None:
        self._broadcast(self._event(kind, properties))

    def _broadcast(self, data: bytes) -> None:
        for channel in list(self._subscribers.values()):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                channel.send_nowait(data)
        self._poke()

    def _event_stream(self) -> Response:
        if self._refuse_streams:
            return Response.json({"error": "unavailable"}, status=503)
        send, receive = trio.open_memory_channel[bytes](math.inf)
        key = next(self._ids)
        self._subscribers[key] = send
        self.streams_opened += 1
        send.send_nowait(self._event("server.connected", {}))
        for n in range(self.plugin_burst):
            send.send_nowait(self._event("plugin.added", {"id": f"core/plugin-{n}"}))
        self._poke()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    with trio.move_on_after(_HEARTBEAT) as beat:
                        try:
                            data = await receive.receive()
                        except trio.EndOfChannel:  # drop_streams()
                            return
                    if beat.cancelled_caught:
                        data = self._event("server.heartbeat", {})
                    await self._answering.wait()
                    yield data
            finally:
                self._subscribers.pop(key, None)
                send.close()
                self._poke()

        return Response.stream(chunks())

    # ------------------------------------------------------------------ sessions

    def _create_session(self, body: Any) -> Response:
        body = body if isinstance(body, dict) else {}
        title = body.get("title")
        if title is not None and not isinstance(title, str):
            return _bad_request("title must be a string")
        created = _now_ms()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        session = _Session(
            id=_ascending("ses"),
            title=title or f"New session - {stamp}",
            directory=self.directory,
            created=created,
            updated=created,
        )
        self.sessions[session.id] = session
        self.emit("session.created", {"sessionID": session.id, "info": session.info()})
        self.emit("session.updated", {"sessionID": session.id, "info": session.info()})
        return Response.json(session.info())

    def add_session(self, title: str, *, directory: str | None = None) -> _Session:
        """A stored session, as if made earlier (for tests of listing and resuming)."""
        created = _now_ms()
        session = _Session(
            id=_ascending("ses"),
            title=title,
            directory=directory or self.directory,
            created=created,
            updated=created,
        )
        self.sessions[session.id] = session
        return session

    def _list_sessions(self, request: Request) -> Response:
        query = request.query
        directories = query.get("directory")
        directory = directories[0] if directories else None
        roots = (query.get("roots") or [""])[0] == "true"
        search = (query.get("search") or [""])[0].lower()
        limit = (query.get("limit") or [""])[0]
        found = [
            s
            for s in self.sessions.values()
            if (directory is None or s.directory == directory)
            and not (roots and s.parent_id is not None)
            and search in s.title.lower()
        ]
        found.sort(key=lambda s: s.updated or s.created, reverse=True)
        if limit.isdigit():
            found = found[: int(limit)]
        return Response.json([s.info() for s in found])

    def _revert(self, session_id: str, body: Any) -> Response:
        session = self.sessions.get(session_id)
        if session is None:
            return _not_found(session_id)
        message_id = body.get("messageID") if isinstance(body, dict) else None
        if not isinstance(message_id, str) or not message_id.startswith("msg"):
            return _bad_request("messageID is required")
        if not any(m["info"]["id"] == message_id for m in session.messages):
            return _bad_request(f"no message {message_id}")
        session.revert = message_id
        return Response.json(session.info())

    def _summarize(self, session_id: str, body: Any) -> Response:
        session = self.sessions.get(session_id)
        if session is None:
            return _not_found(session_id)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) for key in ("providerID", "modelID")
        ):
            return _bad_request("providerID and modelID are required")
        session.summaries.append(body)
        return Response.json(True)

    def _prompt(self, session_id: str, body: Any) -> Response:
        session = self.sessions.get(session_id)
        if session is None:
            return _not_found(session_id)
        if not isinstance(body, dict) or not isinstance(body.get("parts"), list):
            return _bad_request("parts is required")
        message_id = body.get("messageID")
        if message_id is not None and (
            not isinstance(message_id, str) or not message_id.startswith("msg")
        ):
            return _bad_request("messageID must start with msg")
        if session.busy:
            return _bad_request("session is busy")
        if session.revert is not None:
            # Like OpenCode: the next prompt makes a revert final.
            ids = [m["info"]["id"] for m in session.messages]
            if session.revert in ids:
                del session.messages[ids.index(session.revert) :]
            session.revert = None
        session.updated = _now_ms()
        user_id = message_id or _ascending("msg")
        model = body.get("model") or {"providerID": "fake", "modelID": "fake-model"}
        agent = body.get("agent") or "build"
        info = {
            "id": user_id,
            "sessionID": session.id,
            "role": "user",
            "time": {"created": _now_ms()},
            "agent": agent,
            "model": model,
        }
        parts = []
        for raw in body["parts"]:
            if isinstance(raw, dict):
                parts.append(
                    {**raw, "id": _ascending("prt"), "sessionID": session.id, "messageID": user_id}
                )
        session.messages.append({"info": info, "parts": parts})
        self.emit("message.updated", {"sessionID": session.id, "info": info})
        for part in parts:
            self.emit(
                "message.part.updated", {"sessionID": session.id, "part": part, "time": _now_ms()}
            )
        session.busy = True
        self.emit("session.status", {"sessionID": session.id, "status": {"type": "busy"}})
        turn = self._turns.pop(0) if self._turns else TurnScript(Say(self.default_reply))
        run = session.run = _TurnRun(self, session, user_id, turn, model, agent)
        assert self._nursery is not None
        self._nursery.start_soon(run.run)
        return Response.empty(204)

    def _abort(self, session: _Session) -> bool:
        run = session.run
        if run is None:
            return True
        run.abort()
        return True

    def _answer(self, kind: str, request_id: str, body: Any) -> Response:
        pending = self._pending.get(request_id)
        if pending is None or pending.kind != kind:
            name = "PermissionNotFoundError" if kind == "permission" else "QuestionNotFoundError"
            return Response.json(
                {"name": name, "data": {"message": f"{request_id} not found"}}, status=404
            )
        if kind == "permission":
            reply = body.get("reply") if isinstance(body, dict) else None
            if reply not in ("once", "always", "reject"):
                return _bad_request("reply must be once, always or reject")
            pending.reply = reply
        elif body is not None:
            answers = body.get("answers") if isinstance(body, dict) else None
            if not isinstance(answers, list):
                return _bad_request("answers is required")
            pending.reply = answers
        del self._pending[request_id]
        pending.answered.set()
        return Response.json(True)

    def _crash(self) -> None:
        if self.on_crash is None:
            raise RuntimeError("Crash in process needs on_crash (e.g. kill the stub process)")
        self.on_crash()


class _TurnAborted(Exception):
    pass


@final
class _TurnRun:
    """One scripted turn, emitting what the real server would, in the same order."""

    def __init__(
        self,
        fake: FakeOpenCode,
        session: _Session,
        user_id: str,
        turn: TurnScript,
        model: dict[str, Any],
        agent: str,
    ) -> None:
        self.fake = fake
        self.session = session
        self.user_id = user_id
        self.turn = turn
        self.model = model
        self.agent = agent
        self.scope = trio.CancelScope()
        self.message: dict[str, Any] | None = None
        self.open_text: dict[str, Any] | None = None
        self.finished = False

    # --------------------------------------------------------------- plumbing

    def _emit_part(self, part: dict[str, Any]) -> None:
        assert self.message is not None
        parts: list[dict[str, Any]] = self.message["parts"]
        for index, existing in enumerate(parts):
            if existing["id"] == part["id"]:
                parts[index] = part
                break
        else:
            parts.append(part)
        self.fake.emit(
            "message.part.updated",
            {"sessionID": self.session.id, "part": part, "time": _now_ms()},
        )

    def _part(self, kind: str, **fields: Any) -> dict[str, Any]:
        assert self.message is not None
        return {
            "id": _ascending("prt"),
            "messageID": self.message["info"]["id"],
            "sessionID": self.session.id,
            "type": kind,
            **fields,
        }

    def _ensure_step(self) -> None:
        if self.message is not None:
            return
        info = {
            "id": _ascending("msg"),
            "parentID": self.user_id,
            "role": "assistant",
            "mode": self.agent,
            "agent": self.agent,
            "path": {"cwd": self.session.directory, "root": "/"},
            "cost": 0,
            "tokens": _ZERO_TOKENS,
            "modelID": self.model.get("modelID", "fake-model"),
            "providerID": self.model.get("providerID", "fake"),
            "time": {"created": _now_ms()},
            "sessionID": self.session.id,
        }
        self.message = {"info": info, "parts": []}
        self.session.messages.append(self.message)
        self.fake.emit("message.updated", {"sessionID": self.session.id, "info": info})
        self._emit_part(self._part("step-start"))

    def _finish_step(
        self, reason: str, error: dict[str, Any] | None = None, step: Step = _DEFAULT_STEP
    ) -> None:
        if self.message is None:
            return
        info = self.message["info"]
        if error is None:
            tokens = _step_tokens(step)
            self._emit_part(self._part("step-finish", reason=reason, tokens=tokens, cost=step.cost))
            info["finish"] = reason
            info["tokens"] = tokens
            info["cost"] = info.get("cost", 0) + step.cost
        else:
            info["error"] = error
        info["time"]["completed"] = _now_ms()
        self.fake.emit("message.updated", {"sessionID": self.session.id, "info": info})
        self.message = None

    def _idle(self) -> None:
        self.session.busy = False
        self.fake.emit("session.status", {"sessionID": self.session.id, "status": {"type": "idle"}})
        self.fake.emit("session.idle", {"sessionID": self.session.id})

    def _end(self) -> None:
        self.finished = True
        self.session.run = None
        self._idle()
        if self.fake._refuse_streams:
            self.fake._refuse_streams = False
        self.fake._poke()

    # --------------------------------------------------------------- the turn

    async def run(self) -> None:
        with self.scope:
            try:
                finish, message = "stop", None
                for action in self.turn.actions:
                    if isinstance(action, Stop):
                        finish, message = _FINISH[action.reason], action.message
                        break
                    if not await self._act(action):
                        self._finish_step("tool-calls")
                        self._end()
                        return
                self._finish_step(finish)
                if finish == "content-filter":
                    self.fake.emit(
                        "session.error",
                        {
                            "sessionID": self.session.id,
                            "error": {
                                "name": "ContentFilterError",
                                "data": {"message": message or "blocked by the content filter"},
                            },
                        },
                    )
                self._end()
            except _TurnAborted:
                pass

    def abort(self) -> None:
        """What the real server does on `POST /session/{id}/abort`."""
        if self.finished:
            return
        self.finished = True
        self.scope.cancel()
        error = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}
        self.fake.emit("session.error", {"sessionID": self.session.id, "error": error})
        self._idle()
        if self.open_text is not None:
            self.open_text["time"]["end"] = _now_ms()
            self._emit_part(self.open_text)
        for pending_id, pending in list(self.fake._pending.items()):
            if pending.request.get("sessionID") == self.session.id:
                del self.fake._pending[pending_id]
        self._finish_step("", error=error)
        self.session.run = None
        self._idle()
        if self.fake._refuse_streams:
            self.fake._refuse_streams = False

    async def _act(self, action: Action) -> bool:
        """Do one action; False ends the turn early (a rejected permission or question)."""
        if isinstance(action, Say | Think):
            await self._text(action)
        elif isinstance(action, Tool):
            return await self._tool(action)
        elif isinstance(action, Ask):
            return await self._ask(action)
        elif isinstance(action, Plan):
            self._ensure_step()
            todos = [
                {"content": e[0], "status": e[1], "priority": e[2] if len(e) > 2 else "medium"}
                for e in action.entries
            ]
            self.fake.emit("todo.updated", {"sessionID": self.session.id, "todos": todos})
        elif isinstance(action, Step):
            self._finish_step("stop", step=action)
        elif isinstance(action, Hold):
            await self.fake._release.wait()
        elif isinstance(action, Fail):
            self._ensure_step()
            error = {"name": action.name, "data": {"message": action.message}}
            self.fake.emit("session.error", {"sessionID": self.session.id, "error": error})
            self._finish_step("", error=error)
            self._end()
            raise _TurnAborted
        elif isinstance(action, Rename):
            self.session.title = action.title
            self.fake.emit(
                "session.updated", {"sessionID": self.session.id, "info": self.session.info()}
            )
        elif isinstance(action, Malformed):
            self.fake.emit_raw(action.data)
        elif isinstance(action, DropStream):
            self.fake._refuse_streams = action.until_turn_end
            self.fake.drop_streams()
            await trio.lowlevel.checkpoint()
        elif isinstance(action, Crash):
            self.fake._crash()
        return True

    async def _text(self, action: Say | Think) -> None:
        self._ensure_step()
        kind = "text" if isinstance(action, Say) else "reasoning"
        part = self._part(kind, text="", time={"start": _now_ms()})
        self.open_text = part
        self._emit_part(part)
        chunk = (action.chunk or 8) if isinstance(action, Say) else 16
        delay = action.delay if isinstance(action, Say) else 0.0
        text = action.text
        for start in range(0, len(text), max(1, chunk)):
            if delay:
                await trio.sleep(delay)
            else:
                await trio.lowlevel.checkpoint()
            piece = text[start : start + chunk]
            part = {**part, "text": part["text"] + piece}
            self.open_text = part
            self.fake.emit(
                "message.part.delta",
                {
                    "sessionID": self.session.id,
                    "messageID": part["messageID"],
                    "partID": part["id"],
                    "field": "text",
                    "delta": piece,
                },
            )
        part = {**part, "time": {**part["time"], "end": _now_ms()}}
        self.open_text = None
        self._emit_part(part)

    async def _tool(self, action: Tool) -> bool:
        self._ensure_step()
        call_id = action.call_id or f"call_{next(_counter)}"
        tool_input = dict(action.input or {})
        base = self._part("tool", tool=action.name, callID=call_id)
        self._emit_part({**base, "state": {"status": "pending", "input": {}, "raw": ""}})
        started = _now_ms()
        running = {"status": "running", "input": tool_input, "time": {"start": started}}
        self._emit_part({**base, "state": running})
        if action.ask:
            assert self.message is not None
            request = {
                "id": _ascending("per"),
                "sessionID": self.session.id,
                "permission": action.name,
                "patterns": list(action.patterns or (str(tool_input.get("command", "*")),)),
                "metadata": tool_input,
                "always": list(action.always or ("*",)),
                "tool": {"messageID": self.message["info"]["id"], "callID": call_id},
            }
            reply = await self._wait_answer("permission", request)
            self.fake.emit(
                "permission.replied",
                {"sessionID": self.session.id, "requestID": request["id"], "reply": reply},
            )
            if reply == "reject":
                state = {
                    "status": "error",
                    "input": tool_input,
                    "error": REJECTED,
                    "time": {"start": started, "end": _now_ms()},
                }
                self._emit_part({**base, "state": state})
                return False
        await trio.lowlevel.checkpoint()
        end = {"start": started, "end": _now_ms()}
        if action.error is not None:
            state = {"status": "error", "input": tool_input, "error": action.error, "time": end}
        else:
            state = {
                "status": "completed",
                "input": tool_input,
                "output": action.output,
                "metadata": dict(action.metadata or {"output": action.output}),
                "title": action.title or str(tool_input.get("command", action.name)),
                "time": end,
            }
        self._emit_part({**base, "state": state})
        self._finish_step("tool-calls")
        return True

    async def _ask(self, action: Ask) -> bool:
        self._ensure_step()
        assert self.message is not None
        call_id = f"call_{next(_counter)}"
        base = self._part("tool", tool="question", callID=call_id)
        self._emit_part({**base, "state": {"status": "pending", "input": {}, "raw": ""}})
        questions = [
            {
                "question": q.question,
                "header": q.header,
                "options": [{"label": o.label, "description": o.description} for o in q.options],
                "multiple": q.multiple,
                "custom": q.custom,
            }
            for q in action.questions
        ]
        request = {
            "id": _ascending("que"),
            "sessionID": self.session.id,
            "questions": questions,
            "tool": {"messageID": self.message["info"]["id"], "callID": call_id},
        }
        started = _now_ms()
        tool_input = {"questions": questions}
        reply = await self._wait_answer("question", request, running=(base, tool_input))
        end = {"start": started, "end": _now_ms()}
        if reply is None:
            self.fake.emit(
                "question.rejected", {"sessionID": self.session.id, "requestID": request["id"]}
            )
            state = {"status": "error", "input": tool_input, "error": DISMISSED, "time": end}
            self._emit_part({**base, "state": state})
            return False
        self.fake.emit(
            "question.replied",
            {"sessionID": self.session.id, "requestID": request["id"], "answers": reply},
        )
        state = {
            "status": "completed",
            "input": tool_input,
            "output": f"User has answered your questions: {json.dumps(reply)}",
            "metadata": {"answers": reply, "truncated": False},
            "title": f"Asked {len(action.questions)} question",
            "time": end,
        }
        self._emit_part({**base, "state": state})
        self._finish_step("tool-calls")
        return True

    async def _wait_answer(
        self,
        kind: str,
        request: dict[str, Any],
        running: tuple[dict[str, Any], dict[str, Any]] | None = None,
    ) -> Any:
        pending = _Pending(kind, request)
        self.fake._pending[request["id"]] = pending
        self.fake.emit(f"{kind}.asked", request)
        if running is not None:
            base, tool_input = running
            state = {"status": "running", "input": tool_input, "time": {"start": _now_ms()}}
            self._emit_part({**base, "state": state})
        await pending.answered.wait()
        return pending.reply


def _not_found(session_id: str) -> Response:
    return Response.json(
        {"name": "NotFoundError", "data": {"message": f"Session not found: {session_id}"}},
        status=404,
    )


def _bad_request(message: str) -> Response:
    return Response.json(
        {"name": "BadRequest", "data": {"message": message}, "success": False}, status=400
    )


_AGENTS: Final = [
    {
        "name": "build",
        "description": "The default agent. Executes tools based on configured permissions.",
        "mode": "primary",
        "native": True,
        "permission": [{"permission": "*", "pattern": "*", "action": "allow"}],
        "options": {},
    },
    {
        "name": "plan",
        "description": "Plan mode. Disallows all edit tools.",
        "mode": "primary",
        "native": True,
        "permission": [],
        "options": {},
    },
    {
        "name": "explore",
        "description": "Fast agent specialized for exploring codebases.",
        "mode": "subagent",
        "native": True,
        "permission": [],
        "options": {},
    },
    {
        "name": "title",
        "mode": "primary",
        "native": True,
        "hidden": True,
        "permission": [],
        "options": {},
    },
]

_PROVIDERS: Final = {
    "providers": [
        {
            "id": "fake",
            "name": "Fake",
            "source": "config",
            "env": [],
            "options": {},
            "models": {
                "fake-model": {
                    "id": "fake-model",
                    "providerID": "fake",
                    "name": "Fake model",
                    "limit": {"context": 100000, "output": 4096},
                },
                "fake-large": {
                    "id": "fake-large",
                    "providerID": "fake",
                    "name": "Fake large",
                    "limit": {"context": 1000000, "output": 32768},
                },
            },
        }
    ],
    "default": {"fake": "fake-model"},
}

_COMMANDS: Final = [
    {"name": "init", "description": "guided AGENTS.md setup", "template": "...", "hints": []},
    {"name": "review", "description": "review changes", "template": "...", "hints": []},
]


# ----------------------------------------------------------------------------- orphan checks

_DAEMON_STAND_IN: Final = """
import sys, trio
from pathlib import Path
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine

async def main():
    cfg = OpenCodeConfig(command=tuple(sys.argv[2:]), home_for=lambda d: Path(sys.argv[1]))
    async with open_opencode_engine(cfg) as engine:
        connection = await engine.server(Path(sys.argv[1])).connection()
        print(connection.process.pid, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


def process_running(pid: int) -> bool:
    """Running, not exited (an exited orphan can linger as a zombie until init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            stat = file.read()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


async def wait_for_exit(pid: int) -> None:
    """Wait for any process (not only a child) to exit, through a pidfd."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def sigkill_daemon_stand_in(directory: str, command: Sequence[str]) -> int:
    """Run a stand-in daemon that starts an OpenCode server (`command`) through the engine,
    SIGKILL the stand-in once the server is ready, and return the server's pid.

    What happens to that pid next is the test: with the parent-death signal it exits.
    """
    driver = await trio.lowlevel.open_process(
        [sys.executable, "-c", _DAEMON_STAND_IN, directory, *command],
        stdout=subprocess.PIPE,
        cwd=directory,
    )
    assert driver.stdout is not None
    try:
        line = b""
        with trio.fail_after(60):
            while not line.endswith(b"\n"):
                data = await driver.stdout.receive_some(64)
                if not data:
                    raise RuntimeError("the stand-in daemon exited before its server was ready")
                line += data
        driver.send_signal(signal.SIGKILL)
        await driver.wait()
        return int(line)
    finally:
        with trio.CancelScope(shield=True):
            if driver.returncode is None:
                driver.kill()
                await driver.wait()
            await driver.stdout.aclose()


def real_opencode_binary() -> str:  # noqa: RET503 - pytest.skip and .fail raise
    """The real `opencode` for end-to-end tests: `KIMAKI_TEST_OPENCODE`, else `opencode` on
    PATH. Absent, the calling test is skipped, or failed under CI (the `CI` variable set),
    where the noxfile installs it."""
    import pytest  # only tests call this

    path = os.environ.get("KIMAKI_TEST_OPENCODE") or shutil.which("opencode")
    if path and os.path.exists(path):
        return path
    reason = (
        "the real opencode binary is absent: set KIMAKI_TEST_OPENCODE to it, or run "
        "`nox -s e2e`, which installs opencode-ai from npm"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# ----------------------------------------------------------------------------- as a process


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kimaki.testing.opencode",
        description="A fake `opencode serve` for tests, with scripted faults.",
    )
    parser.add_argument("--start-delay", type=float, default=0.0, help="wait before listening")
    parser.add_argument("--exit-at-start", type=int, help="exit with this code before listening")
    parser.add_argument("--unhealthy", action="store_true", help="answer health with 503")
    parser.add_argument(
        "--crash-after",
        type=float,
        help="exit 70 this long after the first request other than the health check",
    )
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--listen-gate", help="do not listen while this file exists")
    parser.add_argument("--health-gate", help="answer health with 503 while this file exists")
    parser.add_argument("--record-env", help="write the environment as JSON to this file")
    parser.add_argument("--reply", default="ok", help="what unscripted turns say")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--hostname", default="127.0.0.1")
    return parser


def _exit_crashed() -> None:
    print("fake opencode: crashing as scripted", file=sys.stderr, flush=True)
    os._exit(70)


async def _serve_process(args: argparse.Namespace) -> None:
    if args.start_delay:
        await trio.sleep(args.start_delay)
    # The gate is a file another process removes: there is no event to wait on.
    while args.listen_gate and await trio.Path(args.listen_gate).exists():  # noqa: ASYNC110
        await trio.sleep(0.02)
    fake = FakeOpenCode(
        password=os.environ.get("OPENCODE_SERVER_PASSWORD") or None,
        unhealthy=args.unhealthy,
        unhealthy_while=(lambda: os.path.exists(args.health_gate)) if args.health_gate else None,
        default_reply=args.reply,
        on_crash=_exit_crashed,
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: fake.serve(port=args.port, task_status=task_status)
        )
        print(f"opencode server listening on http://{args.hostname}:{port}", flush=True)
        if args.crash_after is not None:
            # Counted from the first request past the health check, so the crash comes after
            # the daemon has started using the server, however slow the machine is.
            await fake.wait_for(lambda: any(r.path != "/global/health" for r in fake.requests))
            await trio.sleep(args.crash_after)
            _exit_crashed()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.record_env:
        with open(args.record_env, "w", encoding="utf-8") as file:
            json.dump(dict(os.environ), file)
    if args.exit_at_start is not None:
        print("fake opencode: refusing to start as scripted", file=sys.stderr, flush=True)
        return int(args.exit_at_start)
    try:
        trio.run(_serve_process, args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
