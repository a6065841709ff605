"""The ACP engine against the scripted fake agent: a real child process on stdio.

Every message the engine sends is recorded by the fake and, when `../shared/reference` is
present, checked against the ACP v1 schema when the test's engine closes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from kimaki.agents import (
    AgentLoginRequiredError,
    AgentNotInstalledError,
    EngineEvent,
    EngineRequestError,
    EngineUnavailableError,
    EventQueue,
    Grants,
    McpPlan,
    ModelRef,
    PermissionRequested,
    PermissionResolved,
    PlanUpdated,
    ReasoningCompleted,
    RestartPolicy,
    ServerState,
    SessionNotFoundError,
    SessionRenamed,
    TextDelta,
    ToolFinished,
    ToolGrant,
    ToolStarted,
    TurnEnded,
    TurnInProgressError,
    Usage,
)
from kimaki.agents.acp import AcpConfig, AcpEngine, AgentCommand, McpServer, open_acp_engine
from kimaki.testing.acp_agent import (
    AcpSchema,
    AgentScript,
    default_schema_path,
    fake_agent_argv,
    read_record,
)
from kimaki.testing.engine import texts, until_turn_end
from kimaki.testing.opencode import process_running
from kimaki.testing.script import (
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
    Stop,
    Think,
    Tool,
    TurnScript,
    WriteFile,
)
from kimaki.threads import PromptFile

SCHEMA = AcpSchema.from_path(default_schema_path()) if default_schema_path().is_file() else None


@attrs.define
class Fake:
    engine: AcpEngine
    project: Path
    record: Path

    def sent(self, method: str) -> list[Any]:
        """Params of every `method` the engine sent."""
        return [
            e["in"].get("params")
            for e in read_record(self.record)
            if "in" in e and e["in"].get("method") == method
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in read_record(self.record) if e.get("event") == name]


@asynccontextmanager
async def fake_agent(
    tmp_path: Path, script: AgentScript, *, state: str = "state", **config: Any
) -> AsyncIterator[Fake]:
    script_path = script.write(tmp_path / "script.json")
    record = tmp_path / "record.jsonl"
    argv = fake_agent_argv(script_path, record=record, state=tmp_path / state)
    agent = AgentCommand("fake", argv, home=tmp_path / "agent-runtime" / "fake")
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    options: dict[str, Any] = {"stop_grace": 2.0}
    options.update(config)
    async with open_acp_engine(AcpConfig(agent, **options)) as engine:
        yield Fake(engine, project, record)
    if SCHEMA is not None:
        assert SCHEMA.check_record(record) == []


async def turn(session: Any, text: str, *args: Any, **kwargs: Any) -> list[EngineEvent]:
    turn_id = await session.prompt(text, *args, **kwargs)
    events = await until_turn_end(session.events)
    assert events[-1].turn_id == turn_id  # type: ignore[union-attr]
    return events


def kinds(events: list[EngineEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def ask_unannounced(call_id: str, command: str, **fields: Any) -> Tool:
    """A command the agent asks permission for before announcing its tool call."""
    return Tool(
        "execute", call_id=call_id, input={"command": command}, ask=True, announce=False, **fields
    )


async def test_a_turn_streams_in_order_and_ends_after_the_last_update(tmp_path: Path) -> None:
    script = AgentScript(
        turns=(
            TurnScript(
                Think("Let me look."),
                Say("Hello there, this is the fake agent.", chunk=5),
                Plan(("read the code", "completed"), ("fix it", "in_progress")),
                Tool(
                    "execute", "bash", call_id="call-1", input={"command": "ls -la"}, output="a\nb"
                ),
                Tool(
                    "edit",
                    "Edit app.py",
                    call_id="call-2",
                    input={"path": "app.py"},
                    diff=Diff("app.py", "one\ntwo\n", "one\n2\nthree\n"),
                ),
                Say("Done.", chunk=2),
                ContextUsage(1200, 200_000, cost=0.25),
                Rename("Fixing the app"),
            ),
        )
    )
    mcp = (
        McpServer("bot-tools", command="/usr/bin/bot-tools", args=("--stdio",), env={"A": "1"}),
        McpServer("docs", transport="http", url="http://127.0.0.1:9/mcp"),  # not advertised
    )
    async with fake_agent(tmp_path, script, mcp_servers=mcp) as fake:
        session = await fake.engine.open_session(fake.project, title="first")
        assert session.title == "first"
        turn_id = await session.prompt("fix it")
        events = await until_turn_end(session.events)
        assert session.title == "Fixing the app"
        [initialize] = fake.sent("initialize")
        [new] = fake.sent("session/new")
        [prompt] = fake.sent("session/prompt")
    assert initialize["protocolVersion"] == 1
    assert initialize["clientCapabilities"] == {
        "fs": {"readTextFile": True, "writeTextFile": True},
        "terminal": False,
    }
    assert new == {
        "cwd": str(fake.project.resolve()),
        "mcpServers": [
            {
                "name": "bot-tools",
                "command": "/usr/bin/bot-tools",
                "args": ["--stdio"],
                "env": [{"name": "A", "value": "1"}],
            }
        ],
    }
    assert prompt["prompt"] == [{"type": "text", "text": "fix it"}]
    assert kinds(events) == [
        "ReasoningDelta",
        "ReasoningCompleted",
        *["TextDelta"] * 8,
        "TextCompleted",
        "PlanUpdated",
        "ToolStarted",
        "ToolUpdated",
        "ToolFinished",
        "ToolStarted",
        "ToolUpdated",
        "ToolFinished",
        "TextDelta",
        "TextDelta",
        "TextDelta",
        "Usage",
        "SessionRenamed",
        "TextCompleted",
        "TurnEnded",
    ]
    assert [e.text for e in events if isinstance(e, ReasoningCompleted)] == ["Let me look."]
    assert texts(events) == ["Hello there, this is the fake agent.", "Done."]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(d.delta for d in deltas[:8]) == "Hello there, this is the fake agent."
    [plan] = [e for e in events if isinstance(e, PlanUpdated)]
    assert [(e.content, e.status) for e in plan.entries] == [
        ("read the code", "completed"),
        ("fix it", "in_progress"),
    ]
    bash, edit = [e for e in events if isinstance(e, ToolFinished)]
    assert (bash.tool, bash.input_summary, bash.status, bash.output) == (
        "execute",
        "ls -la",
        "completed",
        "a\nb",
    )
    [first] = [e for e in events if isinstance(e, ToolStarted) and e.call_id == "call-1"]
    assert first.status == "pending"
    assert (edit.tool, edit.input_summary) == ("edit", "app.py")
    assert edit.diff is not None
    assert (edit.diff.path, edit.diff.additions, edit.diff.deletions) == ("app.py", 2, 1)
    assert [e for e in events if isinstance(e, Usage)] == [
        Usage(context_used=1200, context_limit=200_000, session_cost=0.25)
    ]
    assert [e for e in events if isinstance(e, SessionRenamed)] == [
        SessionRenamed("Fixing the app")
    ]
    assert events[-1] == TurnEnded(turn_id, "end_turn")


async def test_permissions_map_to_the_agents_options(tmp_path: Path) -> None:
    only_once = (
        {"optionId": "yes", "name": "Yes", "kind": "allow_once"},
        {"optionId": "no", "name": "No", "kind": "reject_once"},
    )
    script = AgentScript(
        turns=(
            TurnScript(
                Tool(
                    "execute",
                    "make",
                    call_id="t1",
                    input={"command": "make"},
                    output="built",
                    ask=True,
                ),
                Say("Built."),
            ),
            TurnScript(ask_unannounced("t2", "make install", options=only_once)),
            TurnScript(ask_unannounced("t3", "rm -rf build"), Say("never said")),
        )
    )
    async with fake_agent(tmp_path, script) as fake:
        session = await fake.engine.open_session(fake.project)
        outcomes = []
        for text, reply in (("build", "once"), ("install", "always"), ("clean", "reject")):
            await session.prompt(text)
            events: list[EngineEvent] = []
            with trio.fail_after(10):
                async for event in session.events:
                    events.append(event)
                    if isinstance(event, PermissionRequested):
                        await session.reply_permission(event.request_id, reply)  # type: ignore[arg-type]
                    if isinstance(event, TurnEnded):
                        break
            outcomes.append(events)
            with pytest.raises(EngineRequestError, match="no longer pending"):
                await session.reply_permission("permission-unknown", "once")
        answers = [e["outcome"] for e in fake.events("permission")]

    assert answers == [
        {"outcome": "selected", "optionId": "allow-once"},
        {"outcome": "selected", "optionId": "yes"},  # no "always" offered: once
        {"outcome": "selected", "optionId": "reject-once"},
    ]
    build, _install, clean = outcomes
    [asked] = [e for e in build if isinstance(e, PermissionRequested)]
    assert (asked.permission, asked.title, asked.patterns, asked.call_id) == (
        "execute",
        "make",
        ("make",),
        "t1",
    )
    # The tool call it is about came before it, the answer right after it.
    order = kinds(build)
    assert order.index("ToolStarted") < order.index("PermissionRequested")
    assert order[order.index("PermissionRequested") + 1] == "PermissionResolved"
    assert next(e for e in build if isinstance(e, PermissionResolved)).reply == "once"
    assert [e.status for e in build if isinstance(e, ToolFinished)] == ["completed"]
    assert texts(build) == ["Built."]
    [rejected] = [e for e in clean if isinstance(e, ToolFinished)]
    assert (rejected.status, rejected.error) == ("error", "rejected by the user")
    assert texts(clean) == []
    assert clean[-1].stop_reason == "end_turn"  # type: ignore[union-attr]


async def test_abort_answers_pending_permissions_cancelled(tmp_path: Path) -> None:
    script = AgentScript(turns=(TurnScript(ask_unannounced("t1", "deploy"), Say("deployed")),))
    async with fake_agent(tmp_path, script) as fake:
        session = await fake.engine.open_session(fake.project)
        turn_id = await session.prompt("deploy")
        with trio.fail_after(10):
            async for event in session.events:
                if isinstance(event, PermissionRequested):
                    request_id = event.request_id
                    break
        await session.abort()
        rest = drain(session.events)
        assert [e for e in rest if isinstance(e, PermissionResolved)] == [
            PermissionResolved(request_id, "reject")
        ]
        assert rest[-1] == TurnEnded(turn_id, "aborted")
        assert fake.events("permission")[0]["outcome"] == {"outcome": "cancelled"}
        assert fake.sent("session/cancel") == [{"sessionId": session.session_id}]
        assert texts(await turn(session, "again")) == ["ok"]


async def test_abort_mid_turn_then_a_new_prompt(tmp_path: Path) -> None:
    script = AgentScript(
        turns=(TurnScript(Say("working on it"), Hold(), Say("never")), TurnScript(Say("fresh")))
    )
    async with fake_agent(tmp_path, script) as fake:
        session = await fake.engine.open_session(fake.project)
        turn_id = await session.prompt("long task")
        with trio.fail_after(10):
            async for event in session.events:
                if isinstance(event, TextDelta):
                    break
        with pytest.raises(TurnInProgressError):
            await session.prompt("too soon")
        await session.abort()  # returns once the turn ended
        rest = drain(session.events)
        assert texts(rest) == ["working on it"]  # what was said before the cancel is kept
        assert rest[-1] == TurnEnded(turn_id, "aborted")
        await session.abort()  # nothing runs: a no-op
        assert texts(await turn(session, "next")) == ["fresh"]


async def test_an_agent_that_ignores_the_cancel_is_given_up_on(tmp_path: Path) -> None:
    script = AgentScript(
        turns=(TurnScript(Hold(ignore_cancel=True)), TurnScript(Say("still here")))
    )
    async with fake_agent(tmp_path, script, abort_wait=0.2) as fake:
        session = await fake.engine.open_session(fake.project)
        turn_id = await session.prompt("hang")
        await session.abort()
        assert drain(session.events) == [TurnEnded(turn_id, "aborted")]
        assert texts(await turn(session, "hello?")) == ["still here"]


@pytest.mark.parametrize(
    ("action", "reason", "message"),
    [
        (Stop("max_tokens"), "max_tokens", None),
        (Stop("max_turn_requests"), "max_turn_requests", None),
        (Stop("refused"), "refused", None),  # ACP `refusal`
        (Stop("aborted"), "aborted", None),  # ACP `cancelled`
        (Fail("the model is overloaded", code=-32603), "error", "fake: the model is overloaded"),
    ],
)
async def test_stop_reasons(tmp_path: Path, action: Any, reason: str, message: str | None) -> None:
    script = AgentScript(turns=(TurnScript(Say("partial"), action),))
    async with fake_agent(tmp_path, script) as fake:
        session = await fake.engine.open_session(fake.project)
        events = await turn(session, "go")
    assert texts(events) == ["partial"]
    assert (events[-1].stop_reason, events[-1].message) == (reason, message)  # type: ignore[union-attr]


async def test_bad_lines_and_unsupported_requests_lose_nothing(tmp_path: Path) -> None:
    script = AgentScript(
        turns=(
            TurnScript(
                Say("before "),
                Malformed("this is not json"),
                Malformed('{"jsonrpc":"2.0","method":"session/update","params":{"update":1}}'),
                Malformed(
                    '{"jsonrpc":"2.0","method":"session/update","params":'
                    '{"sessionId":"sess-1","update":{"sessionUpdate":"from_the_future"}}}'
                ),
                Malformed('{"jsonrpc":"2.0","method":"x/unknown_notification"}'),
                ClientRequest("terminal/create", {"sessionId": "sess-1", "command": "ls"}),
                ClientRequest("elicitation/create", {}),
                ReadFile(str(tmp_path / "project" / "x.txt")),
                Say("after"),
            ),
        )
    )
    async with fake_agent(tmp_path, script, serve_files=False) as fake:
        session = await fake.engine.open_session(fake.project)
        events = await turn(session, "go")
        answers = fake.events("unsupported")
        server = fake.engine.server(fake.project)
        assert server.statistics().crashes == 0
        [initialize] = fake.sent("initialize")
    assert initialize["clientCapabilities"]["fs"] == {"readTextFile": False, "writeTextFile": False}
    said = "".join(texts(events))
    assert said.startswith("before read error -32601: kimaki does not implement fs/read_text_file")
    assert said.endswith("after")
    assert [a["error"]["code"] for a in answers] == [-32601, -32601]


async def test_malformed_requests_are_answered_invalid_params(tmp_path: Path) -> None:
    script = AgentScript(
        turns=(
            TurnScript(
                ClientRequest("fs/read_text_file", {"sessionId": "sess-1"}),
                ClientRequest("fs/write_text_file", {"sessionId": "sess-1", "path": 3}),
                ClientRequest("session/request_permission", {"toolCall": {}, "options": []}),
                Say("still here"),
            ),
        )
    )
    async with fake_agent(tmp_path, script) as fake:
        session = await fake.engine.open_session(fake.project)
        events = await turn(session, "go")
        answers = fake.events("unsupported")
    assert texts(events) == ["still here"]
    assert [(a["error"]["code"], a["error"]["message"]) for a in answers] == [
        (-32602, "fs/read_text_file: required field missing @ $.path"),
        (
            -32602,
            "fs/write_text_file: expected str, not int @ $.path; "
            "required field missing @ $.content",
        ),
        (-32602, "session/request_permission: required field missing @ $.sessionId"),
    ]


async def test_files_are_served_only_inside_the_project(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret")
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("line 1\nline 2\nline 3\n")
    (project / "link.txt").symlink_to(outside)
    script = AgentScript(
        turns=(
            TurnScript(
                ReadFile(str(project / "notes.txt"), line=2, limit=1),
                ReadFile(str(outside)),
                ReadFile(str(project / "link.txt")),
                ReadFile(str(project / ".." / "secret.txt")),
                ReadFile("notes.txt"),
                ReadFile(str(project / "missing.txt")),
                WriteFile(str(project / "out" / "new.txt"), "written by the agent"),
                WriteFile(str(tmp_path / "escape.txt"), "nope"),
                WriteFile(str(project / "link.txt"), "through the link"),
            ),
        )
    )
    async with fake_agent(tmp_path, script) as fake:
        session = await fake.engine.open_session(fake.project)
        said = "".join(texts(await turn(session, "files")))
    lines = said.replace(str(tmp_path), "T").splitlines()
    assert lines == [
        "read: line 2",
        "read error -32602: outside the session's directory: T/secret.txt",
        "read error -32602: symbolic links are refused: T/project/link.txt",
        "read error -32602: paths with '..' are refused: T/project/../secret.txt",
        "read error -32602: not an absolute path: notes.txt",
        "read error -32002: no such file: T/project/missing.txt",
        "written",
        "write error -32602: outside the session's directory: T/escape.txt",
        "write error -32602: symbolic links are refused: T/project/link.txt",
    ]
    assert (project / "out" / "new.txt").read_text() == "written by the agent"
    assert not (tmp_path / "escape.txt").exists()
    assert outside.read_text() == "top secret"


async def test_models_agents_and_commands_come_from_the_agent(tmp_path: Path) -> None:
    script = AgentScript(
        models=(("acme/large", "Acme/Large"), ("acme/small", "Acme/Small"), ("solo", "Solo")),
        modes=(("code", "Code"), ("plan", "Plan")),
        commands=(("review", "review the changes"), ("init", "write AGENTS.md")),
    )
    async with fake_agent(tmp_path, script) as fake:
        engine = fake.engine
        models = await engine.list_models(fake.project)
        agents = await engine.list_agents(fake.project)
        commands = await engine.list_commands(fake.project)
        session = await engine.open_session(fake.project)
        assert session.current_model == ModelRef("acme", "large")
        assert session.current_agent == "code"
        await turn(session, "one", model=ModelRef("acme", "small"), agent="plan")
        await turn(session, "two", model=ModelRef("acme", "small"), agent="plan")
        await turn(session, "three", model=ModelRef("fake", "solo"))
        with pytest.raises(EngineRequestError, match="does not offer the model other/x"):
            await session.prompt("four", model=ModelRef("other", "x"))
        with pytest.raises(EngineRequestError, match="no agent or mode called review"):
            await session.prompt("five", agent="review")
        assert session.current_model == ModelRef("fake", "solo")
        config_calls = fake.sent("session/set_config_option")
        mode_calls = fake.sent("session/set_mode")
    assert [(p.provider_id, [m.id for m in p.models], p.default_model) for p in models] == [
        ("acme", ["large", "small"], "large"),
        ("fake", ["solo"], None),
    ]
    assert models[0].name == "Acme"
    assert [a.name for a in agents] == ["code", "plan"]
    assert [(c.name, c.description) for c in commands] == [
        ("review", "review the changes"),
        ("init", "write AGENTS.md"),
    ]
    sid = session.session_id
    assert config_calls == [
        {"sessionId": sid, "configId": "model", "value": "acme/small"},
        {"sessionId": sid, "configId": "model", "value": "solo"},
    ]
    assert mode_calls == [{"sessionId": sid, "modeId": "plan"}]


async def test_attachments_follow_the_prompt_capabilities(tmp_path: Path) -> None:
    png = PromptFile("shot.png", "image/png", b"\x89PNG fake")
    notes = PromptFile("notes.md", "text/markdown", b"# Notes")
    blob = PromptFile("data.bin", "application/octet-stream", b"\x00\xff")
    async with fake_agent(tmp_path, AgentScript(image=True)) as fake:
        session = await fake.engine.open_session(fake.project)
        await turn(session, "look", [png, notes])
        with pytest.raises(EngineRequestError, match=r"binary files \(data.bin\)"):
            await session.prompt("this too", [blob])
        [prompt] = fake.sent("session/prompt")
    assert prompt["prompt"] == [
        {"type": "text", "text": "look"},
        {"type": "image", "data": "iVBORyBmYWtl", "mimeType": "image/png"},
        {"type": "text", "text": "notes.md:\n```\n# Notes\n```"},
    ]
    (tmp_path / "record.jsonl").unlink()
    script = AgentScript(embedded_context=True)
    async with fake_agent(tmp_path, script, state="state2") as fake:
        session = await fake.engine.open_session(fake.project)
        with pytest.raises(EngineRequestError, match="does not accept images"):
            await session.prompt("look", [png])
        await turn(session, "read", [notes, blob])
        [prompt] = fake.sent("session/prompt")
    assert prompt["prompt"][1:] == [
        {
            "type": "resource",
            "resource": {
                "uri": "attachment:///notes.md",
                "mimeType": "text/markdown",
                "text": "# Notes",
            },
        },
        {
            "type": "resource",
            "resource": {
                "uri": "attachment:///data.bin",
                "mimeType": "application/octet-stream",
                "blob": "AP8=",
            },
        },
    ]


@pytest.mark.parametrize("resume", [True, False])
async def test_a_new_engine_resumes_a_session(tmp_path: Path, resume: bool) -> None:
    script = AgentScript(
        resume=resume,
        turns=(TurnScript(Say("noted")), TurnScript(Say("and noted")), TurnScript(Recall())),
    )
    async with fake_agent(tmp_path, script) as fake:
        session = await fake.engine.open_session(fake.project)
        await turn(session, "the word is banana")
        await turn(session, "and apple")
        session_id = session.session_id
    async with fake_agent(tmp_path, script) as fake:  # a daemon restart
        session = await fake.engine.open_session(fake.project, resume_id=session_id)
        assert session.session_id == session_id
        again = await fake.engine.open_session(fake.project, resume_id=session_id)
        assert again is session
        events = await turn(session, "what did I say?")
        with pytest.raises(SessionNotFoundError):
            await fake.engine.open_session(fake.project, resume_id="sess-404")
        method = "session/resume" if resume else "session/load"
        assert [p["sessionId"] for p in fake.sent(method)] == [session_id, "sess-404"]
    # The replayed history of a load is not shown again: only the new answer is.
    assert texts(events) == ["the word is banana | and apple"]


async def test_an_agent_that_cannot_resume_says_the_session_is_gone(tmp_path: Path) -> None:
    async with fake_agent(tmp_path, AgentScript(load_session=False)) as fake:
        with pytest.raises(SessionNotFoundError):
            await fake.engine.open_session(fake.project, resume_id="sess-1")


async def test_a_crash_ends_the_turn_and_the_session_goes_on(tmp_path: Path) -> None:
    script = AgentScript(
        turns=(
            TurnScript(Say("first")),
            TurnScript(Say("about to fail"), Crash(3, "fake agent: out of memory")),
            TurnScript(Recall()),
        )
    )
    policy = RestartPolicy(initial_delay=0.05)
    async with fake_agent(tmp_path, script, policy=policy) as fake:
        session = await fake.engine.open_session(fake.project)
        await turn(session, "one")
        events = await turn(session, "two")
        ended = events[-1]
        assert isinstance(ended, TurnEnded)
        assert ended.stop_reason == "error"
        assert ended.message is not None
        assert "exited unexpectedly (code 3)" in ended.message
        server = fake.engine.server(fake.project)
        await server.wait_for_state(ServerState.READY)  # restarted with backoff
        assert server.statistics().crashes == 1
        events = await turn(session, "three")
        assert texts(events) == ["one | two"]  # loaded into the new process, history intact
        assert [p["sessionId"] for p in fake.sent("session/load")] == [session.session_id]


async def test_giving_up_tells_the_session_once(tmp_path: Path) -> None:
    script = AgentScript(
        turns=(TurnScript(Crash(5, "fake agent: broken")), TurnScript(Say("back")))
    )
    policy = RestartPolicy(max_crashes=1)
    async with fake_agent(tmp_path, script, policy=policy) as fake:
        session = await fake.engine.open_session(fake.project)
        await session.prompt("crash")
        events = await until_turn_end(session.events)
        server = fake.engine.server(fake.project)
        await server.wait_for_state(ServerState.FAILED)
        ended = events[-1]
        assert isinstance(ended, TurnEnded)
        assert ended.stop_reason == "error"
        assert ended.message is not None
        assert "crashed 1 times within 60 s; not restarting it" in ended.message
        assert "\n" not in ended.message  # one line; the stderr tail is for the log
        assert drain(session.events) == []  # said once: nothing left to end the next turn
        assert texts(await turn(session, "again")) == ["back"]  # the next prompt starts it


async def test_start_failures_say_why(tmp_path: Path) -> None:
    async with fake_agent(tmp_path, AgentScript(exit_at_start=2)) as fake:
        with pytest.raises(EngineUnavailableError, match="scripted exit at start"):
            await fake.engine.open_session(fake.project)
    async with fake_agent(tmp_path, AgentScript(protocol_version=2)) as fake:
        with pytest.raises(EngineUnavailableError, match="speaks ACP version 2"):
            await fake.engine.open_session(fake.project)
    for script in (AgentScript(auth_required=True), AgentScript(auth_at_initialize=True)):
        async with fake_agent(tmp_path, script) as fake:
            with pytest.raises(AgentLoginRequiredError) as raised:
                await fake.engine.open_session(fake.project)
            message = str(raised.value)
            assert message.startswith("fake needs a login first: log fake in")
            assert "`kimaki doctor`" in message
            if script.auth_required:  # initialize named the ways to log in
                assert "(run `fake login`)" in message
            else:  # refused at start: not restarted, since that would not log it in
                assert fake.engine.server(fake.project).state is ServerState.STOPPED
    missing = AgentCommand("ghost", ("/nonexistent/ghost-agent", "acp"))
    async with open_acp_engine(AcpConfig(missing)) as engine:
        with pytest.raises(AgentNotInstalledError) as missed:
            await engine.open_session(tmp_path)
        assert str(missed.value).startswith("ghost-agent is not installed")
        assert "KIMAKI_AGENTS" in str(missed.value)
        assert "Errno" not in str(missed.value)


async def test_isolation_idle_stop_and_no_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "not-for-agents")
    monkeypatch.setenv("KIMAKI_BOT_TOKEN", "not-for-agents-either")
    monkeypatch.setenv("ACME_API_KEY", "the-agents-own-key")
    async with fake_agent(tmp_path, AgentScript(), idle_timeout=0.5) as fake:
        session = await fake.engine.open_session(fake.project)
        await turn(session, "hi")
        server = fake.engine.server(fake.project)
        await server.wait_for_state(ServerState.STOPPED)  # idle
        assert texts(await turn(session, "again")) == ["ok"]  # started again, session loaded
        pid = server.statistics().pid
        assert pid is not None
    assert not process_running(pid)
    first, _second = fake.events("started")
    assert not process_running(first["pid"])
    env = first["env"]
    home = tmp_path / "agent-runtime" / "fake"
    assert env["HOME"] == str(home)
    assert env["XDG_CONFIG_HOME"] == str(home / ".config")
    assert env["ACME_API_KEY"] == "the-agents-own-key"
    assert not [name for name in env if name.startswith(("DISCORD_", "KIMAKI_"))]
    assert "not-for-agents" not in str(env)


async def test_a_killed_agent_mid_permission_clears_the_question(tmp_path: Path) -> None:
    script = AgentScript(turns=(TurnScript(ask_unannounced("t1", "wait")),))
    async with fake_agent(tmp_path, script, policy=RestartPolicy(initial_delay=0.05)) as fake:
        session = await fake.engine.open_session(fake.project)
        await session.prompt("ask")
        with trio.fail_after(10):
            async for event in session.events:
                if isinstance(event, PermissionRequested):
                    request_id = event.request_id
                    break
        pid = fake.engine.server(fake.project).statistics().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        events = await until_turn_end(session.events)
    assert [type(e) for e in events] == [PermissionResolved, TurnEnded]
    assert events[-1].stop_reason == "error"  # type: ignore[union-attr]
    with pytest.raises(EngineRequestError):
        await session.reply_permission(request_id, "once")


async def test_sessions_are_listed_and_servers_restarted(tmp_path: Path) -> None:
    script = AgentScript(
        list_sessions=True,
        turns=(TurnScript(Say("one")), TurnScript(Say("two")), TurnScript(Hold())),
    )
    async with fake_agent(tmp_path, script) as fake:
        engine = fake.engine
        for text in ("fix the login bug", "write the docs", "fix the tests"):
            session = await engine.open_session(fake.project)
            if text != "fix the tests":
                await turn(session, text)
            else:
                turn_id = await session.prompt(text)
        listed = await engine.list_sessions(fake.project)
        fixes = await engine.list_sessions(fake.project, search="FIX", limit=5)
        assert len(fake.sent("session/list")) == 4  # pages of two, followed to the end
        server = engine.server(fake.project)
        old_pid = server.statistics().pid
        await engine.restart_server(fake.project)
        assert drain(session.events)[-1] == TurnEnded(turn_id, "error", "the agent was stopped")
        assert server.statistics().pid not in (None, old_pid)
        await engine.stop_servers()
        assert server.state is ServerState.STOPPED
    assert {s.title for s in listed} == {"fix the login bug", "write the docs", "fix the tests"}
    assert all(s.updated_at > 0 for s in listed)
    assert [s.updated_at for s in listed] == sorted((s.updated_at for s in listed), reverse=True)
    assert {s.title for s in fixes} == {"fix the login bug", "fix the tests"}
    async with fake_agent(tmp_path, AgentScript(), state="other") as fake:
        with pytest.raises(EngineRequestError, match="cannot list its sessions"):
            await fake.engine.list_sessions(fake.project)


@pytest.mark.skipif(SCHEMA is None, reason="../shared/reference/acp-schema-v1.json is absent")
async def test_what_we_send_is_checked_against_the_schema(tmp_path: Path) -> None:
    """The check every test runs at the end is real: a bad message is caught."""
    assert SCHEMA is not None
    no_params = {"jsonrpc": "2.0", "method": "session/cancel"}
    assert SCHEMA.problems(no_params) != []
    bad_prompt = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "session/prompt",
        "params": {"sessionId": "s", "prompt": [{"type": "text"}]},
    }
    assert SCHEMA.problems(bad_prompt) != []
    bad_answer = {"jsonrpc": "2.0", "id": 3, "result": {"outcome": {"outcome": "maybe"}}}
    assert SCHEMA.problems(bad_answer, answer_to="session/request_permission") != []
    ok_answer = {"jsonrpc": "2.0", "id": 3, "result": {"outcome": {"outcome": "cancelled"}}}
    assert SCHEMA.problems(ok_answer, answer_to="session/request_permission") == []


def drain(events: EventQueue) -> list[EngineEvent]:
    out: list[EngineEvent] = []
    while True:
        try:
            out.append(events.receive_nowait())
        except trio.WouldBlock:
            return out


@attrs.define
class _Policy:
    """An `McpProvider` that gives every grant one stdio server holding its token."""

    plans: list[ToolGrant] = attrs.Factory(list)

    async def plan(self, grant: ToolGrant) -> McpPlan:
        self.plans.append(grant)
        return McpPlan(
            servers=(McpServer("kimaki", command="kimaki", env={"KIMAKI_GRANT": grant.token}),)
        )


async def test_each_session_gets_its_own_grant_revoked_when_it_closes(tmp_path: Path) -> None:
    script = AgentScript(turns=(TurnScript(Say("one")),))
    grants, policy = Grants(), _Policy()
    async with fake_agent(tmp_path, script, mcp=policy, grants=grants) as fake:
        first = await fake.engine.open_session(fake.project)
        second = await fake.engine.open_session(fake.project)
        news = fake.sent("session/new")
        tokens = [new["mcpServers"][0]["env"][0]["value"] for new in news]
        assert len(set(tokens)) == 2
        for session, token in zip((first, second), tokens, strict=True):
            grant = grants.resolve(token)
            assert grant is not None
            assert grant.session_id == session.session_id
            assert grant.directory == fake.project
        await first.aclose()
        assert grants.resolve(tokens[0]) is None
        assert grants.resolve(tokens[1]) is not None
