"""What an ACP agent sends, decoded in one place: typed records, a clear error for what the
engine cannot do without, the schema's own forgiveness for the rest (pure, no I/O)."""

from __future__ import annotations

import logging

import pytest

from kimaki.agents.acp._wire import (
    AgentMessageChunk,
    ConfigSelect,
    InitializeResult,
    MalformedMessage,
    OtherConfigOption,
    OtherContent,
    OtherToolContent,
    PermissionOption,
    PermissionRequest,
    PromptResult,
    ReadTextFile,
    SelectGroup,
    SelectOption,
    SessionList,
    SessionNotification,
    SessionState,
    TextContent,
    ToolCallLocation,
    ToolCallUpdate,
    ToolContent,
    ToolDiff,
    UnknownUpdate,
    UsageUpdate,
    auth_methods,
    decode,
    decode_answer,
    decode_update,
)


def test_a_session_update_becomes_a_record() -> None:
    params = {
        "sessionId": "s",
        "update": {
            "sessionUpdate": "tool_call",
            "toolCallId": "c",
            "title": "Edit",
            "kind": "edit",
            "status": "in_progress",
            "content": [
                {"type": "content", "content": {"type": "text", "text": "ok"}},
                {"type": "diff", "path": "/p/a.py", "newText": "b\n", "oldText": "a\n"},
                {"type": "terminal", "terminalId": "t1"},
            ],
            "locations": [{"path": "/p/a.py", "line": 3}],
            "rawInput": {"path": "/p/a.py", "edits": [1, 2]},
            "_meta": {"anything": True},
        },
    }
    notification = decode(SessionNotification, params, "session/update")
    assert notification == SessionNotification(
        "s",
        ToolCallUpdate(
            "c",
            title="Edit",
            kind="edit",
            status="in_progress",
            content=(
                ToolContent(TextContent("ok")),
                ToolDiff("/p/a.py", "b\n", "a\n"),
                OtherToolContent("terminal"),
            ),
            locations=(ToolCallLocation("/p/a.py", 3),),
            raw_input={"path": "/p/a.py", "edits": [1, 2]},
        ),
    )


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (
            {"sessionId": "s", "update": {"sessionUpdate": "tool_call", "title": "x"}},
            "session/update: required field missing @ $.update.toolCallId",
        ),
        (
            {"sessionId": "s", "update": {"sessionUpdate": "usage_update", "used": "1", "size": 2}},
            "session/update: expected int, not str @ $.update.used",
        ),
        (
            {"sessionId": 7, "update": {"sessionUpdate": "agent_message_chunk"}},
            "session/update: expected str, not int @ $.sessionId; "
            "required field missing @ $.update.content",
        ),
        ({"sessionId": "s", "update": 1}, "session/update: expected an object, not int @ $.update"),
        (
            {"sessionId": "s", "update": {"content": {"type": "text", "text": "x"}}},
            "session/update: 'sessionUpdate' is missing or not a string @ $.update",
        ),
    ],
)
def test_what_the_engine_cannot_do_without_makes_a_message_malformed(
    params: object, problem: str
) -> None:
    with pytest.raises(MalformedMessage) as raised:
        decode(SessionNotification, params, "session/update")
    assert str(raised.value) == problem


def test_nothing_is_coerced() -> None:
    for bad in ({"used": True, "size": 1}, {"used": 1.5, "size": 1}, {"used": 1, "size": "2"}):
        with pytest.raises(MalformedMessage):
            decode_update({"sessionUpdate": "usage_update", **bad})
    with pytest.raises(MalformedMessage, match="expected str, not int"):
        decode(ReadTextFile, {"sessionId": "s", "path": 5}, "fs/read_text_file")


def test_the_rest_is_forgiven_as_the_schema_says(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "kimaki.acp")
    update = decode_update(
        {
            "sessionUpdate": "tool_call_update",
            "toolCallId": "c",
            "title": None,  # null where a string goes: nothing said
            "status": 3,  # the wrong type: the default
            "content": [{"type": "diff", "path": 1}, "junk", {"type": "content"}],
            "locations": [{"path": "/a", "line": "x"}, {"line": 2}],
        }
    )
    assert update == ToolCallUpdate("c", content=(), locations=(ToolCallLocation("/a"),))
    assert "ToolCallUpdate.status: 3 is not read" in caplog.text
    assert "title" not in caplog.text  # a null is no mistake
    chunk = decode_update(
        {"sessionUpdate": "agent_message_chunk", "content": {"type": "image", "data": "x"}}
    )
    assert chunk == AgentMessageChunk(OtherContent("image"))
    assert decode_update({"sessionUpdate": "from_the_future", "x": 1}) == UnknownUpdate(
        "from_the_future"
    )
    assert decode_update(
        {"sessionUpdate": "usage_update", "used": 5, "size": 9, "cost": {"amount": "1"}}
    ) == UsageUpdate(5, 9)


def test_answers() -> None:
    assert decode_answer(SessionState, None, "session/load") == SessionState()
    assert decode_answer(PromptResult, {"stopReason": "end_turn"}, "session/prompt") == (
        PromptResult("end_turn")
    )
    state = decode_answer(
        SessionState,
        {
            "sessionId": "s",
            "configOptions": [
                {
                    "id": "model",
                    "name": "Model",
                    "type": "select",
                    "currentValue": "a/b",
                    "options": [
                        {"value": "a/b", "name": "B"},
                        {"group": "g", "name": "G", "options": [{"value": "c"}, {"name": "x"}]},
                    ],
                },
                {"id": "fast", "name": "Fast", "type": "boolean", "currentValue": False},
                {"name": "no id", "type": "select"},
            ],
        },
        "session/new",
    )
    assert state.session_id == "s"
    assert state.modes is None  # not said: what was known stays
    assert state.config_options == (
        ConfigSelect(
            "model",
            "Model",
            current_value="a/b",
            options=(SelectOption("a/b", "B"), SelectGroup("g", "G", (SelectOption("c"),))),
        ),
        OtherConfigOption("boolean"),
    )
    listed = decode_answer(
        SessionList, {"sessions": [{"sessionId": "s1", "cwd": "/p"}, {"cwd": "/p"}]}, "list"
    )
    assert [s.session_id for s in listed.sessions] == ["s1"]
    with pytest.raises(MalformedMessage, match=r"initialize: required field missing @ \$"):
        decode_answer(InitializeResult, "ok", "initialize")
    initialized = decode_answer(
        InitializeResult,
        {"protocolVersion": 1, "agentCapabilities": {"loadSession": "yes"}, "agentInfo": 3},
        "initialize",
    )
    assert initialized == InitializeResult(1)


def test_requests_and_auth_methods() -> None:
    request = decode(
        PermissionRequest,
        {
            "sessionId": "s",
            "toolCall": {"toolCallId": "c", "rawInput": {"command": "ls"}},
            "options": [{"optionId": "y", "name": "Yes", "kind": "allow_once"}, {"name": "?"}],
        },
        "session/request_permission",
    )
    assert request.options == (PermissionOption("y", "Yes", "allow_once"),)
    assert request.tool_call.raw_input == {"command": "ls"}
    assert decode(PermissionRequest, {"sessionId": "s"}, "p").tool_call == ToolCallUpdate("")
    methods = {"authMethods": [{"id": "a", "name": "A", "description": "run a"}, {"id": "b"}]}
    assert [m.label for m in auth_methods(methods)] == ["run a", "b"]
    assert [m.label for m in auth_methods([{"name": "B"}])] == ["B"]
    assert auth_methods(None) == auth_methods("x") == ()
