"""The OpenCode event mapping, fed payloads shaped like the ones the real binary sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kimaki.agents import (
    DiffStats,
    PermissionRequested,
    PermissionResolved,
    PlanEntry,
    PlanUpdated,
    QuestionAsked,
    QuestionResolved,
    ReasoningCompleted,
    ReasoningDelta,
    Retrying,
    SessionRenamed,
    StepFinished,
    TextCompleted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    ToolUpdated,
    TurnEnded,
    Usage,
)
from kimaki.agents.opencode._mapping import SessionMapper, input_summary
from kimaki.agents.opencode._wire import MalformedEvent, decode_event, decode_message, decode_part

S = "ses_e00823094ffeHoNDCRYp7SP5KN"
USER = "msg_1ff7dcfe0801r7t7YOGmiwnT0m"
ASSISTANT = "msg_1ff7dd40a001ClPS0dtYSFqMhX"


def ev(kind: str, **properties: Any) -> str:
    return json.dumps({"id": "evt_1", "type": kind, "properties": properties})


def user_message(message_id: str = USER) -> str:
    info = {"id": message_id, "role": "user", "sessionID": S, "time": {"created": 1}}
    return ev("message.updated", sessionID=S, info=info)


def assistant_message(
    message_id: str = ASSISTANT,
    parent: str = USER,
    *,
    finish: str | None = None,
    error: dict[str, Any] | None = None,
) -> str:
    info: dict[str, Any] = {
        "id": message_id,
        "parentID": parent,
        "role": "assistant",
        "sessionID": S,
        "modelID": "scripted",
        "providerID": "scripted",
        "time": {"created": 1, **({"completed": 2} if finish or error else {})},
        "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
        "cost": 0,
    }
    if finish:
        info["finish"] = finish
    if error:
        info["error"] = error
    return ev("message.updated", sessionID=S, info=info)


def part(kind: str, part_id: str, message: str = ASSISTANT, **fields: Any) -> str:
    body = {"id": part_id, "messageID": message, "sessionID": S, "type": kind, **fields}
    return ev("message.part.updated", sessionID=S, part=body, time=1)


def delta(part_id: str, text: str, message: str = ASSISTANT) -> str:
    return ev(
        "message.part.delta",
        sessionID=S,
        messageID=message,
        partID=part_id,
        field="text",
        delta=text,
    )


IDLE = ev("session.idle", sessionID=S)
ABORTED = ev(
    "session.error",
    sessionID=S,
    error={"name": "MessageAbortedError", "data": {"message": "Aborted"}},
)


def feed(mapper: SessionMapper, *payloads: str) -> list[Any]:
    out: list[Any] = []
    for payload in payloads:
        event = decode_event(payload)
        if event is not None:
            out += mapper.handle(event)
    return out


def started_mapper(limits: dict[tuple[str, str], int] | None = None) -> SessionMapper:
    table = limits or {}
    mapper = SessionMapper(
        S,
        title="rec",
        directory="/work/project",
        context_limits=lambda p, m: table.get((p or "", m or "")),
    )
    mapper.begin_turn(USER)
    return mapper


def test_a_text_turn_streams_deltas_then_the_final_text_then_ends() -> None:
    mapper = started_mapper({("scripted", "scripted"): 100_000})
    events = feed(
        mapper,
        user_message(),
        part("text", "prt_user", USER, text="do the thing"),
        ev("session.status", sessionID=S, status={"type": "busy"}),
        assistant_message(),
        part("step-start", "prt_start"),
        part("text", "prt_a", text="", time={"start": 1}),
        delta("prt_a", "Hello th"),
        delta("prt_a", "ere."),
        part("text", "prt_a", text="Hello there.", time={"start": 1, "end": 2}),
        part(
            "step-finish",
            "prt_fin",
            reason="stop",
            cost=0.5,
            tokens={
                "total": 15,
                "input": 10,
                "output": 5,
                "reasoning": 0,
                "cache": {"read": 3, "write": 0},
            },
        ),
        assistant_message(finish="stop"),
        ev("session.status", sessionID=S, status={"type": "idle"}),
        IDLE,
    )
    assert events == [
        TextDelta("prt_a", "Hello th"),
        TextDelta("prt_a", "ere."),
        TextCompleted("prt_a", "Hello there."),
        StepFinished("prt_fin", "stop"),
        Usage(10, 5, 0, 3, 0, 0.5, 100_000, model="scripted/scripted"),
        TurnEnded(USER, "end_turn"),
    ]
    assert events[4].context_tokens == 18
    assert mapper.turn_id is None


def test_idle_before_the_turn_is_seen_belongs_to_the_previous_turn() -> None:
    mapper = started_mapper()
    # An aborted previous turn sends idle twice, and its late parts; none of it is ours.
    old = "msg_1ff7dd000001oldoldoldoldol"
    events = feed(
        mapper,
        assistant_message(old, parent="msg_previous", error={"name": "MessageAbortedError"}),
        IDLE,
        ABORTED,
        part("text", "prt_old", old, text="late text", time={"start": 1, "end": 2}),
        IDLE,
    )
    assert events == []
    assert mapper.turn_id == USER
    events = feed(mapper, user_message(), assistant_message(), IDLE)
    assert events == [TurnEnded(USER, "end_turn")]


@pytest.mark.parametrize(
    ("error", "finish", "expected"),
    [
        ({"name": "MessageAbortedError", "data": {"message": "Aborted"}}, None, ("aborted", None)),
        ({"name": "MessageOutputLengthError", "data": {}}, None, ("max_tokens", None)),
        (None, "length", ("max_tokens", None)),
        (
            {"name": "ContentFilterError", "data": {"message": "blocked"}},
            "content-filter",
            ("refused", "blocked"),
        ),
        (
            {"name": "UnknownError", "data": {"message": "Model not found: nope/nope"}},
            None,
            ("error", "Model not found: nope/nope"),
        ),
        (None, "stop", ("end_turn", None)),
    ],
)
def test_stop_reasons(
    error: dict[str, Any] | None, finish: str | None, expected: tuple[str, str | None]
) -> None:
    mapper = started_mapper()
    payloads = [user_message(), assistant_message(finish=finish)]
    if error is not None:
        payloads.append(ev("session.error", sessionID=S, error=error))
    events = feed(mapper, *payloads, IDLE, IDLE)
    assert events == [TurnEnded(USER, *expected)]  # type: ignore[arg-type]


def test_abort_requested_without_an_error_is_still_aborted() -> None:
    mapper = started_mapper()
    mapper.request_abort()
    assert feed(mapper, user_message(), IDLE) == [TurnEnded(USER, "aborted")]


def test_tool_call_with_permission_and_edit_stats() -> None:
    mapper = started_mapper()
    bash = {"command": "echo hi", "description": "Say hi"}
    events = feed(
        mapper,
        user_message(),
        assistant_message(),
        part(
            "tool",
            "prt_t",
            tool="bash",
            callID="call_1",
            state={"status": "pending", "input": {}, "raw": ""},
        ),
        part(
            "tool",
            "prt_t",
            tool="bash",
            callID="call_1",
            state={"status": "running", "input": bash, "time": {"start": 1}},
        ),
        ev(
            "permission.asked",
            id="per_1",
            sessionID=S,
            permission="bash",
            patterns=["echo hi"],
            metadata={"command": "echo hi"},
            always=["echo *"],
            tool={"messageID": ASSISTANT, "callID": "call_1"},
        ),
        ev("permission.replied", sessionID=S, requestID="per_1", reply="once"),
        part(
            "tool",
            "prt_t",
            tool="bash",
            callID="call_1",
            state={
                "status": "running",
                "input": bash,
                "metadata": {"output": "hi\n"},
                "time": {"start": 1},
            },
        ),
        part(
            "tool",
            "prt_t",
            tool="bash",
            callID="call_1",
            state={
                "status": "completed",
                "input": bash,
                "output": "hi\n",
                "title": "echo hi",
                "metadata": {},
                "time": {"start": 1, "end": 2},
            },
        ),
        part(
            "tool",
            "prt_e",
            tool="edit",
            callID="call_2",
            state={
                "status": "completed",
                "title": "src/a.py",
                "output": "ok",
                "input": {"filePath": "/work/project/src/a.py"},
                "metadata": {
                    "filediff": {"file": "/work/project/src/a.py", "additions": 2, "deletions": 1}
                },
                "time": {"start": 1, "end": 2},
            },
        ),
        part(
            "tool",
            "prt_w",
            tool="write",
            callID="call_3",
            state={
                "status": "error",
                "error": "denied",
                "input": {"filePath": "/elsewhere/b.txt", "content": "one\ntwo"},
                "time": {"start": 1, "end": 2},
            },
        ),
    )
    common: dict[str, Any] = {"part_id": "prt_t", "call_id": "call_1", "tool": "bash"}
    assert events == [
        ToolStarted(**common, title="", input_summary="", status="pending"),
        ToolUpdated(**common, title="echo hi", input_summary="echo hi", status="running"),
        PermissionRequested("per_1", "bash", "echo hi", ("echo hi",), ("echo *",), "call_1"),
        PermissionResolved("per_1", "once"),
        ToolFinished(
            **common, title="echo hi", input_summary="echo hi", status="completed", output="hi\n"
        ),
        ToolStarted(
            part_id="prt_e",
            call_id="call_2",
            tool="edit",
            title="src/a.py",
            input_summary="src/a.py",
            status="running",
        ),
        ToolFinished(
            part_id="prt_e",
            call_id="call_2",
            tool="edit",
            title="src/a.py",
            input_summary="src/a.py",
            status="completed",
            output="ok",
            diff=DiffStats(path="src/a.py", additions=2, deletions=1),
        ),
        ToolStarted(
            part_id="prt_w",
            call_id="call_3",
            tool="write",
            title="/elsewhere/b.txt",
            input_summary="/elsewhere/b.txt",
            status="running",
        ),
        ToolFinished(
            part_id="prt_w",
            call_id="call_3",
            tool="write",
            title="/elsewhere/b.txt",
            input_summary="/elsewhere/b.txt",
            status="error",
            error="denied",
            diff=DiffStats(path="/elsewhere/b.txt", lines=2),
        ),
    ]


def test_question_todo_reasoning_retry_and_rename() -> None:
    mapper = started_mapper()
    question = {
        "question": "Which color?",
        "header": "Color",
        "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": ""}],
        "multiple": True,
    }
    events = feed(
        mapper,
        user_message(),
        assistant_message(),
        ev(
            "session.status",
            sessionID=S,
            status={"type": "retry", "attempt": 2, "message": "overloaded", "next": 5},
        ),
        part("reasoning", "prt_r", text="", time={"start": 1}),
        delta("prt_r", "hmm"),
        part("reasoning", "prt_r", text="hmm.", time={"start": 1, "end": 2}),
        ev(
            "question.asked",
            id="que_1",
            sessionID=S,
            questions=[question],
            tool={"messageID": ASSISTANT, "callID": "call_1"},
        ),
        ev("question.replied", sessionID=S, requestID="que_1", answers=[["Blue"]]),
        ev("question.rejected", sessionID=S, requestID="que_2"),
        ev(
            "todo.updated",
            sessionID=S,
            todos=[{"content": "Do a", "status": "pending", "priority": "high"}],
        ),
        ev("session.updated", sessionID=S, info={"id": S, "title": "rec", "directory": "/"}),
        ev("session.updated", sessionID=S, info={"id": S, "title": "Better", "directory": "/"}),
    )
    assert events[0] == Retrying(2, "overloaded")
    assert events[1:3] == [ReasoningDelta("prt_r", "hmm"), ReasoningCompleted("prt_r", "hmm.")]
    asked = events[3]
    assert isinstance(asked, QuestionAsked)
    assert asked.request_id == "que_1"
    assert asked.call_id == "call_1"
    assert asked.questions[0].multiple is True
    assert asked.questions[0].custom is True
    assert [o.label for o in asked.questions[0].options] == ["Red", "Blue"]
    assert events[4:] == [
        QuestionResolved("que_1", (("Blue",),)),
        QuestionResolved("que_2", None),
        PlanUpdated((PlanEntry("Do a", "pending", "high"),)),
        SessionRenamed("Better"),
    ]


def test_replay_after_missed_events_sends_only_what_was_not_final() -> None:
    mapper = started_mapper()
    feed(
        mapper,
        user_message(),
        assistant_message(),
        part("text", "prt_a", text="", time={"start": 1}),
        delta("prt_a", "Hel"),
        part("text", "prt_done", text="first", time={"start": 1, "end": 2}),
    )
    listing = [
        (decode_message(json.loads(user_message())["properties"]["info"]), []),
        (
            decode_message(json.loads(assistant_message(finish="stop"))["properties"]["info"]),
            [
                decode_part(
                    json.loads(part("text", "prt_done", text="first", time={"start": 1, "end": 2}))[
                        "properties"
                    ]["part"]
                ),
                decode_part(
                    json.loads(part("text", "prt_a", text="Hello", time={"start": 1, "end": 3}))[
                        "properties"
                    ]["part"]
                ),
            ],
        ),
    ]
    assert mapper.replay(listing) == [TextCompleted("prt_a", "Hello")]
    assert mapper.settle(busy=True) == []
    assert mapper.settle(busy=False) == [TurnEnded(USER, "end_turn")]


def test_a_turn_the_server_never_saw_ends_with_an_error_on_settle() -> None:
    mapper = started_mapper()
    assert mapper.replay([]) == []
    [ended] = mapper.settle(busy=False)
    assert isinstance(ended, TurnEnded)
    assert ended.stop_reason == "error"


def test_growing_snapshots_without_deltas_still_stream() -> None:
    mapper = started_mapper()
    events = feed(
        mapper,
        user_message(),
        assistant_message(),
        part("text", "prt_a", text="Hel", time={"start": 1}),
        part("text", "prt_a", text="Hello", time={"start": 1}),
        part("text", "prt_a", text="Hello!", time={"start": 1, "end": 2}),
        part("text", "prt_syn", text="injected", synthetic=True, time={"start": 1, "end": 2}),
    )
    assert events == [
        TextDelta("prt_a", "Hel"),
        TextDelta("prt_a", "lo"),
        TextCompleted("prt_a", "Hello!"),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        "{not json",
        "[]",
        json.dumps({"type": 3}),
        json.dumps({"type": "message.part.delta", "properties": {"sessionID": S}}),
        json.dumps({"type": "session.idle", "properties": []}),
        json.dumps({"type": "message.part.updated", "properties": {"sessionID": S, "part": 1}}),
        json.dumps({"type": "question.asked", "properties": {"id": "q", "sessionID": S}}),
    ],
)
def test_malformed_known_events_raise_a_clear_error(payload: str) -> None:
    with pytest.raises(MalformedEvent):
        decode_event(payload)


def test_unused_event_types_decode_to_nothing() -> None:
    for kind in ("plugin.added", "session.diff", "file.watcher.updated", "catalog.updated"):
        assert decode_event(ev(kind, id="core/x")) is None


def test_input_summaries() -> None:
    assert input_summary("bash", {"command": "ls   -la\n"}) == "ls -la"
    assert input_summary("read", {"filePath": "/w/p/a.py"}, "/w/p") == "a.py"
    assert input_summary("read", {"filePath": "/other/a.py"}, "/w/p") == "/other/a.py"
    assert input_summary("grep", {"pattern": "TODO"}) == "TODO"
    assert input_summary("todowrite", {"todos": [1, 2]}) == "2 todos"
    assert input_summary("custom", {"b": 1, "a": "x"}) == '{"a": "x", "b": 1}'
    assert len(input_summary("bash", {"command": "x" * 500})) == 200
