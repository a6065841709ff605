"""The script vocabulary the three fake agents share: what each wire can say, and the fake
engine's way of saying it (the other two are checked through the real engines, in tests/acp and
tests/agents)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from kimaki.agents import (
    DiffStats,
    EngineEvent,
    PermissionRequested,
    PlanEntry,
    PlanUpdated,
    Question,
    QuestionAsked,
    QuestionOption,
    ReasoningCompleted,
    SessionRenamed,
    StepFinished,
    ToolFinished,
    ToolStarted,
    TurnEnded,
    Usage,
)
from kimaki.testing.acp_agent import AgentScript
from kimaki.testing.engine import FakeEngine, open_fake_engine, texts, until_turn_end
from kimaki.testing.opencode import FakeOpenCode
from kimaki.testing.script import (
    Ask,
    ClientRequest,
    ContextUsage,
    Crash,
    Diff,
    DropStream,
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
    to_json,
)

QUESTION = Question("Which color?", "Color", (QuestionOption("Red"), QuestionOption("Blue")))


def test_a_script_survives_json_for_the_agent_process() -> None:
    turn = TurnScript(
        Think("hm"),
        Say("hello", chunk=2, message_id="m1"),
        Plan(("read", "completed"), ("fix", "in_progress", "high")),
        Tool("edit", "Edit a", call_id="c1", input={"path": ["a", "b"]}, diff=Diff("a", None, "x")),
        Tool("execute", input={"command": "make"}, ask=True, announce=False),
        ContextUsage(10, 100, cost=0.5),
        Step(),
        Rename("new"),
        ClientRequest("terminal/create", {"command": "ls"}),
        ReadFile("/a", line=2),
        WriteFile("/b", "text"),
        Recall(),
        Malformed("{"),
        Hold(ignore_cancel=True),
        Stop("max_tokens"),
        Fail("bad", code=-1),
        Crash(5, "gone"),
    )
    assert from_json(to_json(turn)) == turn
    with pytest.raises(ScriptError, match="Ask cannot be written"):
        to_json(Ask((QUESTION,)))


@pytest.mark.parametrize(
    "action",
    [
        Malformed(),
        DropStream(),
        Crash(),
        ClientRequest(),
        ReadFile("/a"),
        WriteFile("/a", ""),
        Recall(),
    ],
)
async def test_the_fake_engine_refuses_what_its_wire_cannot_say(action: object) -> None:
    async with open_fake_engine() as engine:
        with pytest.raises(ScriptError, match="the fake engine cannot play"):
            engine.add_turns(TurnScript(action))  # type: ignore[arg-type]


def test_the_fake_opencode_and_the_fake_acp_agent_refuse_what_theirs_cannot_say() -> None:
    for turn in (
        TurnScript(ContextUsage(1, 2)),
        TurnScript(Recall()),
        TurnScript(Hold(ignore_cancel=True)),
        TurnScript(Stop("max_turn_requests")),
        TurnScript(Stop("max_tokens", "why")),
    ):
        with pytest.raises(ScriptError):
            FakeOpenCode(turns=[turn])
        with pytest.raises(ScriptError):
            FakeOpenCode().add_turns(turn)
    for turn in (
        TurnScript(Ask((QUESTION,))),
        TurnScript(DropStream()),
        TurnScript(Stop("error")),
        TurnScript(Stop("refused", "why")),
    ):
        with pytest.raises(ScriptError):
            AgentScript(turns=(turn,))


async def test_the_fake_engine_plays_a_script_as_engine_events(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    fake_engine.add_turns(
        TurnScript(
            Think("Let me look."),
            Say("Looking."),
            Plan(("read", "completed"), ("fix", "in_progress", "high")),
            Tool("edit", "app.py", diff=Diff("app.py", "a\nb\n", "a\nc\nd\n")),
            Tool("bash", "git push", ask=True, patterns=("git push",), always=("git *",)),
            Ask((QUESTION,)),
            ContextUsage(1200, 200_000, cost=0.25),
            Rename("Pushing"),
            Say("Pushed."),
        ),
        TurnScript(Say("working"), Step(), Hold(), Say("released")),
        TurnScript(Say("cut"), Stop("max_tokens")),
        TurnScript(Tool("bash", ask=True), Say("never said")),
    )
    session = await fake_engine.open_session(tmp_path)

    async def answer(event: EngineEvent) -> None:
        if isinstance(event, PermissionRequested):
            assert (event.permission, event.patterns, event.always) == (
                "bash",
                ("git push",),
                ("git *",),
            )
            await session.reply_permission(event.request_id, "once")
        if isinstance(event, QuestionAsked):
            await session.answer_question(event.request_id, [["Blue"]])

    turn_id = await session.prompt("push it")
    events = await until_turn_end(session.events, on_event=answer)
    assert texts(events) == ["Looking.", "Pushed."]
    assert [e.text for e in events if isinstance(e, ReasoningCompleted)] == ["Let me look."]
    assert [e for e in events if isinstance(e, PlanUpdated)] == [
        PlanUpdated((PlanEntry("read", "completed"), PlanEntry("fix", "in_progress", "high")))
    ]
    edit, push = [e for e in events if isinstance(e, ToolFinished)]
    assert (edit.tool, edit.title, edit.diff) == (
        "edit",
        "app.py",
        DiffStats(path="app.py", additions=2, deletions=1),
    )
    assert (push.tool, push.status) == ("bash", "completed")
    assert Usage(context_used=1200, context_limit=200_000, session_cost=0.25) in events
    assert SessionRenamed("Pushing") in events
    assert session.title == "Pushing"
    # The turn's last step ends with it, as a model's does.
    assert [type(e) for e in events[-3:]] == [StepFinished, Usage, TurnEnded]
    assert events[-1] == TurnEnded(turn_id, "end_turn")

    turn_id = await session.prompt("hold on")
    with trio.fail_after(5):
        async for event in session.events:
            if isinstance(event, Usage):  # the step before the hold ended
                break
    fake_engine.release()
    events = await until_turn_end(session.events)
    assert texts(events) == ["released"]

    turn_id = await session.prompt("go")
    events = await until_turn_end(session.events)
    assert texts(events) == ["cut"]
    assert events[-1] == TurnEnded(turn_id, "max_tokens")
    assert not any(isinstance(e, StepFinished) for e in events)  # ended by the script: no step

    turn_id = await session.prompt("run it")
    events: list[EngineEvent] = []
    with trio.fail_after(5):
        async for event in session.events:
            events.append(event)
            if isinstance(event, PermissionRequested):
                await session.reply_permission(event.request_id, "reject")
            if isinstance(event, TurnEnded):
                break
    assert [type(e) for e in events if isinstance(e, ToolStarted | ToolFinished)] == [
        ToolStarted,
        ToolFinished,
    ]
    assert [e.error for e in events if isinstance(e, ToolFinished)] == ["rejected by the user"]
    assert texts(events) == []
    assert events[-1] == TurnEnded(turn_id, "end_turn")
