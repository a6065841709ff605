"""A scripted fake ACP agent: a real child process speaking JSON-RPC on stdio, for fast tests.

```
python -m kimaki.testing.acp_agent --script SCRIPT.json [--record RECORD.jsonl] [--state DIR]
```

The script (`AgentScript`, written with `AgentScript.write`) says what the agent advertises
(capabilities, modes, config options, commands) and what each prompt does, as `TurnScript`s in
the vocabulary of `kimaki.testing.script` (the one the fake engine and the fake OpenCode play
too): every action but `Ask` and `DropStream`, which ACP has no way to say. A `Tool` with `ask`
is `session/request_permission`, `Hold` lasts until `session/cancel`, `Fail` is an error answer,
`Crash` exits at once, `ClientRequest`/`ReadFile`/`WriteFile` ask the client. Prompts beyond the
script say "ok".

Everything the client sends is appended to the record (one JSON object a line: `{"in": message}`,
with `"answer_to": method` for answers to the agent's own requests), so a test can check it
against the ACP schema (`AcpSchema`); so are the process's start (pid, environment) and what
came back for its own requests. Sessions are kept as files in the state directory, so a
restarted agent can `session/load` (which replays the history) or `session/resume` them.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, final

import attrs
import trio

import kimaki
from kimaki.testing.script import (
    Action,
    ClientRequest,
    ContextUsage,
    Crash,
    Diff,
    Fail,
    Hold,
    Malformed,
    Plan,
    ReadFile,
    Recall,
    Rename,
    Say,
    ScriptError,
    Step,
    Stop,
    Think,
    Tool,
    TurnScript,
    WriteFile,
    from_json,
    supported_by,
    to_json,
)

__all__ = [
    "PLAYS",
    "AcpSchema",
    "AgentScript",
    "default_schema_path",
    "fake_agent_argv",
    "main",
    "read_record",
]

# What this wire can say of the script vocabulary.
PLAYS: Final = (
    Say,
    Think,
    Tool,
    Plan,
    ContextUsage,
    Step,
    Rename,
    Hold,
    Stop,
    Fail,
    Crash,
    Malformed,
    ClientRequest,
    ReadFile,
    WriteFile,
    Recall,
)
# A stop reason as `session/prompt` answers it.
_STOP_REASONS: Final = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "max_turn_requests": "max_turn_requests",
    "refused": "refusal",
    "aborted": "cancelled",
}


def _playable(_script: Any, _field: Any, turns: tuple[TurnScript, ...]) -> None:
    for turn in supported_by(turns, PLAYS, "the fake ACP agent"):
        for action in turn.actions:
            if isinstance(action, Stop) and (
                action.reason not in _STOP_REASONS or action.message is not None
            ):
                raise ScriptError(f"ACP cannot end a turn with {action} (say Fail for an error)")


@final
@attrs.frozen
class AgentScript:
    """What the fake agent advertises and does. `turns` are consumed in order across sessions."""

    turns: tuple[TurnScript, ...] = attrs.field(default=(), validator=_playable)
    load_session: bool = True
    resume: bool = False
    list_sessions: bool = False  # `session/list`, two sessions a page
    image: bool = False
    embedded_context: bool = False
    protocol_version: int = 1
    modes: tuple[tuple[str, str], ...] = ()  # (id, name); the first is current
    models: tuple[tuple[str, str], ...] = ()  # config option "model": (value, name)
    commands: tuple[tuple[str, str], ...] = (("review", "review the changes"),)
    auth_required: bool = False  # session/new answers auth_required (-32000)
    auth_at_initialize: bool = False  # initialize does (agents that check before anything)
    exit_at_start: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "turns": [to_json(turn) for turn in self.turns],
            "load_session": self.load_session,
            "resume": self.resume,
            "list_sessions": self.list_sessions,
            "image": self.image,
            "embedded_context": self.embedded_context,
            "protocol_version": self.protocol_version,
            "modes": [list(m) for m in self.modes],
            "models": [list(m) for m in self.models],
            "commands": [list(c) for c in self.commands],
            "auth_required": self.auth_required,
            "auth_at_initialize": self.auth_at_initialize,
            "exit_at_start": self.exit_at_start,
        }

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json()))
        return path


def fake_agent_argv(
    script: Path, *, record: Path | None = None, state: Path | None = None
) -> tuple[str, ...]:
    """The command line of the fake agent (for `AgentCommand.argv`)."""
    argv = [sys.executable, "-m", "kimaki.testing.acp_agent", "--script", str(script)]
    if record is not None:
        argv += ["--record", str(record)]
    if state is not None:
        argv += ["--state", str(state)]
    return tuple(argv)


def read_record(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- schema


def default_schema_path() -> Path:
    """`../shared/reference/acp-schema-v1.json` relative to the repository root."""
    return Path(kimaki.__file__).resolve().parents[2] / "shared/reference/acp-schema-v1.json"


@final
class AcpSchema:
    """Checks client messages against the ACP v1 schema: the envelope, then the params or
    result of the exact method (the schema's `x-method`/`x-side` name them)."""

    _URI: Final = "urn:kimaki:acp-schema-v1"

    def __init__(self, schema: Mapping[str, Any]) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        registry: Any = Registry().with_resource(
            self._URI, Resource.from_contents(dict(schema), default_specification=DRAFT202012)
        )
        self._by_method: dict[tuple[str, str, str], str] = {}
        for name, definition in schema["$defs"].items():
            method, side = definition.get("x-method"), definition.get("x-side")
            if not isinstance(method, str) or not isinstance(side, str):
                continue
            kind = "result" if name.endswith("Response") else "params"
            self._by_method[(method, side, kind)] = name

        def validator(ref: str) -> Any:
            return Draft202012Validator({"$ref": f"{self._URI}{ref}"}, registry=registry)

        self._envelope = validator("#/anyOf/1")
        self._error = validator("#/$defs/Error")
        self._validator = validator
        self._cache: dict[str, Any] = {}

    @classmethod
    def from_path(cls, path: Path) -> AcpSchema:
        return cls(json.loads(path.read_text()))

    def _check(self, definition: str, instance: Any) -> list[str]:
        validator = self._cache.get(definition)
        if validator is None:
            validator = self._cache[definition] = self._validator(f"#/$defs/{definition}")
        return [f"{definition}: {e.message}" for e in validator.iter_errors(instance)]

    def problems(self, message: Any, *, answer_to: str | None = None) -> list[str]:
        """What is wrong with one message the client sent (empty: nothing)."""
        out = [f"envelope: {e.message}" for e in self._envelope.iter_errors(message)]
        if not isinstance(message, dict):
            return out
        method = message.get("method")
        if isinstance(method, str):
            definition = self._by_method.get((method, "agent", "params"))
            if definition is None:
                return [*out, f"{method} is not a method an agent offers"]
            return out + self._check(definition, message.get("params"))
        if "error" in message:
            return out + [f"Error: {e.message}" for e in self._error.iter_errors(message["error"])]
        if answer_to is None:
            return [*out, "an answer to an unknown request"]
        definition = self._by_method.get((answer_to, "client", "result"))
        if definition is None:
            return [*out, f"{answer_to} is not a request a client answers"]
        return out + self._check(definition, message.get("result"))

    def check_record(self, path: Path) -> list[str]:
        """Problems of every client message in a fake agent's record."""
        out = []
        for entry in read_record(path):
            if "in" in entry:
                for problem in self.problems(entry["in"], answer_to=entry.get("answer_to")):
                    out.append(f"{json.dumps(entry['in'])[:300]}: {problem}")
        return out


# ----------------------------------------------------------------------------- the agent


@attrs.define
class _Session:
    id: str
    cwd: str
    history: list[dict[str, str]] = attrs.Factory(list)
    mode: str | None = None
    model: str | None = None
    cancelled: trio.Event = attrs.Factory(trio.Event)
    said: list[str] = attrs.Factory(list)


class _Cancelled(Exception):
    pass


class _EndTurn(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


@final
class _FakeAgent:
    def __init__(self, script: dict[str, Any], record: Path | None, state: Path | None) -> None:
        self.script = script
        self.record_path = record
        self.state = state
        self.turns: list[TurnScript] = [from_json(t) for t in script.get("turns", [])]
        self.sessions: dict[str, _Session] = {}
        self.stdout = trio.lowlevel.FdStream(os.dup(1))
        self.stdin = trio.lowlevel.FdStream(os.dup(0))
        self.lock = trio.StrictFIFOLock()
        self.ids = itertools.count(1)
        self.waiting: dict[int, tuple[str, trio.Event, list[Any]]] = {}
        self.session_ids = itertools.count(1)
        self.call_ids = itertools.count(1)
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
            self.turn_file = state / "turns-used"
            used = int(self.turn_file.read_text()) if self.turn_file.exists() else 0
            self.turns = self.turns[used:]
            self.session_ids = itertools.count(len(list(state.glob("sess-*.json"))) + 1)

    # ---- io

    def record(self, entry: dict[str, Any]) -> None:
        if self.record_path is not None:
            with self.record_path.open("a") as file:
                file.write(json.dumps(entry) + "\n")

    async def write_raw(self, data: bytes) -> None:
        async with self.lock:
            await self.stdout.send_all(data)

    async def send(self, message: dict[str, Any]) -> None:
        await self.write_raw(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")

    async def notify_update(self, session: _Session, update: dict[str, Any]) -> None:
        await self.send(
            {"method": "session/update", "params": {"sessionId": session.id, "update": update}}
        )

    async def ask(self, method: str, params: dict[str, Any]) -> tuple[Any, Any]:
        """A request to the client: (result, error)."""
        request_id = next(self.ids)
        done = trio.Event()
        box: list[Any] = []
        self.waiting[request_id] = (method, done, box)
        await self.send({"id": request_id, "method": method, "params": params})
        await done.wait()
        message = box[0]
        return message.get("result"), message.get("error")

    # ---- sessions on disk

    def save(self, session: _Session) -> None:
        if self.state is not None:
            data = {"cwd": session.cwd, "history": session.history}
            (self.state / f"{session.id}.json").write_text(json.dumps(data))

    def restore(self, session_id: str) -> _Session | None:
        if session_id in self.sessions:
            return self.sessions[session_id]
        if self.state is None:
            return None
        path = self.state / f"{session_id}.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        session = _Session(session_id, data["cwd"], data["history"])
        self.sessions[session_id] = session
        return session

    def next_turn(self) -> TurnScript:
        if self.state is not None:
            used = int(self.turn_file.read_text()) if self.turn_file.exists() else 0
            self.turn_file.write_text(str(used + 1))
        return self.turns.pop(0) if self.turns else TurnScript(Say("ok"))

    # ---- the protocol

    def session_state(self, session: _Session) -> dict[str, Any]:
        out: dict[str, Any] = {}
        modes = self.script.get("modes") or []
        if modes:
            session.mode = session.mode or modes[0][0]
            out["modes"] = {
                "currentModeId": session.mode,
                "availableModes": [{"id": m, "name": n} for m, n in modes],
            }
        models = self.script.get("models") or []
        if models:
            session.model = session.model or models[0][0]
            out["configOptions"] = [self.model_option(session)]
        return out

    def model_option(self, session: _Session) -> dict[str, Any]:
        return {
            "id": "model",
            "name": "Model",
            "category": "model",
            "type": "select",
            "currentValue": session.model,
            "options": [{"value": v, "name": n} for v, n in self.script["models"]],
        }

    async def announce_commands(self, session: _Session) -> None:
        commands = self.script.get("commands") or []
        if commands:
            await self.notify_update(
                session,
                {
                    "sessionUpdate": "available_commands_update",
                    "availableCommands": [{"name": n, "description": d} for n, d in commands],
                },
            )

    async def handle_request(self, request_id: Any, method: str, params: Any) -> None:
        try:
            result = await self.answer(method, params if isinstance(params, dict) else {})
        except _RpcError as exc:
            await self.send({"id": request_id, "error": {"code": exc.code, "message": exc.text}})
            return
        await self.send({"id": request_id, "result": result})
        if method == "session/new":
            await self.announce_commands(self.sessions[result["sessionId"]])

    async def answer(self, method: str, params: dict[str, Any]) -> Any:
        script = self.script
        if method == "initialize":
            if script.get("auth_at_initialize"):
                raise _RpcError(-32000, "Authentication required")
            return {
                "protocolVersion": script.get("protocol_version", 1),
                "agentCapabilities": {
                    "loadSession": bool(script.get("load_session")),
                    "promptCapabilities": {
                        "image": bool(script.get("image")),
                        "embeddedContext": bool(script.get("embedded_context")),
                    },
                    "sessionCapabilities": {
                        **({"resume": {}} if script.get("resume") else {}),
                        **({"list": {}} if script.get("list_sessions") else {}),
                    },
                },
                "authMethods": [
                    {"id": "login", "name": "Log in", "description": "run `fake login`"}
                ],
                "agentInfo": {"name": "fake-acp-agent", "version": "1.0"},
            }
        if method == "session/new":
            if script.get("auth_required"):
                raise _RpcError(-32000, "Authentication required")
            session = _Session(f"sess-{next(self.session_ids)}", params.get("cwd", ""))
            self.sessions[session.id] = session
            self.save(session)
            return {"sessionId": session.id, **self.session_state(session)}
        if method in ("session/load", "session/resume"):
            restored = self.restore(str(params.get("sessionId")))
            if restored is None:
                raise _RpcError(-32002, "Resource not found")
            if method == "session/load":
                for turn in restored.history:
                    for kind, text in (("user", turn["user"]), ("agent", turn["agent"])):
                        await self.notify_update(
                            restored,
                            {
                                "sessionUpdate": f"{kind}_message_chunk",
                                "content": {"type": "text", "text": text},
                            },
                        )
            return self.session_state(restored)
        if method == "session/list":
            return self.list_sessions(params)
        if method == "session/set_mode":
            session = self.need_session(params)
            session.mode = str(params.get("modeId"))
            await self.notify_update(
                session, {"sessionUpdate": "current_mode_update", "currentModeId": session.mode}
            )
            return {}
        if method == "session/set_config_option":
            session = self.need_session(params)
            session.model = str(params.get("value"))
            return {"configOptions": [self.model_option(session)]}
        if method == "session/prompt":
            return await self.prompt(self.need_session(params), params)
        raise _RpcError(-32601, f"Method not found: {method}")

    def list_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.state is None:
            return {"sessions": []}
        entries = []
        for path in sorted(self.state.glob("sess-*.json")):
            data = json.loads(path.read_text())
            if params.get("cwd") not in (None, data["cwd"]):
                continue
            updated = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
            entry = {"sessionId": path.stem, "cwd": data["cwd"], "updatedAt": updated.isoformat()}
            if data["history"]:
                entry["title"] = data["history"][0]["user"]
            entries.append(entry)
        start = int(params.get("cursor") or 0)
        page: dict[str, Any] = {"sessions": entries[start : start + 2]}
        if start + 2 < len(entries):
            page["nextCursor"] = str(start + 2)
        return page

    def need_session(self, params: dict[str, Any]) -> _Session:
        session = self.sessions.get(str(params.get("sessionId")))
        if session is None:
            raise _RpcError(-32002, "Resource not found")
        return session

    async def prompt(self, session: _Session, params: dict[str, Any]) -> Any:
        blocks = params.get("prompt") or []
        user = " ".join(
            str(b.get("text", ""))
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text"
        )
        session.cancelled = trio.Event()
        session.said = []
        earlier = [turn["user"] for turn in session.history]
        session.history.append({"user": user, "agent": ""})
        self.save(session)  # the prompt is kept even if the turn dies
        reason = "end_turn"
        try:
            for action in self.next_turn().actions:
                await self.run_action(session, action, earlier)
        except _EndTurn as end:
            reason = end.reason
        except _Cancelled:
            reason = "cancelled"
        if session.cancelled.is_set():
            reason = "cancelled"
        session.history[-1]["agent"] = "".join(session.said)
        self.save(session)
        return {"stopReason": reason}

    async def say(self, session: _Session, kind: str, text: str, chunk: int, mid: Any) -> None:
        size = chunk or len(text) or 1
        for start in range(0, len(text), size):
            update: dict[str, Any] = {
                "sessionUpdate": kind,
                "content": {"type": "text", "text": text[start : start + size]},
            }
            if mid is not None:
                update["messageId"] = mid
            await self.notify_update(session, update)
        if kind == "agent_message_chunk":
            session.said.append(text)

    async def run_action(self, session: _Session, action: Action, earlier: list[str]) -> None:
        if session.cancelled.is_set():
            raise _Cancelled
        match action:
            case Say(text=text, chunk=chunk, message_id=message_id):
                await self.say(session, "agent_message_chunk", text, chunk, message_id)
            case Think(text=text):
                await self.say(session, "agent_thought_chunk", text, 0, None)
            case Recall():
                await self.say(session, "agent_message_chunk", " | ".join(earlier), 0, None)
            case Tool():
                await self.tool(session, action)
            case Hold(ignore_cancel=ignore_cancel):
                if ignore_cancel:
                    await trio.sleep_forever()
                await session.cancelled.wait()
                raise _EndTurn("cancelled")
            case Stop(reason=reason):
                raise _EndTurn(_STOP_REASONS[reason])
            case Fail(code=code, message=message):
                raise _RpcError(code, message)
            case Crash(code=code, stderr=stderr):
                sys.stderr.write(stderr + "\n")
                sys.stderr.flush()
                os._exit(code)
            case Malformed(data=data):
                await self.write_raw(data.encode() + b"\n")
            case ClientRequest(method=method, params=asked):
                result, error = await self.ask(method, dict(asked))
                self.record({"event": "unsupported", "result": result, "error": error})
            case ReadFile(path=path, line=line, limit=limit):
                request: dict[str, Any] = {"sessionId": session.id, "path": path}
                if line is not None:
                    request["line"] = line
                if limit is not None:
                    request["limit"] = limit
                result, error = await self.ask("fs/read_text_file", request)
                text = f"read: {result['content']}" if error is None else _error_line("read", error)
                await self.say(session, "agent_message_chunk", text, 0, None)
            case WriteFile(path=path, content=content):
                request = {"sessionId": session.id, "path": path, "content": content}
                result, error = await self.ask("fs/write_text_file", request)
                text = "written\n" if error is None else _error_line("write", error)
                await self.say(session, "agent_message_chunk", text, 0, None)
            case Plan(entries=entries):
                plan = [
                    {"content": e[0], "status": e[1], "priority": e[2] if len(e) > 2 else "medium"}
                    for e in entries
                ]
                await self.notify_update(session, {"sessionUpdate": "plan", "entries": plan})
            case ContextUsage(used=used, size=size, cost=cost):
                update: dict[str, Any] = {
                    "sessionUpdate": "usage_update",
                    "used": used,
                    "size": size,
                }
                if cost is not None:
                    update["cost"] = {"amount": cost, "currency": "USD"}
                await self.notify_update(session, update)
            case Rename(title=title):
                await self.notify_update(
                    session, {"sessionUpdate": "session_info_update", "title": title}
                )
            case Step():
                pass  # ACP has no model steps to say

    async def tool(self, session: _Session, action: Tool) -> None:
        """`tool_call` (pending), `in_progress` with its input, the permission if it asks, then
        its end."""
        call_id = action.call_id or f"call-{next(self.call_ids)}"
        if action.announce:
            call = {"toolCallId": call_id, "title": action.title, "kind": action.name}
            await self.notify_update(
                session, {"sessionUpdate": "tool_call", **call, "status": "pending"}
            )
            update: dict[str, Any] = {
                "sessionUpdate": "tool_call_update",
                "toolCallId": call_id,
                "status": "in_progress",
            }
            if action.input is not None:
                update["rawInput"] = dict(action.input)
            if action.locations:
                update["locations"] = [{"path": p} for p in action.locations]
            await self.notify_update(session, update)
        if action.ask:
            await self.permission(session, action, call_id)
        if action.error is not None:
            await self.finish_tool(session, call_id, "failed", action.error)
        else:
            await self.finish_tool(session, call_id, "completed", action.output, action.diff)

    async def finish_tool(
        self, session: _Session, tool_id: str, status: str, output: str, diff: Diff | None = None
    ) -> None:
        content: list[dict[str, Any]] = []
        if output:
            content.append({"type": "content", "content": {"type": "text", "text": output}})
        if diff is not None:
            content.append(
                {"type": "diff", "path": diff.path, "oldText": diff.old, "newText": diff.new}
            )
        update = {
            "sessionUpdate": "tool_call_update",
            "toolCallId": tool_id,
            "status": status,
            "content": content,
        }
        await self.notify_update(session, update)

    async def permission(self, session: _Session, action: Tool, call_id: str) -> None:
        """Ask; returns when allowed. Rejected, the tool fails and the turn ends; cancelled, the
        turn ends cancelled."""
        tool_call: dict[str, Any] = {
            "toolCallId": call_id,
            "title": action.title,
            "kind": action.name,
            "status": "pending",
        }
        if action.input is not None:
            tool_call["rawInput"] = dict(action.input)
        params = {
            "sessionId": session.id,
            "toolCall": tool_call,
            "options": [dict(o) for o in action.options],
        }
        result, error = await self.ask("session/request_permission", params)
        outcome = (result or {}).get("outcome", {})
        self.record({"event": "permission", "outcome": outcome, "error": error})
        if outcome.get("outcome") != "selected":
            raise _Cancelled
        chosen = [o for o in action.options if o["optionId"] == outcome.get("optionId")]
        if chosen and chosen[0]["kind"].startswith("allow"):
            return
        await self.finish_tool(session, call_id, "failed", "rejected by the user")
        raise _EndTurn("end_turn")

    async def run(self) -> None:
        self.record({"event": "started", "pid": os.getpid(), "env": dict(os.environ)})
        if self.script.get("exit_at_start") is not None:
            sys.stderr.write("fake agent: scripted exit at start\n")
            sys.stderr.flush()
            os._exit(int(self.script["exit_at_start"]))
        async with trio.open_nursery() as nursery:
            buffer = b""
            while data := await self.stdin.receive_some(65536):
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        self.dispatch(nursery, json.loads(line))
            nursery.cancel_scope.cancel()

    def dispatch(self, nursery: trio.Nursery, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:
            waiting = self.waiting.pop(message.get("id"), None)  # type: ignore[arg-type]
            self.record({"in": message, "answer_to": waiting[0] if waiting else None})
            if waiting is not None:
                waiting[2].append(message)
                waiting[1].set()
            return
        self.record({"in": message})
        if "id" in message:
            nursery.start_soon(self.handle_request, message["id"], method, message.get("params"))
        elif method == "session/cancel":
            session = self.sessions.get(str((message.get("params") or {}).get("sessionId")))
            if session is not None:
                session.cancelled.set()


def _error_line(what: str, error: Any) -> str:
    return f"{what} error {error.get('code')}: {error.get('message')}\n"


class _RpcError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kimaki.testing.acp_agent")
    parser.add_argument("--script", type=Path, required=True)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--state", type=Path)
    args = parser.parse_args(argv)
    script = json.loads(args.script.read_text())
    trio.run(_FakeAgent(script, args.record, args.state).run)


if __name__ == "__main__":
    main()
